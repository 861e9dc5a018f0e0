"""The claims report (``studies.analysis.claims``): each claim's test on hand-built
trials with hand-computed verdicts, how studies are matched to claims, and the README's
"Claims" table against the registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dashboards.views import LRWindowOptions
from studies.analysis import claims, claims_report
from studies.analysis.claim_rules import Finding, StudyView, Support
from studies.analysis.claims import CLAIMS, CLAIMS_BY_ID, Role
from studies.analysis.objective import Mode
from studies.records import ArmSearch, BracketSearch, TrialRecord
from tests.dashboards_fixtures import Rows


def decide(claim_id: str, studies: dict[str, StudyView]) -> Finding:
    """The registry's rule for ``claim_id``, with its parameters, on these studies."""
    return CLAIMS_BY_ID[claim_id].decide(studies)


README = Path(__file__).resolve().parent.parent / "README.md"
#: dense per seed; a masked arm is these times a factor, so every pair has the same ratio
DENSE = (10.0, 20.0, 40.0)


@dataclass
class Study:
    """A ``claims.StudyView``: what a claim reads of a study."""

    trials: list[TrialRecord]
    spec: dict[str, Any] = field(default_factory=dict)
    mode: Mode = "min"
    id: int = 1
    bracket: BracketSearch | None = None


def arms(rows: Rows, factor: float, *, base: str = "adamw", **params: Any) -> None:
    """The dense arm (DENSE) and the magma arm (DENSE x factor) of ``base``, 3 seeds."""
    for seed, dense in enumerate(DENSE):
        rows.add(dense, seed=seed, base=base, variant="dense", lr=1e-3, **params)
        rows.add(dense * factor, seed=seed, base=base, variant="magma", lr=1e-3, **params)


def test_table1_is_supported_when_every_base_is_better_and_contradicted_by_one_worse() -> None:
    rows = Rows()
    arms(rows, 0.9)  # ln(0.9) every seed: -10.0%, an interval of zero width
    found = decide("table1", {"study": Study(rows.trials())})
    assert found.support == Support.supported
    assert found.numbers[0].startswith("adamw+magma vs adamw: -10.0% [-10.0%, -10.0%] better")
    # one base worse (+10%) outweighs the other's gain
    arms(rows, 1.1, base="rmsprop")
    found = decide("table1", {"study": Study(rows.trials())})
    assert found.support == Support.contradicted
    assert "rmsprop+magma vs rmsprop: +10.0% [+10.0%, +10.0%] worse" in found.numbers[1]


def confirm(rows: Rows, factor: float) -> None:
    """A bracket study's confirmation stage: dense and magma rerun on fresh seeds 3 to 5
    (DENSE, and DENSE x factor), as configurations of their own marked ``stage: confirm``."""
    for variant, scale in (("dense", 1.0), ("magma", factor)):
        configuration = max(row["configuration"] for row in rows.trial_rows) + 1
        for seed, dense in enumerate(DENSE, start=3):
            rows.add(dense * scale, seed=seed, base="adamw", variant=variant, lr=1e-3)
            row = rows.trial_rows[-1]
            row["configuration"] = configuration
            row["params"] = {**row["params"], "stage": "confirm"}


def test_table1_takes_the_confirmation_stage_verdict_when_there_is_one() -> None:
    rows = Rows()
    arms(rows, 0.9)  # the selection stage: -10% better
    confirm(rows, 1.0)  # fresh seeds: no difference at all
    found = decide("table1", {"study": Study(rows.trials())})
    assert found.support == Support.inconclusive
    assert found.numbers[0].startswith("adamw+magma vs adamw: -10.0% [-10.0%, -10.0%] better")
    assert (
        "; confirmation: +0.0% [+0.0%, +0.0%] no detectable difference at 3 seeds"
        in (found.numbers[0])
    )
    assert any(w.startswith("the confirmation stage says +0.0%") for w in found.warnings)


def test_table1_with_one_seed_is_inconclusive_and_says_why() -> None:
    rows = Rows()
    rows.add(10.0, base="adamw", variant="dense", lr=1e-3)
    rows.add(9.0, base="adamw", variant="magma", lr=1e-3)
    found = decide("table1", {"study": Study(rows.trials())})
    assert found.support == Support.inconclusive
    assert "no detectable difference at 1 seed" in found.numbers[0]
    assert any("only 1 seed paired" in w for w in found.warnings)
    # with several bases, each warning names its arm
    rows.add(10.0, base="rmsprop", variant="dense", lr=1e-3)
    rows.add(9.0, base="rmsprop", variant="magma", lr=1e-3)
    found = decide("table1", {"study": Study(rows.trials())})
    assert {w.split(":")[0] for w in found.warnings} == {"adamw+magma", "rmsprop+magma"}
    empty = decide("table1", {"study": Study([])})
    assert empty.support == Support.inconclusive


