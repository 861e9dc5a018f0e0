"""Read-endpoint latency under concurrent clients, against a large study in PostgreSQL.

Builds (once; ``--rebuild`` to redo) a database holding one study with ``--trials``
trials and ``--metrics-per-trial`` metric rows each (10k x 100 = 1M rows by default),
starts ``magma-bench serve`` on it, and runs ``--clients`` concurrent HTTP clients
against the read endpoints for ``--seconds``. Prints p50/p99 per endpoint and the p99
against the 50 ms target (ratio < 1 meets it).

    python benchmarks/api_load.py                      # PostgreSQL at 127.0.0.1:5432
    python benchmarks/api_load.py --workers 2 --clients 50 --seconds 30
    python benchmarks/api_load.py --wrk     # also with wrk, a load generator in C
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, insert, make_url, select, text

from studies.spec import StudySpec
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from studies.storage.models import Metric, Study, Trial, utcnow
from studies.storage.repository import submissions
from worker.settings import get_settings

TARGET_P99_MS = 50.0
DATABASE = "magma_bench_api_load"
SPEC = {
    "version": 1,
    "name": "api-load",
    "workload": {"kind": "quadratic", "steps": 1000, "eval_interval": 10},
    "search": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "variant": ["dense", "magma"]},
    "sampler": "random",
    "trials": 5000,
    "seeds": 2,
}


def database_url(server: str) -> str:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE}
        )
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    admin.dispose()
    return make_url(server).set(database=DATABASE).render_as_string(hide_password=False)


def populate(url: str, trials: int, per_trial: int, rebuild: bool) -> int:
    """The study's id; generated with bulk inserts (the engine's own writes are per row)."""
    engine = make_engine(url)
    migrate(engine)
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        study = session.scalars(select(Study).where(Study.name == "api-load")).first()
        if study is not None and not rebuild:
            count = session.scalar(select(func.count()).where(Trial.study_id == study.id))
            if count == trials:
                print(f"reusing study {study.id}: {count} trials")
                return study.id
        if study is not None:
            session.delete(study)
    rng = random.Random(0)
    started = time.perf_counter()
    with transaction(sessions) as session:
        study_id = submissions.create_study(session, StudySpec.model_validate(SPEC)).id
        study = session.get(Study, study_id)
        study.status, study.started_at, study.finished_at = "complete", utcnow(), utcnow()
    with engine.begin() as connection:
        rows = []
        for number in range(trials):
            lr = 10 ** rng.uniform(-4, -1)
            params = {"lr": lr, "variant": "magma" if number % 4 >= 2 else "dense"}
            objective = rng.uniform(1, 10)
            rows.append(
                {
                    "study_id": study_id,
                    "number": number,
                    "configuration": number // 2,
                    "seed_index": number % 2,
                    "params": params,
                    "config": {**params, "workload": "quadratic", "seed": number % 2},
                    "status": "complete" if rng.random() > 0.1 else "diverged",
                    "objective": objective,
                    "last_step": 1000,
                    "attempts": 1,
                    "created_at": utcnow(),
                    "started_at": utcnow(),
                    "finished_at": utcnow(),
                }
            )
        connection.execute(insert(Trial), rows)
        ids = connection.scalars(
            select(Trial.id).where(Trial.study_id == study_id).order_by(Trial.id)
        ).all()
    batch: list[dict] = []
    with engine.begin() as connection:
        for trial_id in ids:
            for k in range(per_trial):
                step = 10 * (k + 1)
                loss = 5.0 / (1 + k) + rng.random() * 0.01
                batch.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "objective": loss,
                        "values": {"step": step, "objective": loss, "val_loss": loss},
                        "created_at": utcnow(),
                    }
                )
            if len(batch) >= 50_000:
                connection.execute(insert(Metric), batch)
                batch = []
        if batch:
            connection.execute(insert(Metric), batch)
    with engine.begin() as connection:  # planner statistics for the new rows
        connection.execute(text("ANALYZE"))
    engine.dispose()
    print(
        f"built study {study_id}: {trials} trials, {trials * per_trial} metric rows "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return study_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(
    base: str, endpoints: dict[str, str], clients: int, seconds: float
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in endpoints}
    errors: list[str] = []
    names = list(endpoints)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop_at:
                name = names[i % len(names)]
                i += 1
                began = time.perf_counter()
                response = await client.get(endpoints[name])
                elapsed = (time.perf_counter() - began) * 1000
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code}")
                latencies[name].append(elapsed)

        await asyncio.gather(*(worker(k) for k in range(clients)))
    if errors:
        print(f"{len(errors)} non-200 answers, e.g. {errors[:3]}")
    return latencies


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, connections: int, seconds: float) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 ms from ``wrk --latency``: a load generator in C, so the
    Python client's own CPU does not count against a 2-core server."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def millis(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert match, out
        return float(match[1]) * WRK_UNITS[match[2]]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate, out
    return float(rate[1]), millis("50%"), millis("99%")


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else (values[0] if values else float("nan"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        default=get_settings().bench_pg,
        help="PostgreSQL URL of an existing database, to create ours from (MAGMA_BENCH_PG)",
    )
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--metrics-per-trial", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--wrk", action="store_true", help="also measure with wrk (must be on the PATH)"
    )
    args = parser.parse_args()

    url = database_url(args.server)
    study_id = populate(url, args.trials, args.metrics_per_trial, args.rebuild)
    some_trial = 1 + args.trials // 2  # ids start near 1 in a fresh database
    engine = create_engine(url)
    with engine.connect() as connection:
        some_trial = connection.scalar(
            select(Trial.id).where(Trial.study_id == study_id, Trial.number == args.trials // 2)
        )
    engine.dispose()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MAGMA_API_KEY")}
    env["MAGMA_DATABASE_URL"] = url
    exe = Path(sys.executable).parent / "magma-bench"
    server = subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit("the server did not start")
            time.sleep(0.3)
        endpoints = {
            "GET /studies": "/api/v1/studies?limit=50",
            "GET /studies/{id}": f"/api/v1/studies/{study_id}",
            "GET /studies/{id}/trials (first page)": f"/api/v1/studies/{study_id}/trials",
            "GET /studies/{id}/trials?sort=objective": (
                f"/api/v1/studies/{study_id}/trials?sort=objective&limit=100"
            ),
            "GET /trials/{id} (100 metric rows)": f"/api/v1/trials/{some_trial}",
            "GET /health": "/api/v1/health",
        }
        asyncio.run(load(base, endpoints, min(args.clients, 4), 3))  # warm up
        alone = asyncio.run(load(base, endpoints, 1, min(args.seconds, 5)))  # the baseline
        latencies = asyncio.run(load(base, endpoints, args.clients, args.seconds))
        with_wrk = (
            {name: wrk(base + path, args.clients, args.seconds) for name, path in endpoints.items()}
            if args.wrk
            else {}
        )
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    total = sum(len(v) for v in latencies.values())
    print(
        f"\n{args.clients} clients, {args.seconds:.0f} s, {args.workers} uvicorn workers, "
        f"{args.trials} trials / {args.trials * args.metrics_per_trial} metric rows "
        f"(PostgreSQL), {total / args.seconds:.0f} requests/s"
    )
    print(
        f"{'endpoint':42} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99 / 50 ms':>12} "
        f"{'1-client p50':>12} {'p50 x alone':>11}"
    )
    for name, values in latencies.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        single = percentile(alone[name], 50)
        print(
            f"{name:42} {len(values):6d} {p50:8.1f} {p99:8.1f} {p99 / TARGET_P99_MS:12.2f} "
            f"{single:12.1f} {p50 / single:11.1f}"
        )
    print("baseline: '1-client p50' = the same endpoint with one client, measured in this run")
    if with_wrk:
        print(
            f"\nwrk (C load generator, one endpoint at a time, {args.clients} connections, "
            f"{args.seconds:.0f} s each)"
        )
        print(f"{'endpoint':42} {'req/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99 / 50 ms':>12}")
        for name, (rate, p50, p99) in with_wrk.items():
            print(f"{name:42} {rate:6.0f} {p50:8.1f} {p99:8.1f} {p99 / TARGET_P99_MS:12.2f}")


if __name__ == "__main__":
    main()
