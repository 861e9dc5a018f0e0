"""The docker-compose topology as separate OS processes on loopback, without Docker:
PostgreSQL, a Ray head (``ray start --head``) and a second Ray node (``ray start
--address=...``), each with resources of its own, ``magma-bench serve`` and ``magma-bench
driver`` with ``RAY_ADDRESS`` set, Ray token authentication on as in the compose file.

A study submitted over HTTP runs trials on both nodes (read from the trial records), then
the worker node is stopped mid-study: its ``ray start --block`` process gets SIGTERM (what
``ray stop`` sends, limited to that node: a plain ``ray stop`` would stop every Ray
process on this one machine, the head too) and whatever outlives it is killed by pid.
Tune retries the lost trial from its checkpoint on the head and the study completes.
PostgreSQL only: it is what the deployed topology runs on.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.db_fixtures import Database, fresh_database, quadratic_spec, wait_for
from tests.processes import session_processes, stop_session
from tests.service_fixtures import MAGMA_BENCH, free_port

RAY = Path(sys.executable).parent / "ray"
#: long enough that two trials overlap deep into their runs (a quadratic step takes ~10 ms)
STEPS, INTERVAL = 3000, 20


@dataclass
class Cluster:
    env: dict[str, str]
    directory: Path
    started: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, command: list[str], **env: str) -> subprocess.Popen:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - closed by the child
        process = subprocess.Popen(
            command,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its session id is its pid: found and stopped by it
        )
        log.close()
        self.started[name] = process
        return process

    def log(self, name: str, lines: int = 25) -> str:
        text = (self.directory / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.started)

    def stop(self, name: str) -> list:
        return stop_session(self.started[name].pid)


def ray_node(cluster: Cluster, name: str, resource: str, head_port: int | None = None) -> None:
    ports = [
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
    ]
    where = (
        ["--address", f"127.0.0.1:{head_port}"]
        if head_port
        else ["--head", "--port", cluster.env["RAY_PORT"], "--include-dashboard=false"]
    )
    cluster.start(
        name,
        [str(RAY), "start", "--block", "--disable-usage-stats", *where, *ports]
        + ["--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps({resource: 1})],
    )


def alive_nodes(cluster: Cluster) -> dict[str, str]:
    """Node id -> our resource label, asked of the cluster by a short-lived Ray driver."""
    for name, process in cluster.started.items():
        if process.poll() is not None:
            pytest.fail(f"{name} exited:\n{cluster.log(name)}")
    script = (
        "import json, ray; ray.init(address='auto', log_to_driver=False); "
        "print(json.dumps({n['NodeID']: sorted(r for r in n['Resources'] "
        "if r.endswith('_node')) for n in ray.nodes() if n['Alive']}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    nodes = json.loads(result.stdout.strip().splitlines()[-1])
    return {node: labels[0] for node, labels in nodes.items() if labels}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    ray_tmp = tempfile.mkdtemp(prefix="mbtp", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MAGMA_API"))}
    env.update(
        RAY_ADDRESS=f"127.0.0.1:{port}",
        RAY_PORT=str(port),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_TMPDIR=ray_tmp,
        MAGMA_STORAGE=str(tmp_path / "shared" / "ray"),
        MAGMA_CACHE_DIR=str(tmp_path / "shared" / "cache"),
        MAGMA_DRIVER_STALE_SECONDS="10",
        PYTHONUNBUFFERED="1",
    )
    running = Cluster(env, tmp_path)
    try:
        yield running
    finally:
        leftovers = []
        for name in reversed(list(running.started)):
            leftovers += running.stop(name)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        for name, process in running.started.items():
            assert session_processes(process.pid) == [], f"{name} left processes behind"
        print(f"processes that needed SIGKILL at teardown: {len(leftovers)}")


def test_a_study_runs_across_two_ray_nodes_and_survives_losing_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        api_port = free_port()
        cluster.env["MAGMA_DATABASE_URL"] = url
        ray_node(cluster, "ray-head", "head_node")
        wait_for(lambda: len(alive_nodes(cluster)) == 1, timeout=90, what="the Ray head")
        ray_node(cluster, "ray-worker", "worker_node", head_port=int(cluster.env["RAY_PORT"]))
        wait_for(lambda: len(alive_nodes(cluster)) == 2, timeout=90, what="the worker node")
        nodes = {label: node for node, label in alive_nodes(cluster).items()}
        cluster.start("api", [str(MAGMA_BENCH), "serve", "--port", str(api_port)])
        cluster.start("driver", [str(MAGMA_BENCH), "driver", "--poll", "0.5"])
        api = f"http://127.0.0.1:{api_port}/api/v1"

        def healthy() -> bool:
            try:
                health = httpx.get(f"{api}/health", timeout=2).json()
            except httpx.TransportError:
                return False
            return health["status"] == "ok" and "reachable" in health["ray"]["detail"]

        wait_for(healthy, timeout=90, what="the API, with Ray reachable")

        spec = quadratic_spec(
            name="two-nodes",
            workload={"steps": STEPS, "eval_interval": INTERVAL},
            search={"lr": [0.1, 0.05, 0.03, 0.01]},
            fixed={"threads": 1, "variant": "dense"},
            max_concurrent=2,
        )
        answer = httpx.post(f"{api}/studies", json=spec.model_dump(mode="json"), timeout=30)
        assert answer.status_code == 201, answer.text
        study_id = answer.json()["id"]
        db = Database(url)
        try:

            def on_both_nodes() -> bool:
                running = [t for t in db.trials(study_id) if t.status == "running"]
                deep = {t.node for t in running if (t.last_step or 0) >= 5 * INTERVAL}
                return set(nodes.values()) <= deep

            wait_for(on_both_nodes, timeout=240, interval=0.2, what="a trial on each node")
            lost = next(
                t
                for t in db.trials(study_id)
                if t.status == "running" and t.node == nodes["worker_node"]
            )
            lost_at = lost.last_step
            killed = cluster.stop("ray-worker")  # the node's `ray stop`
            print(
                f"stopped the worker node at step {lost_at} of trial {lost.number}; "
                f"{len(killed)} processes needed SIGKILL"
            )

            def finished() -> bool:
                status = db.study(study_id).status
                if status in ("failed", "cancelled"):
                    pytest.fail(f"study {status}: {db.study(study_id).error}\n{cluster.logs()}")
                return status == "complete"

            wait_for(finished, timeout=300, interval=0.5, what="the study to complete")
            trials = db.trials(study_id)
            assert [t.status for t in trials] == ["complete"] * 4
            assert all(t.last_step == STEPS for t in trials)
            retried = next(t for t in trials if t.id == lost.id)
            assert retried.attempts >= 2, [(t.number, t.attempts) for t in trials]
            metric_nodes = [m.values.get("node") for m in db.metrics(retried.id)]
            assert metric_nodes[0] == nodes["worker_node"]
            assert metric_nodes[-1] == nodes["head_node"]
            steps = [m.step for m in db.metrics(retried.id)]
            assert steps.count(INTERVAL) == 1, "the retry started over instead of resuming"
            every_node = {m.values.get("node") for t in trials for m in db.metrics(t.id)}
            assert every_node == set(nodes.values())
            listed = httpx.get(f"{api}/studies/{study_id}", timeout=10).json()
            assert listed["status"] == "complete" and listed["progress"] == {"complete": 4}
        finally:
            db.dispose()
            for name in ("driver", "api"):
                cluster.stop(name)