def sensitivity_rows(centre: float, seeds: int = 1, **cells: float | list[float]) -> Rows:
    """p {0.25, 0.5, 0.75} x tau {0.5, 1, 2, 4}, ``seeds`` seeds, every objective 20 but
    tau=0.5's (30, outside the neighbourhood) and ``cells`` (``p0.25_tau1=21.0``, or one
    value per seed)."""
    rows = Rows()
    for p in (0.25, 0.5, 0.75):
        for tau in (0.5, 1.0, 2.0, 4.0):
            value = cells.get(f"p{p:g}_tau{tau:g}", 30.0 if tau == 0.5 else 20.0)
            if (p, tau) == (0.5, 2.0):
                value = centre
            values = value if isinstance(value, list) else [value] * seeds
            for seed, objective in enumerate(values):
                rows.add(objective, seed=seed, base="rmsprop", variant="magma", lr=1e-3, p=p,
                         tau=tau)  # fmt: skip
    return rows


def test_fig_a1_spread_within_the_tolerance_is_supported_beyond_it_contradicted() -> None:
    # 9 cells (p 0.25-0.75, tau 1-4): 20 but one 20.3, spread 0.3 / 20 = 1.50% <= 2%
    found = decide(
        "fig-a1", {"study": Study(sensitivity_rows(20.0, **{"p0.75_tau4": 20.3}).trials())}
    )
    assert found.support == Support.supported
    assert found.numbers[0] == "spread 1.50% of the best cell over 9 cells (tolerance 2%)"
    assert "1 seed(s) a cell" in found.warnings[0]
    # one cell at 21: 1 / 20 = 5.00% (tau=0.5's 30 is outside the neighbourhood either way),
    # but at 1 seed no paired interval can tell it from seed noise
    found = decide(
        "fig-a1", {"study": Study(sensitivity_rows(20.0, **{"p0.25_tau1": 21.0}).trials())}
    )
    assert found.support == Support.inconclusive
    assert found.numbers[0].startswith("spread 5.00% ")
    assert found.numbers[2].startswith("worst cell vs best: +5.0% [no interval]")


def test_fig_a1_is_contradicted_only_by_a_spread_beyond_seed_noise() -> None:
    # 3 seeds, the worst cell 21 on every seed against the best's 20: the paired change is
    # +5.0% on each seed, so its interval is [+5.0%, +5.0%]: detectably worse
    rows = sensitivity_rows(20.0, seeds=3, **{"p0.25_tau1": 21.0})
    found = decide("fig-a1", {"study": Study(rows.trials())})
    assert found.support == Support.contradicted
    assert found.numbers[0].startswith("spread 5.00% ")
    assert found.numbers[2] == "worst cell vs best: +5.0% [+5.0%, +5.0%] worse"
    assert found.warnings == ()
    # the same mean, 21, from 18, 21, 24 (ratios 0.9, 1.05, 1.2): the interval spans 0
    rows = sensitivity_rows(20.0, seeds=3, **{"p0.25_tau1": [18.0, 21.0, 24.0]})
    found = decide("fig-a1", {"study": Study(rows.trials())})
    assert found.support == Support.inconclusive
    assert "no detectable difference at 3 seeds" in found.numbers[2]


def test_fig_a1_without_the_centre_is_inconclusive() -> None:
    rows = Rows()
    for tau in (1.0, 2.0):
        rows.add(20.0, base="rmsprop", variant="magma", lr=1e-3, p=0.25, tau=tau)
    found = decide("fig-a1", {"study": Study(rows.trials())})
    assert found.support == Support.inconclusive
    assert found.numbers == ("p=0.5, tau=2 was not run with magma",)


def window_rows(dense: list[float | None], magma: list[float | None]) -> Rows:
    """lr 1e-4 to 1 by decades, 1 seed; None diverged."""
    rows = Rows()
    for variant, values in (("dense", dense), ("magma", magma)):
        for lr, value in zip((1e-4, 1e-3, 1e-2, 1e-1, 1.0), values, strict=True):
            status = "diverged" if value is None else "complete"
            rows.add(value, status=status, base="adamw", variant=variant, lr=lr)
    return rows


