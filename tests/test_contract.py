"""The shared contract (``worker.contract``) and the rules built on it: one mask-seed rule for
the CLI and a study, objective metrics validated against the workload, telemetry keys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from studies.spec import StudySpec
from tests.worker_fixtures import json_objects, run_cli
from worker.config import TrialConfig
from worker.contract import (
    DEFAULT_METRIC,
    WORKLOAD_METRICS,
    WorkloadKind,
    check_metric,
    mask_seed,
    parse_telemetry_key,
    telemetry_key,
)
from worker.trainer import train

MAGMA_BENCH = Path(sys.executable).parent / "magma-bench"


def test_telemetry_keys_round_trip_and_reject_other_metrics():
    assert telemetry_key("alignment", "mlp") == "alignment/mlp"
    assert parse_telemetry_key("survival/attention") == ("survival", "attention")
    for key in ("val_loss", "alignment/", "speed/mlp", "alignment"):
        assert parse_telemetry_key(key) is None


def test_every_workload_has_a_default_metric_it_reports():
    assert set(DEFAULT_METRIC) == set(WORKLOAD_METRICS) == set(WorkloadKind.values())
    for workload, metric in DEFAULT_METRIC.items():
        assert check_metric(workload, metric) == metric


@pytest.mark.parametrize("workload", WorkloadKind.values())
def test_every_workload_reports_the_convergence_metrics(workload):
    """log_loss_auc and steps_to_target (``worker.trainer``) are computed for any workload
    from its training losses, so any study may optimise them, minimising by default."""
    for metric in ("log_loss_auc", "steps_to_target"):
        assert WORKLOAD_METRICS[workload][metric] == "min"
        spec = StudySpec(
            name="s", sampler="grid", workload={"kind": workload}, objective={"metric": metric}
        )
        assert (spec.objective.metric, spec.objective.mode) == (metric, "min")
        assert TrialConfig(workload=workload, metric=metric).metric == metric


def test_unknown_metric_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"reports no metric 'val_ppl'; allowed: \[.*'val_loss'"):
        check_metric("quadratic", "val_ppl")
    with pytest.raises(ValueError, match=r"allowed: \['log_loss_auc', 'steps_per_s', 'steps_to_t"):
        check_metric("quadratic", "auc")
    with pytest.raises(ValidationError, match=r"metric\n.*allowed: \[.*'train_loss'"):
        TrialConfig(workload="linear-transformer", metric="perplexity")


def test_spec_objective_resolves_metric_and_natural_mode():
    def objective(**spec):
        return StudySpec(name="s", sampler="grid", **spec).objective

    assert (objective().metric, objective().mode) == ("val_ppl", "min")
    quadratic = {"workload": {"kind": "quadratic"}}
    assert objective(**quadratic).metric == "val_loss"
    throughput = objective(**quadratic, objective={"metric": "steps_per_s"})
    assert (throughput.metric, throughput.mode) == ("steps_per_s", "max")
    assert objective(objective={"metric": "train_loss", "mode": "max"}).mode == "max"
    with pytest.raises(ValidationError, match=r"objective.metric: .*allowed: \["):
        objective(**quadratic, objective={"metric": "objective"})
    with pytest.raises(ValidationError, match="fixed: metric comes from objective.metric"):
        objective(fixed={"metric": "val_loss"})


def test_study_trials_carry_the_metric_and_mask_seed_rule():
    spec = StudySpec(
        name="s",
        workload={"kind": "quadratic"},
        objective={"metric": "train_loss"},
        sampler="grid",
        base_seed=11,
        seeds=2,
    )
    for seed_index in range(2):
        config = spec.complete_trial_config({}, seed_index)
        assert config["metric"] == "train_loss"
        assert config["mask_seed"] == mask_seed(11 + seed_index)
        assert config == TrialConfig(**config).model_dump(mode="json")  # complete


@pytest.mark.skipif(not MAGMA_BENCH.exists(), reason="magma-bench is not installed")
def test_cli_and_study_run_the_same_masks_for_the_same_seed(tmp_path):
    """A configuration run from ``magma-bench train`` and the same configuration stored by
    a study train identically: same mask seed, so the same masks, so the same numbers."""
    spec = StudySpec(
        name="masks",
        workload={"kind": "quadratic", "steps": 30, "eval_interval": 10},
        search={"lr": [0.05]},
        fixed={"threads": 1},
        sampler="grid",
        base_seed=5,
    )
    stored = spec.complete_trial_config({"lr": 0.05}, seed_index=0)
    from_study = train(TrialConfig(**stored))

    args = ["--workload", "quadratic", "--steps", "30", "--eval-interval", "10"]
    args += ["--lr", "0.05", "--seed", "5", "--threads", "1", "--quiet"]
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from_cli = json_objects(done.stdout)[-1]  # the final metrics
    assert stored["mask_seed"] == mask_seed(5)
    for key in ("val_loss", "survival/block0", "alignment/block1"):
        assert from_cli[key] == from_study[key], key


def test_run_key_ignores_the_masking_settings_of_a_dense_run_only() -> None:
    dense = TrialConfig(workload="quadratic", variant="dense")
    assert (
        dense.run_key()
        == dense.model_copy(
            update={"p": 0.25, "tau": 4.0, "components": "all", "granularity": "element"}
        ).run_key()
    )
    assert dense.run_key() != dense.model_copy(update={"lr": 0.1}).run_key()
    magma_run = TrialConfig(workload="quadratic", variant="magma")
    assert magma_run.run_key() != magma_run.model_copy(update={"components": "all"}).run_key()
    muon = TrialConfig(workload="quadratic", variant="dense", base="muon")  # splits by components
    assert muon.run_key() != muon.model_copy(update={"components": "all"}).run_key()
    assert muon.run_key() == muon.model_copy(update={"tau": 4.0}).run_key()


def test_run_key_ignores_algorithm_1_choices_of_a_dense_run_only() -> None:
    """score_init, momentum and decay_on_skip are masking settings: a dense arm searched
    over them is one run, a masked one is not."""
    choices = {"score_init": 0.5, "momentum": "previous", "decay_on_skip": True}
    dense = TrialConfig(workload="quadratic", variant="dense", weight_decay=0.1)
    assert dense.run_key() == dense.model_copy(update=choices).run_key()
    magma_run = dense.model_copy(update={"variant": "magma"})
    for name, value in choices.items():
        assert magma_run.run_key() != magma_run.model_copy(update={name: value}).run_key()
