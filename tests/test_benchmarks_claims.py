"""``benchmarks/claims.py``: its options, the presets it submits for each claim's roles,
its tables, and one tiny end-to-end run of Figure 4's two studies through the real driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import claims as bench
from service.api.schemas import ClaimRow, ClaimsReport, ClaimStudy
from studies.analysis import claims
from studies.analysis.claim_rules import Support
from studies.presets import load_preset

#: Figure 4 at the smallest scale that still runs both arms of both Hessians: one LR, one
#: seed, 10 steps (about 20 s with Ray's start on 2 cores)
TINY = {
    "workload": {"steps": 10, "eval_interval": 5},
    "seeds": 1,
    "protocol": {"kind": "none", "sequential": None},
    "search": {"lr": 0.1},
}


def test_options() -> None:
    args = bench.parse_args(["--only", "fig-4", "table1", "--overrides", '{"seeds": 1}'])
    assert args.only == ["fig-4", "table1"] and args.overrides == {"seeds": 1}
    assert bench.parse_args([]).only is None
    for bad in (["--only", "figure-4"], ["--overrides", "[1]"], ["--overrides", "{"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_each_role_once_with_its_workload_fields() -> None:
    """A role's workload fields win over ``--overrides``: otherwise the light-covariates
    study would not fill its role."""
    specs = bench.study_specs(["fig-3"], {"workload": {"covariates": "heavy", "steps": 7}})
    assert {role.name: spec.workload.covariates for role, spec in specs.items()} == {
        "heavy": "heavy",
        "light": "light",
    }
    assert {spec.workload.steps for spec in specs.values()} == {7}
    every = bench.study_specs(None, {})
    assert len(every) == len({(role.preset, role.workload) for role in every})
    assert {role.preset for role in every} >= {"paper-table1", "quadratic", "heavy-tailed"}


def test_suite_scale_under_overrides_under_role() -> None:
    """``--scale suite`` applies ``SUITE_SCALE``, ``--overrides`` win over it and the role's
    fields over both; ``--scale presets`` leaves the presets as they are."""
    suite = bench.study_specs(["table1", "fig-3"], {"workload": {"steps": 150}})
    by_preset = {(role.preset, role.name): spec for role, spec in suite.items()}
    table1 = by_preset["paper-table1", "study"]
    assert table1.search["base"] == ["adamw", "c-adamw", "laprop", "rmsprop"]
    assert (table1.workload.steps, table1.workload.batch_size) == (150, 8)
    assert (table1.protocol.lr_start, table1.protocol.confirm_seeds) == (10**-2.5, 3)
    assert table1.seeds == 2  # a bracket study selects on at least 2 seeds
    light = by_preset["heavy-tailed", "light"]
    assert (light.workload.covariates, light.workload.condition_number) == ("light", False)
    # seeds in rounds: the synthetic studies to 100 seeds, Table 1's confirmation to 6
    assert light.protocol.sequential is not None
    assert (light.protocol.sequential.round_seeds, light.protocol.sequential.max_seeds) == (10, 100)
    assert light.protocol.confirm_seeds == 10 and light.seed_batch >= 10
    assert table1.protocol.sequential is not None and table1.protocol.sequential.max_seeds == 6
    presets = bench.study_specs(["table1"], {}, "presets")
    (spec,) = presets.values()
    assert "muon" in spec.search["base"] and spec.workload.steps == 1000
    assert bench.parse_args(["--scale", "presets"]).scale == "presets"
    with pytest.raises(SystemExit):
        bench.parse_args(["--scale", "paper"])


def test_suite_keeps_table_a1s_components_and_figure_a1s_seeds() -> None:
    """The suite trims the ablations' grids but keeps what their claims test: every
    components value of Table A1 (and MLP alone), and 3 seeds a Figure A1 cell to pair."""
    suite = {
        role.preset: spec for role, spec in bench.study_specs(["table-a1", "fig-a1"], {}).items()
    }
    components = suite["components"]
    assert components.search["components"] == ["attention", "mlp", "attention+mlp", "all"]
    assert (components.seeds, components.workload.steps) == (2, 150)
    sensitivity = suite["sensitivity-p-tau"]
    assert sensitivity.seeds >= 3
    assert (sensitivity.search["p"], sensitivity.search["tau"]) == (
        [0.25, 0.5, 0.75],
        [1.0, 2.0, 4.0],
    )


def test_the_implementations_preset_runs_each_workload_at_its_own_scale() -> None:
    """One preset, two roles: llama-bytes at the suite's LM scale, and the heavy-tailed
    linear transformer at Figure 3's, each seeded in rounds that also stop on equivalence
    within its claims' margin; every arm on both (12 masked, dense tuned once)."""
    specs = {
        role.name: spec
        for role, spec in bench.study_specs(
            ["implementation-choices", "public-implementations"], {}
        ).items()
    }
    assert set(specs) == {"lm", "heavy"}
    lm, heavy = specs["lm"], specs["heavy"]
    assert (lm.workload.kind, lm.workload.steps, lm.workload.batch_size) == ("llama-c4", 150, 8)
    assert (lm.metric, heavy.metric) == ("val_ppl", "val_loss")
    assert (heavy.workload.kind, heavy.workload.covariates) == ("linear-transformer", "heavy")
    assert (heavy.workload.steps, heavy.workload.batch_size) == (1000, 16)
    for role, spec in specs.items():
        assert spec.search["weight_decay"] == 0.1 and spec.grid_size == 24
        assert spec.protocol.sequential is not None
        assert spec.protocol.sequential.margin == claims.IMPLEMENTATION_MARGINS[role]
    assert (lm.protocol.sequential.round_seeds, lm.protocol.sequential.max_seeds) == (3, 6)
    assert (heavy.protocol.sequential.round_seeds, heavy.protocol.sequential.max_seeds) == (10, 30)
    # at the presets' scale: the preset's own (whose design stops on the LM's margin), and
    # for the heavy-tailed role the overrides its description gives
    presets = {
        role.name: spec
        for role, spec in bench.study_specs(["implementation-choices"], {}, "presets").items()
    }
    assert presets["lm"] == load_preset("implementations")
    assert presets["lm"].protocol.sequential is not None
    assert presets["lm"].protocol.sequential.margin == claims.IMPLEMENTATION_MARGINS["lm"]
    description = presets["lm"].description
    start = description.index('{"workload": {"kind": "linear-transformer"')
    overrides, _ = json.JSONDecoder().raw_decode(description[start:])
    assert presets["heavy"] == load_preset("implementations", overrides)
    assert presets["heavy"].protocol.sequential is not None
    assert presets["heavy"].protocol.sequential.margin == claims.IMPLEMENTATION_MARGINS["heavy"]


