"""The whole path a user takes, with real processes on each backend: ``magma-bench serve``
(uvicorn) and ``magma-bench driver`` (with its own local Ray), driven by the CLI over HTTP:
``submit --wait`` (live progress from the event stream), ``status``, ``export`` in three
formats (the Python snippet runs), and ``cancel`` of a running study."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import magma
from tests.db_fixtures import Database, quadratic_spec, wait_for
from tests.service_fixtures import MAGMA_BENCH, Server, cli, running_up


@pytest.fixture(scope="module")
def driver(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``magma-bench driver`` in its own session with a private local Ray."""
    directory = tmp_path_factory.mktemp("driver")
    ray_tmpdir = tempfile.mkdtemp(prefix="mbrt", dir="/tmp")  # short: socket paths
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DATABASE_URL")}
    env.update(
        MAGMA_DATABASE_URL=server.database_url,
        MAGMA_STORAGE=str(directory / "ray"),
        MAGMA_CACHE_DIR=str(directory / "cache"),
        RAY_TMPDIR=ray_tmpdir,
        PYTHONUNBUFFERED="1",
    )
    log = directory / "driver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(MAGMA_BENCH), "driver", "--poll", "0.5"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield log
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    subprocess.run(["pkill", "-KILL", "-f", ray_tmpdir], check=False)
    shutil.rmtree(ray_tmpdir, ignore_errors=True)


def test_submit_wait_status_export_and_cancel(server: Server, driver: Path, tmp_path: Path) -> None:
    spec = quadratic_spec(
        name="e2e",
        search={"lr": [0.1, 0.01], "variant": ["dense", "magma"]},
        fixed={"threads": 1},
    )
    spec_file = tmp_path / "e2e.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))

    submitted = cli(server, "submit", str(spec_file), "--wait")
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr, driver.read_text())
    study_id = int(submitted.stdout.split()[1])
    assert "4 runs" in submitted.stdout
    assert f"study {study_id}: complete" in submitted.stdout
    assert "best: {" in submitted.stdout
    # Off a terminal, no bar: one line per finished trial, from the events.
    progress = submitted.stderr.splitlines()
    assert len(progress) == 4 and "\r" not in submitted.stderr, submitted.stderr
    assert all(line.startswith("trial ") and ": complete  objective " in line for line in progress)
    assert [line.rsplit("(", 1)[1] for line in progress] == ["1/4)", "2/4)", "3/4)", "4/4)"]

    db = Database(server.database_url)
    try:
        trials = db.trials(study_id)
        assert [t.status for t in trials] == ["complete"] * 4
        assert all(len(db.metrics(t.id)) == 4 for t in trials)  # 40 steps, every 10
    finally:
        db.dispose()

    status = cli(server, "status", str(study_id))
    assert status.returncode == 0 and "complete" in status.stdout
    assert "'complete': 4" in status.stdout

    exported: dict[str, Any] = {}
    for fmt in ("json", "yaml", "python"):
        out = cli(server, "export", str(study_id), "--format", fmt)
        assert out.returncode == 0, out.stderr
        exported[fmt] = out.stdout
    document = json.loads(exported["json"])
    assert yaml.safe_load(exported["yaml"]) == document
    best = min((t for t in trials), key=lambda t: t.objective)
    assert document["trial_ids"] == [best.id] and document["params"] == best.params
    assert document["objective"] == pytest.approx(best.objective)

    from worker.models import build_model

    namespace: dict[str, Any] = {"model": build_model("llama-nano", seed=0)}
    exec(compile(exported["python"], "<export>", "exec"), namespace)  # noqa: S102
    (optimizer,) = namespace["optimizers"]
    if best.params["variant"] == "magma":
        assert isinstance(optimizer, magma.Magma)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(best.params["lr"])

    bad = cli(server, "export", str(study_id), "--format", "toml")
    assert bad.returncode == 1 and "json" in bad.stderr
    missing = cli(server, "status", "999999")
    assert missing.returncode == 1 and "not found" in missing.stderr

    # Cancel a running study from the CLI: its trials stop within seconds.
    long_spec = tmp_path / "long.yaml"
    long_spec.write_text(
        yaml.safe_dump(
            quadratic_spec(
                name="e2e-cancel",
                workload={"steps": 100_000, "eval_interval": 50},
                search={"lr": [0.1, 0.01]},
                fixed={"threads": 1, "variant": "dense"},
            ).model_dump(mode="json")
        )
    )
    started = cli(server, "submit", str(long_spec))
    assert started.returncode == 0, started.stderr
    long_id = int(started.stdout.split()[1])
    db = Database(server.database_url)
    try:
        wait_for(
            lambda: any(t.status == "running" and t.last_step for t in db.trials(long_id)),
            timeout=180,
            what="a running trial",
        )
        began = time.monotonic()
        cancelled = cli(server, "cancel", str(long_id))
        assert cancelled.returncode == 0 and "cancelling" in cancelled.stdout
        wait_for(lambda: db.study(long_id).status == "cancelled", timeout=30, what="cancelled")
        took = time.monotonic() - began
        print(f"cancelled {took:.1f} s after `magma-bench cancel` started")
        assert took < 15
        assert {t.status for t in db.trials(long_id)} == {"cancelled"}
    finally:
        db.dispose()


def test_up_runs_the_laptop_stack_and_stops_cleanly(tmp_path: Path) -> None:
    """``magma-bench up`` on the embedded defaults (SQLite under ./var/ of its working
    directory): a study submitted to it completes; SIGTERM stops every process it started,
    Ray's included."""
    from tests.processes import session_processes

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MAGMA_", "DATABASE"))}
    with running_up(tmp_path, env) as server:
        spec = quadratic_spec(name="up", search={"lr": [0.1]}, fixed={"threads": 1})
        spec_file = tmp_path / "up.yaml"
        spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
        done = cli(server, "submit", str(spec_file), "--wait")
        assert done.returncode == 0, (done.stdout, done.stderr, server.tail(60))
        assert (tmp_path / "var" / "magma-bench.db").is_file()
        up = server.process
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        wait_for(lambda: not session_processes(up.pid), timeout=30, what="up's processes")
