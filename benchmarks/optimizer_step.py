"""Step time and persistent memory of Magma/SkipUpdate against AdamW(fused=True).

Parameter set: the paper's 60M Llama (GaLore config: hidden 512, MLP 1376, 8 layers,
8 heads, vocab 32000; 58M parameters), attention+MLP masked as in Appendix C.1.
Every optimizer steps the same gradients, interleaved round-robin in one process, and
the script prints median step-time ratios against ``AdamW(fused=True)`` (torch's fastest
AdamW, on CPU and CUDA alike), measured in the same rounds. Each wrapper runs twice:
eager (``fused=False``: foreach kernels, on an ``AdamW(foreach=True)`` base) and compiled
(``fused=True``: magma/fused.py, on an ``AdamW(fused=True)`` base, which steps the unmasked
tensors). The untimed warmup steps, where the compiled rows compile, are timed apart
("first steps"); a compiled row that ran eagerly in part says why.

    python benchmarks/optimizer_step.py                    # CPU
    python benchmarks/optimizer_step.py --size small       # a 2-layer, 4k-vocab model
    python benchmarks/optimizer_step.py --device cuda
    python benchmarks/optimizer_step.py --reference-path DIR   # + magma-optimizer 0.1.1

``--replicas S`` (default 8, 0: off) adds one line: a Magma(AdamW) step over S replicas of
the small parameter set stacked along dim 0 (``replicas=S``) against S separate Magma(AdamW)
steps over one copy each, timed interleaved in the same run.

``--reference-path`` is a directory holding the published ``magma-optimizer`` package
(e.g. ``pip download --no-deps magma-optimizer==0.1.1`` unzipped there); it also
imports as ``magma``, so it is loaded under another name.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import magma

#: every ratio is against this, the fastest torch AdamW on CPU and CUDA alike
BASELINE = "AdamW(fused=True)"
# (hidden, MLP, layers, vocab): the paper's 60M Llama, and a small one for slow machines.
SIZES = {"60m": (512, 1376, 8, 32000), "small": (128, 344, 2, 4000)}


def llama60m_parameters(
    device: str, dtype: torch.dtype, size: str = "60m"
) -> dict[str, list[Tensor]]:
    """The 60M (or ``size``) Llama's parameter tensors by component, with fixed random
    gradients."""
    hidden, mlp, layers, vocab = SIZES[size]
    gen = torch.Generator().manual_seed(0)

    def tensor(*shape: int) -> Tensor:
        t = torch.randn(*shape, generator=gen).mul_(0.02).to(device, dtype).requires_grad_()
        t.grad = torch.randn(*shape, generator=gen).mul_(1e-3).to(device, dtype)
        return t

    parts: dict[str, list[Tensor]] = {"attention": [], "mlp": [], "rest": []}
    parts["rest"] += [tensor(vocab, hidden), tensor(hidden), tensor(vocab, hidden)]
    for _ in range(layers):
        parts["attention"] += [tensor(hidden, hidden) for _ in range(4)]
        parts["mlp"] += [tensor(mlp, hidden), tensor(mlp, hidden), tensor(hidden, mlp)]
        parts["rest"] += [tensor(hidden), tensor(hidden)]
    return parts


def load_reference(path: Path):
    """The published magma-optimizer's ``Magma`` class, imported as another module."""
    init = path / "magma" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        "magma_reference", init, submodule_search_locations=[str(init.parent)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--reference-path: no magma package under {path}")
    saved = {k: v for k, v in sys.modules.items() if k == "magma" or k.startswith("magma.")}
    for k in saved:
        del sys.modules[k]
    module = importlib.util.module_from_spec(spec)
    sys.modules["magma"] = module  # the package imports itself by that name
    try:
        spec.loader.exec_module(module)
    finally:
        for k in [k for k in sys.modules if k == "magma" or k.startswith("magma.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return module.Magma


def state_bytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def base_state_tensors(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [v for s in opt.state.values() for v in s.values() if isinstance(v, Tensor)]


def extra_state_tensors(opt: object) -> list[Tensor]:
    """Persistent tensors an optimizer keeps beyond its base optimizer's state."""
    if isinstance(opt, magma.MaskedOptimizer):
        return list(opt._scores.values()) + list(opt._own_moments.values())
    inner = getattr(opt, "_state", {})  # the reference package's own per-param state
    return [v for s in inner.values() for v in s.values() if isinstance(v, Tensor)]


def replicated_step(args: argparse.Namespace, dtype: torch.dtype, base_kwargs: dict) -> None:
    """Print one replicated Magma step over ``args.replicas`` stacked copies of the small
    parameter set against as many separate Magma steps (eager, attention+MLP masked)."""
    n = args.replicas
    copies = [llama60m_parameters(args.device, dtype, "small") for _ in range(n)]
    order = ("attention", "mlp", "rest")
    separate = [
        magma.Magma(
            torch.optim.AdamW([t for k in order for t in c[k]], **base_kwargs),
            params=c["attention"] + c["mlp"],
            seed=r,
            fused=False,
        )
        for r, c in enumerate(copies)
    ]

    def stacked(key: str) -> list[Tensor]:
        out = []
        for ts in zip(*(c[key] for c in copies), strict=True):
            t = torch.stack([x.detach() for x in ts]).requires_grad_()
            t.grad = torch.stack([x.grad for x in ts])
            out.append(t)
        return out

    parts = {k: stacked(k) for k in order}
    replicated = magma.Magma(
        torch.optim.AdamW([t for k in order for t in parts[k]], **base_kwargs),
        params=parts["attention"] + parts["mlp"],
        seed=list(range(n)),
        fused=False,
        replicas=n,
    )
    steps = {"replicated": [replicated.step], "separate": [o.step for o in separate]}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(args.warmup + args.rounds):
        for name in sorted(steps, reverse=bool(round_ % 2)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for step in steps[name]:
                step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
    one, many = (statistics.median(times[k]) * 1e3 for k in ("replicated", "separate"))
    pairs = zip(times["replicated"], times["separate"], strict=True)
    ratio = statistics.median(a / b for a, b in pairs)
    print(
        f"# replicas: Magma(AdamW) over {n} stacked copies of the small set {one:.2f} ms, "
        f"{n} separate Magma(AdamW) steps {many:.2f} ms, ratio {ratio:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--size", default="60m", choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reference-path", type=Path, default=None)
    parser.add_argument("--replicas", type=int, default=8)
    args = parser.parse_args()

    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    hyper = {"lr": 1e-3, "weight_decay": 0.1}
    foreach, fused_base = hyper | {"foreach": True}, hyper | {"fused": True}
    baseline = BASELINE

    candidates: dict[str, Callable[[], object]] = {}

    def build(name: str, make: Callable[[list[Tensor], list[Tensor]], object]) -> None:
        parts = llama60m_parameters(args.device, dtype, args.size)
        every = parts["attention"] + parts["mlp"] + parts["rest"]
        candidates[name] = make(every, parts["attention"] + parts["mlp"])

    build(baseline, lambda every, masked: torch.optim.AdamW(every, **fused_base))
    build("AdamW(foreach=True)", lambda every, masked: torch.optim.AdamW(every, **foreach))
    # eager: the foreach kernels on a foreach base (a fused base's step counter lives on the
    # device, so its bias corrections would cost the eager path extra launches); compiled:
    # the kernels of magma/fused.py, on the fused base, whose unmasked tensors it steps
    for fused, base_kwargs in ((False, foreach), (True, fused_base)):
        for wrapper in (magma.Magma, magma.SkipUpdate):
            name = f"{wrapper.__name__}(AdamW{', fused' if fused else ''})"
            build(
                name,
                lambda every, masked, w=wrapper, f=fused, kw=base_kwargs: w(
                    torch.optim.AdamW(every, **kw), params=masked, seed=0, fused=f
                ),
            )
    if args.reference_path is not None:
        reference = load_reference(args.reference_path)
        masked_ids: set[Tensor] = set()

        def make_reference(every: list[Tensor], masked: list[Tensor]) -> object:
            masked_ids.update(masked)
            exclude = {t for t in every if t not in masked_ids}
            return reference(torch.optim.AdamW(every, **foreach), exclude=exclude)

        build("magma-optimizer 0.1.1", make_reference)

    n_params = sum(p.numel() for g in candidates[baseline].param_groups for p in g["params"])
    # untimed: each arm's first steps, where the compiled ones compile (reported apart)
    first_steps: dict[str, float] = {}
    for name, opt in candidates.items():
        started = time.perf_counter()
        for _ in range(args.warmup):
            opt.step()
        if cuda:
            torch.cuda.synchronize()
        first_steps[name] = time.perf_counter() - started
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            candidates[name].step()
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)

    base_state = state_bytes(base_state_tensors(candidates[baseline]))
    print(
        f"# {args.size} Llama parameter set: {n_params / 1e6:.1f}M params, attention+MLP masked, "
        f"{args.device} {args.dtype}, threads={torch.get_num_threads()}, "
        f"{args.rounds} interleaved rounds"
    )
    print(
        f"{'optimizer':26s} {'median ms':>10s} {'ratio':>7s} {'extra B/param':>14s} "
        f"{'first steps s':>14s}"
    )
    for name, samples in times.items():
        ms = statistics.median(samples) * 1e3
        # Median of per-round ratios: robust to load drifting over the run.
        ratio = statistics.median(t / b for t, b in zip(samples, times[baseline], strict=True))
        opt = candidates[name]
        inner = opt.optimizer if hasattr(opt, "optimizer") else opt
        extra = state_bytes(base_state_tensors(inner)) - base_state
        extra += state_bytes(extra_state_tensors(opt))
        print(
            f"{name:26s} {ms:10.2f} {ratio:7.3f} {extra / n_params:14.4f} {first_steps[name]:14.2f}"
        )
        if isinstance(opt, magma.MaskedOptimizer) and opt.fused_fallbacks:
            print(f"#   {name} ran eagerly in part: {'; '.join(opt.fused_fallbacks)}")
    print(
        f"# ratio = median over rounds of step time / {baseline} in the same round; "
        "extra = persistent state beyond it; first steps = the untimed warmup "
        f"({args.warmup} steps, where the fused rows compile)"
    )
    if args.replicas > 0:
        replicated_step(args, dtype, foreach)


if __name__ == "__main__":
    main()
