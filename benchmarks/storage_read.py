"""Latency of the study-storage reads the API and dashboards make, on a large study.

Builds one study with ``--trials`` trials (default 1,000) and ``--metrics`` metric rows
(default 100,000, spread evenly: 100 evaluations per trial) plus the event log those
writes produce (one ``metric`` event per row, two ``trial`` events per trial), inserted
in bulk through the ORM models after ``migrate()``. A second, equally large study sits
in the same tables (inserted after it) so that every query has to select its study.
The trial, metric-curve, count and best-trial reads are of the first study. Then ``ANALYZE``, and
each read is timed ``--repeats`` times on one open session (median and p95 reported):

* ``trials by objective``: a page of 100 trials of the study sorted by objective
  (nulls last, id tie-break), first page and page 6 (keyset: after page 5's last row);
* ``trials after cursor``: sorted by number, the 100 trials after the middle one;
* ``metric curve``: one trial's rows (step, objective, values) in step order;
* ``progress counts``: trials per status (GROUP BY);
* ``events after id``: the SSE poll, events of a study with id > cursor, the cursor 100
  events behind that study's head: for the *live* study (the newest events in the
  table, as for a running study) and for the *older* one (a client catching up on a
  study after which another study logged its 102,000 events);
* ``best configuration``: the configuration with the best mean over complete seeds;
* ``dashboard metric rows``: every metric row of the study, as the dashboards load them.

Two baselines, each named in the output:

* ``SELECT 1``: a round trip on the same session, the floor any query pays. The ratio
  ``x SELECT 1`` is how many round trips' worth of work a query costs;
* ``no index``: the same query after dropping the schema's secondary indexes
  (``ix_trials_*``, ``ix_metrics_trial_step``, ``ix_events_study_id``; primary keys
  stay), which is what those indexes buy.

    python benchmarks/storage_read.py                                   # SQLite file
    python benchmarks/storage_read.py --database-url \\
        postgresql+psycopg://postgres@127.0.0.1:5432/test               # PostgreSQL

With a PostgreSQL URL the benchmark creates a temporary database ``magma_bench_<hex>``
on that server (through its ``postgres`` database) and drops it at the end; the named
database itself is not touched. SQLite runs on a fresh file in a temporary directory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from studies.storage.engine import make_engine, migrate, session_factory
from studies.storage.models import Event, Metric, Study, Trial, utcnow
from studies.storage.repository import best_sql, event_log, reads
from studies.storage.scratch import temporary_database
from worker.contract import StudyStatus, WorkloadKind

SECONDARY_INDEXES = {
    "magma_trials": [
        "ix_trials_study_number",
        "ix_trials_study_status",
        "ix_trials_study_objective",
    ],
    "magma_metrics": ["ix_metrics_trial_step"],
    "magma_events": ["ix_events_study_id"],
}
STATUSES = ["complete"] * 60 + ["pruned"] * 30 + ["diverged"] * 4 + ["failed"] * 2 + ["running"] * 4
PAGE = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--trials", type=int, default=1000, help="trials in the study")
    parser.add_argument("--metrics", type=int, default=100_000, help="metric rows in the study")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per query")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


# --- the database --------------------------------------------------------------------------


def build(engine: Engine, trials: int, metrics: int, rng: random.Random) -> dict[str, Any]:
    """Two studies of ``trials`` trials and ``metrics`` metric rows each, one after the
    other; returns the ids the queries use: the first (older) study's, and under
    ``live`` the second's, whose events are the newest in the table."""
    per_trial = max(1, metrics // trials)
    sessions = session_factory(engine)
    started = utcnow() - timedelta(hours=2)
    studies: list[dict[str, Any]] = []
    for index in range(2):
        with sessions() as session, session.begin():
            study = Study(
                name=f"bench-{index}",
                spec={"name": f"bench-{index}"},
                status=StudyStatus.running.value,
                workload=WorkloadKind.llama_c4.value,
                metric="val_ppl",
                mode="min",
                runs=trials,
            )
            session.add(study)
            session.flush()
            study_id = study.id
            trial_rows = []
            for number in range(trials):
                status = rng.choice(STATUSES)
                objective = None if status in ("diverged", "failed") else rng.lognormvariate(3, 1)
                trial_rows.append(
                    {
                        "study_id": study_id,
                        "number": number,
                        "configuration": number,
                        "seed_index": 0,
                        "params": {"lr": 10 ** rng.uniform(-4, -1), "variant": "magma"},
                        "config": {"lr": 1e-3, "steps": per_trial * 10, "seed": 0},
                        "status": status,
                        "objective": objective,
                        "last_step": per_trial * 10,
                        "attempts": 1,
                        "created_at": started,
                    }
                )
            session.execute(insert(Trial), trial_rows)
            trial_ids = list(
                session.scalars(
                    select(Trial.id).where(Trial.study_id == study_id).order_by(Trial.number)
                )
            )
        metric_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []

        for trial_id in trial_ids:
            event_rows.append(
                {"study_id": study_id, "trial_id": trial_id, "kind": "trial", "payload": {}}
            )
            loss = rng.lognormvariate(3, 1) * 3
            for k in range(per_trial):
                step = (k + 1) * 10
                loss *= 0.99
                values = {
                    "step": step,
                    "objective": loss,
                    "val_loss": loss,
                    "train_loss": loss * 1.05,
                    "lr": 1e-3,
                    "tokens": step * 1024,
                    "tokens_per_s": 50_000.0,
                    "node": "node-0",
                    "status": "running",
                }
                metric_rows.append(
                    {"trial_id": trial_id, "step": step, "objective": loss, "values": values}
                )
                event_rows.append(
                    {
                        "study_id": study_id,
                        "trial_id": trial_id,
                        "kind": "metric",
                        "payload": values,
                    }
                )
            event_rows.append(
                {"study_id": study_id, "trial_id": trial_id, "kind": "trial", "payload": {}}
            )
            if len(metric_rows) >= 20_000:
                insert_rows(sessions, metric_rows, event_rows)
        insert_rows(sessions, metric_rows, event_rows)
        studies.append({"study_id": study_id, "trial_ids": trial_ids})
    analyze(engine)
    with sessions() as session:
        for study in studies:
            study["event_head"] = session.scalar(
                select(func.max(Event.id)).where(Event.study_id == study["study_id"])
            )
            study["events"] = session.scalar(
                select(func.count()).select_from(Event).where(Event.study_id == study["study_id"])
            )
        metric_rows_total = session.scalar(select(func.count()).select_from(Metric))
    info = {**studies[0], "live": studies[1], "metric_rows": metric_rows_total}
    return info


def insert_rows(
    sessions: sessionmaker[Session], metric_rows: list[dict], event_rows: list[dict]
) -> None:
    """Bulk INSERTs through the models (executemany / insertmanyvalues), then empty the
    buffers."""
    with sessions() as session, session.begin():
        if metric_rows:
            session.execute(insert(Metric), metric_rows)
        if event_rows:
            session.execute(insert(Event), event_rows)
    metric_rows.clear()
    event_rows.clear()


def analyze(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()


def drop_secondary_indexes(engine: Engine) -> None:
    with engine.begin() as connection:
        for names in SECONDARY_INDEXES.values():
            for name in names:
                connection.execute(text(f"DROP INDEX {name}"))
    analyze(engine)


# --- the reads -------------------------------------------------------------------------------


def queries(info: dict[str, Any]) -> dict[str, Callable[[Session], list[Any]]]:
    """The repository functions the API and dashboards call, as they call them."""
    study_id = info["study_id"]
    trial_ids = info["trial_ids"]
    curve_trial = trial_ids[len(trial_ids) // 2]
    middle = len(trial_ids) // 2  # trial numbers run 0.. in id order
    event_cursor = info["event_head"] - 100
    live_id, live_cursor = info["live"]["study_id"], info["live"]["event_head"] - 100

    def page(sort: str, after: tuple[float | None, int] | None = None) -> Callable:
        return lambda s: reads.trials_page(
            s, study_id, sort=sort, descending=False, status=None, after=after, limit=PAGE
        )

    cursor: list[tuple[float | None, int]] = []  # page 5's last row, found once

    def objective_cursor(s: Session) -> tuple[float | None, int]:
        if not cursor:
            last = reads.trials_page(
                s,
                study_id,
                sort="objective",
                descending=False,
                status=None,
                after=None,
                limit=5 * PAGE,
            )[-1]
            cursor.append((last.objective, last.id))
        return cursor[0]

    return {
        "SELECT 1": lambda s: list(s.execute(text("SELECT 1"))),
        "trials by objective, page 1": page("objective"),
        "trials by objective, page 6": lambda s: page("objective", objective_cursor(s))(s),
        "trials after cursor": page("number", (middle, trial_ids[middle])),
        "metric curve (1 trial)": lambda s: reads.trial_metrics(s, curve_trial),
        "progress counts": lambda s: list(reads.trial_status_counts(s, [study_id]).items()),
        "events after id, live study": lambda s: event_log.events_after(
            s, live_id, live_cursor, 500
        ),
        "events after id, older study": lambda s: event_log.events_after(
            s, study_id, event_cursor, 500
        ),
        "best configuration": lambda s: [best_sql.best_configuration_number(s, study_id, "min")],
        "dashboard metric rows": lambda s: reads.study_metric_rows(s, study_id),
    }


def time_queries(
    engine: Engine, reads: dict[str, Callable[[Session], list[Any]]], repeats: int
) -> dict[str, tuple[float, float, int]]:
    """Median and p95 milliseconds, and the row count, per query. Round-robin over the
    queries so that drift (other load on the machine) hits them all alike."""
    sessions = session_factory(engine)
    samples: dict[str, list[float]] = {name: [] for name in reads}
    rows: dict[str, int] = {}
    with sessions() as session:
        for name, read in reads.items():  # warm-up: caches, prepared plans
            for _ in range(3):
                rows[name] = len(read(session))
                session.rollback()
        for _ in range(repeats):
            for name, read in reads.items():
                started = time.perf_counter()
                read(session)
                samples[name].append((time.perf_counter() - started) * 1000)
                session.rollback()  # each read its own transaction, as an API request
    result = {}
    for name, values in samples.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        result[name] = (statistics.median(values), p95, rows[name])
    return result


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    with temporary_database(args.database_url, "storage-read.db") as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            started = time.perf_counter()
            info = build(engine, args.trials, args.metrics, rng)
            built = time.perf_counter() - started
            backend = f"{engine.dialect.name} {engine.dialect.server_version_info or ''}"
            print(
                f"{backend}: study of {args.trials} trials, {args.metrics} metric rows "
                f"and {info['events']} events (+ a second study alike; "
                f"{info['metric_rows']} metric rows in all), built in {built:.1f} s; "
                f"{args.repeats} timed runs per query, round-robin"
            )
            reads = queries(info)
            indexed = time_queries(engine, reads, args.repeats)
            drop_secondary_indexes(engine)
            bare = time_queries(engine, reads, args.repeats)
        finally:
            engine.dispose()
    floor = indexed["SELECT 1"][0]
    header = (
        f"{'query':32} {'rows':>5} {'median ms':>10} {'p95 ms':>8} {'x SELECT 1':>11} "
        f"{'no-index ms':>12} {'index speedup':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, (median, p95, count) in indexed.items():
        no_index = bare[name][0]
        speedup = "-" if name == "SELECT 1" else f"{no_index / median:13.1f}x"
        print(
            f"{name:32} {count:5d} {median:10.3f} {p95:8.3f} {median / floor:10.1f}x "
            f"{no_index:12.3f} {speedup:>14}"
        )
    print(
        "baselines: 'x SELECT 1' = median / median of a SELECT 1 round trip on the same "
        "session; 'index speedup' = median without the secondary indexes / median with them"
    )


if __name__ == "__main__":
    main()
