"""``benchmarks/gpu_suite.py``: its FLOPs and peak figures, its per-section and per-part time
limits, what a compile that never finishes, a recompile-limit hit and a failed compile
probe leave in the report, and one whole CPU-smoke run as CI runs it (a subprocess; the
JSON checked section by section).

CUDA cannot run here, so the GPU sizes and the bf16 autocast run only on a GPU. The default
CPU run checks that the compiling arms are reported as skipped, with the reason, rather than
missing; ``test_cpu_compile_run_every_row`` (slow) runs every compiling arm on the CPU.
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
import torch

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


def _recompiles_past_the_limit(plan: suite.Plan, deadline: float, sink: suite.Sink) -> None:
    torch._dynamo.config.recompile_limit = 1
    scaled = torch.compile(lambda x, n: x * n, backend="eager", dynamic=False)
    sink.put("first", float(scaled(torch.ones(2), 2).sum()))
    scaled(torch.ones(2), 3)  # a new constant: a recompile, past the limit of 1
    sink.put("second", "ran eagerly")


def test_recompile_limit_hit_is_an_error_naming_it(tmp_path: Path) -> None:
    """Past the limit dynamo would run the function eagerly and say nothing; in a section
    the hit raises, and the section's reason names it."""
    plan = replace(suite.CPU_PLAN, threads=None)
    result = suite.run_section("recompiles", _recompiles_past_the_limit, plan, 120.0, tmp_path)
    assert result["status"] == "error" and result["first"] == 4.0
    assert "second" not in result
    assert result["reason"].startswith("recompile limit hit")
    assert "FailOnRecompileLimitHit" in result["reason"]
    assert torch._dynamo.config.fail_on_recompile_limit_hit is False  # only in the child


def _compile_never_ends(*args: Any, **kwargs: Any) -> None:
    time.sleep(600)


#: the CPU plan with its compiling arms on and its loops short
COMPILING_PLAN = replace(
    suite.CPU_PLAN, compile_skipped=None, optimizer_models=("llama-bytes",), optimizer_rounds=2
)


def test_optimizer_compile_timeout_costs_its_row_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled row whose compile cannot finish is a timeout row naming the compile; the
    eager rows still come out, as does every other compiled row (each its own process)."""
    monkeypatch.setattr(suite, "_compile_warmup", _compile_never_ends)
    monkeypatch.setattr(suite, "COMPILE_WEIGHT", 0.25)  # short compile parts: a short test
    started = time.monotonic()
    section = suite.run_optimizer_step(COMPILING_PLAN, 8.0, tmp_path)
    assert time.monotonic() - started < 30
    rows = section["parameter_sets"]["llama-bytes"]["rows"]
    for name in (suite.BASELINE, *suite.EAGER_ROWS):
        assert rows[name]["status"] == "ok" and rows[name]["timed_steps"] == 2
    for name in suite.FUSED_ROWS:
        assert rows[name]["status"] == "timeout", rows[name]
        assert "the compile (its first 3 steps) did not finish within" in rows[name]["reason"]
        assert rows[name]["base"] == suite.BASELINE
    assert section["status"] == "timeout"
    assert [part["status"] for part in section["parts"].values()] == ["ok", "timeout", "timeout"]
    report = {"compile_probe": {"status": "ok"}, "sections": {"optimizer_step": section}}
    assert suite.incomplete(report) == [
        "optimizer_step timeout",
        f"optimizer_step llama-bytes {suite.FUSED_ROWS[0]}: timeout",
        f"optimizer_step llama-bytes {suite.FUSED_ROWS[1]}: timeout",
    ]


def test_training_compile_timeout_costs_its_arm_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training arms run one process each: the compiling arms' compile never finishing
    leaves three timeout rows naming it and the eager arms measured."""
    real_train = suite.train

    def train(config: Any, **kwargs: Any) -> Any:
        if config.compile or config.fused_step:
            _compile_never_ends()
        return real_train(config, **kwargs)

    monkeypatch.setattr(suite, "train", train)
    monkeypatch.setattr(suite, "COMPILE_WEIGHT", 0.1)  # most of the time to the eager arms
    plan = replace(COMPILING_PLAN, cache_dir=str(tmp_path / "cache"))
    section = suite.run_training(plan, 12.0, tmp_path)
    arms = section["arms"]
    for name in ("dense", "magma"):
        assert arms[name]["status"] == "ok" and arms[name]["timed_steps"] >= 1
        assert arms[name]["startup_s"] > 0
    for name in ("magma fused", "dense + compile", "magma fused + compile"):
        assert arms[name]["status"] == "timeout", arms[name]
        assert arms[name]["reason"].startswith(
            f"the compile (train() through its first {plan.train_warmup} steps) did not finish"
        )
        assert "compile_s" not in arms[name]


