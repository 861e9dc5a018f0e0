"""Does the CPU-scale preset trial learn, and does it ask the paper's question?

Runs one trial of a preset's workload (default: ``paper-table1``'s, the CPU-scale default
of the Llama presets) and prints:

* the share of the model's parameters in the attention and MLP weights that Magma masks,
  from ``magma.components`` on the built model, next to the paper's 60M model (Table 1);
* the final validation loss in bits per token (bits per byte for the byte vocabulary),
  against the unigram entropy of the same validation tokens: the loss of the best guess
  that ignores context, so a model below it has learned from context;
* the run's wall-clock and CPU time, and the load average it ran under.

    python benchmarks/cpu_model_quality.py
    python benchmarks/cpu_model_quality.py --preset demo --variant dense --lr 1e-2
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

import magma
from studies.presets import load_preset, preset_names
from worker.config import TrialConfig
from worker.data.batches import IGNORE_INDEX
from worker.data.tokenizer import BYTES
from worker.models import model_config
from worker.trainer import train
from worker.workloads import build_workload
from worker.workloads.llama_c4 import LlamaC4Workload

PAPER_MODEL = "llama-60m"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    llama = [n for n in preset_names() if load_preset(n).workload.kind == "llama-c4"]
    parser.add_argument("--preset", default="paper-table1", choices=llama)
    parser.add_argument("--base", default="adamw")
    parser.add_argument("--variant", default="magma")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="as the presets run trials")
    return parser.parse_args()


def masked_share(model: torch.nn.Module) -> tuple[int, int]:
    """(attention+MLP parameters, all parameters)."""
    masked = sum(p.numel() for ps in magma.components(model).values() for p in ps)
    return masked, sum(p.numel() for p in model.parameters())


def paper_share() -> float:
    """The paper's 60M model, built on the meta device: shapes only, no memory."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        masked, total = masked_share(LlamaForCausalLM(model_config(PAPER_MODEL)))
    return masked / total


def unigram_bits(workload: LlamaC4Workload) -> tuple[float, float]:
    """Unigram entropy (bits/token) of the validation tokens the trial's val_loss averages
    over, and of the whole validation split."""
    _, labels = workload.eval_rows.get(workload.eval_indices)
    evaluated = labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    return _entropy(evaluated), _entropy(np.asarray(workload.eval_rows.split.tokens))


def _entropy(tokens: np.ndarray) -> float:
    counts = np.bincount(tokens.astype(np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def main() -> None:
    args = parse_args()
    fields = load_preset(args.preset).workload.model_dump()
    config = TrialConfig(
        workload=fields.pop("kind"),
        **fields,
        base=args.base,
        variant=args.variant,
        lr=args.lr,
        threads=args.threads,
    )
    unit = "byte" if config.tokenizer == BYTES else "token"
    workload = build_workload(config, torch.device("cpu"))
    assert isinstance(workload, LlamaC4Workload)  # --preset offers llama-c4 presets only
    masked, total = masked_share(workload.model)
    evaluated, whole = unigram_bits(workload)
    load = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    final = train(config)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    print(
        f"model {config.model} (tokenizer {config.tokenizer or 'T5'}): {total:,} parameters, "
        f"attention+MLP {masked:,} = {masked / total:.1%} "
        f"(the paper's {PAPER_MODEL.removeprefix('llama-').upper()}: {paper_share():.1%})"
    )
    print(
        f"trial ({args.preset} workload): {config.base}+{config.variant} lr {config.lr:g}, "
        f"{config.steps} steps of {config.batch_size} x {config.seq_len} {unit}s, "
        f"{config.threads} thread(s); status {final['status']}"
    )
    bits = final["val_loss"] / math.log(2)
    print(
        f"validation loss {final['val_loss']:.3f} nats = {bits:.3f} bits/{unit} "
        f"(val_ppl {final['val_ppl']:.2f})"
    )
    print(
        f"unigram entropy of the same validation {unit}s: {evaluated:.3f} bits/{unit} "
        f"(whole split: {whole:.3f}); the model is {evaluated - bits:.2f} bits/{unit} below it"
    )
    print(
        f"run time: {wall:.0f} s wall, {cpu:.0f} s CPU "
        f"(load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
        f"{os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
