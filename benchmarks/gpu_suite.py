"""GPU benchmark suite: optimizer step, training throughput and MFU, data serving, loss curve.

One command for a GPU machine, with no downloads; the README ("GPU: the benchmark suite")
says what each section measures and how. The design serves one goal: every section
reports, however another fares. So each runs in a forked process with a wall-clock limit
(its share of ``--budget-s``, plus what earlier sections left unused), stops its loops at
a soft deadline, and is killed and reported ``timeout`` past the limit, with the parts it
finished. Optimizer arms are timed interleaved round-robin against ``AdamW(fused=True)``,
and their ratio is the median over rounds of same-round ratios, so a change in load
during the run hits both sides alike. MFU follows ``FLOPS_FORMULA``; the tokens/s columns
count predicted positions, batch x (T - 1), as the trainer does.

Without CUDA (or with ``--cpu-smoke``) it runs at CPU-smoke sizes, skipping the
``torch.compile`` arms and the fused rows unless ``--cpu-compile``.

    python benchmarks/gpu_suite.py                         # CUDA if present, else CPU smoke
    python benchmarks/gpu_suite.py --json gpu_suite.json --peak-tflops 989
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import LlamaForCausalLM

import magma
from worker.config import TrialConfig
from worker.contract import COMPONENT_LABELS, Components
from worker.models import model_config
from worker.trainer import train
from worker.workloads import build_workload

#: prctl option: the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1
SECTIONS = ("data", "optimizer_step", "training", "loss_curve")
BASELINE = "AdamW(fused=True)"
#: peak dense (not 2:4 sparse) bf16 tensor-core TFLOP/s from NVIDIA's data sheets, by a
#: substring of ``torch.cuda.get_device_name()``; the longest matching key wins
PEAK_BF16_TFLOPS = {
    "A100": 312.0,
    "H100": 989.0,  # SXM ("NVIDIA H100 80GB HBM3")
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.0,
    "GH200": 989.0,
    "H200 NVL": 835.0,
    "L4": 121.0,
    "L40": 181.0,
    "L40S": 362.0,
}
FLOPS_FORMULA = (
    "model FLOPs per sequence = 6*N*T + 12*L*d*T^2 (N: parameters but the input embedding, "
    "L layers, d hidden size, T seq_len; PaLM appendix B, causal mask not discounted); "
    "MFU = FLOPs per step / median step time / peak bf16 FLOP/s"
)
CPU_COMPILE_REASON = (
    "torch.compile on CPU is too slow for a smoke run (a compiled llama-bytes training step "
    "took 144 s to compile on a 2-core machine); --cpu-compile runs it"
)


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode. ``shares`` split the time budget between the sections."""

    mode: str
    device: str
    optimizer_models: tuple[str, ...]
    optimizer_warmup: int
    optimizer_rounds: int
    model: str
    batch_size: int
    seq_len: int
    lr: float
    train_warmup: int
    train_steps: int
    data_batches: int
    curve_steps: int
    max_documents: int | None
    threads: int | None
    budget_s: float
    shares: dict[str, float]
    compile_skipped: str | None = None  # why the torch.compile arms and fused rows are skipped
    cache_dir: str | None = None


GPU_PLAN = Plan(
    mode="gpu",
    device="cuda",
    optimizer_models=("llama-60m", "llama-350m"),
    optimizer_warmup=3,
    optimizer_rounds=20,
    model="llama-60m",
    batch_size=64,
    seq_len=256,
    lr=1e-3,
    train_warmup=10,
    train_steps=30,
    data_batches=200,
    curve_steps=200,
    max_documents=None,
    threads=None,
    budget_s=430.0,
    shares={"data": 0.1, "optimizer_step": 0.25, "training": 0.43, "loss_curve": 0.22},
)
CPU_PLAN = Plan(
    mode="cpu-smoke",
    device="cpu",
    optimizer_models=("llama-bytes", "llama-nano"),
    optimizer_warmup=2,
    optimizer_rounds=5,
    model="llama-bytes",
    batch_size=8,
    seq_len=64,
    lr=3e-3,
    train_warmup=2,
    train_steps=5,
    data_batches=20,
    curve_steps=30,
    max_documents=200,
    threads=1,
    budget_s=100.0,
    shares={"data": 0.1, "optimizer_step": 0.2, "training": 0.25, "loss_curve": 0.45},
    compile_skipped=CPU_COMPILE_REASON,
)


