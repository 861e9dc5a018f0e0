"""The driver process: claims queued studies from the database and runs them.

The database is the source of truth. A driver heartbeats each study it runs; a study
whose driver stopped heartbeating is claimed again by the next driver, which requeues
its unfinished trials (they resume from their last checkpoint) and carries on.

A driver runs up to ``MAGMA_MAX_CONCURRENT_STUDIES`` studies at once, each in a thread of
its own with its own Tune run (Tune sets its signal handlers only in the main thread, so
threads are safe for it), sharing the cluster as ``studies.engine.fairness`` describes.
Several drivers may also claim from one PostgreSQL database.
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

from studies.engine.fairness import FairShare
from studies.engine.runner import run_study
from studies.spec import StudySpec
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from studies.storage.repository import lease
from worker.contract import StudyStatus
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
        max_concurrent_studies: int | None = None,
    ) -> None:
        settings = get_settings()
        self.url = url or settings.database_url
        self.storage_path = storage_path or settings.storage
        self.poll_seconds = poll_seconds
        self.stale_after = timedelta(seconds=stale_after or settings.driver_stale_seconds)
        self.heartbeat_seconds = heartbeat_seconds
        if max_concurrent_studies is None:
            max_concurrent_studies = settings.max_concurrent_studies
        if max_concurrent_studies < 1:
            raise ValueError(
                "max_concurrent_studies: must be an integer >= 1 (studies run at once), "
                f"got {max_concurrent_studies!r}"
            )
        self.max_concurrent_studies = max_concurrent_studies
        self.share = FairShare(ray.cluster_resources)
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
        running: dict[int, threading.Thread] = {}
        while True:
            running = {sid: thread for sid, thread in running.items() if thread.is_alive()}
            claimed = None
            if len(running) < self.max_concurrent_studies:
                with transaction(self.sessions) as session:
                    study = lease.claim_study(session, self.owner, self.stale_after)
                    claimed = (study.id, study.spec) if study else None
            if claimed is not None:
                # daemon: a stopped driver leaves its studies to the next one (heartbeats end)
                thread = threading.Thread(
                    target=self._run, args=claimed, name=f"study-{claimed[0]}", daemon=True
                )
                thread.start()
                running[claimed[0]] = thread
                continue  # claim the next one at once while there is room
            if once and not running:
                return
            time.sleep(self.poll_seconds)

    def _run(self, study_id: int, spec_data: dict) -> None:
        cancelled, claim_lost, done = threading.Event(), threading.Event(), threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(study_id, cancelled, claim_lost, done), daemon=True
        )
        beat.start()
        try:
            spec = StudySpec.model_validate(spec_data)
            self.share.enter(study_id, spec)
            status = run_study(
                study_id,
                spec,
                self.sessions,
                self.storage_path,
                cancelled,
                claim_lost,
                run_name=f"study-{study_id}-{self.owner.rsplit(':', 1)[-1]}",
                limit=lambda: self.share.limit(study_id),
            )
            error = None
        except Exception as exc:  # a broken study must not take the driver down
            log.exception("study %s failed", study_id)
            status, error = StudyStatus.failed.value, f"{type(exc).__name__}: {exc}"
        finally:
            self.share.leave(study_id)
            done.set()
            beat.join()
        if not claim_lost.is_set():
            with transaction(self.sessions) as session:
                if lease.finish_study(session, study_id, status, error, owner=self.owner):
                    return
        log.warning("study %s: another driver took it over; left to it", study_id)

    def _heartbeat(
        self,
        study_id: int,
        cancelled: threading.Event,
        claim_lost: threading.Event,
        done: threading.Event,
    ) -> None:
        """Keep the claim fresh; signal a cancel, or the claim's loss (a driver that stalled
        past the stale limit and was taken over stops its trials and writes nothing more)."""
        while not done.wait(self.heartbeat_seconds):
            with transaction(self.sessions) as session:
                status = lease.heartbeat(session, study_id, self.owner)
            if status is None:
                claim_lost.set()
                return
            if status == StudyStatus.cancelling.value:
                cancelled.set()
