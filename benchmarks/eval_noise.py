"""Is llama-bytes' val_loss at the claims suite's size measured finely enough? The SD a
validation draw adds, against the SD between training seeds.

Trains ``--seeds`` seeds of the suite's llama-bytes configuration (``SUITE_LM`` in
``benchmarks/claims.py``; dense AdamW at ``--lr``, the suite's Adam-family LR) as one
seed batch (``worker.seed_batch.train_seeds``), then scores every trained model on every
row of the bundled validation split with the workload's own ``row_losses`` (what its
``evaluate`` averages). For each eval size (``--eval-tokens``) it prints:

* seed SD: the SD across seeds of val_loss on the rows the workload evaluates (the
  split's first eval_tokens / seq_len rows); and, as a check free of evaluation noise,
  on the whole split;
* eval SD: the SD of one trained model's val_loss across disjoint blocks of as many
  consecutive rows (other held-out draws of that size, each of whole stretches of
  documents, as the workload's own is), pooled over the seeds;
* eval SD of a difference: the SD across blocks of the difference between two seeds'
  val_loss, pooled over pairs: what a draw changes in a paired comparison, whose arms
  share the draw; against the SD of a difference between two seeds (seed SD x sqrt 2);
* the CPU time a run's evaluations would take at that size (one before training and one
  every eval_interval steps), from the scoring's time per row, against the batch's CPU
  time per seed (training with the suite's own evaluations).

Every run, whatever its seed or arm, evaluates the same rows (the split's first), so the
part of a draw's effect that all models share (harder or easier documents) is one offset
of every val_loss, which no comparison of runs sees; the paired ratio is the one that
decides whether ``eval_tokens`` is large enough for the suite's verdicts.

    python -m benchmarks.eval_noise
    python -m benchmarks.eval_noise --seeds 4 --eval-tokens 16384 65536
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.claims import SUITE_LM
from worker.config import TrialConfig
from worker.seed_batch import SEED_BATCH_CHECKPOINT_FILE, train_seeds
from worker.trainer import Metrics, SaveCheckpoint
from worker.workloads.llama_c4 import LlamaC4Workload

#: the suite's Adam-family LR (benchmarks.claims.SUITE_ADAM_PROTOCOL's start)
SUITE_LR = 10**-2.5
#: an evaluation noise at most this fraction of the seed noise counts as negligible
TARGET_RATIO = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--lr", type=float, default=SUITE_LR)
    parser.add_argument(
        "--eval-tokens",
        type=int,
        nargs="+",
        default=[SUITE_LM["eval_tokens"] * 2**k for k in range(5)],
    )
    parser.add_argument("--threads", type=int, default=1, help="as the presets run trials")
    return parser.parse_args()


def trained_models(configs: list[TrialConfig]) -> list[dict[str, torch.Tensor]]:
    """Each seed's final parameters, from the batch's checkpoint at its last report."""
    with tempfile.TemporaryDirectory() as directory:

        def report(rows: list[Metrics | None], save: SaveCheckpoint) -> None:
            save(Path(directory))

        finals = train_seeds(configs, report=report)
        payload = torch.load(
            Path(directory) / SEED_BATCH_CHECKPOINT_FILE, map_location="cpu", weights_only=False
        )
    statuses = {row["status"] for row in finals}
    print(f"trained {len(configs)} seeds: status {sorted(statuses)}")
    params = payload["stack"]["params"]
    return [{name: value[r] for name, value in params.items()} for r in range(len(configs))]


def row_losses(config: TrialConfig, state: dict[str, torch.Tensor]) -> np.ndarray:
    """(2, rows): summed NLL and predicted tokens of every row of the validation split."""
    workload = LlamaC4Workload(config, torch.device("cpu"))
    workload.model.load_state_dict(state, strict=False)  # buffers (RoPE) are the build's
    return np.stack(workload.row_losses(np.arange(workload.eval_rows.count)))


def block_losses(rows: np.ndarray, block: int) -> np.ndarray:
    """(seeds, blocks): val_loss of each seed on each disjoint block of ``block`` rows."""
    blocks = rows.shape[-1] // block
    sums = rows[..., : blocks * block].reshape(*rows.shape[:-1], blocks, block).sum(-1)
    return sums[:, 0] / sums[:, 1]


def main() -> None:
    args = parse_args()
    base = {**SUITE_LM, "workload": "llama-c4", "base": "adamw", "variant": "dense"}
    configs = [
        TrialConfig(**base, lr=args.lr, seed=s, threads=args.threads) for s in range(args.seeds)
    ]
    started = time.process_time()
    states = trained_models(configs)
    trained = time.process_time() - started
    rows = np.stack([row_losses(c, s) for c, s in zip(configs, states, strict=True)])
    scored = time.process_time() - started - trained
    whole = rows.sum(-1)
    seed_sd_whole = float(np.std(whole[:, 0] / whole[:, 1], ddof=1))
    print(
        f"llama-bytes, {SUITE_LM['steps']} steps of {SUITE_LM['batch_size']} x "
        f"{SUITE_LM['seq_len']} bytes, adamw lr {args.lr:.3g}; validation split "
        f"{rows.shape[-1]} rows = {int(whole[0, 1]):,} predicted bytes; CPU {trained:.0f} s "
        f"training, {scored:.0f} s scoring"
    )
    print(f"seed SD of val_loss on the whole split: {seed_sd_whole:.4f}")
    header = (
        f"{'eval_tokens':>11} {'blocks':>6} {'seed SD':>8} {'eval SD':>8} {'ratio':>6} "
        f"{'eval SD diff':>12} {'seed SD diff':>12} {'ratio':>6} {'eval CPU/run':>12}"
    )
    evaluations = SUITE_LM["steps"] // SUITE_LM["eval_interval"] + 1
    per_row = scored / rows.shape[0] / rows.shape[-1]  # CPU seconds to score one row
    print(header)
    chosen: dict[str, int] = {}
    for tokens in args.eval_tokens:
        block = math.ceil(tokens / SUITE_LM["seq_len"])
        losses = block_losses(rows, block)  # column 0: the rows the workload evaluates
        if losses.shape[1] < 2:
            print(f"{tokens:>11} {losses.shape[1]:>6}  (the split holds fewer than 2 blocks)")
            continue
        seed_sd = float(np.std(losses[:, 0], ddof=1))
        eval_sd = math.sqrt(float(np.mean(np.var(losses, axis=1, ddof=1))))
        pairs = [losses[a] - losses[b] for a, b in itertools.combinations(range(len(losses)), 2)]
        diff_sd = math.sqrt(float(np.mean([np.var(d, ddof=1) for d in pairs])))
        ratio, paired = eval_sd / seed_sd, diff_sd / (seed_sd * math.sqrt(2))
        print(
            f"{tokens:>11} {losses.shape[1]:>6} {seed_sd:>8.4f} {eval_sd:>8.4f} {ratio:>6.2f} "
            f"{diff_sd:>12.4f} {seed_sd * math.sqrt(2):>12.4f} {paired:>6.2f} "
            f"{per_row * block * evaluations / (trained / len(configs)):>12.0%}"
        )
        for kind, value in (("absolute", ratio), ("paired", paired)):
            if kind not in chosen and value < TARGET_RATIO:
                chosen[kind] = tokens
    for kind in ("absolute", "paired"):
        print(
            f"smallest eval_tokens with {kind} eval SD < {TARGET_RATIO:g} x seed SD: "
            f"{chosen.get(kind, 'none of those measured')}"
        )


if __name__ == "__main__":
    main()
