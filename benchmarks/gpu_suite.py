"""GPU benchmark suite: data serving, loss curve, optimizer step, training throughput and MFU.

One command for a GPU machine, with no downloads; the README ("GPU: the benchmark suite")
says what to run and what each number means. The design serves one goal: every row
reports, however another fares. So the sections run in forked processes with wall-clock
limits (each section its share of ``--budget-s`` plus what earlier ones left unused), and
within the optimizer-step and training sections every compiling arm is a process of its
own: its compile runs first, untimed, reported as ``compile_s``, and a compile that
cannot finish in the arm's time costs that row alone (``timeout``, naming the compile).
Loops stop at a soft deadline; a process still running at its limit is killed with its
compile workers and reports what it finished. A recompile-limit hit is an error row,
not a silent eager fallback. Optimizer arms are timed interleaved round-robin against
``AdamW(fused=True)``, their ratio the median over rounds of same-round ratios, so a
change in load hits both sides alike. MFU follows ``FLOPS_FORMULA``; tokens/s count
predicted positions, batch x (T - 1), as the trainer does.

Without CUDA (or with ``--cpu-smoke``) it runs at CPU-smoke sizes, skipping the
compiling arms unless ``--cpu-compile``.

    python benchmarks/gpu_suite.py                         # CUDA if present, else CPU smoke
    python benchmarks/gpu_suite.py --json gpu_suite.json --peak-tflops 989
    python benchmarks/gpu_suite.py --cpu-smoke --cpu-compile   # every arm, on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
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
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# Before torch is imported: torch.cuda.is_available() then asks NVML rather than the
# driver, so nothing in this (the parent) process initialises CUDA, which would leave the
# forked sections unable to use it.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
from torch import Tensor  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

import magma  # noqa: E402
from worker.config import TrialConfig  # noqa: E402
from worker.contract import COMPONENT_LABELS, Components  # noqa: E402
from worker.models import model_config  # noqa: E402
from worker.trainer import train  # noqa: E402
from worker.workloads import build_workload  # noqa: E402

#: prctl option: the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1
#: in running order: the compiling sections last, so they inherit the time others leave
SECTIONS = ("data", "loss_curve", "optimizer_step", "training")
BASELINE = "AdamW(fused=True)"
#: the base of the eager Magma/SkipUpdate rows: its step counter stays on the host, as
#: the eager rule wants (a fused base's counter lives on the GPU, and its bias
#: corrections would cost scalar kernels per tensor)
EAGER_BASE = "AdamW(foreach=True)"
EAGER_ROWS = ("Magma(AdamW)", "SkipUpdate(AdamW)")
#: the compiled step's rows, on ``BASELINE`` as their base
FUSED_ROWS = ("Magma(AdamW, fused=True)", "SkipUpdate(AdamW, fused=True)")
#: training arms: TrialConfig fields of each (model compile, Magma's step explicit)
TRAINING_ARMS: dict[str, dict[str, Any]] = {
    "dense": {"variant": "dense"},
    "magma": {"variant": "magma", "fused_step": False},
    "magma fused": {"variant": "magma", "fused_step": True},
    "dense + compile": {"variant": "dense", "compile": True},
    "magma fused + compile": {"variant": "magma", "fused_step": True, "compile": True},
}
#: a compiling arm's share of its section's time against an eager arm's
COMPILE_WEIGHT = 3.0
PROBE_LIMIT_S = 120.0
#: the compile probe's limit: a first compile loads the compiler stack
COMPILE_PROBE_LIMIT_S = 180.0
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
#: --cpu-compile's default budget, generous: the whole run took about 2 minutes on a
#: 2-core machine from empty caches; the budget cuts loops short only under load
CPU_COMPILE_BUDGET_S = 900.0


@dataclass(frozen=True)
class Plan:
    """The sizes of one mode. ``shares`` split the time budget between the sections."""

    mode: str
    device: str
    optimizer_models: tuple[str, ...]
    optimizer_warmup: int
    optimizer_rounds: int
    compile_warmup: int  # untimed steps of a compiled optimizer arm before its warmup
    model: str
    batch_size: int
    seq_len: int
    lr: float
    train_warmup: int  # untimed first steps of a training arm (its compile, if any)
    train_steps: int
    data_batches: int
    curve_steps: int
    max_documents: int | None
    threads: int | None
    budget_s: float
    shares: dict[str, float]
    compile_skipped: str | None = None  # why the compiling arms are skipped
    cache_dir: str | None = None


GPU_PLAN = Plan(
    mode="gpu",
    device="cuda",
    optimizer_models=("llama-60m", "llama-350m"),
    optimizer_warmup=3,
    optimizer_rounds=20,
    compile_warmup=3,
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
    budget_s=420.0,
    shares={"data": 0.08, "loss_curve": 0.12, "optimizer_step": 0.35, "training": 0.45},
)
CPU_PLAN = Plan(
    mode="cpu-smoke",
    device="cpu",
    optimizer_models=("llama-bytes", "llama-nano"),
    optimizer_warmup=2,
    optimizer_rounds=5,
    compile_warmup=3,
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
    shares={"data": 0.05, "loss_curve": 0.15, "optimizer_step": 0.35, "training": 0.45},
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
        # past dynamo's recompile limit a function would run eagerly, silently, and be
        # timed as if compiled: here the hit raises, and its row is an error naming it
        config = torch._dynamo.config
        if hasattr(config, "fail_on_recompile_limit_hit"):
            config.fail_on_recompile_limit_hit = True
        else:  # torch before 2.6 named it for the cache
            config.fail_on_cache_limit_hit = True
        # magma's compiled step runs a call it cannot compile eagerly, with a warning: here
        # that is an error too, so no eagerly run row is timed as compiled
        warnings.simplefilter("error", magma.fused.FusedFallbackWarning)
        section(plan, deadline, sink)
    except BaseException as exc:
        sink.put("reason", _short(exc))
        sink.put("error", traceback.format_exc(limit=8))
        sys.stderr.write(sink.data["error"])
        os._exit(1)


def run_section(
    name: str, section: Section, plan: Plan, limit_s: float, workdir: Path
) -> dict[str, Any]:
    """Run ``section`` in a forked process; killed (status ``timeout``) at ``limit_s``.

    Its loops aim at a soft deadline 10% (at least 3 s) short of the limit, so that the
    limit only hits a step that cannot be interrupted (a compile, a hung kernel)."""
    if torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA is initialised in the suite's own process: a forked section could not use "
            "it (set PYTORCH_NVML_BASED_CUDA_CHECK=1 before torch is imported)"
        )
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
        status = "timeout"
    elif process.exitcode != 0:
        status = "error"
    # the whole process group: at the limit the section, after it what it left behind
    # (compile workers outlive a process that exits without shutting them down)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.join()
    result = json.loads(path.read_text()) if path.exists() else {}
    if status == "ok" and result.get("error"):
        status = "error"
    return {
        "status": status,
        "wall_s": round(time.monotonic() - started, 2),
        "limit_s": round(limit_s, 1),
        **result,
    }


@dataclass(frozen=True)
class Part:
    """One forked process of a section: a compile that never ends, or a crash, costs the
    rows of that part alone. ``weight``: its share of the section's time."""

    key: str
    run: Section
    weight: float = 1.0


