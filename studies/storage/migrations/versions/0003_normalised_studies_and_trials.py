"""normalised studies and trials: study workload/metric/mode/runs columns, complete trial
configs, status CHECK constraints

- ``magma_studies`` gains ``workload``, ``metric``, ``mode`` and ``runs``, read from the
  stored spec. A spec whose ``objective.metric`` was the old placeholder ``"objective"`` (or
  unset) gets the metric its trials really optimised: ``val_ppl`` for llama-c4, else
  ``val_loss``; its mode stays as stored (``min`` by default).
- Every ``magma_trials.config`` becomes a complete ``TrialConfig`` dump: the defaults the
  code applied when those trials ran (frozen below, as of revision 0002), the trial's mask
  seed (``seed + 1_000_003`` where a config had none, the rule ``TrialConfig`` applied) and
  the study's metric.
- A status outside the lifecycle (none is known to exist) becomes ``failed``, then CHECK
  constraints keep both status columns (and the mode) to their allowed values.

This revision is a snapshot: it imports nothing from the application, so it upgrades an old
database the same way whatever the code looks like later.

Revision ID: 0003
Revises: 0002
"""

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STUDY_STATUSES = ("queued", "running", "cancelling", "cancelled", "complete", "failed")
TRIAL_STATUSES = ("queued", "running", "complete", "pruned", "diverged", "failed", "cancelled")
#: ``TrialConfig``'s defaults at revision 0002: what a field a study left unset ran with
TRIAL_DEFAULTS_AT_0002: dict[str, Any] = {
    "workload": "llama-c4",
    "model": "llama-nano",
    "seq_len": 256,
    "batch_size": 16,
    "grad_accum": 1,
    "packing": "pack",
    "train_files": None,
    "validation_files": None,
    "max_documents": None,
    "tokenizer": None,
    "eval_tokens": None,
    "cache_dir": None,
    "hessian": "heterogeneous",
    "covariates": "heavy",
    "condition_number": False,
    "steps": 300,
    "eval_interval": 50,
    "lr": 1e-3,
    "warmup_fraction": 0.1,
    "min_lr_ratio": 0.1,
    "base": "adamw",
    "variant": "magma",
    "p": 0.5,
    "tau": 2.0,
    "components": "attention+mlp",
    "granularity": "block",
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "grad_clip": None,
    "seed": 0,
    "mask_seed": None,
    "device": "auto",
    "bf16": True,
    "compile": False,
    "threads": None,
    "divergence_factor": 3.0,
}
#: what each workload's trials reported as their objective at revision 0002
OBJECTIVE_AT_0002 = {
    "llama-c4": "val_ppl",
    "quadratic": "val_loss",
    "linear-transformer": "val_loss",
}
MASK_SEED_OFFSET_AT_0002 = 1_000_003


JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _planned_runs(spec: dict[str, Any]) -> int:
    """configurations x seeds, as ``StudySpec`` counted them at revision 0002."""

    def choices(value: Any) -> int:
        if isinstance(value, dict):  # a range: its two ends on a grid
            return 2
        return len(value) if isinstance(value, list) else 1

    search = spec.get("search") or {}
    if spec.get("sampler") == "grid":
        configurations = math.prod(choices(v) for v in search.values()) if search else 1
    else:
        configurations = int(spec.get("trials") or 1)
    return configurations * int(spec.get("seeds") or 1)


def _complete_config(config: dict[str, Any], metric: str) -> dict[str, Any]:
    full = {**TRIAL_DEFAULTS_AT_0002, **config}
    if full["mask_seed"] is None:
        full["mask_seed"] = int(full["seed"]) + MASK_SEED_OFFSET_AT_0002
    full["metric"] = metric
    return full


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("magma_studies") as batch:
        batch.add_column(sa.Column("workload", sa.String(40), nullable=True))
        batch.add_column(sa.Column("metric", sa.String(60), nullable=True))
        batch.add_column(sa.Column("mode", sa.String(3), nullable=True))
        batch.add_column(sa.Column("runs", sa.Integer(), nullable=True))

    studies = sa.table(
        "magma_studies",
        sa.column("id", sa.Integer),
        sa.column("spec", JSON),
        sa.column("status", sa.String),
        sa.column("workload", sa.String),
        sa.column("metric", sa.String),
        sa.column("mode", sa.String),
        sa.column("runs", sa.Integer),
    )
    trials = sa.table(
        "magma_trials",
        sa.column("id", sa.Integer),
        sa.column("study_id", sa.Integer),
        sa.column("config", JSON),
        sa.column("status", sa.String),
        sa.column("error", sa.Text),
    )
    metric_of: dict[int, str] = {}
    for study_id, raw in bind.execute(sa.select(studies.c.id, studies.c.spec)).all():
        spec = _json(raw)
        workload = (spec.get("workload") or {}).get("kind", "llama-c4")
        objective = dict(spec.get("objective") or {})
        if objective.get("metric") in (None, "objective"):
            objective["metric"] = OBJECTIVE_AT_0002.get(workload, "val_loss")
        objective["mode"] = objective.get("mode") or "min"
        spec["objective"] = objective
        metric_of[study_id] = objective["metric"]
        bind.execute(
            studies.update()
            .where(studies.c.id == study_id)
            .values(
                spec=spec,
                workload=workload,
                metric=objective["metric"],
                mode=objective["mode"],
                runs=_planned_runs(spec),
            )
        )
    rows = bind.execute(sa.select(trials.c.id, trials.c.study_id, trials.c.config)).all()
    for trial_id, study_id, raw in rows:
        complete = _complete_config(_json(raw) or {}, metric_of[study_id])
        bind.execute(trials.update().where(trials.c.id == trial_id).values(config=complete))

    bind.execute(
        studies.update().where(studies.c.status.not_in(STUDY_STATUSES)).values(status="failed")
    )
    bind.execute(
        trials.update()
        .where(trials.c.status.not_in(TRIAL_STATUSES))
        .values(status="failed", error="status outside the lifecycle before migration 0003")
    )

    with op.batch_alter_table("magma_studies") as batch:
        for name in ("workload", "metric", "mode", "runs"):
            batch.alter_column(name, nullable=False)
        batch.create_check_constraint("ck_studies_status", _one_of("status", STUDY_STATUSES))
        batch.create_check_constraint("ck_studies_mode", _one_of("mode", ("min", "max")))
    with op.batch_alter_table("magma_trials") as batch:
        batch.create_check_constraint("ck_trials_status", _one_of("status", TRIAL_STATUSES))


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def downgrade() -> None:
    with op.batch_alter_table("magma_trials") as batch:
        batch.drop_constraint("ck_trials_status", type_="check")
    with op.batch_alter_table("magma_studies") as batch:
        batch.drop_constraint("ck_studies_mode", type_="check")
        batch.drop_constraint("ck_studies_status", type_="check")
        for name in ("runs", "mode", "metric", "workload"):
            batch.drop_column(name)
