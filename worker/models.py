"""Llama models built from the GaLore configs kept as data in ``configs/models``.

HF transformers' ``LlamaForCausalLM`` is the paper's architecture (Appendix B.1): SiLU
MLP, RMSNorm, rotary attention through SDPA, untied head, no biases, init std 0.02.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers are slow to import; only model building needs them
    from transformers import LlamaConfig, LlamaForCausalLM

CONFIG_DIR = Path(__file__).parent / "configs" / "models"


def model_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def model_config(name: str) -> LlamaConfig:
    from transformers import LlamaConfig

    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"model must be one of {model_names()}, got {name!r}")
    fields = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    return LlamaConfig(**fields, attn_implementation="sdpa")


def build_model(name: str, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the init depends on ``seed`` alone, not global RNG."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(model_config(name))
