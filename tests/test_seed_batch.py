"""worker.seed_batch.train_seeds: S seeds of one configuration trained as one batch equal
the S single-seed ``train`` runs, row by row, and resume exactly; plus the quadratic's
shared instance and the objective window (``TrialConfig``).

Tolerances are measured, not guessed: the quadratic's dense runs are bitwise equal and
its masked ones within 4e-7 relative (the replicated masked step multiplies in another
order); the linear transformer within 1e-8 relative (5e-6 with Muon, whose batched
Newton-Schulz reduces in another order); llama-bytes within 1e-7 over 4 steps (vmap's
batched matmuls sum in another order in float32). Wall-clock metrics (train_time,
tokens_per_s, steps_per_s) differ by design: a batch's step time is every seed's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from tests.worker_fixtures import llama_config
from worker.config import TrialConfig
from worker.seed_batch import SEED_BATCH_CHECKPOINT_FILE, check_batch, train_seeds
from worker.trainer import Metrics, train
from worker.workloads.quadratic import SHARED_INSTANCE_SEED, QuadraticWorkload

WALL_CLOCK = {"train_time", "tokens_per_s", "steps_per_s"}
QUADRATIC = {"workload": "quadratic", "lr": 0.1, "steps": 60, "batch_size": 3, "threads": 1}
QUADRATIC_RTOL = 1e-5
TRANSFORMER = {"workload": "linear-transformer", "lr": 0.01, "steps": 30, "batch_size": 8}
TRANSFORMER_RTOL = 2e-5
LLAMA_RTOL = 1e-6


def _configs(seeds: int, **fields: Any) -> list[TrialConfig]:
    return [TrialConfig(**fields, seed=seed) for seed in range(seeds)]


def _batch_rows(
    configs: list[TrialConfig], **kwargs: Any
) -> tuple[list[list[Metrics | None]], list[Metrics]]:
    """(every report's rows, the returned last rows) of one ``train_seeds`` call."""
    reports: list[list[Metrics | None]] = []
    final = train_seeds(configs, report=lambda rows, save: reports.append(list(rows)), **kwargs)
    return reports, final


def _single_rows(config: TrialConfig) -> list[Metrics]:
    rows: list[Metrics] = []
    train(config, report=lambda metrics, save: rows.append(metrics))
    return rows


def _seed_rows(reports: list[list[Metrics | None]], r: int) -> list[Metrics]:
    """Seed r's rows; after a diverged row, it is None in every later report."""
    rows = [report[r] for report in reports]
    stopped = [i for i, row in enumerate(rows) if row is not None and row["status"] == "diverged"]
    if stopped:
        assert all(row is None for row in rows[stopped[0] + 1 :])
    else:
        assert all(row is not None for row in rows)
    return [row for row in rows if row is not None]


def _assert_same_rows(batch: list[Metrics], single: list[Metrics], rtol: float) -> None:
    assert [row["step"] for row in batch] == [row["step"] for row in single]
    for mine, theirs in zip(batch, single, strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if key in WALL_CLOCK:
                continue
            if isinstance(value, str) or not math.isfinite(value):
                assert mine[key] == value or math.isnan(value) and math.isnan(mine[key]), key
            else:
                assert mine[key] == pytest.approx(value, rel=rtol, abs=1e-12), (key, mine["step"])


def _assert_batch_equals_singles(configs: list[TrialConfig], rtol: float) -> None:
    reports, final = _batch_rows(configs)
    for r, config in enumerate(configs):
        single = _single_rows(config)
        _assert_same_rows(_seed_rows(reports, r), single, rtol)
        _assert_same_rows([final[r]], [single[-1]], rtol)


@pytest.mark.parametrize(
    ("seeds", "fields"),
    [
        (4, {"variant": "dense", "base": "adamw", "objective_window": 2}),
        (1, {"variant": "dense", "base": "adamw"}),
        (3, {"variant": "skipupdate", "base": "adamw", "eval_interval": 20}),
        (3, {"variant": "magma", "base": "adamw", "eval_interval": 20, "grad_clip": 1.0}),
        (3, {"variant": "magma", "base": "rmsprop", "lr": 0.01, "metric": "log_loss_auc"}),
        (3, {"variant": "magma", "base": "sgd", "lr": 1e-4, "grad_clip": 1.0}),
        (3, {"variant": "magma", "base": "c-adamw", "instance": "shared"}),
    ],
    ids=["dense", "one-seed", "skipupdate", "magma-clip", "rmsprop", "sgd-clip", "c-adamw"],
)
def test_quadratic_batch_equals_single_runs(seeds, fields):
    _assert_batch_equals_singles(
        _configs(seeds, **{**QUADRATIC, "eval_interval": 15, **fields}), QUADRATIC_RTOL
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"variant": "dense", "base": "adamw", "eval_interval": 10},
        {"variant": "magma", "base": "adamw", "eval_interval": 10, "grad_clip": 0.5},
        {"variant": "magma", "base": "muon", "eval_interval": 15},
        {"variant": "skipupdate", "base": "c-adamw", "eval_interval": 15},
        # the condition number too: a Hessian per evaluation, seconds each
        pytest.param(
            {"variant": "magma", "base": "adamw", "steps": 2, "eval_interval": 2,
             "condition_number": True},
            marks=pytest.mark.slow,
        ),
    ],
    ids=["dense", "magma-clip", "muon", "c-adamw", "condition-number"],
)  # fmt: skip
def test_linear_transformer_batch_equals_single_runs(fields):
    seeds = 2 if fields.get("condition_number") else 3
    _assert_batch_equals_singles(
        _configs(seeds, **{**TRANSFORMER, "threads": 1, **fields}), TRANSFORMER_RTOL
    )