def run_parts(
    section: str, parts: list[Part], plan: Plan, limit_s: float, workdir: Path
) -> dict[str, dict[str, Any]]:
    """Each part in turn, each limited to the section's time left split by weight among
    the parts still to run: time a part leaves unused passes to the next."""
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for index, part in enumerate(parts):
        left = limit_s - (time.monotonic() - started)
        share = max(1.0, left * part.weight / sum(p.weight for p in parts[index:]))
        print(f"#   {part.key}: up to {share:.0f} s", file=sys.stderr, flush=True)
        results[part.key] = run_section(f"{section}-{index}", part.run, plan, share, workdir)
    return results


def _parts_section(
    results: dict[str, dict[str, Any]], started: float, limit_s: float
) -> dict[str, Any]:
    """A section made of parts: ``ok`` when every part was, else the worst part's status;
    each part's status, time and traceback under ``parts``."""
    statuses = {result["status"] for result in results.values()}
    status = next((s for s in ("timeout", "error") if s in statuses), "ok")
    keep = ("status", "wall_s", "limit_s", "reason", "error")
    return {
        "status": status,
        "wall_s": round(time.monotonic() - started, 2),
        "limit_s": round(limit_s, 1),
        "parts": {key: {k: r[k] for k in keep if k in r} for key, r in results.items()},
    }