# --------------------------------------------------------------------------------------
# FLOPs and peaks
# --------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """The table's peak for this device name (longest matching key), or None."""
    keys = [key for key in PEAK_BF16_TFLOPS if key in device_name]
    return PEAK_BF16_TFLOPS[max(keys, key=len)] if keys else None


def resolve_peak(device: str, name: str, override: float | None) -> tuple[float | None, str | None]:
    """(peak bf16 TFLOP/s, where it came from); none on CPU, where MFU is "n/a"."""
    if device != "cuda":
        return None, None
    if override is not None:
        return override, "--peak-tflops"
    peak = peak_tflops(name)
    return (peak, "table") if peak is not None else (None, None)


def model_flops_per_sequence(model: str, seq_len: int) -> int:
    """6 N T + 12 L d T^2 (see FLOPS_FORMULA), from the model's config."""
    config = model_config(model)
    layers, hidden, vocab = config.num_hidden_layers, config.hidden_size, config.vocab_size
    with torch.device("meta"):
        total = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    matmul_params = total - vocab * hidden  # the input embedding is a lookup
    return 6 * matmul_params * seq_len + 12 * layers * hidden * seq_len**2


# --------------------------------------------------------------------------------------
# sections run in forked processes, with a hard limit and incremental results
# --------------------------------------------------------------------------------------


class Sink:
    """A section's results so far, rewritten after each piece: a section killed at its
    limit still hands back what it finished."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        tmp.replace(self.path)


Section = Callable[[Plan, float, Sink], None]


def _child(section: Section, plan: Plan, deadline: float, sink: Sink) -> None:
    os.setsid()  # its own process group: a kill at the limit takes compile workers with it
    with contextlib.suppress(OSError, AttributeError):  # Linux: die with a killed suite
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the suite died before that took effect
        os._exit(1)
    try:
        if plan.threads is not None:
            torch.set_num_threads(plan.threads)
        section(plan, deadline, sink)
    except BaseException:
        sink.put("error", traceback.format_exc(limit=8))
        sys.stderr.write(sink.data["error"])
        os._exit(1)


def run_section(
    name: str, section: Section, plan: Plan, limit_s: float, workdir: Path
) -> dict[str, Any]:
    """Run ``section`` in a forked process; killed (status ``timeout``) at ``limit_s``.

    Its loops aim at a soft deadline 10% (at least 3 s) short of the limit, so that the
    limit only hits a step that cannot be interrupted (a compile, a hung kernel)."""
    path = workdir / f"{name}.json"
    started = time.monotonic()
    deadline = started + limit_s - max(3.0, 0.1 * limit_s)
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(section, plan, deadline, Sink(path)), name=f"gpu_suite:{name}"
    )
    process.start()
    process.join(limit_s)
    status = "ok"
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.join()
        status = "timeout"
    elif process.exitcode != 0:
        status = "error"
    result = json.loads(path.read_text()) if path.exists() else {}
    if status == "ok" and result.get("error"):
        status = "error"
    return {
        "status": status,
        "wall_s": round(time.monotonic() - started, 2),
        "limit_s": round(limit_s, 1),
        **result,
    }


def _probe(plan: Plan, deadline: float, sink: Sink) -> None:
    cuda = torch.cuda.is_available()
    sink.put("cuda", cuda)
    sink.put("name", torch.cuda.get_device_name() if cuda else "cpu")
    sink.put("torch", torch.__version__)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_row(samples: list[float]) -> dict[str, Any]:
    return {"status": "ok", "timed_steps": len(samples), "median_s": statistics.median(samples)}


# --- optimizer_step ---------------------------------------------------------------------


def parameter_set(model: str) -> tuple[list[tuple[str, torch.Size]], set[str]]:
    """The model's (name, shape) list and the names the worker masks (attention+MLP),
    from a model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        built = LlamaForCausalLM(model_config(model))
    names = {param: name for name, param in built.named_parameters()}
    labels = COMPONENT_LABELS[Components.attention_mlp.value]
    masked = {names[p] for ps in magma.components(built, labels).values() for p in ps}
    return [(name, p.shape) for name, p in built.named_parameters()], masked


def _tensors(shapes: list[tuple[str, torch.Size]], device: str) -> list[Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)
    tensors = []
    for _, shape in shapes:
        t = torch.randn(shape, generator=generator, device=device).mul_(0.02).requires_grad_()
        t.grad = torch.randn(shape, generator=generator, device=device).mul_(1e-3)
        tensors.append(t)
    return tensors