@pytest.mark.slow  # ~50 s on 2 busy cores: vmap's fallback for CPU attention is per sample
def test_llama_batch_equals_single_runs(token_cache_dir):
    configs = [
        llama_config(token_cache_dir, variant="magma", steps=2, eval_interval=1, seed=seed)
        for seed in range(2)
    ]
    _assert_batch_equals_singles(configs, 1e-5)


def test_llama_bytes_batch_equals_single_runs(token_cache_dir):
    """The suite's llama model (byte vocabulary, so seconds at this size), masked."""
    configs = [
        llama_config(
            token_cache_dir, model="llama-bytes", variant="magma", steps=4, eval_interval=2,
            threads=1, seed=seed,
        )
        for seed in range(2)
    ]  # fmt: skip
    _assert_batch_equals_singles(configs, LLAMA_RTOL)


#: SGD past the edge of stability on the stochastic quadratic: the seeds' losses grow at
#: rates their row sampling decides, so some stop long before others. "non-finite": the
#: factor is huge, so mostly a non-finite training loss stops a seed, between evaluation
#: points; "held-out": the validation loss above 3x its start, at one.
DIVERGING = {
    "non-finite": {"lr": 5e-4, "eval_interval": 25, "divergence_factor": 1e30},
    "held-out": {"lr": 6e-5, "eval_interval": 10, "divergence_factor": 3.0},
}


def _diverging(kind: str) -> list[TrialConfig]:
    fields = {**QUADRATIC, "variant": "dense", "base": "sgd", "steps": 100}
    return _configs(6, **{**fields, **DIVERGING[kind]})


@pytest.mark.parametrize("kind", DIVERGING)
def test_a_diverged_seed_stops_alone(kind):
    configs = _diverging(kind)
    reports, final = _batch_rows(configs)
    statuses = [row["status"] for row in final]
    assert {"diverged", "complete"} <= set(statuses), statuses  # the setup mixes both
    for r, config in enumerate(configs):
        _assert_same_rows(_seed_rows(reports, r), _single_rows(config), rtol=0)
    off_point = [row for row in final if row["step"] % configs[0].eval_interval]
    if kind == "non-finite":  # stopped between evaluation points, reported at the next
        assert off_point and all(row["log_loss_auc"] == math.inf for row in off_point)
        assert {_step(rows) for rows in reports} == {25, 50, 75, 100}
    else:
        assert not off_point


def test_check_batch_names_the_differing_fields():
    configs = _configs(2, **QUADRATIC)
    assert check_batch(configs) is configs[0]
    with pytest.raises(ValueError, match="empty"):
        train_seeds([])
    other = TrialConfig(**{**QUADRATIC, "lr": 0.2, "steps": 5}, seed=1)
    with pytest.raises(ValueError, match=r"\['lr', 'steps'\]"):
        train_seeds([configs[0], other])


