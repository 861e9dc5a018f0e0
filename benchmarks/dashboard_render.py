"""Server-side render time of every dashboard page on a large study.

Writes one synthetic study (``dashboards.sample``: ``--trials`` trials, default 1,000,
over variant x LR x p x tau with 2 seeds, each with ``--metrics-per-trial`` metric rows,
default 20, telemetry included for the masked variants) straight into a fresh database,
then requests each page through the real app (``service.main.create_app`` behind a
Starlette ``TestClient``: routing, the SQL reads, the analyses, the Plotly figures and
the Jinja template, everything but the network) ``--repeats`` times, round-robin, after
one warm-up request each. Prints per page the median (p50) and the slowest request in
milliseconds, the response size, both times as a fraction of the 1 s target, and the
median against the study index page's (the baseline: routing, one query, a template).

    python benchmarks/dashboard_render.py                       # SQLite file
    python benchmarks/dashboard_render.py --database-url \\
        postgresql+psycopg://postgres@127.0.0.1:5432/test       # PostgreSQL

With a PostgreSQL URL a temporary database ``magma_bench_<hex>`` is created on that
server (through its ``postgres`` database) and dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time

from fastapi.testclient import TestClient

from dashboards.sample import study_sessions, write_study
from dashboards.views import PAGES
from service.main import create_app
from studies.storage.scratch import temporary_database
from worker.settings import Settings

TARGET_MS = 1000.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--metrics-per-trial", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per page")
    parser.add_argument("--workload", default="llama-c4", help="llama-c4 or quadratic")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with temporary_database(args.database_url, "dashboard-render.db") as url:
        engine, sessions = study_sessions(url)
        try:
            started = time.perf_counter()
            study_id = write_study(
                sessions,
                trials=args.trials,
                metrics_per_trial=args.metrics_per_trial,
                workload=args.workload,
            )
            built = time.perf_counter() - started
            backend = f"{engine.dialect.name} {engine.dialect.server_version_info or ''}"
        finally:
            engine.dispose()
        paths = {"index": "/"} | {slug: f"/studies/{study_id}/dashboard/{slug}" for slug in PAGES}
        samples: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        app = create_app(Settings(DATABASE_URL=url, api_key=None))
        with TestClient(app) as client:
            for name, path in paths.items():  # warm-up: imports, caches, prepared plans
                response = client.get(path)
                response.raise_for_status()
                sizes[name] = len(response.content)
            for _ in range(args.repeats):
                for name, path in paths.items():
                    begun = time.perf_counter()
                    client.get(path).raise_for_status()
                    samples[name].append((time.perf_counter() - begun) * 1000)
    print(
        f"{backend}: study of {args.trials} trials x {args.metrics_per_trial} metric rows "
        f"({args.workload}), written in {built:.1f} s; {args.repeats} timed requests per page "
        f"after a warm-up, round-robin; target {TARGET_MS:.0f} ms of server time per page"
    )
    header = (
        f"{'page':14} {'p50 ms':>8} {'max ms':>8} {'p50/target':>11} {'max/target':>11} "
        f"{'x index':>8} {'HTML KB':>8}"
    )
    print(header)
    print("-" * len(header))
    floor = statistics.median(samples["index"])  # routing, a query and a template
    for name, values in samples.items():
        p50, worst = statistics.median(values), max(values)
        print(
            f"{name:14} {p50:8.1f} {worst:8.1f} {p50 / TARGET_MS:11.2f} {worst / TARGET_MS:11.2f} "
            f"{p50 / floor:8.1f} {sizes[name] / 1024:8.0f}"
        )
    print("baseline: 'x index' = p50 / p50 of the study index page in the same run")


if __name__ == "__main__":
    main()