# Windows that end at a diverged LR or the grid's end, never by interpolation: magma
# 1e-4 to 1e-1 = 3 decades (reaching the grid's low end), dense 1e-3 to 1e-2 = 1 decade.
WIDE = [5.0, 5.0, 5.0, 5.0, None]
NARROW = [None, 5.0, 5.0, None, None]


@pytest.mark.parametrize(
    ("dense", "magma", "support", "numbers"),
    [
        (NARROW, WIDE, Support.supported, "3.00 vs 1.00 decades"),
        (WIDE, NARROW, Support.contradicted, "1.00 vs 3.00 decades"),
        # magma narrower, but its window reaches the grid's end: it may be wider
        ([5.0] * 5, WIDE, Support.inconclusive, "3.00 vs 4.00 decades"),
    ],
)
def test_fig_a3_compares_window_widths(
    dense: list[float | None], magma: list[float | None], support: Support, numbers: str
) -> None:
    found = decide("fig-a3", {"study": Study(window_rows(dense, magma).trials())})
    assert found.support == support
    assert found.numbers == (f"adamw+magma vs adamw: {numbers}",)
    assert "1 seed(s): the windows are drawn through seed noise" in found.warnings


def two(heavy: float, light: float) -> dict[str, Study]:
    rows = {name: Rows() for name in ("heavy", "light")}
    arms(rows["heavy"], heavy)
    arms(rows["light"], light)
    return {name: Study(r.trials()) for name, r in rows.items()}


def test_fig_3_needs_heavy_better_and_by_more_than_light() -> None:
    found = decide("fig-3", two(heavy=0.8, light=0.99))  # -20% vs -1%
    assert found.support == Support.supported
    assert found.numbers[0].startswith("heavy: adamw+magma vs adamw: -20.0% [-20.0%, -20.0%]")
    assert found.numbers[1].startswith("light: adamw+magma vs adamw: -1.0% ")
    assert decide("fig-3", two(heavy=0.8, light=0.7)).support == Support.contradicted
    assert decide("fig-3", two(heavy=1.1, light=1.0)).support == Support.contradicted
    # light no better, heavy no different (an interval around 0): nothing either way
    rows = {name: Rows() for name in ("heavy", "light")}
    for seed, (dense, masked) in enumerate([(10.0, 9.0), (20.0, 22.0), (40.0, 40.0)]):
        rows["heavy"].add(dense, seed=seed, base="adamw", variant="dense", lr=1e-3)
        rows["heavy"].add(masked, seed=seed, base="adamw", variant="magma", lr=1e-3)
    arms(rows["light"], 1.0)
    found = decide("fig-3", {name: Study(r.trials()) for name, r in rows.items()})
    assert found.support == Support.inconclusive


def test_fig_4_needs_heterogeneous_better_and_homogeneous_within_the_margin() -> None:
    def run(hetero: float, homo: float) -> claims.Finding:
        studies = two(hetero, homo)
        return decide("fig-4", {"heterogeneous": studies["heavy"], "homogeneous": studies["light"]})

    # +1% on the homogeneous: its interval [+1%, +1%] lies within +-5%
    assert run(0.8, 1.01).support == Support.supported
    # -10% on the homogeneous: wholly beyond -5%, so not neutral
    assert run(0.8, 0.9).support == Support.contradicted
    assert run(1.2, 1.0).support == Support.contradicted
    assert run(1.0, 1.0).support == Support.inconclusive


def components_rows(all_factor: float) -> Rows:
    """rmsprop dense (DENSE, once per components value, as the preset runs it) and magma on
    attention (x0.95), attention+mlp (x0.9) and all (x ``all_factor``), 3 seeds."""
    rows = Rows()
    factors = {"attention": 0.95, "attention+mlp": 0.9, "all": all_factor}
    for components, factor in factors.items():
        for seed, dense in enumerate(DENSE):
            common = {"base": "rmsprop", "lr": 1e-3, "components": components}
            rows.add(dense, seed=seed, variant="dense", **common)
            rows.add(dense * factor, seed=seed, variant="magma", **common)
    return rows


def test_table_a1_attention_mlp_best_and_better_than_dense() -> None:
    found = decide("table-a1", {"study": Study(components_rows(0.95).trials())})
    assert found.support == Support.supported
    # values in alphabetical order; 0.9 / 0.95 - 1 = -5.26% against both all and attention
    assert found.numbers[0].startswith("components=attention+mlp vs components=all: -5.3% ")
    assert found.numbers[1].startswith("components=attention+mlp vs components=attention: -5.3%")
    assert found.numbers[-1].startswith(
        "rmsprop+magma (components=attention+mlp) vs rmsprop: -10.0% [-10.0%, -10.0%] better"
    )
    # all at x0.8: attention+mlp is 0.9 / 0.8 - 1 = +12.5% worse than it
    found = decide("table-a1", {"study": Study(components_rows(0.8).trials())})
    assert found.support == Support.contradicted
    assert found.numbers[0].startswith("components=attention+mlp vs components=all: +12.5% ")