def _part_row(result: dict[str, Any], name: str, compile_what: str | None) -> dict[str, Any]:
    """Row ``name`` of a part's result, or why there is none: a part killed at its limit
    before its first steps (``compile_what``: what those compile) names the compile."""
    if name in result.get("rows", {}):
        return result["rows"][name]
    first = result.get("first_steps", {}).get(name)
    status = result["status"] if result["status"] != "ok" else "error"
    limit = f"its {result['limit_s']:.0f} s"
    if status == "timeout" and first is None and compile_what:
        reason = f"the compile ({compile_what}) did not finish within {limit}"
    elif status == "timeout":
        reason = f"not finished within {limit}"
    else:
        reason = result.get("reason") or "the part exited without a result"
    return {"status": status, "reason": reason, **(first or {})}


def _probe(plan: Plan, deadline: float, sink: Sink) -> None:
    cuda = torch.cuda.is_available()
    sink.put("cuda", cuda)
    sink.put("name", torch.cuda.get_device_name() if cuda else "cpu")
    sink.put("torch", torch.__version__)


def _compile_probe(plan: Plan, deadline: float, sink: Sink) -> None:
    """torch.compile of a tiny function on the suite's device, run once and checked."""

    def tiny(x: Tensor) -> Tensor:
        return torch.sin(x) * 2 + 1

    x = torch.linspace(0, 1, 64, device=plan.device)
    started = time.perf_counter()
    out = torch.compile(tiny)(x)
    sync(plan.device)
    sink.put("seconds", time.perf_counter() - started)
    if not torch.allclose(out, tiny(x)):
        raise RuntimeError("the compiled function's result differs from the eager one")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _median_row(samples: list[float]) -> dict[str, Any]:
    return {"status": "ok", "timed_steps": len(samples), "median_s": statistics.median(samples)}


def _graphs() -> int:
    """Graphs dynamo compiled in this process so far."""
    return counters["stats"]["unique_graphs"]


def _recompile_limit_hit(exc: BaseException | None) -> bool:
    """Whether dynamo's hard failure at its recompile limit is in ``exc``'s chain (by name:
    torch before 2.6 called it FailOnCacheLimitHit)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if type(exc).__name__ in ("FailOnRecompileLimitHit", "FailOnCacheLimitHit"):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _short(exc: BaseException) -> str:
    """The exception as a row's reason; a recompile-limit hit says so first."""
    text = f"{type(exc).__name__}: {exc}"
    if _recompile_limit_hit(exc):
        config = torch._dynamo.config
        limit = getattr(config, "recompile_limit", None) or config.cache_size_limit
        text = f"recompile limit hit (torch._dynamo.config.recompile_limit = {limit}): {text}"
    return text[:500]


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
    arms: dict[str, Callable[[], Any]],
    warmup: int,
    rounds: int,
    deadline: float,
    device: str,
    after_round: Callable[[dict[str, list[float]]], None],
) -> dict[str, list[float]]:
    """Per-arm step times over round-robin rounds (at least one), after ``warmup`` steps;
    ``after_round`` sees the times so far."""
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
        after_round(times)
    return times


def _compile_warmup(step: Callable[[], Any], steps: int, device: str) -> dict[str, Any]:
    """Step until the graphs are compiled: the wall time and the graphs it compiled."""
    graphs = _graphs()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return {"compile_s": time.perf_counter() - started, "graphs": _graphs() - graphs}


