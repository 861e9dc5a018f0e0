"""Seeds per CPU-second: a configuration's seeds trained as one batch, against one Ray Tune
trial per seed through the real driver.

Each workload runs at the claims suite's size (``benchmarks/claims.py``): the quadratic
preset (heterogeneous Hessian, 500 steps of batch 3), the heavy-tailed preset's linear
transformer (heavy covariates, 1000 steps of 16, no condition number: ``SUITE_SCALE``) and
llama-bytes at ``SUITE_LM`` (8 x 128 bytes) but for its steps: ``LM_STEPS`` (50) by
default instead of the suite's 150, so that its five batch sizes fit the run
(``--workloads llama-bytes --steps 150`` for the suite's). One configuration, AdamW+Magma at
the suite's first LR, is trained by each arm:

* ``driver, 1 seed a trial`` (the baseline): a grid study of that configuration with N
  seeds and ``seed_batch=1`` in a new SQLite database, run by the real driver
  (``Driver.run(once=True)``, as ``benchmarks/claims.py`` runs it) on a local Ray with this
  machine's CPUs, ``max_concurrent`` as many; timed from submission to the driver's return;
* ``train_seeds``: ``worker.seed_batch.train_seeds`` on S seeds in this process (for
  llama-bytes, each S of ``LM_SEEDS``; the fastest is printed);
* ``driver, seed_batch=B``: the baseline's study with the largest S as seeds and the
  workload's default ``seed_batch`` (``worker.contract.DEFAULT_SEED_BATCH``): what a user
  gets.

CPU time is wall time x the CPUs the arm reserves, the same rule for every arm: a driver
study reserves ``resources.cpu`` (1) for each task it runs at once (its seeds' tasks, at
most ``max_concurrent`` and Ray's CPUs), ``train_seeds`` its torch threads (the presets'
``threads: 1``). A reserved CPU counts while its task starts, imports and waits, as a
cluster pays for it. Ray's workers run at niceness 0 here (Ray's default is 15), as this
process does. Before the timed arms, untimed one-step runs (one ``train_seeds`` seed of
each workload, which builds llama-bytes' token cache, and one driver study) take the
once-per-process costs of this process and of Tune's first start off every arm; a trial's
own process start and imports stay in the driver arms, as users pay them. Each arm is
measured once: on a shared machine, rerun before quoting a ratio.

    python -m benchmarks.seed_throughput                      # a few minutes on 2 cores
    python -m benchmarks.seed_throughput --quick              # a smoke run, 5 steps
    python -m benchmarks.seed_throughput --workloads quadratic --seeds 64 256 \\
        --json benchmarks/results/seed-throughput.json

Run it as a module from the repository root (it reads the suite's sizes from
``benchmarks.claims``). With CUDA, ``train_seeds`` also runs on the GPU for each S of
``--gpu-seeds`` and the script prints seeds per second there (the CPU table is printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
import torch

from benchmarks.claims import SUITE_SCALE, run_driver
from studies.presets import load_preset, merge_overrides
from studies.spec import StudySpec
from studies.storage.engine import make_engine, migrate, session_factory, transaction
from studies.storage.models import Study
from studies.storage.repository import reads, submissions
from studies.storage.scratch import temporary_database
from worker.config import TrialConfig
from worker.contract import DEFAULT_SEED_BATCH, STATUS_KEY, StudyStatus, TrialStatus
from worker.seed_batch import train_seeds
from worker.settings import get_settings

#: llama-bytes' default steps: a third of ``SUITE_LM``'s 150, so that its 31 seeds of the
#: batch-size sweep fit a few minutes on 2 cores (the harness's share grows as steps shrink)
LM_STEPS = 50
#: the batch sizes llama-bytes is measured at, to find the fastest
LM_SEEDS = (1, 2, 4, 8, 16)
#: ``--quick``: the sizes of a smoke run of every arm and workload (it skips the warm-up
#: study too: its timings mean nothing)
QUICK = {"steps": 5, "baseline_seeds": 2, "seeds": [1, 2], "gpu_seeds": [1, 2]}
#: ``train_seeds``' batch sizes on a GPU
GPU_SEEDS = (1, 16, 64, 256)
BASELINE = "driver, 1 seed a trial"
IN_PROCESS = "train_seeds"


@dataclass(frozen=True)
class Workload:
    """One workload of the claims suite and the sizes it is measured at by default."""

    name: str
    preset: str  # its role's preset, at ``SUITE_SCALE``
    baseline_seeds: int  # N: seeds of the one-per-trial study
    seeds: tuple[int, ...]  # S: batch sizes of ``train_seeds``
    target: float | None  # the ratio over the baseline the batched path must reach
    steps: int | None = None  # None: the suite's


WORKLOADS = {
    w.name: w
    for w in (
        Workload("quadratic", "quadratic", 8, (DEFAULT_SEED_BATCH["quadratic"],), 100.0),
        Workload(
            "linear-transformer",
            "heavy-tailed",
            4,
            (DEFAULT_SEED_BATCH["linear-transformer"],),
            10.0,
        ),
        Workload("llama-bytes", "paper-table1", 4, LM_SEEDS, None, LM_STEPS),
    )
}


@dataclass
class Measurement:
    """One arm's run: ``seeds`` seeds of ``steps`` steps in ``wall_s`` on ``cpus`` CPUs
    (or on a GPU, ``device`` cuda, where seeds per second are reported instead); ``load``,
    the machine's 1-minute load average at its end, says how much other work shared it."""

    workload: str
    arm: str
    seeds: int
    steps: int
    wall_s: float
    cpus: float
    diverged: int
    load: float
    device: str = "cpu"

    @property
    def cpu_s(self) -> float:
        return self.wall_s * self.cpus

    @property
    def seeds_per_cpu_s(self) -> float:
        return self.seeds / self.cpu_s

    @property
    def seeds_per_s(self) -> float:
        return self.seeds / self.wall_s

    def record(self) -> dict[str, Any]:
        rate = {"seeds_per_s": self.seeds_per_s}
        if self.device == "cpu":
            rate = {"cpu_s": self.cpu_s, "seeds_per_cpu_s": self.seeds_per_cpu_s}
        return {**asdict(self), **rate}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument(
        "--steps",
        type=positive,
        help=f"steps of every workload (default: the suite's; llama-bytes {LM_STEPS})",
    )
    parser.add_argument(
        "--baseline-seeds",
        type=positive,
        help="N, seeds of the one-per-trial study (default: quadratic 8, the others 4)",
    )
    parser.add_argument(
        "--seeds",
        type=positive,
        nargs="+",
        help=f"S, train_seeds' batch sizes for every workload (default: the workload's "
        f"default seed_batch; llama-bytes {' '.join(map(str, LM_SEEDS))})",
    )
    parser.add_argument(
        "--seed-batch",
        type=positive,
        help="the batched driver study's seed_batch (default: the workload's, "
        "worker.contract.DEFAULT_SEED_BATCH)",
    )
    parser.add_argument(
        "--gpu-seeds",
        type=positive,
        nargs="+",
        help="with CUDA: train_seeds' batch sizes on the GPU "
        f"(default {' '.join(map(str, GPU_SEEDS))})",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: {json.dumps(QUICK)} unless given"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    for name, value in QUICK.items() if args.quick else ():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.gpu_seeds = args.gpu_seeds or list(GPU_SEEDS)
    return args


def study_spec(workload: Workload, steps: int | None, seeds: int, seed_batch: int) -> StudySpec:
    """The workload's role preset at the suite's scale, narrowed to one configuration
    (AdamW+Magma at the LR the suite's bracket starts from) with a fixed number of seeds (no
    protocol: no bracket, no rounds), on the CPU; ``steps`` None: the workload's default."""
    lr = load_preset(workload.preset, SUITE_SCALE[workload.preset]).protocol.lr_start
    scaled = {k: v for k, v in SUITE_SCALE[workload.preset].items() if k != "protocol"}
    steps = steps or workload.steps
    overrides: dict[str, Any] = {
        "name": f"seed-throughput-{workload.name}",
        "search": {"base": "adamw", "variant": "magma", "lr": lr},
        "protocol": {"kind": "none"},
        "fixed": {"device": "cpu"},
        "seeds": seeds,
        "seed_batch": seed_batch,
        "max_concurrent": os.cpu_count() or 1,
    }
    if steps is not None:
        overrides["workload"] = {"steps": steps}
    spec = load_preset(workload.preset, merge_overrides(scaled, overrides))
    assert spec.grid_size == 1, spec.search  # one configuration, or the rates mean nothing
    return spec


def driver_arm(workload: Workload, spec: StudySpec, arm: str, storage: Path) -> Measurement:
    """The study submitted to a new database and run to its end by the real driver."""
    with temporary_database(None, "seed-throughput.db") as url:
        engine = make_engine(url)
        migrate(engine)
        sessions = session_factory(engine)
        started = time.perf_counter()
        with transaction(sessions) as session:
            study_id = submissions.create_study(session, spec).id
        run_driver(url, storage)
        wall = time.perf_counter() - started
        with sessions() as session:
            study = session.get(Study, study_id)
            assert study is not None
            status, error = study.status, study.error
            counts = reads.trial_status_counts(session, [study_id])[study_id]
        engine.dispose()
    finished = counts.get(TrialStatus.complete, 0) + counts.get(TrialStatus.diverged, 0)
    if status != StudyStatus.complete or finished != spec.seeds:
        raise RuntimeError(f"{workload.name}, {arm}: study {status} ({counts}): {error}")
    tasks = math.ceil(spec.seeds / (spec.seed_batch or 1))
    slots = min(
        tasks, spec.max_concurrent, int(ray.cluster_resources()["CPU"] // spec.resources.cpu)
    )
    return Measurement(
        workload.name,
        arm,
        spec.seeds,
        spec.workload.steps,
        wall,
        slots * spec.resources.cpu,
        counts.get(TrialStatus.diverged, 0),
        os.getloadavg()[0],
    )


def batched_arm(workload: Workload, spec: StudySpec, seeds: int, device: str) -> Measurement:
    """``train_seeds`` on the study's first ``seeds`` seeds in this process."""
    configs = [TrialConfig(**{**spec.trial_config({}, i), "device": device}) for i in range(seeds)]
    started = time.perf_counter()
    rows = train_seeds(configs)  # syncs the device every step (the loss's host copy)
    wall = time.perf_counter() - started
    cpus = configs[0].threads or torch.get_num_threads()
    diverged = sum(row[STATUS_KEY] == TrialStatus.diverged for row in rows)
    arm = IN_PROCESS if device == "cpu" else f"{IN_PROCESS} ({device})"
    load = os.getloadavg()[0]
    steps = spec.workload.steps
    return Measurement(workload.name, arm, seeds, steps, wall, cpus, diverged, load, device)


@contextlib.contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A local Ray with ``cpus`` CPUs for every driver arm (one start, outside the timing),
    or the Ray this process already has. Its workers run at niceness 0, as this process
    does, not at Ray's default 15: on a shared machine a niced trial would lose CPU to
    other work that the in-process arm does not lose to."""
    if ray.is_initialized():
        yield
        return
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": get_settings().trial_environment()},
        _system_config={"worker_niceness": 0},
    )
    try:
        yield
    finally:
        ray.shutdown()


def measure(args: argparse.Namespace, storage: Path) -> list[Measurement]:
    """Every arm of every chosen workload, after the untimed warm-ups."""
    chosen = [WORKLOADS[name] for name in args.workloads]
    for workload in chosen:  # this process's first-call costs; llama-bytes' token cache
        batched_arm(workload, study_spec(workload, 1, 1, 1), 1, "cpu")
    if not args.quick:  # Tune's first start in this process
        driver_arm(chosen[0], study_spec(chosen[0], 1, 1, 1), "warm-up", storage)
    results = []
    for workload in chosen:
        seeds = args.seeds or list(workload.seeds)
        n = args.baseline_seeds or workload.baseline_seeds
        baseline = study_spec(workload, args.steps, n, 1)
        print(f"# {workload.name}: {BASELINE}, {n} seeds", flush=True)
        results.append(driver_arm(workload, baseline, BASELINE, storage))
        for s in seeds:
            print(f"# {workload.name}: {IN_PROCESS}, {s} seeds", flush=True)
            results.append(batched_arm(workload, baseline, s, "cpu"))
        batch = args.seed_batch or DEFAULT_SEED_BATCH[baseline.workload.kind]
        arm = f"driver, seed_batch={batch}"
        print(f"# {workload.name}: {arm}, {max(seeds)} seeds", flush=True)
        batched = study_spec(workload, args.steps, max(seeds), batch)
        results.append(driver_arm(workload, batched, arm, storage))
    return results


def measure_gpu(args: argparse.Namespace) -> list[Measurement]:
    """``train_seeds`` on the GPU at each of ``--gpu-seeds``, every chosen workload."""
    results = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        spec = study_spec(workload, args.steps, max(args.gpu_seeds), 1)
        batched_arm(workload, spec, 1, "cuda")  # untimed: CUDA's context and kernels
        for s in args.gpu_seeds:
            print(f"# {name}: {IN_PROCESS} on cuda, {s} seeds", flush=True)
            results.append(batched_arm(workload, spec, s, "cuda"))
    return results


def comparisons(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    """Each batched CPU arm against its workload's baseline: the ratio of seeds per
    CPU-second and whether it reaches the workload's target."""
    rows = []
    baselines = {m.workload: m for m in results if m.arm == BASELINE}
    for m in results:
        if m.arm == BASELINE or m.device != "cpu":
            continue
        base = baselines[m.workload]
        target = WORKLOADS[m.workload].target
        ratio = m.seeds_per_cpu_s / base.seeds_per_cpu_s
        rows.append(
            {
                "workload": m.workload,
                "arm": m.arm,
                "seeds": m.seeds,
                "baseline_seeds_per_cpu_s": base.seeds_per_cpu_s,
                "batched_seeds_per_cpu_s": m.seeds_per_cpu_s,
                "ratio": ratio,
                "target": target,
                "meets_target": None if target is None else ratio >= target,
            }
        )
    return rows


def fastest_seeds(results: Sequence[Measurement], workload: str, device: str) -> int | None:
    """The batch size of ``workload``'s fastest ``train_seeds`` run on ``device`` (seeds per
    CPU-second on the CPU, per second on a GPU)."""
    runs = [m for m in results if m.workload == workload and m.device == device]
    runs = [m for m in runs if m.arm.startswith(IN_PROCESS)]
    if not runs:
        return None
    key = (lambda m: m.seeds_per_cpu_s) if device == "cpu" else (lambda m: m.seeds_per_s)
    return max(runs, key=key).seeds


def format_measurements(results: Sequence[Measurement]) -> list[str]:
    lines = [
        f"{'workload':19s} {'arm':24s} {'seeds':>5s} {'steps':>5s} {'wall s':>8s} "
        f"{'CPUs':>4s} {'CPU s':>8s} {'seeds/CPU-s':>11s} {'diverged':>8s} {'load':>5s}"
    ]
    for m in results:
        if m.device != "cpu":
            continue
        lines.append(
            f"{m.workload:19s} {m.arm:24s} {m.seeds:5d} {m.steps:5d} {m.wall_s:8.2f} "
            f"{m.cpus:4g} {m.cpu_s:8.2f} {m.seeds_per_cpu_s:11.4g} {m.diverged:8d} {m.load:5.1f}"
        )
    return lines


def format_comparisons(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'workload':19s} {'arm':24s} {'seeds':>5s} {'baseline seeds/CPU-s':>20s} "
        f"{'batched seeds/CPU-s':>19s} {'ratio':>8s} {'target':>7s} {'meets':>5s}"
    ]
    for row in rows:
        target = "-" if row["target"] is None else f">={row['target']:g}x"
        meets = {None: "-", True: "yes", False: "no"}[row["meets_target"]]
        lines.append(
            f"{row['workload']:19s} {row['arm']:24s} {row['seeds']:5d} "
            f"{row['baseline_seeds_per_cpu_s']:20.4g} {row['batched_seeds_per_cpu_s']:19.4g} "
            f"{row['ratio']:7.1f}x {target:>7s} {meets:>5s}"
        )
    return lines


def format_gpu(results: Sequence[Measurement]) -> list[str]:
    lines = [
        f"{'workload':19s} {'seeds':>5s} {'steps':>5s} {'wall s':>8s} {'seeds/s':>9s} {'load':>5s}"
    ]
    for m in results:
        lines.append(
            f"{m.workload:19s} {m.seeds:5d} {m.steps:5d} {m.wall_s:8.2f} {m.seeds_per_s:9.4g} "
            f"{m.load:5.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    cpus = os.cpu_count() or 1
    with (
        tempfile.TemporaryDirectory(prefix="magma-seed-throughput-") as directory,
        local_ray(cpus),
    ):
        results = measure(args, Path(directory) / "ray")
    gpu = measure_gpu(args) if torch.cuda.is_available() else []
    rows = comparisons(results)
    fastest = {
        device: fastest_seeds([*results, *gpu], "llama-bytes", device) for device in ("cpu", "cuda")
    }
    print(
        f"\nseeds per CPU-second, CPU time = wall x CPUs the arm reserves; {cpus} CPUs, "
        f"torch {torch.__version__}; load: the 1-minute load average at an arm's end"
    )
    print("\n".join(format_measurements(results)))
    print()
    print("\n".join(format_comparisons(rows)))
    if fastest["cpu"] is not None:
        print(f"llama-bytes: the fastest train_seeds batch on the CPU is S={fastest['cpu']}")
    if gpu:
        print(f"\ntrain_seeds on {torch.cuda.get_device_name()}: seeds per second")
        print("\n".join(format_gpu(gpu)))
        if fastest["cuda"] is not None:
            print(f"llama-bytes: the fastest train_seeds batch on the GPU is S={fastest['cuda']}")
    total = time.perf_counter() - started
    print(f"total wall time: {total:.1f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "cpu_time": "wall seconds x CPUs the arm reserves",
                    "cpus": cpus,
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if gpu else None,
                    "arguments": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "measurements": [m.record() for m in [*results, *gpu]],
                    "comparisons": rows,
                    "fastest_llama_bytes_seeds": fastest,
                    "wall_seconds": total,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
