"""The Ray Tune function trainable: one trial = one ``train_seeds()`` call, a chunk of one
configuration's seeds trained as one batch (``worker.seed_batch``).

The Tune config is the first seed's ``TrialConfig`` as a dict; the study engine's
bookkeeping lives under ``"_meta"``: ``trial_ids``, the SQL trial of each seed,
``seed_fields``, what each seed's config sets differently from the first (its seed and
mask seed), and ``resume_from``, the batch checkpoint of an earlier run of this chunk that
a restarted driver hands back. Without them the config is one seed's trial.

At every evaluation point the batch reports one Tune result with a checkpoint of the
whole batch, so ASHA can stop the chunk at a rung and a retried chunk resumes from its
last checkpoint. The result holds each seed's metrics row under ``SEED_ROWS_KEY`` (in
``trial_ids`` order, None for a seed that had stopped) and, for Tune and ASHA, the
batch's ``OBJECTIVE_KEY``: the mean objective of the seeds reported at that point, so
ASHA ranks a chunk by its seeds' mean at each rung; a seed diverging there counts once,
with its own (non-finite or huge) value, and a stopped seed no longer counts.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from worker.config import TrialConfig
from worker.contract import OBJECTIVE_KEY
from worker.seed_batch import SEED_BATCH_CHECKPOINT_FILE, train_seeds
from worker.trainer import Metrics, SaveCheckpoint

META_KEY = "_meta"
#: the result key holding each seed's metrics row (None: that seed had stopped)
SEED_ROWS_KEY = "seed_rows"


def batch_result(rows: list[Metrics | None], node: str) -> dict[str, Any]:
    """The Tune result of one evaluation point: each seed's row (with the node it ran on),
    the batch's step and its objective, the mean over the seeds reported."""
    reported = [row for row in rows if row is not None]  # never empty: a report has a seed
    return {
        OBJECTIVE_KEY: statistics.fmean(float(row[OBJECTIVE_KEY]) for row in reported),
        "step": max(int(row["step"]) for row in reported),
        SEED_ROWS_KEY: [None if row is None else {**row, "node": node} for row in rows],
    }


def trainable(config: dict[str, Any]) -> None:
    meta = config.get(META_KEY, {})
    first = {k: v for k, v in config.items() if k != META_KEY}
    configs = [TrialConfig(**{**first, **fields}) for fields in meta.get("seed_fields", [{}])]
    node = ray.get_runtime_context().get_node_id()

    reported = False

    def report(rows: list[Metrics | None], save: SaveCheckpoint) -> None:
        nonlocal reported
        reported = True
        with tempfile.TemporaryDirectory() as directory:
            save(Path(directory))
            checkpoint = tune.Checkpoint.from_directory(directory)
            tune.report(batch_result(rows, node), checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    earlier = meta.get("resume_from")
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            final = train_seeds(configs, resume_from=Path(directory), report=report)
    elif earlier and (Path(earlier) / SEED_BATCH_CHECKPOINT_FILE).exists():
        final = train_seeds(configs, resume_from=Path(earlier), report=report)
    else:
        final = train_seeds(configs, report=report)
    if not reported and all(final):
        # Resumed from its final checkpoint: Tune still needs the chunk's result.
        tune.report(batch_result(list(final), node))
