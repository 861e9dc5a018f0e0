"""Tokens/s of the full trainer against a bare training loop on the same model.

Arms, run round-robin in one process (``--repeats`` rounds, median reported):

* ``bare loop`` (the baseline): ``worker.models.build_model`` + plain forward/backward/
  ``AdamW.step()``/``zero_grad`` on pre-built random token batches, one host sync per step
  (``float(loss)``), exactly what the trainer also does;
* ``trainer dense``: ``worker.trainer.train`` with the dense AdamW variant on the real C4
  sample (batches from the memory-mapped token cache, LR schedule, divergence check,
  metrics windows);
* ``trainer magma``: the same with Magma masking attention+MLP (so its ratio also holds
  Magma's own optimizer cost, not only the harness's).

Each arm runs ``--warmup`` untimed steps, then ``--steps`` timed ones. The trainer runs
``warmup + steps`` steps with ``eval_interval = warmup``; its timed figure is its own
reported ``tokens_per_s`` over the windows after the warmup (time-weighted when there
are several), which excludes evaluation time. Tokens are counted as the trainer counts
them, predicted positions, ``batch * (seq_len - 1)`` per step, for every arm.

    python benchmarks/trainer_throughput.py                        # llama-tiny, CPU
    python benchmarks/trainer_throughput.py --device cuda --model llama-60m \\
        --batch-size 32 --seq-len 256 --peak-tflops 989            # H100 bf16 dense peak

On CUDA, both arms run under bf16 autocast and the script also prints model FLOPs
utilisation, 6 * N * tokens/s / peak, with N the parameters that do matmul work (all but
the input embedding, which is a lookup).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch

from worker.config import TrialConfig
from worker.data.token_cache import default_cache_dir
from worker.models import build_model
from worker.trainer import train

BASELINE = "bare loop"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama-tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for MFU (cuda)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--max-documents",
        type=int,
        default=1000,
        help="C4 sample documents to tokenize (bounds the one-off cache build)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="token cache (default: the trials', MAGMA_CACHE_DIR)",
    )
    parser.add_argument(
        "--variants", default="dense,magma", help="trainer variants, comma-separated"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(args: argparse.Namespace, device: torch.device) -> float:
    """Tokens/s of the plain loop over the timed steps."""
    model = build_model(args.model, seed=0).to(device)
    model.train()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randint(vocab, (args.batch_size, args.seq_len), generator=generator).to(device)
        for _ in range(8)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    def step(i: int) -> float:
        ids = batches[i % len(batches)]
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for i in range(args.warmup):
        step(i)
    sync(device)
    started = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    sync(device)
    elapsed = time.perf_counter() - started
    return args.steps * args.batch_size * (args.seq_len - 1) / elapsed


def trainer(args: argparse.Namespace, device: torch.device, variant: str, cache: Path) -> float:
    """Tokens/s of ``train()`` over its last metrics window (the timed steps)."""
    config = TrialConfig(
        model=args.model,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        steps=args.warmup + args.steps,
        eval_interval=args.warmup,  # one evaluation between warmup and the timed window
        eval_tokens=args.seq_len * args.batch_size,
        lr=args.lr,
        variant=variant,
        device=device.type,
        threads=args.threads,
        max_documents=args.max_documents,
        cache_dir=cache,
    )
    reports: list[dict] = []
    train(config, report=lambda metrics, save: reports.append(metrics))
    windows = [r for r in reports if r["step"] > args.warmup]
    # With warmup < steps there are several windows after the warmup; weight them by time.
    tokens = sum(r["tokens_per_s"] / r["steps_per_s"] * _window_steps(r, reports) for r in windows)
    seconds = sum(_window_steps(r, reports) / r["steps_per_s"] for r in windows)
    return tokens / seconds


def _window_steps(report: dict, reports: list[dict]) -> int:
    index = reports.index(report)
    previous = reports[index - 1]["step"] if index else 0
    return report["step"] - previous


def trainable_parameters(model_name: str) -> int:
    model = build_model(model_name, seed=0)
    embedding = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embedding


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    arms = [BASELINE] + [f"trainer {v}" for v in variants]
    results: dict[str, list[float]] = {arm: [] for arm in arms}
    cache = args.cache_dir or default_cache_dir()
    # Build the token cache outside the timed rounds (one short trainer run).
    trainer(argparse.Namespace(**{**vars(args), "warmup": 1, "steps": 1}), device, "dense", cache)
    for _ in range(args.repeats):
        for arm in arms:
            if arm == BASELINE:
                results[arm].append(bare_loop(args, device))
            else:
                results[arm].append(trainer(args, device, arm.split()[1], cache))

    n_params = trainable_parameters(args.model)
    print(
        f"model {args.model} ({n_params / 1e6:.2f}M matmul params), batch {args.batch_size} x "
        f"seq {args.seq_len}, device {args.device}, threads {torch.get_num_threads()}, "
        f"warmup {args.warmup} + {args.steps} timed steps, {args.repeats} round(s) round-robin"
    )
    baseline = statistics.median(results[BASELINE])
    header = f"{'arm':<16} {'tokens/s':>10} {'min':>10} {'max':>10} {'overhead vs ' + BASELINE:>24}"
    if args.device == "cuda" and args.peak_tflops:
        header += f" {'MFU':>7}"
    print(header)
    for arm in arms:
        median = statistics.median(results[arm])
        overhead = "(baseline)" if arm == BASELINE else f"{1 - median / baseline:+.1%}"
        line = (
            f"{arm:<16} {median:>10.0f} {min(results[arm]):>10.0f} {max(results[arm]):>10.0f} "
            f"{overhead:>24}"
        )
        if args.device == "cuda" and args.peak_tflops:
            mfu = 6 * n_params * median / (args.peak_tflops * 1e12)
            line += f" {mfu:>7.1%}"
        print(line)


if __name__ == "__main__":
    main()
