"""``benchmarks/gpu_suite.py``: its FLOPs and peak figures, its per-section time limit, and
one whole CPU-smoke run as CI runs it (a subprocess; the JSON checked section by section).

CUDA cannot run here, so the GPU sizes, the bf16 autocast, the torch.compile arms and the
fused optimizer rows are exercised only on a GPU; the CPU run checks that they are reported
as skipped, with the reason, rather than missing.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_suite as suite

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_suite.py"
#: generous: the plan's own sizes bound the run (about a minute on a quiet 2-core machine);
#: the budget only cuts loops short when the machine is overloaded
BUDGET_S = 400


def test_model_flops_by_hand() -> None:
    """llama-bytes: vocab 258, hidden 64, MLP 172, 4 layers. Per layer 4 x 64 x 64
    attention + 3 x 64 x 172 MLP + 2 x 64 norm = 49,536; with embedding and head (258 x 64
    each) and the final norm, 231,232 parameters, of which all but the 16,512 of the input
    embedding do matmul work: N = 214,720."""
    n, layers, hidden, seq = 214_720, 4, 64, 64
    assert suite.model_flops_per_sequence("llama-bytes", seq) == (
        6 * n * seq + 12 * layers * hidden * seq**2
    )
    assert 6 * n * seq + 12 * layers * hidden * seq**2 == 95_035_392


def test_peak_table_and_override() -> None:
    expected = {
        "NVIDIA H100 80GB HBM3": 989.0,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H100 NVL": 835.0,
        "NVIDIA H200": 989.0,
        "NVIDIA H200 NVL": 835.0,
        "NVIDIA GH200 480GB": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L40": 181.0,
        "NVIDIA L4": 121.0,
        "NVIDIA GeForce RTX 3090": None,
    }
    assert {name: suite.peak_tflops(name) for name in expected} == expected
    assert suite.resolve_peak("cuda", "NVIDIA H200", None) == (989.0, "table")
    assert suite.resolve_peak("cuda", "NVIDIA H200", 700.0) == (700.0, "--peak-tflops")
    assert suite.resolve_peak("cuda", "NVIDIA GeForce RTX 3090", None) == (None, None)
    assert suite.resolve_peak("cpu", "cpu", 700.0) == (None, None)  # MFU is n/a on CPU


def _sleeps_past_its_limit(plan: suite.Plan, deadline: float, sink: suite.Sink) -> None:
    sink.put("finished_part", 1)
    grandchild = subprocess.Popen(["sleep", "120"])  # like an inductor compile worker
    sink.put("grandchild", grandchild.pid)
    time.sleep(120)


def _fails(plan: suite.Plan, deadline: float, sink: suite.Sink) -> None:
    sink.put("finished_part", 1)
    raise RuntimeError("boom in the section")


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan may wait for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_section_killed_at_its_limit_keeps_what_it_finished(tmp_path: Path) -> None:
    plan = replace(suite.CPU_PLAN, threads=None)  # the forked sections leave torch alone
    started = time.monotonic()
    result = suite.run_section("slow", _sleeps_past_its_limit, plan, 3.0, tmp_path)
    assert time.monotonic() - started < 30
    assert result["status"] == "timeout" and result["finished_part"] == 1
    deadline = time.monotonic() + 10
    while _running(result["grandchild"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(result["grandchild"]), "the section's process group outlived it"

    failed = suite.run_section("failing", _fails, plan, 60.0, tmp_path)
    assert failed["status"] == "error" and failed["finished_part"] == 1
    assert "RuntimeError: boom in the section" in failed["error"]


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """Every number in a JSON value, with where it is (booleans are not numbers here)."""
    if isinstance(value, dict):
        return [n for key, item in value.items() for n in _numbers(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [n for i, item in enumerate(value) for n in _numbers(item, f"{path}[{i}]")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(path, float(value))]
    return []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu_suite")
    command = [sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out / "suite.json")]
    command += ["--cache-dir", str(out / "cache"), "--budget-s", str(BUDGET_S)]
    # One tokenizing process: a pool of spawned ones costs more than the 200 documents.
    env = {**os.environ, "MAGMA_TOKENIZE_WORKERS": "1"}
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUDGET_S + 120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "suite.json").read_text())
    assert report["wall_s"] <= time.monotonic() - started
    return report, done.stdout


def test_smoke_run_every_section_ok_and_every_number_finite_positive(
    smoke: tuple[dict[str, Any], str],
) -> None:
    report, _ = smoke
    assert report["mode"] == "cpu-smoke" and report["device"] == "cpu"
    assert report["peak_bf16_tflops"] is None and report["threads"] == 1
    assert list(report["sections"]) == list(suite.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section)
    numbers = _numbers(report["sections"])
    assert len(numbers) > 100  # the loss curves alone hold 60
    bad = [(where, x) for where, x in numbers if not (math.isfinite(x) and x > 0)]
    assert not bad


def test_smoke_optimizer_rows(smoke: tuple[dict[str, Any], str]) -> None:
    report, out = smoke
    sets = report["sections"]["optimizer_step"]["parameter_sets"]
    assert list(sets) == ["llama-bytes", "llama-nano"]
    # llama-bytes: attention 4 x 4 x 64 x 64 + MLP 4 x 3 x 64 x 172 of 231,232 parameters
    assert sets["llama-bytes"]["params"] == 231_232
    assert sets["llama-bytes"]["masked_params"] == 65_536 + 132_096
    for entry in sets.values():
        rows = entry["rows"]
        assert rows[suite.BASELINE]["ratio"] == 1.0
        for name in (suite.BASELINE, "Magma(AdamW)", "SkipUpdate(AdamW)"):
            assert rows[name]["status"] == "ok"
            assert rows[name]["timed_steps"] == suite.CPU_PLAN.optimizer_rounds
        for name in ("Magma(AdamW, fused=True)", "SkipUpdate(AdamW, fused=True)"):
            # skipped: their compiled step is a CPU compile
            assert rows[name]["status"] == "skipped" and rows[name]["reason"]
    assert f"ratio vs {suite.BASELINE} in the same round" in out


def test_smoke_training_and_data(smoke: tuple[dict[str, Any], str]) -> None:
    report, out = smoke
    training = report["sections"]["training"]
    plan = suite.CPU_PLAN
    assert training["tokens_per_step"] == plan.batch_size * (plan.seq_len - 1)
    assert training["model_flops_per_step"] == plan.batch_size * 95_035_392
    arms = training["arms"]
    assert set(arms) == {"dense", "magma", "dense + compile", "magma + compile"}
    for name in ("dense", "magma"):
        row = arms[name]
        assert row["timed_steps"] == plan.train_steps
        assert row["tokens_per_s"] == pytest.approx(training["tokens_per_step"] / row["median_s"])
        assert row["mfu"] is None
    for name in ("dense + compile", "magma + compile"):
        assert arms[name]["status"] == "skipped" and "torch.compile" in arms[name]["reason"]
    assert "n/a" in next(line for line in out.splitlines() if line.startswith("dense "))

    serving = report["sections"]["data"]["serving"]
    fastest = max(("dense", "magma"), key=lambda name: arms[name]["tokens_per_s"])
    assert serving["consumer_arm"] == fastest
    assert serving["ratio"] == pytest.approx(
        serving["tokens_per_s"] / arms[fastest]["tokens_per_s"]
    )


def test_smoke_loss_curves_decrease(smoke: tuple[dict[str, Any], str]) -> None:
    curve = smoke[0]["sections"]["loss_curve"]
    assert set(curve["arms"]) == {"dense", "magma"}
    for arm in curve["arms"].values():
        losses = arm["losses"]
        assert len(losses) == arm["steps_done"] == suite.CPU_PLAN.curve_steps
        # a fresh model predicts nearly uniformly over the 258 byte ids
        assert losses[0] == pytest.approx(math.log(258), abs=0.3)
        assert statistics.fmean(losses[-10:]) < losses[0] - 0.5
        assert arm["decreasing"] is True