def _optimizer_part(model: str, rows: tuple[str, ...], compiling: bool) -> Section:
    """``rows`` timed interleaved with the baseline on ``model``'s parameter set; a
    compiling part first steps each row through its compile, untimed."""

    def part(plan: Plan, deadline: float, sink: Sink) -> None:
        shapes, masked_names = parameter_set(model)
        numel = sum(math.prod(shape) for _, shape in shapes)
        masked_numel = sum(math.prod(shape) for name, shape in shapes if name in masked_names)
        sink.put(
            "sizes",
            {"params": numel, "masked_params": masked_numel, "masked_share": masked_numel / numel},
        )
        arms = _optimizer_arms((BASELINE, *rows), shapes, masked_names, plan.device)
        first: dict[str, dict[str, Any]] = {}
        if compiling:
            for name in rows:
                first[name] = _compile_warmup(arms[name], plan.compile_warmup, plan.device)
                sink.put("first_steps", first)
        compiled = _graphs()

        def put(times: dict[str, list[float]]) -> None:
            found: dict[str, Any] = {}
            for name, samples in times.items():
                ratios = [t / b for t, b in zip(samples, times[BASELINE], strict=True)]
                row = {**_median_row(samples), "ratio": statistics.median(ratios)}
                found[name] = {"base": _base_name(name), **row, **first.get(name, {})}
                if compiling and name != BASELINE:
                    found[name]["graphs_while_timed"] = _graphs() - compiled
                    found[name]["baseline_median_s"] = statistics.median(times[BASELINE])
            if compiling:  # the baseline's own row comes from the eager part
                del found[BASELINE]
            sink.put("rows", found)

        _interleaved(arms, plan.optimizer_warmup, plan.optimizer_rounds, deadline, plan.device, put)

    return part


#: a parameter set's sizes, from the parts that built it
SIZES = ("params", "masked_params", "masked_share")


def _base_name(row: str) -> str:
    return EAGER_BASE if row in EAGER_ROWS else BASELINE


def _optimizer_arms(
    names: tuple[str, ...],
    shapes: list[tuple[str, torch.Size]],
    masked_names: set[str],
    device: str,
) -> dict[str, Callable[[], Any]]:
    """Each arm's ``step`` on its own copy of the parameter set (same values, same grads)."""
    wrappers = {
        "Magma(AdamW)": magma.Magma,
        "SkipUpdate(AdamW)": magma.SkipUpdate,
        "Magma(AdamW, fused=True)": magma.Magma,
        "SkipUpdate(AdamW, fused=True)": magma.SkipUpdate,
    }
    arms: dict[str, Callable[[], Any]] = {}
    for name in names:
        params = _tensors(shapes, device)
        kind = {"foreach": True} if _base_name(name) == EAGER_BASE else {"fused": True}
        base = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, **kind)
        if name == BASELINE:
            arms[name] = base.step
            continue
        masked = [p for (pname, _), p in zip(shapes, params, strict=True) if pname in masked_names]
        fused = name in FUSED_ROWS
        arms[name] = wrappers[name](base, params=masked, seed=0, fused=fused).step
    return arms


def run_optimizer_step(plan: Plan, limit_s: float, workdir: Path) -> dict[str, Any]:
    """Per parameter set: the baseline and eager rows in one part, each compiled row with
    the baseline in a part of its own."""
    started = time.monotonic()
    parts = []
    for model in plan.optimizer_models:
        parts.append(Part(f"{model} eager", _optimizer_part(model, EAGER_ROWS, False)))
        if not plan.compile_skipped:
            parts += [
                Part(f"{model} {row}", _optimizer_part(model, (row,), True), COMPILE_WEIGHT)
                for row in FUSED_ROWS
            ]
    results = run_parts("optimizer_step", parts, plan, limit_s, workdir)
    compile_what = f"its first {plan.compile_warmup} steps"
    parameter_sets: dict[str, Any] = {}
    for model in plan.optimizer_models:
        # from the parts: this process builds no model (one might initialise CUDA)
        mine = [result for key, result in results.items() if key.startswith(f"{model} ")]
        sizes = next((r["sizes"] for r in mine if "sizes" in r), dict.fromkeys(SIZES))
        rows = {
            name: {"base": _base_name(name), **_part_row(results[f"{model} eager"], name, None)}
            for name in (BASELINE, *EAGER_ROWS)
        }
        for name in FUSED_ROWS:
            if plan.compile_skipped:
                row = {"status": "skipped", "reason": plan.compile_skipped}
            else:
                row = _part_row(results[f"{model} {name}"], name, compile_what)
            rows[name] = {"base": BASELINE, **row}
        parameter_sets[model] = {**sizes, "rows": rows}
    return {
        **_parts_section(results, started, limit_s),
        "baseline": BASELINE,
        "eager_rows": f"fused=False on {EAGER_BASE}",
        "compiled_rows": f"fused=True on {BASELINE}, {plan.compile_warmup} untimed compile steps",
        "parameter_sets": parameter_sets,
    }


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


