"""A Tune callback that writes trial lifecycle and every reported metric row to SQL.

A Tune trial runs a chunk of one configuration's seeds (``worker.trainable``): each of
its SQL trials is marked running, gets its own seed's rows, and records the chunk's
checkpoint.

Metric rows are buffered and flushed in batches (every ``flush_rows`` rows or
``flush_seconds``), so the database is never the bottleneck however many trials run,
yet the live view lags by about a second at most. Once ``claim_lost`` is set (another
driver took the study over and requeued its trials), nothing more is written.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ray.tune import Callback
from sqlalchemy.orm import Session, sessionmaker

from studies.engine._pickling import Unpicklable
from studies.storage.engine import transaction
from studies.storage.repository import metric_ingest, trial_lifecycle
from worker.trainable import META_KEY, SEED_ROWS_KEY


class SQLRecorder(Unpicklable, Callback):
    _picklable = ("flush_rows", "flush_seconds")

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claim_lost: threading.Event | None = None,
        flush_rows: int = 200,
        flush_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.claim_lost = claim_lost or threading.Event()
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.buffer: list[tuple[int, dict[str, Any]]] = []
        self.last_flush = time.monotonic()

    def sql_trial_ids(self, trial: Any) -> list[int]:
        """The SQL trials of the Tune trial's seeds, in its rows' order; none for a trial
        that is not ours to write (anymore)."""
        if self.claim_lost.is_set():
            return []
        return trial.config.get(META_KEY, {}).get("trial_ids", [])

    def flush(self) -> None:
        if self.claim_lost.is_set():
            self.buffer = []
        if self.buffer:
            with transaction(self.sessions) as session:
                metric_ingest.add_metrics(session, self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        trial_ids = self.sql_trial_ids(trial)
        if trial_ids:
            with transaction(self.sessions) as session:
                for trial_id in trial_ids:
                    trial_lifecycle.mark_trial_running(session, trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        trial_ids = self.sql_trial_ids(trial)
        if not trial_ids:
            return
        for trial_id, row in zip(trial_ids, result[SEED_ROWS_KEY], strict=True):
            if row is not None:  # None: that seed had stopped
                keep = {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool))}
                self.buffer.append((trial_id, keep))
        if len(self.buffer) >= self.flush_rows:
            self.flush()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        trial_ids = self.sql_trial_ids(trial)
        if trial_ids:
            # Rows first: a resume from this checkpoint must not skip unrecorded rows.
            with transaction(self.sessions) as session:
                metric_ingest.add_metrics(session, self.buffer)
                for trial_id in trial_ids:
                    trial_lifecycle.record_checkpoint(session, trial_id, checkpoint.path)
            self.buffer = []
            self.last_flush = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.flush()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()
