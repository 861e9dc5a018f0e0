"""Llama models built from configs kept as data: bundled ones in ``configs/models``, or a
user's Hugging Face ``LlamaConfig`` JSON file given by path.

HF transformers' ``LlamaForCausalLM`` is the paper's architecture (Appendix B.1): SiLU
MLP, RMSNorm, rotary attention through SDPA, untied head, no biases, init std 0.02.
The GaLore configs have T5's 32000-token vocabulary; a config's ``tokenizer`` key names
the tokenizer its vocabulary was sized for when it is another one (``"bytes"``).

Checking a config reads JSON only (the API validates specs without importing torch); a
model file's SHA-256 goes into the trial config, so a changed file is a different trial.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers are slow to import; only model building needs them
    from transformers import LlamaConfig, LlamaForCausalLM

CONFIG_DIR = Path(__file__).parent / "configs" / "models"
#: sizes a model file must set, each a positive integer (LlamaConfig's defaults are 7B's)
REQUIRED_SIZES = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_hidden_layers",
    "vocab_size",
)
#: keys of a model file the model builder does not pass on: the attention kernel is ours
NOT_PASSED = ("tokenizer", "attn_implementation")


def model_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def allowed_models() -> str:
    """What ``model`` may be, for error messages."""
    return (
        f"a bundled model, one of {model_names()}, or the path of a readable Hugging Face "
        f"LlamaConfig JSON file (model_type 'llama', positive integer {', '.join(REQUIRED_SIZES)})"
    )


def model_file(model: str) -> Path:
    """The JSON file behind a bundled name or a path (not checked to exist)."""
    return CONFIG_DIR / f"{model}.json" if model in model_names() else Path(model)


def model_fields(model: str) -> dict[str, Any]:
    """The config file's keys, checked; a ValueError says what ``model`` may be."""
    return _fields_and_sha256(model)[0]


def model_sha256(model: str) -> str:
    """The hex SHA-256 of the model's config file, as ``sha256sum`` prints it."""
    return _fields_and_sha256(model)[1]


def _fields_and_sha256(model: str) -> tuple[dict[str, Any], str]:
    """One read of the file for both, so the hash is that of the keys used."""
    if model in model_names():
        return _bundled(model), _bundled_sha256(model)
    content = _read(Path(model))
    return _checked(Path(model), content), hashlib.sha256(content).hexdigest()


@cache
def _bundled(name: str) -> dict[str, Any]:
    """Read once per process, as every TrialConfig asks: package data does not change."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


@cache
def _bundled_sha256(name: str) -> str:
    return hashlib.sha256((CONFIG_DIR / f"{name}.json").read_bytes()).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or exc
        raise ValueError(f"must be {allowed_models()}; {str(path)!r}: {reason}") from None


def _checked(path: Path, content: bytes) -> dict[str, Any]:
    """A user file's keys, if they make a Llama model that can be built and trained."""

    def bad(problem: str) -> ValueError:
        return ValueError(f"must be {allowed_models()}; {str(path)!r}: {problem}")

    try:
        fields = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise bad(f"a JSON {type(fields).__name__}, not an object of LlamaConfig keys")
    if fields.get("model_type", "llama") != "llama":
        raise bad(f"model_type is {fields['model_type']!r}, not 'llama'")
    missing = [key for key in REQUIRED_SIZES if key not in fields]
    if missing:
        raise bad(f"lacks {missing}")
    for key in (*REQUIRED_SIZES, "num_key_value_heads", "head_dim", "max_position_embeddings"):
        value = fields.get(key)
        if key in fields and value is not None and not _positive_int(value):
            raise bad(f"{key} must be a positive integer, got {value!r}")
    heads, hidden = fields["num_attention_heads"], fields["hidden_size"]
    head_dim = fields.get("head_dim") or hidden // heads
    if fields.get("head_dim") is None and hidden % heads:
        raise bad(f"hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads})")
    if head_dim % 2:
        raise bad(f"the head dimension ({head_dim}) must be even for rotary embeddings")
    kv_heads = fields.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise bad(
            f"num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
        )
    tokenizer = fields.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, str):
        raise bad(f"tokenizer must be a tokenizer name, got {tokenizer!r}")
    return fields


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def model_tokenizer(model: str) -> str | None:
    """The tokenizer the model needs (``"bytes"``), or None: a T5-vocabulary model, which
    takes the bundled T5 model or any tokenizer with at most ``vocab_size`` ids."""
    return model_fields(model).get("tokenizer")


def model_config(model: str, sha256: str | None = None) -> LlamaConfig:
    """``sha256``: the hash the trial config recorded; a file changed since is refused, so a
    trial never trains another model than the one its config names."""
    from transformers import LlamaConfig

    fields, found = _fields_and_sha256(model)
    if sha256 is not None and found != sha256:
        raise ValueError(
            f"model: {str(model_file(model))!r} changed since the trial was configured "
            f"(model_sha256 {sha256}, the file now {found})"
        )
    kept = {k: v for k, v in fields.items() if not k.startswith("_") and k not in NOT_PASSED}
    return LlamaConfig(**kept, attn_implementation="sdpa")


def build_model(model: str, seed: int, sha256: str | None = None) -> LlamaForCausalLM:
    """A freshly initialised model; the init depends on ``seed`` alone, not global RNG."""
    import torch
    from transformers import LlamaForCausalLM

    config = model_config(model, sha256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
