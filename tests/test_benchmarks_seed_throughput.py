"""``benchmarks/seed_throughput.py``: its options, the one configuration it runs of each
workload, its arithmetic, and one ``--quick`` run of every arm through the real driver
(every workload in the tables with a finite ratio; the timings and targets are not
tested)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import seed_throughput as bench
from benchmarks.claims import SUITE_LM


def test_options() -> None:
    quick = bench.parse_args(["--quick"])
    assert (quick.steps, quick.baseline_seeds, quick.seeds) == (5, 2, [1, 2])
    assert quick.gpu_seeds == [1, 2] and quick.workloads == list(bench.WORKLOADS)
    given = bench.parse_args(["--quick", "--steps", "7", "--seeds", "3", "--gpu-seeds", "4"])
    assert (given.steps, given.seeds, given.gpu_seeds) == (7, [3], [4])  # flags win
    default = bench.parse_args([])
    assert (default.steps, default.seeds, default.baseline_seeds) == (None, None, None)
    assert default.gpu_seeds == list(bench.GPU_SEEDS)
    for bad in (["--workloads", "mlp"], ["--seeds", "0"], ["--steps", "-1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_one_configuration_at_the_suites_size() -> None:
    quadratic = bench.study_spec(bench.WORKLOADS["quadratic"], None, 8, 1)
    assert (quadratic.workload.steps, quadratic.workload.batch_size) == (500, 3)
    assert quadratic.workload.hessian == "heterogeneous"
    transformer = bench.study_spec(bench.WORKLOADS["linear-transformer"], None, 4, 1)
    assert (transformer.workload.steps, transformer.workload.batch_size) == (1000, 16)
    assert transformer.workload.covariates == "heavy"
    assert not transformer.workload.condition_number
    llama = bench.study_spec(bench.WORKLOADS["llama-bytes"], None, 16, 4)
    assert llama.workload.model_dump(include=set(SUITE_LM) - {"steps"}) == {
        k: v for k, v in SUITE_LM.items() if k != "steps"
    }
    assert llama.workload.steps == bench.LM_STEPS
    assert bench.study_spec(bench.WORKLOADS["llama-bytes"], 150, 1, 1).workload.steps == 150
    for spec in (quadratic, transformer, llama):
        assert spec.grid_size == 1 and spec.search["variant"] == "magma"
        assert spec.protocol.kind == "none" and spec.protocol.sequential is None
        assert spec.fixed["device"] == "cpu" and spec.fixed["threads"] == 1
    assert (quadratic.seeds, quadratic.seed_batch, llama.seeds, llama.seed_batch) == (8, 1, 16, 4)
    assert (quadratic.search["lr"], transformer.search["lr"]) == (0.1, 0.01)


def test_ratios_targets_and_fastest() -> None:
    def run(arm: str, seeds: int, wall: float, cpus: float, workload: str = "quadratic"):
        return bench.Measurement(workload, arm, seeds, 500, wall, cpus, 0, 1.0)

    results = [
        run(bench.BASELINE, 8, 20.0, 2),  # 0.2 seeds per CPU-second
        run(bench.IN_PROCESS, 64, 2.0, 1),  # 32: 160x
        run("driver, seed_batch=64", 64, 8.0, 1),  # 8: 40x
        run(bench.BASELINE, 4, 20.0, 2, "llama-bytes"),
        run(bench.IN_PROCESS, 1, 4.0, 1, "llama-bytes"),
        run(bench.IN_PROCESS, 2, 6.0, 1, "llama-bytes"),  # the fastest per CPU-second
        run(bench.IN_PROCESS, 4, 20.0, 1, "llama-bytes"),
    ]
    rows = bench.comparisons(results)
    assert [(r["arm"], r["seeds"]) for r in rows[:2]] == [
        (bench.IN_PROCESS, 64),
        ("driver, seed_batch=64", 64),
    ]
    assert [r["ratio"] for r in rows[:2]] == pytest.approx([160.0, 40.0])
    assert [r["meets_target"] for r in rows] == [True, False, None, None, None]
    assert bench.fastest_seeds(results, "llama-bytes", "cpu") == 2
    assert bench.fastest_seeds(results, "llama-bytes", "cuda") is None
    table = bench.format_comparisons(rows)
    assert table[1].split()[-3:] == ["160.0x", ">=100x", "yes"]
    assert table[3].split()[-3:] == ["2.5x", "-", "-"]  # llama-bytes has no target


def test_quick_run_of_every_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], magma_cache_dir: Path
) -> None:
    out_json = tmp_path / "seed-throughput.json"
    bench.main(["--quick", "--json", str(out_json)])
    out = capsys.readouterr().out
    fastest = "llama-bytes: the fastest train_seeds batch on the CPU is S="
    # the comparisons: from their header to the fastest batch's line
    table = out[out.index("baseline seeds/CPU-s") : out.index(fastest)].splitlines()[1:]
    for name, workload in bench.WORKLOADS.items():
        rows = [line for line in table if line.split()[0] == name]
        assert len(rows) == 3, out  # train_seeds at S = 1 and 2, the batched driver study
        for row in rows:
            ratio = float(row.split()[-3].removesuffix("x"))
            assert math.isfinite(ratio) and ratio > 0, row
        verdicts = ["yes", "no"] if workload.target else ["-"]
        assert all(row.split()[-1] in verdicts for row in rows)
    report = json.loads(out_json.read_text())
    assert report["cpus"] >= 1 and report["arguments"]["quick"] is True
    measured = {(m["workload"], m["arm"], m["seeds"]) for m in report["measurements"]}
    for name in bench.WORKLOADS:
        assert (name, bench.BASELINE, 2) in measured
        assert {(name, bench.IN_PROCESS, 1), (name, bench.IN_PROCESS, 2)} <= measured
    on_cpu = [m for m in report["measurements"] if m["device"] == "cpu"]
    assert all(m["steps"] == 5 and m["seeds_per_cpu_s"] > 0 for m in on_cpu)
    assert len(report["comparisons"]) == 3 * len(bench.WORKLOADS)
    assert all(math.isfinite(row["ratio"]) for row in report["comparisons"])
    assert report["fastest_llama_bytes_seeds"]["cpu"] in (1, 2)
