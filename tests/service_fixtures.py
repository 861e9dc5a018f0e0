"""A real ``magma-bench serve`` (uvicorn) on a free loopback port, and ``magma-bench up``
and the CLI against it (the ``server`` fixture, one per database backend, is in
``tests/conftest.py``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.db_fixtures import wait_for
from tests.processes import stop_session

MAGMA_BENCH = Path(sys.executable).parent / "magma-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    database_url: str
    process: subprocess.Popen
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    database_url: str, log: Path, api_key: str | None = None, **env: str
) -> Iterator[Server]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "MAGMA_API_KEY"}
    environ.pop("DATABASE_URL", None)  # the alias would clash with the canonical name
    environ.update(MAGMA_DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **env)
    if api_key is not None:
        environ["MAGMA_API_KEY"] = api_key
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(MAGMA_BENCH), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", database_url, process, log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited:\n{server.tail()}")
            try:
                if httpx.get(f"{server.api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not come up:\n{server.tail()}")
            time.sleep(0.2)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_up(cwd: Path, env: dict[str, str]) -> Iterator[Server]:
    """``magma-bench up`` in ``cwd`` with environment ``env`` (plus a private RAY_TMPDIR), in
    a session of its own, once it says it is up (its log: ``cwd/up.log``). Afterwards every
    process of that session gets SIGTERM, then SIGKILL; on success, none may have needed
    SIGKILL (a test that stops ``up`` itself so checks that it took everything down)."""
    port = free_port()
    ray_tmpdir = tempfile.mkdtemp(prefix="mbup", dir="/tmp")  # short: socket paths
    log = cwd / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [str(MAGMA_BENCH), "up", "--port", str(port)],
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": ray_tmpdir},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "magma-bench is up" in log.read_text(), timeout=120, what="up")
        yield Server(f"http://127.0.0.1:{port}", "", up, log)
    finally:
        leftovers = stop_session(up.pid)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    assert leftovers == [], f"processes outlived up: {leftovers}"


def cli(server: Server, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``magma-bench ARGS`` as a user runs it, against ``server`` (no API key)."""
    env = {**os.environ, "MAGMA_URL": server.url}
    env.pop("MAGMA_API_KEY", None)
    return subprocess.run(
        [str(MAGMA_BENCH), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