def _interleaved(
    arms: dict[str, Callable[[], Any]], warmup: int, rounds: int, deadline: float, device: str
) -> dict[str, list[float]]:
    """Per-arm step times over round-robin rounds (at least one), after ``warmup`` steps."""
    for step in arms.values():
        for _ in range(warmup):
            step()
        sync(device)
    names = list(arms)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        if round_ and time.monotonic() > deadline:
            break
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            sync(device)
            started = time.perf_counter()
            arms[name]()
            sync(device)
            times[name].append(time.perf_counter() - started)
    return times


def optimizer_step(plan: Plan, deadline: float, sink: Sink) -> None:
    eager = {"fused": False}
    wrappers = {
        "Magma(AdamW)": (magma.Magma, eager),
        "SkipUpdate(AdamW)": (magma.SkipUpdate, eager),
        "Magma(AdamW, fused=True)": (magma.Magma, {"fused": True}),
        "SkipUpdate(AdamW, fused=True)": (magma.SkipUpdate, {"fused": True}),
    }
    phases = [[BASELINE, "Magma(AdamW)", "SkipUpdate(AdamW)"]]
    fused_rows = list(wrappers)[2:]
    skipped: dict[str, str] = {}
    if plan.compile_skipped:
        skipped = dict.fromkeys(fused_rows, f"skipped: {plan.compile_skipped}")
    else:
        phases.append([BASELINE, *fused_rows])
    sink.put("baseline", BASELINE)
    sink.put("eager_rows", "fused=False")
    results: dict[str, Any] = {}
    for index, model in enumerate(plan.optimizer_models):
        shapes, masked_names = parameter_set(model)
        numel = sum(math.prod(shape) for _, shape in shapes)
        masked_numel = sum(math.prod(shape) for name, shape in shapes if name in masked_names)
        entry: dict[str, Any] = {
            "params": numel,
            "masked_params": masked_numel,
            "masked_share": masked_numel / numel,
            "rows": {},
        }
        results[model] = entry
        model_deadline = time.monotonic() + (deadline - time.monotonic()) / (
            len(plan.optimizer_models) - index
        )
        for phase_index, phase in enumerate(phases):
            if phase_index:
                torch._dynamo.reset()  # fresh graphs per parameter set: no recompile limit hit
            phase_deadline = time.monotonic() + (model_deadline - time.monotonic()) / (
                len(phases) - phase_index
            )
            try:
                times = _interleaved(
                    _optimizer_arms(phase, wrappers, shapes, masked_names, plan.device),
                    plan.optimizer_warmup,
                    plan.optimizer_rounds,
                    phase_deadline,
                    plan.device,
                )
            except Exception as exc:  # e.g. out of memory: the other phases still run
                for name in phase[1:] if phase_index else phase:
                    entry["rows"][name] = {"status": "error", "reason": _short(exc)}
                times = {}
            for name in times:
                if name == BASELINE and phase_index:
                    continue  # measured again only as the fused rows' same-round reference
                ratios = [t / b for t, b in zip(times[name], times[BASELINE], strict=True)]
                entry["rows"][name] = {
                    **_median_row(times[name]),
                    "ratio": statistics.median(ratios),
                }
            gc.collect()
            if plan.device == "cuda":
                torch.cuda.empty_cache()
            sink.put("parameter_sets", results)
        for name, why in skipped.items():
            entry["rows"][name] = {"status": why.split(":")[0], "reason": why}
        sink.put("parameter_sets", results)


def _optimizer_arms(
    phase: list[str],
    wrappers: dict[str, tuple[type, dict[str, Any]]],
    shapes: list[tuple[str, torch.Size]],
    masked_names: set[str],
    device: str,
) -> dict[str, Callable[[], Any]]:
    """Each arm's ``step`` on its own copy of the parameter set (same values, same grads)."""
    arms: dict[str, Callable[[], Any]] = {}
    for name in phase:
        params = _tensors(shapes, device)
        base = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, fused=True)
        if name == BASELINE:
            arms[name] = base.step
            continue
        cls, kwargs = wrappers[name]
        masked = [p for (pname, _), p in zip(shapes, params, strict=True) if pname in masked_names]
        arms[name] = cls(base, params=masked, seed=0, **kwargs).step
    return arms


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


# --- training, data, loss curve: the worker's own trainer and workload -------------------


class _TimeUp(Exception):
    """Raised from the trainer's progress callback once an arm's time is spent."""