def granularity_rows(block: float) -> Rows:
    """rmsprop skipupdate at DENSE; magma x0.9 at element, x0.99 at row and column, and x
    ``block`` at block, 3 seeds."""
    rows = Rows()
    factors = {"element": 0.9, "row": 0.99, "column": 0.99, "block": block}
    for granularity, factor in factors.items():
        for seed, dense in enumerate(DENSE):
            common = {"base": "rmsprop", "lr": 1e-3, "granularity": granularity}
            rows.add(dense, seed=seed, variant="skipupdate", **common)
            rows.add(dense * factor, seed=seed, variant="magma", **common)
    return rows


def test_table_a2_block_best_or_tied_and_damping_better() -> None:
    # block ties element exactly (no detectable difference), beats row and column
    found = decide("table-a2", {"study": Study(granularity_rows(0.9).trials())})
    assert found.support == Support.supported
    assert found.numbers[-1].startswith(
        "rmsprop+magma (granularity=block) vs rmsprop+skipupdate (granularity=block): -10.0%"
    )
    # block at x0.99 against element at x0.9: 0.99 / 0.9 - 1 = +10.0% worse
    found = decide("table-a2", {"study": Study(granularity_rows(0.99).trials())})
    assert found.support == Support.contradicted
    # column, element, row: alphabetical
    assert found.numbers[1].startswith("granularity=block vs granularity=element: +10.0% ")


def one_lr_stopped(status: str, *arms: dict[str, Any]) -> BracketSearch:
    """A bracket search whose first round ran one LR, 1e-3, and ``status`` stopped it
    there for every arm (initial_points 1, max_extensions 0)."""
    searches = tuple(ArmSearch(arm, status, (1e-3,), 1e-3, None) for arm in arms)  # type: ignore[arg-type]
    return BracketSearch(done=True, rounds=1, max_extensions=0, arms=searches)


def test_an_unbracketed_arm_is_a_warning_of_the_claims_that_compare_it() -> None:
    rows = Rows()
    arms(rows, 0.9)
    bracket = one_lr_stopped(
        "max_extensions",
        {"base": "adamw", "variant": "dense"},
        {"base": "adamw", "variant": "magma"},
    )
    found = decide("table1", {"study": Study(rows.trials(), bracket=bracket)})
    assert found.support == Support.supported  # a warning qualifies it, as ever
    assert found.warnings == tuple(
        f"{label}: best LR 0.001 is the only one tested; "
        "the search stopped at max_extensions=0 before bracketing it"
        for label in ("adamw", "adamw+magma")
    )
    # the components claim compares configurations itself: each search of both arms
    variants = ("magma", "dense")
    values = ("attention", "attention+mlp", "all")
    searched = [
        {"base": "rmsprop", "variant": v, "components": c} for v in variants for c in values
    ]
    bracket = one_lr_stopped("caps", *searched)
    found = decide("table-a1", {"study": Study(components_rows(0.95).trials(), bracket=bracket)})
    assert found.support == Support.supported
    assert found.warnings == tuple(
        f"rmsprop{'+magma' if v == 'magma' else ''} (components={c}): best LR 0.001 is the only "
        "one tested; the search stopped at the run cap (the study's runs or the server's "
        "max_trials, whichever is lower) before bracketing it"
        for v in variants
        for c in values
    )
    # the LR-window claim: magma's best (the lowest of its tied LRs) is the grid's smallest
    lrs = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    bracket = BracketSearch(
        done=True,
        rounds=3,
        max_extensions=2,
        arms=(
            ArmSearch({"base": "adamw", "variant": "dense"}, "bracketed", lrs, 1e-3, 5.0),
            ArmSearch({"base": "adamw", "variant": "magma"}, "caps", lrs, 1e-4, 5.0),
        ),
    )
    found = decide("fig-a3", {"study": Study(window_rows(NARROW, WIDE).trials(), bracket=bracket)})
    assert found.support == Support.supported
    assert (
        "adamw+magma: best LR 0.0001 is the smallest tested; the search stopped at the run cap "
        "(the study's runs or the server's max_trials, whichever is lower) before bracketing it"
    ) in found.warnings
    assert not any(w.startswith("adamw: best LR") for w in found.warnings)


