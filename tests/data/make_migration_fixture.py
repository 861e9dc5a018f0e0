"""Build ``tests/data/main-7519638.sqlite``: a database made by main at 7519638 with real
studies in it, the "before" state that ``tests/test_migrations.py`` upgrades.

Everything in the file is written by the OLD code: its migrations (0001, 0002) create the
schema, its API (in-process, FastAPI's TestClient) queues the studies, its real driver
(``magma-bench driver --once``, a local Ray) runs them, and its repository cancels two.
Optuna's RDB tables are in the file too, written by the old driver as it ran.

Re-run it against the old commit, never against the working tree (the script refuses
unless ``studies`` is imported from the checkout it runs in, at commit 7519638)::

    git worktree add /tmp/main-before 7519638
    cd /tmp/main-before
    PYTHONPATH=/tmp/main-before /work/main/.venv/bin/python \\
        /work/main/tests/data/make_migration_fixture.py \\
        --out /work/main/tests/data/main-7519638.sqlite
    cd /work/main && git worktree remove --force /tmp/main-before

``PYTHONPATH`` (ahead of the venv's editable install of the current tree) and the working
directory make this process, the driver subprocess and its Ray workers import the old
modules; the script prints ``studies.__file__`` to show it. Two CPUs: about 3 minutes.
Then update the provenance (sha256, size, contents: the summary printed last) in
``tests/data/README.md``. Trial outcomes (pruned or not, how far the cancelled study got)
depend on timing, so a rebuilt file differs in detail; the tests read it, not constants.

Contents: seven studies, each covering something a migration has to carry over:

* ``grid-asha``: quadratic grid (3 LRs x dense/magma, 2 seeds, ASHA): complete + pruned
* ``diverged``: LR 1e3 with AdamW and SGD: diverged, objectives ~1e9 and +inf (null)
* ``tpe-val-loss``: TPE over a log range (float params), explicit metric ``val_loss``
* ``llama-nano``: a tiny llama-c4 grid (llama fields in every trial config)
* ``cancel-running``: cancelled while running: cancelled trials with partial curves
* ``queued``: submitted with an Idempotency-Key, never run
* ``cancel-queued``: cancelled while queued

Every spec but ``tpe-val-loss`` has the old default objective metric ``"objective"``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

OLD_COMMIT = "7519638"
DEFAULT_OUT = Path(__file__).resolve().parent / f"main-{OLD_COMMIT}.sqlite"

QUADRATIC = {"kind": "quadratic", "steps": 40, "eval_interval": 10, "batch_size": 3}

#: run by the driver, in this order (it claims studies by id)
RUN: list[dict[str, Any]] = [
    {
        "name": "grid-asha",
        "workload": QUADRATIC,
        "search": {"lr": [0.1, 0.03, 1e-4], "variant": ["dense", "magma"]},
        "sampler": "grid",
        "seeds": 2,
        "base_seed": 5,
        "max_concurrent": 2,
        "fixed": {"threads": 1},
        "early_stopping": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
    },
    {
        "name": "diverged",
        "workload": QUADRATIC,
        "search": {"base": ["adamw", "sgd"]},
        "sampler": "grid",
        "max_concurrent": 2,
        "fixed": {"threads": 1, "variant": "dense", "lr": 1e3},
    },
    {
        "name": "tpe-val-loss",
        "description": "explicit objective metric, float params from a log range",
        "workload": QUADRATIC,
        "search": {"lr": {"low": 1e-3, "high": 0.3, "log": True}, "variant": ["magma"]},
        "sampler": "tpe",
        "trials": 3,
        "max_concurrent": 2,
        "fixed": {"threads": 1, "p": 0.5},
        "objective": {"metric": "val_loss", "mode": "min"},
    },
    {
        "name": "llama-nano",
        "workload": {
            "kind": "llama-c4",
            "model": "llama-nano",
            "steps": 10,
            "batch_size": 2,
            "seq_len": 32,
            "eval_tokens": 256,
            "eval_interval": 5,
        },
        "search": {"variant": ["dense", "magma"]},
        "sampler": "grid",
        "max_concurrent": 2,
        "fixed": {"threads": 1, "lr": 3e-3},
    },
    {
        # long enough to be cancelled mid-run (see cancel_when_running)
        "name": "cancel-running",
        "workload": {**QUADRATIC, "steps": 20000, "eval_interval": 10},
        "search": {"lr": [0.1, 0.03, 0.01]},
        "sampler": "grid",
        "max_concurrent": 2,
        "fixed": {"threads": 1, "variant": "dense"},
    },
]
#: submitted after the driver has finished
LATER: list[tuple[dict[str, Any], str | None]] = [
    (
        {
            "name": "queued",
            "workload": QUADRATIC,
            "search": {"lr": {"low": 1e-3, "high": 0.1, "log": True}},
            "sampler": "random",
            "trials": 4,
        },
        "fixture-queued",
    ),
    ({"name": "cancel-queued", "workload": QUADRATIC, "sampler": "grid", "seeds": 3}, None),
]


def check_old_code(allow_other_commit: bool) -> str:
    import studies

    print(f"studies.__file__ = {studies.__file__}", flush=True)
    here = Path.cwd().resolve()
    if not Path(studies.__file__).resolve().is_relative_to(here):
        sys.exit(f"studies is imported from {studies.__file__}, not from {here}: set PYTHONPATH")
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=here,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(f"checkout {here} at {commit}{' (modified!)' if dirty else ''}", flush=True)
    if not commit.startswith(OLD_COMMIT) and not allow_other_commit:
        sys.exit(f"expected a checkout of {OLD_COMMIT}, got {commit}")
    return commit


def submit(client: Any, spec: dict[str, Any], key: str | None = None) -> int:
    headers = {"Idempotency-Key": key} if key else {}
    response = client.post("/api/v1/studies", json=spec, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def cancel_when_running(url: str, study_id: int, stop: threading.Event) -> None:
    """Cancel ``study_id`` through the repository once one of its trials has reported."""
    from sqlalchemy import func, select

    from studies.storage.engine import make_engine, session_factory, transaction
    from studies.storage.models import Metric, Study, Trial
    from studies.storage.repository import submissions

    engine = make_engine(url)
    sessions = session_factory(engine)
    try:
        while not stop.wait(0.5):
            with sessions() as session:
                status = session.scalar(select(Study.status).where(Study.id == study_id))
                rows = session.scalar(
                    select(func.count(Metric.id))
                    .join(Trial, Trial.id == Metric.trial_id)
                    .where(Trial.study_id == study_id)
                )
            if status == "running" and rows >= 3:
                with transaction(sessions) as session:
                    submissions.request_cancel(session, study_id)
                print(f"cancel requested for study {study_id} after {rows} metric rows", flush=True)
                return
    finally:
        engine.dispose()


def summary(path: Path) -> dict[str, Any]:
    connection = sqlite3.connect(path)
    try:
        studies = connection.execute(
            "SELECT id, name, status, json_extract(spec, '$.workload.kind'),"
            " json_extract(spec, '$.objective.metric') FROM magma_studies ORDER BY id"
        ).fetchall()
        trials = Counter(
            dict(connection.execute("SELECT status, count(*) FROM magma_trials GROUP BY status"))
        )
        per_study = {
            name: dict(
                connection.execute(
                    "SELECT t.status, count(*) FROM magma_trials t JOIN magma_studies s"
                    " ON s.id = t.study_id WHERE s.name = ? GROUP BY t.status",
                    (name,),
                ).fetchall()
            )
            for _, name, *_ in studies
        }

        def count(table: str) -> int:
            return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

        tables = [
            r[0]
            for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            "studies": [
                {
                    "id": i,
                    "name": n,
                    "status": st,
                    "workload": w,
                    "metric": m,
                    "trials": per_study[n],
                }
                for i, n, st, w, m in studies
            ],
            "trial_statuses": dict(sorted(trials.items())),
            "rows": {t: count(t) for t in tables},
            "magma_alembic_version": connection.execute(
                "SELECT version_num FROM magma_alembic_version"
            ).fetchall(),
        }
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--allow-other-commit", action="store_true")
    args = parser.parse_args()
    commit = check_old_code(args.allow_other_commit)
    started = time.monotonic()

    work = Path(tempfile.mkdtemp(prefix="magma-migration-fixture-"))
    path = work / "fixture.sqlite"
    url = f"sqlite:///{path}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONPATH": str(Path.cwd().resolve()),
        "RAY_ADDRESS": "local",  # a new local Ray, never someone's running cluster
        "MAGMA_STORAGE": str(work / "ray"),
        "MAGMA_CACHE_DIR": os.environ.get("MAGMA_CACHE_DIR", str(work / "tokens")),
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "MAGMA_CACHE_DIR")})

    from fastapi.testclient import TestClient

    from service.main import create_app
    from studies.storage.engine import make_engine, session_factory, transaction
    from studies.storage.repository import submissions

    # The old API migrates the new database (0001, 0002) and queues the studies.
    with TestClient(create_app()) as client:
        ids = [submit(client, spec) for spec in RUN]
    print(f"submitted studies {ids}", flush=True)

    stop = threading.Event()
    canceller = threading.Thread(target=cancel_when_running, args=(url, ids[-1], stop))
    canceller.start()
    driver = [sys.executable, str(Path(sys.executable).parent / "magma-bench"), "driver", "--once"]
    print("running", " ".join(driver), flush=True)
    try:
        subprocess.run(driver, env=env, check=True, timeout=1200)
    finally:
        stop.set()
        canceller.join()
    print(f"driver done after {time.monotonic() - started:.0f} s", flush=True)

    with TestClient(create_app()) as client:
        later = [submit(client, spec, key) for spec, key in LATER]
    engine = make_engine(url)
    with transaction(session_factory(engine)) as session:
        submissions.request_cancel(session, later[-1])
    engine.dispose()

    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.execute("VACUUM")
    connection.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes()
    args.out.write_bytes(data)
    result = {
        "commit": commit,
        "out": str(args.out),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "seconds": round(time.monotonic() - started),
        **summary(args.out),
    }
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)  # the scratch database and Ray's trial directories


if __name__ == "__main__":
    main()