def _trial(plan: Plan, **fields: Any) -> TrialConfig:
    steps = fields.pop("steps")
    return TrialConfig(
        model=plan.model,
        batch_size=plan.batch_size,
        seq_len=plan.seq_len,
        steps=steps,
        eval_interval=steps,  # one evaluation, after the last step's callback
        eval_tokens=plan.batch_size * plan.seq_len,
        lr=plan.lr,
        device=plan.device,
        threads=plan.threads,
        max_documents=plan.max_documents,
        cache_dir=plan.cache_dir,
        seed=0,
        **fields,
    )


def run_trainer(config: TrialConfig, deadline: float) -> tuple[list[float], list[float]]:
    """(seconds of each step but the first, loss of each step) of ``worker.trainer.train``,
    stopped at the first step that ends after ``deadline``."""
    stamps: list[float] = []
    losses: list[float] = []

    def progress(step: int, loss: float) -> None:
        sync(config.device)
        stamps.append(time.perf_counter())
        losses.append(loss)
        if time.monotonic() > deadline and step < config.steps:
            raise _TimeUp

    with contextlib.suppress(_TimeUp):
        train(config, progress=progress)
    gc.collect()
    if config.device == "cuda":
        torch.cuda.empty_cache()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], losses


def _arm_deadline(deadline: float, weight: float, remaining_weight: float) -> float:
    return time.monotonic() + (deadline - time.monotonic()) * weight / remaining_weight


def training(plan: Plan, deadline: float, sink: Sink) -> None:
    flops = plan.batch_size * model_flops_per_sequence(plan.model, plan.seq_len)
    tokens = plan.batch_size * (plan.seq_len - 1)
    sink.put("model", plan.model)
    sink.put("batch", f"{plan.batch_size} x {plan.seq_len}")
    sink.put("autocast", "bf16" if plan.device == "cuda" else "none (fp32)")
    sink.put("model_flops_per_step", flops)
    sink.put("tokens_per_step", tokens)
    # the worker passes no fused=: the library's default decides
    default = inspect.signature(magma.Magma).parameters["fused"].default
    sink.put("magma_fused", f"as the worker builds it: fused={default!r}")
    arms = [(v, c) for c in (False, True) for v in ("dense", "magma")]
    weights = {arm: 2.0 if arm[1] else 1.0 for arm in arms if not (arm[1] and plan.compile_skipped)}
    rows: dict[str, Any] = {}
    for variant, compiled in arms:
        name = f"{variant}{' + compile' if compiled else ''}"
        if compiled and plan.compile_skipped:
            rows[name] = {"status": "skipped", "reason": plan.compile_skipped}
            continue
        if compiled:
            torch._dynamo.reset()  # each compiled arm compiles from scratch, in its warmup
        weight = weights.pop((variant, compiled))
        arm_deadline = _arm_deadline(deadline, weight, weight + sum(weights.values()))
        config = _trial(
            plan, steps=plan.train_warmup + plan.train_steps, variant=variant, compile=compiled
        )
        try:
            times, _ = run_trainer(config, arm_deadline)
        except Exception as exc:  # e.g. a compile failure: the other arms still run
            rows[name] = {"status": "error", "reason": _short(exc)}
            sink.put("arms", rows)
            continue
        timed = times[plan.train_warmup - 1 :]  # times[0] is step 2's
        if not timed:
            rows[name] = {"status": "timeout", "reason": "no step after the warmup in its time"}
        else:
            row = _median_row(timed)
            row["tokens_per_s"] = tokens / row["median_s"]
            row["model_tflops_per_s"] = flops / row["median_s"] / 1e12
            rows[name] = row
        sink.put("arms", rows)
    sink.put("arms", rows)


def data(plan: Plan, deadline: float, sink: Sink) -> None:
    config = _trial(plan, steps=plan.data_batches, variant="dense")
    workload = build_workload(config, torch.device(plan.device))  # builds the token cache
    sink.put("model", plan.model)
    sink.put("batch", f"{plan.batch_size} x {plan.seq_len}")
    times: list[float] = []
    tokens: list[int] = []
    for step in range(plan.data_batches + 5):
        if len(times) and time.monotonic() > deadline:
            break
        sync(plan.device)
        started = time.perf_counter()
        batch = workload.batch(step, 0)
        sync(plan.device)
        if step >= 5:  # the first batches draw the epoch's permutation
            times.append(time.perf_counter() - started)
            tokens.append(workload.tokens(batch))
    row = _median_row(times)
    row["tokens_per_s"] = statistics.median(tokens) / row["median_s"]
    sink.put("serving", row)