def run_trainer(
    config: TrialConfig,
    deadline: float,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[list[float], list[float]]:
    """(seconds of each step but the first, loss of each step) of ``worker.trainer.train``,
    stopped at the first step that ends after ``deadline``. ``on_step(step, stamp)`` is
    called after each step (synchronised) with its ``time.perf_counter()`` stamp."""
    stamps: list[float] = []
    losses: list[float] = []

    def progress(step: int, loss: float) -> None:
        sync(config.device)
        stamps.append(time.perf_counter())
        losses.append(loss)
        if on_step is not None:
            on_step(step, stamps[-1])
        if time.monotonic() > deadline and step < config.steps:
            raise _TimeUp

    with contextlib.suppress(_TimeUp):
        train(config, progress=progress)
    gc.collect()
    if config.device == "cuda":
        torch.cuda.empty_cache()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], losses


def _compiles(fields: dict[str, Any]) -> bool:
    return bool(fields.get("compile") or fields.get("fused_step"))


def _training_part(name: str, fields: dict[str, Any]) -> Section:
    """One training arm: its first ``train_warmup`` steps untimed (a compiling arm's
    ``compile_s``, an eager one's ``startup_s``: from the call of ``train()``, so building
    the workload and the first evaluation too), then the median of the steps after."""

    def part(plan: Plan, deadline: float, sink: Sink) -> None:
        flops = plan.batch_size * model_flops_per_sequence(plan.model, plan.seq_len)
        sink.put("model_flops_per_step", flops)
        tokens = plan.batch_size * (plan.seq_len - 1)
        config = _trial(plan, steps=plan.train_warmup + plan.train_steps, **fields)
        key = "compile_s" if _compiles(fields) else "startup_s"
        started = time.perf_counter()
        graphs: list[int] = []

        def on_step(step: int, stamp: float) -> None:
            if step == plan.train_warmup:
                graphs.append(_graphs())
                first = {key: stamp - started}
                if _compiles(fields):
                    first["graphs"] = graphs[0]
                sink.put("first_steps", {name: first})

        times, _ = run_trainer(config, deadline, on_step)
        timed = times[plan.train_warmup - 1 :]  # times[0] is step 2's
        first = sink.data.get("first_steps", {}).get(name, {})
        if not timed:
            reason = "no step after the warmup in its time"
            sink.put("rows", {name: {"status": "timeout", "reason": reason, **first}})
            return
        row = _median_row(timed)
        row["tokens_per_s"] = tokens / row["median_s"]
        row["model_tflops_per_s"] = flops / row["median_s"] / 1e12
        row |= first
        if _compiles(fields):
            row["graphs_while_timed"] = _graphs() - graphs[0]
        sink.put("rows", {name: row})

    return part


def run_training(plan: Plan, limit_s: float, workdir: Path) -> dict[str, Any]:
    """Each arm of ``TRAINING_ARMS`` in a part of its own."""
    started = time.monotonic()
    parts = [
        Part(name, _training_part(name, fields), COMPILE_WEIGHT if _compiles(fields) else 1.0)
        for name, fields in TRAINING_ARMS.items()
        if not (_compiles(fields) and plan.compile_skipped)
    ]
    results = run_parts("training", parts, plan, limit_s, workdir)
    # from the parts: this process builds no model (one might initialise CUDA)
    flops = next(
        (r["model_flops_per_step"] for r in results.values() if r.get("model_flops_per_step")), None
    )
    compile_what = f"train() through its first {plan.train_warmup} steps"
    arms: dict[str, Any] = {}
    for name, fields in TRAINING_ARMS.items():
        settings = {"compile": bool(fields.get("compile")), "fused_step": fields.get("fused_step")}
        if name not in results:
            arms[name] = {"status": "skipped", "reason": plan.compile_skipped, **settings}
            continue
        row = _part_row(results[name], name, compile_what if _compiles(fields) else None)
        arms[name] = {**row, **settings}
    return {
        **_parts_section(results, started, limit_s),
        "model": plan.model,
        "batch": f"{plan.batch_size} x {plan.seq_len}",
        "autocast": "bf16" if plan.device == "cuda" else "none (fp32)",
        "model_flops_per_step": flops,
        "tokens_per_step": plan.batch_size * (plan.seq_len - 1),
        "arms": arms,
    }


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