def _no_compiler(plan: suite.Plan, deadline: float, sink: suite.Sink) -> None:
    raise RuntimeError("no compiler here")


def test_failed_compile_probe_skips_the_compiling_arms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the compile probe failing, every compiling arm is skipped with its reason (none
    errors on its own), the eager arms run, and the exit status says the run is short."""
    monkeypatch.setattr(suite, "_compile_probe", _no_compiler)
    monkeypatch.setenv("MAGMA_TOKENIZE_WORKERS", "1")
    # a model built in the suite's own process might initialise CUDA there: the forked
    # parts build them (a fork's appends stay in the fork)
    built_here: list[Any] = []
    llama = suite.LlamaForCausalLM
    monkeypatch.setattr(suite, "LlamaForCausalLM", lambda c: built_here.append(c) or llama(c))
    out = tmp_path / "suite.json"
    argv = ["--cpu-smoke", "--cpu-compile", "--json", str(out), "--budget-s", str(BUDGET_S)]
    assert suite.main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 1
    report = json.loads(out.read_text())
    probe = report["compile_probe"]
    assert probe["status"] == "error" and probe["reason"] == "RuntimeError: no compiler here"
    why = "the compile probe failed (error: RuntimeError: no compiler here)"
    assert report["plan"]["compile_skipped"] == why
    for entry in report["sections"]["optimizer_step"]["parameter_sets"].values():
        for name in suite.FUSED_ROWS:
            assert entry["rows"][name] == {
                "base": suite.BASELINE,
                "status": "skipped",
                "reason": why,
            }
        assert all(entry["rows"][name]["status"] == "ok" for name in suite.EAGER_ROWS)
    arms = report["sections"]["training"]["arms"]
    for name in ("magma fused", "dense + compile", "magma fused + compile"):
        assert arms[name]["status"] == "skipped" and arms[name]["reason"] == why
    assert arms["dense"]["status"] == arms["magma"]["status"] == "ok"
    assert all(section["status"] == "ok" for section in report["sections"].values())
    assert built_here == []
    sizes = report["sections"]["optimizer_step"]["parameter_sets"]["llama-bytes"]
    assert sizes["params"] == 231_232  # from a part
    assert report["sections"]["training"]["model_flops_per_step"] == 8 * 95_035_392
    printed = capsys.readouterr().out
    assert "compile probe (torch.compile of a tiny function): error: RuntimeError" in printed
    assert printed.rstrip().splitlines()[-1] == "incomplete: compile probe error"


def test_plan_budgets() -> None:
    cpu = suite.make_plan(suite.parse_args(["--cpu-smoke"]), cuda=True)
    assert cpu.mode == "cpu-smoke" and cpu.compile_skipped == suite.CPU_COMPILE_REASON
    compiling = suite.make_plan(suite.parse_args(["--cpu-compile"]), cuda=False)
    assert compiling.compile_skipped is None
    assert compiling.budget_s == suite.CPU_COMPILE_BUDGET_S > suite.CPU_PLAN.budget_s
    given = suite.make_plan(suite.parse_args(["--cpu-compile", "--budget-s", "50"]), cuda=False)
    assert given.budget_s == 50
    gpu = suite.make_plan(suite.parse_args(["--budget-s", "420"]), cuda=True)
    assert gpu.mode == "gpu" and gpu.compile_skipped is None and gpu.budget_s == 420
    for plan in (suite.GPU_PLAN, suite.CPU_PLAN):
        assert set(plan.shares) == set(suite.SECTIONS)


def _line(lines: list[str], start: str) -> list[str]:
    """The words of the first line that starts with ``start``, after those of ``start``."""
    line = next(line for line in lines if line.startswith(start))
    return line.split()[len(start.split()) :]


def test_format_prints_compile_time_apart_from_step_time() -> None:
    """A compiled row shows its compile_s and its step time in columns of their own, an
    eager training arm its startup in parentheses, a row without a result its reason."""
    ok = {"base": suite.BASELINE, "status": "ok", "timed_steps": 20}
    rows = {
        suite.BASELINE: {**ok, "median_s": 0.002, "ratio": 1.0},
        suite.FUSED_ROWS[0]: {
            **ok, "median_s": 0.0031, "ratio": 1.55, "compile_s": 41.26, "graphs_while_timed": 2
        },
        suite.FUSED_ROWS[1]: {
            "base": suite.BASELINE, "status": "error", "reason": "recompile limit hit (...)",
            "compile_s": 7.54,
        },
    }  # fmt: skip
    arm = {
        "status": "ok", "median_s": 0.05, "tokens_per_s": 1e5, "model_tflops_per_s": 2.0,
        "mfu": 0.25, "timed_steps": 30,
    }  # fmt: skip
    training = {
        "status": "ok", "wall_s": 200.0, "model": "llama-60m", "batch": "64 x 256",
        "autocast": "bf16",
        "arms": {
            "dense": {**arm, "startup_s": 3.26}, "dense + compile": {**arm, "compile_s": 55.54}
        },
    }  # fmt: skip
    sets = {"llama-60m": {"params": 58e6, "masked_share": 0.7, "rows": rows}}
    report = {
        "mode": "gpu", "device": "NVIDIA H100 80GB HBM3", "torch": "2.13.0",
        "peak_bf16_tflops": 989.0, "peak_source": "table", "wall_s": 400.0,
        "compile_probe": {"status": "ok", "seconds": 12.34, "device": "cuda"},
        "sections": {
            "optimizer_step": {"status": "ok", "wall_s": 100.0, "parameter_sets": sets},
            "training": training,
        },
    }  # fmt: skip
    lines = suite.format_report(report)
    assert "compile probe (torch.compile of a tiny function): ok, 12.3 s on cuda" in lines
    # base, compile s, median ms, ratio, rounds
    fused = _line(lines, suite.FUSED_ROWS[0])
    assert fused[:5] == [suite.BASELINE, "41.3", "3.10", "1.550", "20"]
    assert " ".join(fused[5:]) == "2 graph(s) compiled while timed"
    assert _line(lines, suite.FUSED_ROWS[1]) == [
        suite.BASELINE, "7.5", "error:", "recompile", "limit", "hit", "(...)"
    ]  # fmt: skip
    assert _line(lines, suite.BASELINE)[:3] == [suite.BASELINE, "-", "2.00"]
    # compile s (startup in parentheses), step ms, tokens/s, TFLOP/s, MFU, steps
    assert _line(lines, "dense ") == ["(3.3)", "50.0", "100000", "2.00", "25.0%", "30"]
    assert _line(lines, "dense + compile") == ["55.5", "50.0", "100000", "2.00", "25.0%", "30"]


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
    section = report["sections"]["optimizer_step"]
    sets = section["parameter_sets"]
    assert list(sets) == ["llama-bytes", "llama-nano"]
    # llama-bytes: attention 4 x 4 x 64 x 64 + MLP 4 x 3 x 64 x 172 of 231,232 parameters
    assert sets["llama-bytes"]["params"] == 231_232
    assert sets["llama-bytes"]["masked_params"] == 65_536 + 132_096
    # the eager rows on a base whose step counter stays on the host; the baseline and
    # the compiled rows on AdamW(fused=True)
    assert section["eager_rows"] == "fused=False on AdamW(foreach=True)"
    assert section["baseline"] == suite.BASELINE == "AdamW(fused=True)"
    for entry in sets.values():
        rows = entry["rows"]
        assert list(rows) == [suite.BASELINE, *suite.EAGER_ROWS, *suite.FUSED_ROWS]
        assert rows[suite.BASELINE]["ratio"] == 1.0
        assert rows[suite.BASELINE]["base"] == "AdamW(fused=True)"
        for name in (suite.BASELINE, "Magma(AdamW)", "SkipUpdate(AdamW)"):
            assert rows[name]["status"] == "ok"
            assert rows[name]["timed_steps"] == suite.CPU_PLAN.optimizer_rounds
            assert "compile_s" not in rows[name]
        for name in ("Magma(AdamW)", "SkipUpdate(AdamW)"):
            assert rows[name]["base"] == "AdamW(foreach=True)"
        for name in ("Magma(AdamW, fused=True)", "SkipUpdate(AdamW, fused=True)"):
            # skipped: their compiled step is a CPU compile
            assert rows[name]["status"] == "skipped" and rows[name]["reason"]
            assert rows[name]["base"] == "AdamW(fused=True)"
    assert f"ratio vs {suite.BASELINE} in the same round" in out
    assert report["compile_probe"] == {"status": "skipped", "reason": suite.CPU_COMPILE_REASON}


def test_smoke_training_and_data(smoke: tuple[dict[str, Any], str]) -> None:
    report, out = smoke
    training = report["sections"]["training"]
    plan = suite.CPU_PLAN
    assert training["tokens_per_step"] == plan.batch_size * (plan.seq_len - 1)
    assert training["model_flops_per_step"] == plan.batch_size * 95_035_392
    arms = training["arms"]
    assert list(arms) == list(suite.TRAINING_ARMS)
    assert set(arms) == {
        "dense",
        "magma",
        "magma fused",
        "dense + compile",
        "magma fused + compile",
    }
    # Magma's step is explicit in every arm: eager, or magma's compiled step
    assert arms["magma"]["fused_step"] is False and arms["magma"]["compile"] is False
    assert arms["magma fused"]["fused_step"] is True and arms["magma fused"]["compile"] is False
    assert arms["magma fused + compile"]["fused_step"] is True
    assert arms["magma fused + compile"]["compile"] is True
    assert arms["dense + compile"]["compile"] is True
    for name in ("dense", "magma"):
        row = arms[name]
        assert row["timed_steps"] == plan.train_steps
        assert row["tokens_per_s"] == pytest.approx(training["tokens_per_step"] / row["median_s"])
        assert row["mfu"] is None
        assert 0 < row["startup_s"] < training["wall_s"] and "compile_s" not in row
    for name in ("magma fused", "dense + compile", "magma fused + compile"):
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


@pytest.mark.slow
def test_cpu_compile_run_every_row(tmp_path: Path) -> None:
    """``--cpu-smoke --cpu-compile`` at its default budget: every section completes, every
    row is present and measured, and each compiling row reports its compile apart from its
    step time, with no graph compiled while it was timed (its warmup covered the compile)."""
    out = tmp_path / "suite.json"
    command = [sys.executable, str(SCRIPT), "--cpu-smoke", "--cpu-compile", "--json", str(out)]
    command += ["--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "MAGMA_TOKENIZE_WORKERS": "1"}
    timeout = suite.CPU_COMPILE_BUDGET_S + 300
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr[-5000:]
    report = json.loads(out.read_text())
    assert report["compile_probe"]["status"] == "ok" and report["compile_probe"]["seconds"] > 0
    assert report["plan"]["compile_skipped"] is None
    assert list(report["sections"]) == list(suite.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section)

    compiled: list[tuple[str, dict[str, Any]]] = []
    sets = report["sections"]["optimizer_step"]["parameter_sets"]
    assert list(sets) == list(suite.CPU_PLAN.optimizer_models)
    for entry in sets.values():
        assert list(entry["rows"]) == [suite.BASELINE, *suite.EAGER_ROWS, *suite.FUSED_ROWS]
        for name, row in entry["rows"].items():
            assert row["status"] == "ok" and row["median_s"] > 0 and row["ratio"] > 0, name
            assert row["timed_steps"] == suite.CPU_PLAN.optimizer_rounds
            assert ("compile_s" in row) == (name in suite.FUSED_ROWS)
        compiled += [(name, entry["rows"][name]) for name in suite.FUSED_ROWS]
    arms = report["sections"]["training"]["arms"]
    assert list(arms) == list(suite.TRAINING_ARMS)
    for name, row in arms.items():
        assert row["status"] == "ok" and row["median_s"] > 0, name
        assert row["timed_steps"] == suite.CPU_PLAN.train_steps
        if suite._compiles(suite.TRAINING_ARMS[name]):
            compiled.append((name, row))
        else:
            assert row["startup_s"] > 0 and "compile_s" not in row
    assert len(compiled) == 2 * 2 + 3
    for name, row in compiled:
        assert row["compile_s"] > 0 and row["graphs"] >= 1, (name, row)
        assert row["graphs_while_timed"] == 0, (name, row)
        # the table prints the compile time in its own column, before the step time
        lines = [line for line in done.stdout.splitlines() if line.startswith(f"{name} ")]
        assert any(f" {row['compile_s']:.1f} " in line for line in lines), (name, lines)
    assert "incomplete" not in done.stdout