def loss_curve(plan: Plan, deadline: float, sink: Sink) -> None:
    sink.put("model", plan.model)
    sink.put("steps", plan.curve_steps)
    arms: dict[str, Any] = {}
    for index, variant in enumerate(("dense", "magma")):
        arm_deadline = _arm_deadline(deadline, 1.0, 2.0 - index)
        config = _trial(plan, steps=plan.curve_steps, variant=variant)
        try:
            _, losses = run_trainer(config, arm_deadline)
        except Exception as exc:
            arms[variant] = {"status": "error", "reason": _short(exc)}
            sink.put("arms", arms)
            continue
        last10 = statistics.fmean(losses[-10:]) if losses else math.nan
        arms[variant] = {
            "status": "ok" if len(losses) == plan.curve_steps else "truncated",
            "steps_done": len(losses),
            "first_loss": losses[0] if losses else math.nan,
            "last_loss": losses[-1] if losses else math.nan,
            "last10_mean": last10,
            "decreasing": bool(losses) and last10 < losses[0],
            "losses": losses,
        }
        sink.put("arms", arms)


SECTION_FUNCTIONS: dict[str, Section] = {
    "data": data,
    "optimizer_step": optimizer_step,
    "training": training,
    "loss_curve": loss_curve,
}


# --------------------------------------------------------------------------------------
# the suite
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="CPU-smoke sizes even where CUDA is present"
    )
    parser.add_argument("--json", type=Path, default=Path("gpu_suite.json"))
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU (CUDA)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="total seconds of the sections (GPU 430, CPU smoke 100)",
    )
    parser.add_argument(
        "--cpu-compile", action="store_true", help="run the torch.compile arms on CPU too"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="token cache (default: MAGMA_CACHE_DIR's)"
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args(argv)
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        parser.error("--peak-tflops must be > 0")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be > 0")
    return args


def make_plan(args: argparse.Namespace, cuda: bool) -> Plan:
    plan = CPU_PLAN if args.cpu_smoke or not cuda else GPU_PLAN
    changes: dict[str, Any] = {"cache_dir": str(args.cache_dir) if args.cache_dir else None}
    if args.budget_s is not None:
        changes["budget_s"] = args.budget_s
    if args.cpu_compile:
        changes["compile_skipped"] = None
    return replace(plan, **changes)


def run_suite(plan: Plan, device: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    peak, source = resolve_peak(plan.device, device["name"], args.peak_tflops)
    report: dict[str, Any] = {
        "suite": "benchmarks/gpu_suite.py",
        "mode": plan.mode,
        "device": device["name"],
        "torch": device["torch"],
        "threads": plan.threads or "torch default",
        "peak_bf16_tflops": peak,
        "peak_source": source,
        "flops_formula": FLOPS_FORMULA,
        "plan": {k: v for k, v in asdict(plan).items() if k != "shares"},
        "sections": {},
    }
    shares = {name: plan.shares[name] for name in args.only}
    spare = 0.0
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as workdir:
        for name in args.only:
            limit = plan.budget_s * shares[name] / sum(plan.shares.values()) + spare
            print(f"# {name}: up to {limit:.0f} s", file=sys.stderr, flush=True)
            result = run_section(name, SECTION_FUNCTIONS[name], plan, limit, Path(workdir))
            spare = max(0.0, limit - result["wall_s"])
            report["sections"][name] = result
    _derive(report, peak)
    report["wall_s"] = round(time.monotonic() - started, 1)
    return report


def _derive(report: dict[str, Any], peak: float | None) -> None:
    """MFU of each training arm and the data section's ratio to the fastest arm."""
    sections = report["sections"]
    measured = {
        name: row
        for name, row in sections.get("training", {}).get("arms", {}).items()
        if row.get("status") == "ok"
    }
    for row in measured.values():
        row["mfu"] = row["model_tflops_per_s"] / peak if peak else None
    serving = sections.get("data", {}).get("serving")
    if serving is not None:
        if measured:
            fastest = max(measured, key=lambda name: measured[name]["tokens_per_s"])
            consumer = measured[fastest]["tokens_per_s"]
            serving.update(
                consumer_arm=fastest,
                consumer_tokens_per_s=consumer,
                ratio=serving["tokens_per_s"] / consumer,
            )
        else:
            serving.update(consumer_arm=None, consumer_tokens_per_s=None, ratio=None)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_report(report: dict[str, Any]) -> list[str]:
    sections = report["sections"]
    lines = [
        f"# gpu_suite ({report['mode']}) on {report['device']}, torch {report['torch']}, "
        f"peak bf16 {_fmt(report['peak_bf16_tflops'], '.0f')} TFLOP/s "
        f"({report['peak_source'] or 'none'}), {report['wall_s']} s"
    ]
    for name, section in sections.items():
        lines.append(f"\n## {name}: {section['status']} in {section['wall_s']} s")
        if section.get("error"):
            lines.append(section["error"].strip().splitlines()[-1])
    opt = sections.get("optimizer_step", {})
    for model, entry in opt.get("parameter_sets", {}).items():
        lines.append(
            f"\noptimizer step, {model} parameter set: {entry['params'] / 1e6:.1f}M params, "
            f"{entry['masked_share']:.1%} masked; ratio vs {BASELINE} in the same round"
        )
        lines.append(f"{'optimizer':32} {'median ms':>10} {'ratio':>7} {'rounds':>7}")
        for row_name, row in entry["rows"].items():
            if row["status"] != "ok":
                lines.append(f"{row_name:32} {row['reason']}")
                continue
            lines.append(
                f"{row_name:32} {row['median_s'] * 1e3:10.2f} {row['ratio']:7.3f} "
                f"{row['timed_steps']:7d}"
            )
    trained = sections.get("training", {})
    if trained.get("arms"):
        lines.append(
            f"\ntraining {trained['model']}, batch {trained['batch']}, "
            f"autocast {trained['autocast']} (worker.trainer.train)"
        )
        lines.append(f"{'arm':18} {'step ms':>9} {'tokens/s':>11} {'TFLOP/s':>8} {'MFU':>6}")
        for arm, row in trained["arms"].items():
            if row["status"] != "ok":
                lines.append(f"{arm:18} {row['status']}: {row['reason']}")
                continue
            lines.append(
                f"{arm:18} {row['median_s'] * 1e3:9.1f} {row['tokens_per_s']:11.0f} "
                f"{row['model_tflops_per_s']:8.2f} {_fmt(row.get('mfu'), '.1%'):>6}"
            )
    serving = sections.get("data", {}).get("serving")
    if serving:
        lines.append(
            f"\ndata serving (LlamaC4Workload.batch): {serving['tokens_per_s']:.0f} tokens/s; "
            f"fastest training arm ({serving['consumer_arm'] or 'n/a'}) consumes "
            f"{_fmt(serving['consumer_tokens_per_s'], '.0f')}: "
            f"ratio {_fmt(serving['ratio'], '.1f')}"
        )
    curve = sections.get("loss_curve", {})
    for arm, row in curve.get("arms", {}).items():
        if "steps_done" not in row:
            lines.append(f"loss curve {curve['model']} {arm}: {row['status']}: {row['reason']}")
            continue
        lines.append(
            f"loss curve {curve['model']} {arm}: {row['steps_done']}/{curve['steps']} steps, "
            f"first {row['first_loss']:.3f}, mean of last 10 {row['last10_mean']:.3f}, "
            f"{'decreasing' if row['decreasing'] else 'NOT decreasing'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # CUDA is initialised only in the forked sections: a parent that had initialised it
    # could not fork them.
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as workdir:
        probe = run_section("probe", _probe, CPU_PLAN, 120.0, Path(workdir))
    if probe["status"] != "ok":
        raise SystemExit(f"device probe failed: {probe}")
    plan = make_plan(args, probe["cuda"])
    report = run_suite(plan, probe, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print("\n".join(format_report(report)))
    print(f"\nJSON: {args.json}")
    problems = incomplete(report)
    if problems:
        print("incomplete: " + "; ".join(problems))
    return 1 if problems else 0


def incomplete(report: dict[str, Any]) -> list[str]:
    """Sections and rows that did not finish (timeout, error, truncated); skipped and
    unavailable rows are reported as such, not counted."""
    found = []
    for name, section in report["sections"].items():
        if section["status"] != "ok":
            found.append(f"{name} {section['status']}")
        rows = dict(section.get("arms", {}))
        for model, entry in section.get("parameter_sets", {}).items():
            rows |= {f"{model} {row}": value for row, value in entry["rows"].items()}
        found += [
            f"{name} {row}: {value['status']}"
            for row, value in rows.items()
            if value["status"] in ("timeout", "error", "truncated")
        ]
    return found


if __name__ == "__main__":
    raise SystemExit(main())
