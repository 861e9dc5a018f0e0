"""Llama models built from the configs kept as data in ``configs/models``.

HF transformers' ``LlamaForCausalLM`` is the paper's architecture (Appendix B.1): SiLU
MLP, RMSNorm, rotary attention through SDPA, untied head, no biases, init std 0.02.
The GaLore configs have T5's 32000-token vocabulary; a config's ``tokenizer`` key names
the tokenizer its vocabulary was sized for when it is another one (``"bytes"``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers are slow to import; only model building needs them
    from transformers import LlamaConfig, LlamaForCausalLM

CONFIG_DIR = Path(__file__).parent / "configs" / "models"


def model_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@cache
def _config_file(name: str) -> dict[str, Any]:
    """The JSON file's fields; read once per process, as every TrialConfig asks."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"model must be one of {model_names()}, got {name!r}")
    return json.loads(path.read_text())


def model_tokenizer(name: str) -> str | None:
    """The tokenizer the model needs (``"bytes"``), or None: a T5-vocabulary model, which
    takes the bundled T5 model or any tokenizer with at most ``vocab_size`` ids."""
    return _config_file(name).get("tokenizer")


def model_config(name: str) -> LlamaConfig:
    from transformers import LlamaConfig

    fields = {
        k: v for k, v in _config_file(name).items() if not k.startswith("_") and k != "tokenizer"
    }
    return LlamaConfig(**fields, attn_implementation="sdpa")


def build_model(name: str, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the init depends on ``seed`` alone, not global RNG."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(model_config(name))