class _Saver:
    """Saves the batch at every report under ``root/step-{step}``; keeps the rows."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reports: list[list[Metrics | None]] = []

    def __call__(self, rows: list[Metrics | None], save) -> None:
        self.reports.append(list(rows))
        step = max(row["step"] for row in rows if row is not None)
        save(self.root / f"step-{step}")


@pytest.mark.parametrize(
    ("configs", "resume_at"),
    [
        (_configs(3, **QUADRATIC, eval_interval=20, variant="magma", grad_clip=1.0), 20),
        (_diverging("non-finite"), 75),  # two seeds diverged, one still to
    ],
    ids=["magma", "diverging"],
)
def test_resume_mid_batch_equals_uninterrupted(tmp_path, configs, resume_at):
    saver = _Saver(tmp_path)
    final = train_seeds(configs, report=saver)
    directory = tmp_path / f"step-{resume_at}"
    assert (directory / SEED_BATCH_CHECKPOINT_FILE).exists()
    resumed: list[list[Metrics | None]] = []
    again = train_seeds(
        configs, resume_from=directory, report=lambda rows, save: resumed.append(list(rows))
    )
    later = [rows for rows in saver.reports if _step(rows) > resume_at]
    assert later and resumed
    assert [_step(rows) for rows in resumed] == [_step(rows) for rows in later]
    assert _without_wall_clock(resumed) == _without_wall_clock(later)
    assert _without_wall_clock([again]) == _without_wall_clock([final])


def _step(rows: list[Metrics | None]) -> int:
    return max(row["step"] for row in rows if row is not None)


def _without_wall_clock(reports: list[list[Metrics | None]]) -> list[list[Metrics | None]]:
    """The rows, comparable with ==: no wall-clock values, NaN as a string."""

    def comparable(row: Metrics) -> Metrics:
        return {
            k: "nan" if isinstance(v, float) and math.isnan(v) else v
            for k, v in row.items()
            if k not in WALL_CLOCK
        }

    return [[None if row is None else comparable(row) for row in rows] for rows in reports]


def test_resume_refuses_other_configs(tmp_path):
    fields = {**QUADRATIC, "steps": 10, "eval_interval": 5}
    train_seeds(_configs(2, **fields), report=_Saver(tmp_path))
    with pytest.raises(ValueError, match="holds 2 seeds, not 3"):
        train_seeds(_configs(3, **fields), resume_from=tmp_path / "step-5")
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        train_seeds(_configs(2, **{**fields, "lr": 0.3}), resume_from=tmp_path / "step-5")
    # where and how long it runs may change, as for a single trial
    longer = train_seeds(_configs(2, **{**fields, "steps": 12}), resume_from=tmp_path / "step-5")
    assert [row["step"] for row in longer] == [12, 12]


def _instance(seed: int, instance: str) -> tuple[torch.Tensor, torch.Tensor]:
    workload = QuadraticWorkload(
        TrialConfig(**QUADRATIC, seed=seed, instance=instance), torch.device("cpu")
    )
    return workload.model.hessian, workload.model.w.detach()


def test_a_shared_instance_is_one_problem_for_every_seed():
    shared = [_instance(seed, "shared") for seed in range(3)]
    per_seed = [_instance(seed, "per_seed") for seed in range(3)]
    for hessian, w0 in shared[1:]:
        assert torch.equal(hessian, shared[0][0]) and torch.equal(w0, shared[0][1])
    assert torch.equal(shared[0][0], per_seed[SHARED_INSTANCE_SEED][0])
    assert not torch.equal(per_seed[1][0], per_seed[2][0])
    assert not torch.equal(per_seed[1][1], per_seed[2][1])
    # the seeds still draw their own rows (gradient noise)
    batches = [
        QuadraticWorkload(TrialConfig(**QUADRATIC, seed=s, instance="shared"), torch.device("cpu"))
        .batch(0, 0)
        .tolist()
        for s in range(6)
    ]
    assert len({tuple(b) for b in batches}) > 1


def test_a_shared_instance_is_the_quadratics_only():
    with pytest.raises(ValidationError, match="instance: 'shared' applies to workload 'quadratic'"):
        TrialConfig(workload="linear-transformer", instance="shared")


@pytest.mark.parametrize("window", [1, 3])
def test_the_objective_averages_the_last_evaluations(window):
    config = TrialConfig(**QUADRATIC, eval_interval=10, objective_window=window, variant="dense")
    rows = _single_rows(config)
    assert len(rows) == 6
    for i, row in enumerate(rows):
        recent = [r["val_loss"] for r in rows[max(0, i - window + 1) : i + 1]]
        assert row["objective"] == pytest.approx(sum(recent) / len(recent), rel=1e-12)
    if window > 1:  # the metric itself stays raw
        assert rows[-1]["objective"] != rows[-1]["val_loss"]


def test_objective_window_must_be_positive():
    with pytest.raises(ValidationError, match="objective_window"):
        TrialConfig(objective_window=0)