def test_tables() -> None:
    report = ClaimsReport(
        registry_version="0123456789ab",
        shared_rule="r",
        claims=[
            ClaimRow(
                id="fig-4",
                reference="Figure 4",
                statement="s",
                definition="d",
                parameters={},
                studies=[
                    ClaimStudy(
                        role="heterogeneous",
                        preset="quadratic",
                        workload={"hessian": "heterogeneous"},
                        study_id=3,
                        scale="quadratic (heterogeneous), 10 steps of batch 3, 1 seed",
                    ),
                    ClaimStudy(
                        role="homogeneous",
                        preset="quadratic",
                        workload={"hessian": "homogeneous"},
                        study_id=None,
                        scale=None,
                    ),
                ],
                support="inconclusive",
                numbers=["no complete study of quadratic (hessian=homogeneous)"],
                warnings=["1 seed"],
            ),
            ClaimRow(
                id="table1",
                reference="Table 1",
                statement="s",
                definition="d",
                parameters={},
                studies=[],
                support="supported",
                numbers=[],
                warnings=[],
            ),
        ],
    )
    lines = bench.format_claims(report, ["fig-4"])
    assert lines[0] == "claims registry version 0123456789ab"
    assert lines[1].split() == ["claim", "verdict", "study", "scale"]
    assert lines[2].split()[:4] == ["Figure", "4", "inconclusive", "#3"]
    assert lines[3].split()[:2] == ["quadratic", "(hessian=homogeneous)"]
    assert lines[3].endswith("no complete study")
    assert lines[-1].strip() == "warning: 1 seed"
    assert not any("Table 1" in line for line in lines)
    rows = [
        {"study_id": 3, "role": "quadratic", "status": "complete", "trials": 2, "seconds": 1.5},
        {"study_id": 4, "role": "quadratic", "status": "failed", "trials": 0, "seconds": None},
    ]
    studies = bench.format_studies(rows, 12.0)
    assert studies[1].split() == ["3", "quadratic", "complete", "2", "1.5"]
    assert studies[2].split() == ["4", "quadratic", "failed", "0", "-"]
    assert studies[-1].startswith("total wall time: 12.0 s")


def test_runs_figure_4_through_the_driver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "claims.json"
    bench.main(
        ["--only", "fig-4", "--overrides", json.dumps(TINY)]
        + ["--workdir", str(tmp_path), "--json", str(out_json)]
    )
    out = capsys.readouterr().out
    assert out.count(": complete in ") == 2, out  # one progress line per finished study
    row = next(line for line in out.splitlines() if line.startswith("Figure 4"))
    # one seed a study can decide nothing: absence of evidence is never support
    assert row.split()[2] == Support.inconclusive
    assert "quadratic (heterogeneous), 10 steps of batch 3, 1 seed" in row
    assert "1 deciding pairs, fewer than 3" in out
    report = json.loads(out_json.read_text())
    assert report["registry_version"] == claims.registry_version()
    assert out.startswith("# claims suite") and f"version {claims.registry_version()}" in out
    assert [claim["id"] for claim in report["claims"]] == ["fig-4"]
    assert [s["study_id"] for s in report["claims"][0]["studies"]] == [1, 2]
    assert [s["status"] for s in report["studies"]] == ["complete", "complete"]
    assert all(s["trials"] == 2 and s["seconds"] > 0 for s in report["studies"])
    # judged again from the recorded database alone: the same claims, nothing rerun
    again = tmp_path / "again.json"
    bench.main(
        ["--only", "fig-4", "--workdir", str(tmp_path), "--report-only", "--json", str(again)]
    )
    recorded = json.loads(again.read_text())
    assert "claims of the 2 studies recorded in" in capsys.readouterr().out
    assert recorded["claims"] == report["claims"] and recorded["recorded"] is True
    assert [s["study_id"] for s in recorded["studies"]] == [1, 2]
    assert recorded["wall_seconds"] == pytest.approx(sum(s["seconds"] for s in report["studies"]))
    with pytest.raises(SystemExit):
        bench.parse_args(["--report-only"])  # nothing recorded to judge