#: the loss curve's arms: Magma's eager step, so no compile can cut a curve short (the
#: training section times the compiled step)
CURVE_ARMS: dict[str, dict[str, Any]] = {
    "dense": {"variant": "dense"},
    "magma": {"variant": "magma", "fused_step": False},
}


def loss_curve(plan: Plan, deadline: float, sink: Sink) -> None:
    sink.put("model", plan.model)
    sink.put("steps", plan.curve_steps)
    sink.put("magma_step", "eager (fused_step=False)")
    arms: dict[str, Any] = {}
    for index, (variant, fields) in enumerate(CURVE_ARMS.items()):
        arm_deadline = time.monotonic() + (deadline - time.monotonic()) / (2.0 - index)
        config = _trial(plan, steps=plan.curve_steps, **fields)
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


def _one_process(section: Section) -> Callable[[Plan, float, Path], dict[str, Any]]:
    def run(plan: Plan, limit_s: float, workdir: Path) -> dict[str, Any]:
        return run_section(section.__name__, section, plan, limit_s, workdir)

    return run


#: each section's runner, in the suite's process: (plan, limit_s, workdir) -> result
SECTION_RUNNERS: dict[str, Callable[[Plan, float, Path], dict[str, Any]]] = {
    "data": _one_process(data),
    "loss_curve": _one_process(loss_curve),
    "optimizer_step": run_optimizer_step,
    "training": run_training,
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
        help=f"total seconds of the compile probe and the sections (GPU {GPU_PLAN.budget_s:.0f}, "
        f"CPU smoke {CPU_PLAN.budget_s:.0f}, with --cpu-compile {CPU_COMPILE_BUDGET_S:.0f})",
    )
    parser.add_argument(
        "--cpu-compile", action="store_true", help="run the compiling arms on CPU too"
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
    if args.cpu_compile:
        changes["compile_skipped"] = None
        if plan is CPU_PLAN:
            changes["budget_s"] = CPU_COMPILE_BUDGET_S
    if args.budget_s is not None:
        changes["budget_s"] = args.budget_s
    return replace(plan, **changes)


def probe_compile(plan: Plan, workdir: Path) -> tuple[Plan, dict[str, Any]]:
    """The compile probe (where the plan compiles), and the plan it leaves: on a failed
    probe the compiling arms are skipped with its reason, rather than failing one by one."""
    if plan.compile_skipped:
        return plan, {"status": "skipped", "reason": plan.compile_skipped}
    limit = min(COMPILE_PROBE_LIMIT_S, plan.budget_s / 2)
    result = run_section("compile_probe", _compile_probe, plan, limit, workdir)
    probe = {k: result[k] for k in ("status", "wall_s", "seconds", "reason") if k in result}
    probe["device"] = plan.device
    if result["status"] == "ok":
        return plan, probe
    if result["status"] == "timeout":
        probe["reason"] = f"torch.compile of a tiny function took over {limit:.0f} s"
    why = f"the compile probe failed ({probe['status']}: {probe.get('reason')})"
    return replace(plan, compile_skipped=why), probe


def run_suite(
    plan: Plan, device: dict[str, Any], args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    started = time.monotonic()
    peak, source = resolve_peak(plan.device, device["name"], args.peak_tflops)
    plan, compile_probe = probe_compile(plan, workdir)
    budget = plan.budget_s - (time.monotonic() - started)  # the compile probe's is spent
    report: dict[str, Any] = {
        "suite": "benchmarks/gpu_suite.py",
        "mode": plan.mode,
        "device": device["name"],
        "torch": device["torch"],
        "threads": plan.threads or "torch default",
        "peak_bf16_tflops": peak,
        "peak_source": source,
        "flops_formula": FLOPS_FORMULA,
        "compile_probe": compile_probe,
        "plan": {k: v for k, v in asdict(plan).items() if k != "shares"},
        "sections": {},
    }
    names = [name for name in SECTIONS if name in args.only]
    spare = 0.0
    for name in names:
        limit = budget * plan.shares[name] / sum(plan.shares[n] for n in names) + spare
        print(f"# {name}: up to {limit:.0f} s", file=sys.stderr, flush=True)
        result = SECTION_RUNNERS[name](plan, limit, workdir)
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


def _first_steps(row: dict[str, Any]) -> str:
    """The compile column: a compiling row's compile_s, an eager training arm's startup_s
    in parentheses (the same span without a compile), else "-"."""
    if "compile_s" in row:
        return f"{row['compile_s']:.1f}"
    if "startup_s" in row:
        return f"({row['startup_s']:.1f})"
    return "-"


def _recompiled(row: dict[str, Any]) -> str:
    graphs = row.get("graphs_while_timed")
    return f"  {graphs} graph(s) compiled while timed" if graphs else ""


def format_report(report: dict[str, Any]) -> list[str]:
    sections = report["sections"]
    probe = report["compile_probe"]
    if probe["status"] == "ok":
        probe_line = f"ok, {probe['seconds']:.1f} s on {probe['device']}"
    else:
        probe_line = f"{probe['status']}: {probe.get('reason')}"
    lines = [
        f"# gpu_suite ({report['mode']}) on {report['device']}, torch {report['torch']}, "
        f"peak bf16 {_fmt(report['peak_bf16_tflops'], '.0f')} TFLOP/s "
        f"({report['peak_source'] or 'none'}), {report['wall_s']} s",
        f"compile probe (torch.compile of a tiny function): {probe_line}",
    ]
    for name, section in sections.items():
        lines.append(f"\n## {name}: {section['status']} in {section['wall_s']} s")
        if section.get("error"):
            lines.append(section["error"].strip().splitlines()[-1])
    opt = sections.get("optimizer_step", {})
    for model, entry in opt.get("parameter_sets", {}).items():
        size = "size n/a (no part built it)"
        if entry["params"] is not None:
            size = f"{entry['params'] / 1e6:.1f}M params, {entry['masked_share']:.1%} masked"
        lines.append(
            f"\noptimizer step, {model} parameter set: {size}; "
            f"ratio vs {BASELINE} in the same round"
        )
        lines.append(
            f"{'optimizer':30} {'base':20} {'compile s':>9} {'median ms':>10} {'ratio':>7} "
            f"{'rounds':>7}"
        )
        for row_name, row in entry["rows"].items():
            head = f"{row_name:30} {row['base']:20} {_first_steps(row):>9}"
            if row["status"] != "ok":
                lines.append(f"{head} {row['status']}: {row['reason']}")
                continue
            lines.append(
                f"{head} {row['median_s'] * 1e3:10.2f} {row['ratio']:7.3f} "
                f"{row['timed_steps']:7d}{_recompiled(row)}"
            )
    trained = sections.get("training", {})
    if trained.get("arms"):
        lines.append(
            f"\ntraining {trained['model']}, batch {trained['batch']}, "
            f"autocast {trained['autocast']} (worker.trainer.train)"
        )
        lines.append(
            f"{'arm':22} {'compile s':>9} {'step ms':>9} {'tokens/s':>11} {'TFLOP/s':>8} "
            f"{'MFU':>6} {'steps':>6}"
        )
        for arm, row in trained["arms"].items():
            head = f"{arm:22} {_first_steps(row):>9}"
            if row["status"] != "ok":
                lines.append(f"{head} {row['status']}: {row['reason']}")
                continue
            lines.append(
                f"{head} {row['median_s'] * 1e3:9.1f} {row['tokens_per_s']:11.0f} "
                f"{row['model_tflops_per_s']:8.2f} {_fmt(row.get('mfu'), '.1%'):>6} "
                f"{row['timed_steps']:6d}{_recompiled(row)}"
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
    with tempfile.TemporaryDirectory(prefix="gpu_suite-") as tmp:
        workdir = Path(tmp)
        probe = run_section("probe", _probe, CPU_PLAN, PROBE_LIMIT_S, workdir)
        if probe["status"] != "ok":
            raise SystemExit(f"device probe failed: {probe}")
        plan = make_plan(args, probe["cuda"])
        report = run_suite(plan, probe, args, workdir)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print("\n".join(format_report(report)))
    print(f"\nJSON: {args.json}")
    problems = incomplete(report)
    if problems:
        print("incomplete: " + "; ".join(problems))
    return 1 if problems else 0


def incomplete(report: dict[str, Any]) -> list[str]:
    """A failed compile probe, and the sections and rows that did not finish (timeout,
    error, truncated); skipped rows are reported as such, not counted."""
    found = []
    if report["compile_probe"]["status"] not in ("ok", "skipped"):
        found.append(f"compile probe {report['compile_probe']['status']}")
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