def test_evaluate_marks_a_claim_without_its_study_inconclusive() -> None:
    rows = Rows()
    arms(rows, 0.9)
    table1 = Role("study", "paper-table1")
    results = claims.evaluate({table1: Study(rows.trials())})
    by_id = {result.claim.id: result for result in results}
    assert [r.claim.id for r in results] == [claim.id for claim in CLAIMS]
    assert by_id["table1"].finding.support == Support.supported
    light = by_id["fig-3"]
    assert light.finding.support == Support.inconclusive
    assert light.finding.numbers == (
        "no complete study of heavy-tailed (covariates=heavy) or heavy-tailed (covariates=light)",
    )


def test_roles_match_a_study_by_its_preset_name_and_workload() -> None:
    light = Role("light", "heavy-tailed", (("covariates", "light"),))
    spec = {"name": "heavy-tailed", "workload": {"covariates": "light"}}
    assert light.matches(spec)
    assert not light.matches({**spec, "workload": {"covariates": "heavy"}})
    assert not light.matches({**spec, "name": "other"})
    assert {role.preset for role in claims.roles()} == {
        "paper-table1",
        "sensitivity-p-tau",
        "lr-window",
        "heavy-tailed",
        "quadratic",
        "components",
        "granularity",
    }


def test_scale_summarises_the_workload_and_seeds() -> None:
    spec = {
        "seeds": 2,
        "workload": {"kind": "llama-c4", "model": "llama-nano", "steps": 200, "batch_size": 4}
        | {"seq_len": 64},
    }
    assert claims_report.scale(spec) == "llama-c4 llama-nano, 200 steps of 4 x 64 tokens, 2 seeds"
    quadratic = {"seeds": 1, "workload": {"kind": "quadratic", "hessian": "homogeneous"}}
    quadratic["workload"] |= {"steps": 500, "batch_size": 3}
    assert claims_report.scale(quadratic) == "quadratic (homogeneous), 500 steps of batch 3, 1 seed"


def test_the_readme_holds_the_table_generated_from_the_registry() -> None:
    """The README's "Claims" table is generated (``python -m
    studies.analysis.claims_report README.md``): the file holds exactly what that writes."""
    text = README.read_text()
    assert claims_report.with_table(text) == text
    table = claims_report.markdown_table()
    assert table in text
    # one row per claim, in the registry's order, each with its definition
    rows = table.splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| {c.reference}" for c in CLAIMS]
    assert all(c.definition in row for c, row in zip(CLAIMS, rows, strict=True))


def test_the_report_generator_rewrites_only_the_table(tmp_path: Path) -> None:
    stale = (
        f"intro\n{claims_report.TABLE_START}\n| old | table |\n{claims_report.TABLE_END}\nrest\n"
    )
    path = tmp_path / "README.md"
    path.write_text(stale)
    assert claims_report.main([str(path)]) == 0
    written = path.read_text()
    assert written.startswith("intro\n") and written.endswith("rest\n")
    assert "| old | table |" not in written and claims_report.markdown_table() in written
    with pytest.raises(ValueError, match="markers"):
        claims_report.with_table("no markers here")


def test_the_registry_version_changes_with_a_threshold() -> None:
    """A threshold moved after seeing the data is a new version."""
    version = claims.registry_version()
    assert len(version) == 12 and version == claims.registry_version()
    original = CLAIMS_BY_ID["fig-4"]
    moved = dataclasses.replace(
        original, parameters={**original.parameters, "neutral_margin": 0.10}
    )
    try:
        claims.CLAIMS = tuple(moved if c is original else c for c in CLAIMS)
        claims.registry_version.cache_clear()
        assert claims.registry_version() != version
    finally:
        claims.CLAIMS = CLAIMS
        claims.registry_version.cache_clear()
    assert claims.registry_version() == version


def test_the_thresholds_are_the_ones_the_definitions_state() -> None:
    text = {claim.id: claim.definition for claim in CLAIMS}
    given = {claim.id: claim.parameters for claim in CLAIMS}
    assert f"<= {given['fig-a1']['spread_tolerance']:.0%}" in text["fig-a1"]
    assert f"+-{given['fig-4']['neutral_margin']:.0%}" in text["fig-4"]
    # Figure A3's windows are the lr-window page's default ones
    assert LRWindowOptions().delta == given["fig-a3"]["window_delta"]
