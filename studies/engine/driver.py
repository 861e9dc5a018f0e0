"""The driver process: claims queued studies from the database and runs them.

The database is the source of truth. A driver heartbeats the study it runs; a study
whose driver stopped heartbeating is claimed again by the next driver, which requeues
its unfinished trials (they resume from their last checkpoint) and carries on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import ray
from sqlalchemy.orm import Session, sessionmaker

from studies.engine.runner import run_study
from studies.spec import StudySpec
from studies.storage import repository as repo
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from worker.settings import get_settings

log = logging.getLogger("magma_bench.driver")


class Driver:
    def __init__(
        self,
        url: str | None = None,
        storage_path: Path | None = None,
        poll_seconds: float = 2.0,
        stale_after: float | None = None,
        heartbeat_seconds: float = 1.0,
    ) -> None:
        settings = get_settings()
        self.url = url or settings.database_url
        self.storage_path = storage_path or settings.storage
        self.poll_seconds = poll_seconds
        self.stale_after = timedelta(seconds=stale_after or settings.driver_stale_seconds)
        self.heartbeat_seconds = heartbeat_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        engine = make_engine(self.url)
        migrate(engine)
        self.sessions: sessionmaker[Session] = session_factory(engine)

    def run(self, once: bool = False) -> None:
        """Serve studies until interrupted (``once``: until no study is waiting)."""
        if not ray.is_initialized():
            settings = get_settings()
            ray.init(
                address=settings.ray_address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": settings.trial_environment()},
            )
        while True:
            with transaction(self.sessions) as session:
                study = repo.claim_study(session, self.owner, self.stale_after)
                claimed = (study.id, study.spec) if study else None
            if claimed is None:
                if once:
                    return
                time.sleep(self.poll_seconds)
                continue
            self._run(*claimed)

    def _run(self, study_id: int, spec_data: dict) -> None:
        cancelled, done = threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(study_id, cancelled, done), daemon=True
        )
        beat.start()
        try:
            spec = StudySpec.model_validate(spec_data)
            status = run_study(
                study_id,
                spec,
                self.sessions,
                self.storage_path,
                cancelled,
                run_name=f"study-{study_id}-{self.owner.rsplit(':', 1)[-1]}",
            )
            error = None
        except Exception as exc:  # a broken study must not take the driver down
            log.exception("study %s failed", study_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            done.set()
            beat.join()
        with transaction(self.sessions) as session:
            repo.finish_study(session, study_id, status, error)

    def _heartbeat(self, study_id: int, cancelled: threading.Event, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_seconds):
            with transaction(self.sessions) as session:
                if repo.heartbeat(session, study_id, self.owner) == "cancelling":
                    cancelled.set()
