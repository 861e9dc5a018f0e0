"""A synthetic study written straight into the database, with no training: for the
render benchmark (``benchmarks/dashboard_render.py``), the page tests, and a look at the
dashboards before any study has run.

The study is a random search over variant (dense, SkipUpdate, Magma), learning rate (a
log grid), p and tau, each configuration run on ``seeds`` seeds. Its outcomes follow a
simple model: the objective is a parabola in log10(lr) around an optimum, Magma's the
widest and lowest; above an arm's divergence LR a run diverges; a few runs are pruned
or fail. Every trial reports ``metrics_per_trial`` evaluations (validation loss and
perplexity, tokens, and for masked variants the alignment/survival telemetry).
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from studies.spec import StudySpec
from studies.storage.models import Event, Metric, Trial, utcnow
from studies.storage.repository import submissions
from worker.contract import COMPONENT_LABELS, Components, Variant, telemetry_key

LRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
PS = [0.25, 0.5, 0.75]
TAUS = [0.5, 1.0, 2.0, 4.0]
VARIANTS = list(Variant.values())
#: per variant: best loss, log10 of the best LR, curvature, log10 of the divergence LR
MODEL = {
    "dense": (3.30, -2.7, 0.50, -1.6),
    "skipupdate": (3.28, -2.5, 0.40, -1.4),
    "magma": (3.22, -2.4, 0.25, -1.1),
}
#: the components the sample masks: the paper's default, attention + MLP
COMPONENTS = COMPONENT_LABELS[Components.attention_mlp.value] or ()
EVAL_INTERVAL = 10
TOKENS_PER_STEP = 4096


def sample_spec(configurations: int, seeds: int, workload: str, name: str) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": name,
            "description": "synthetic outcomes (dashboards.sample), no training",
            "workload": {"kind": workload, "steps": 200, "eval_interval": EVAL_INTERVAL},
            "search": {"variant": VARIANTS, "lr": LRS, "p": PS, "tau": TAUS},
            "sampler": "random",
            "trials": configurations,
            "seeds": seeds,
        }
    )


def write_study(
    sessions: sessionmaker[Session],
    *,
    trials: int = 1000,
    metrics_per_trial: int = 20,
    seeds: int = 2,
    workload: str = "llama-c4",
    status: str = "complete",
    seed: int = 0,
    name: str = "sample",
) -> int:
    """Writes the study, its trials and metric rows in bulk; returns the study id."""
    rng = random.Random(seed)
    configurations = max(1, trials // seeds)
    spec = sample_spec(configurations, seeds, workload, name)
    started = utcnow() - timedelta(hours=3)
    with sessions() as session, session.begin():
        study = submissions.create_study(session, spec)
        study_id = study.id
        study.status, study.started_at = status, started
        if status in ("complete", "failed", "cancelled"):
            study.finished_at = utcnow()
        trial_rows, outcomes = [], []
        for configuration in range(configurations):
            params = {
                "variant": VARIANTS[configuration % len(VARIANTS)],
                "lr": rng.choice(LRS),
                "p": rng.choice(PS),
                "tau": rng.choice(TAUS),
            }
            for seed_index in range(seeds):
                number = len(trial_rows)
                outcome = _outcome(
                    params, rng, running=status == "running" and number >= trials - 4
                )
                outcome["evaluations"] = min(
                    outcome["evaluations"] or metrics_per_trial, metrics_per_trial
                )
                outcomes.append(outcome)
                trial_rows.append(
                    {
                        "study_id": study_id,
                        "number": number,
                        "configuration": configuration,
                        "seed_index": seed_index,
                        "params": params,
                        "config": spec.complete_trial_config(params, seed_index),
                        "status": outcome["status"],
                        "objective": _objective(outcome["objective"], workload),
                        "last_step": outcome["evaluations"] * EVAL_INTERVAL,
                        "attempts": 1,
                        "created_at": started,
                        "started_at": started,
                        "finished_at": None if outcome["status"] == "running" else utcnow(),
                    }
                )
        session.execute(insert(Trial), trial_rows)
        ids = list(
            session.scalars(
                select(Trial.id).where(Trial.study_id == study_id).order_by(Trial.number)
            )
        )
        rows = []
        for trial_id, params, outcome in zip(
            ids, (r["params"] for r in trial_rows), outcomes, strict=True
        ):
            rows.extend(_metric_rows(trial_id, params, outcome, metrics_per_trial, workload, rng))
            if len(rows) >= 10_000:
                session.execute(insert(Metric), rows)
                rows.clear()
        if rows:
            session.execute(insert(Metric), rows)
        session.add(Event(study_id=study_id, kind="study", payload={"status": status}))
    return study_id


def _outcome(params: dict[str, Any], rng: random.Random, running: bool) -> dict[str, Any]:
    best, log_lr, curvature, log_diverge = MODEL[params["variant"]]
    x = math.log10(params["lr"])
    final = best + curvature * (x - log_lr) ** 2 + rng.gauss(0, 0.01)
    if params["variant"] == "magma":
        final += 0.02 * abs(params["tau"] - 2.0) + 0.03 * abs(params["p"] - 0.5)
    draw = rng.random()
    if running:
        return {"status": "running", "objective": None, "final": final, "evaluations": 5}
    if x > log_diverge + rng.gauss(0, 0.1):
        return {"status": "diverged", "objective": None, "final": final, "evaluations": 3}
    if draw < 0.05:
        return {"status": "pruned", "objective": final + 0.3, "final": final, "evaluations": 4}
    if draw < 0.06:
        return {"status": "failed", "objective": None, "final": final, "evaluations": 2}
    return {"status": "complete", "objective": final, "final": final, "evaluations": None}


def _objective(loss: float | None, workload: str) -> float | None:
    """Perplexity for the language workload, the loss itself for synthetic ones."""
    if loss is None:
        return None
    return math.exp(loss) if workload == "llama-c4" else loss


def _metric_rows(
    trial_id: int,
    params: dict[str, Any],
    outcome: dict[str, Any],
    count: int,
    workload: str,
    rng: random.Random,
) -> list[dict[str, Any]]:
    evaluations = outcome["evaluations"]
    language = workload == "llama-c4"
    rows = []
    for k in range(1, evaluations + 1):
        step = k * EVAL_INTERVAL
        # from ~10 down to the final loss, as 1/sqrt(progress)
        loss: float | None = outcome["final"] + 7.0 * (1 - math.sqrt(k / count))
        if outcome["status"] == "diverged" and k == evaluations:
            loss = None  # non-finite: stored as null
        values: dict[str, Any] = {
            "step": step,
            "tokens": step * TOKENS_PER_STEP if language else 0,
            "train_loss": None if loss is None else loss * 1.02,
            "val_loss": loss,
            "objective": _objective(loss, workload),
            "lr": params["lr"],
            "status": "running" if k < evaluations else outcome["status"],
            "node": "node-0",
        }
        if language:
            values["val_ppl"] = None if loss is None else math.exp(loss)
        if params["variant"] != "dense":
            for component in COMPONENTS:
                values[telemetry_key("alignment", component)] = min(
                    1.0, 0.55 + 0.2 * k / count + rng.gauss(0, 0.01)
                )
                values[telemetry_key("survival", component)] = params["p"] + rng.gauss(0, 0.02)
        rows.append(
            {
                "trial_id": trial_id,
                "step": step,
                "objective": values["objective"],
                "values": values,
            }
        )
    return rows


def study_sessions(url: str) -> tuple[Any, sessionmaker[Session]]:
    """An engine on a migrated database at ``url``, and its session factory."""
    from studies.storage.engine import make_engine, migrate, session_factory

    engine = make_engine(url)
    migrate(engine)
    return engine, session_factory(engine)
