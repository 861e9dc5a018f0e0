"""Shared helpers for the ``worker`` tests (imported by ``test_worker_*.py`` and others).

Everything here uses the real bundled C4 sample and T5 tokenizer. Llama runs are kept at
CPU test scale (llama-nano, 4 x 64 tokens, a few tens of steps) and their token caches go
to one temporary directory per session (the ``token_cache_dir`` fixture, in
``tests/conftest.py``), so each split is tokenized once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from worker.config import TrialConfig
from worker.trainer import CHECKPOINT_FILE, Metrics, SaveCheckpoint, train

#: documents tokenized per split for llama runs: ~130k train tokens, plenty for 4 x 64 batches
LLAMA_DOCUMENTS = 300
LLAMA = {
    "model": "llama-nano",
    "batch_size": 4,
    "seq_len": 64,
    "eval_tokens": 1024,
    "threads": 2,
    "max_documents": LLAMA_DOCUMENTS,
}
#: the loss of a uniform guess over T5's 32000 pieces, where an untrained model starts
UNIFORM_LOSS = math.log(32000)


def llama_config(cache_dir: Path, **overrides: Any) -> TrialConfig:
    return TrialConfig(**{**LLAMA, "cache_dir": cache_dir, **overrides})


class Recorder:
    """A ``report`` callback that keeps every metrics dict and, optionally, saves a
    checkpoint at each report under ``root/step-{step}``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self.reports: list[Metrics] = []
        self.losses: list[float] = []

    def __call__(self, metrics: Metrics, save: SaveCheckpoint) -> None:
        self.reports.append(dict(metrics))
        if self.root is not None:
            save(self.checkpoint(metrics["step"]))

    def progress(self, step: int, loss: float) -> None:
        self.losses.append(loss)

    def checkpoint(self, step: int) -> Path:
        assert self.root is not None
        return self.root / f"step-{step}"

    def run(self, config: TrialConfig, resume_from: Path | None = None) -> Metrics:
        return train(config, resume_from=resume_from, report=self, progress=self.progress)


def load_checkpoint(directory: Path) -> dict[str, Any]:
    return torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=False)


def assert_same_state(a: Any, b: Any, where: str = "state", atol: float = 0.0) -> None:
    """Equality of nested state dicts: floating tensors bitwise (``torch.equal``), or within
    ``atol`` when it is given; everything else exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if atol and a.is_floating_point():
            gap = (a - b).abs().max().item() if a.numel() else 0.0
            assert gap <= atol, f"{where} differs by up to {gap:.3g} > {atol:g}"
        else:
            assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{where}: keys differ"
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]", atol)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_checkpoint(a: dict[str, Any], b: dict[str, Any], atol: float = 0.0) -> None:
    """Two ``trial.pt`` payloads agree bitwise on everything but wall-clock times (the
    model's and optimizers' floating tensors within ``atol`` when it is given)."""
    for key in ("config", "schedulers", "rng"):
        assert_same_state(a[key], b[key], key)
    for key in ("model", "optimizers"):
        assert_same_state(a[key], b[key], key, atol)
    timeless = {
        k for k in a["progression"] if "time" not in k and k not in ("elapsed", "last_metrics")
    }
    assert {k: a["progression"][k] for k in timeless} == {k: b["progression"][k] for k in timeless}
    for key in DETERMINISTIC_METRICS:
        assert a["progression"]["last_metrics"].get(key) == b["progression"]["last_metrics"].get(
            key
        ), f"last_metrics[{key}]"


#: metrics that are a pure function of the computation (not of wall-clock time)
DETERMINISTIC_METRICS = ("step", "tokens", "train_loss", "val_loss", "objective", "lr", "status")


def deterministic(metrics: Metrics) -> dict[str, Any]:
    keep = {k: v for k, v in metrics.items() if k in DETERMINISTIC_METRICS or "/" in k}
    keep.update({k: v for k, v in metrics.items() if k.startswith("val_")})
    return keep


# --- ``magma-bench train`` as a subprocess ------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
MAGMA_BENCH = Path(sys.executable).parent / "magma-bench"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(MAGMA_BENCH), "train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


def json_objects(stdout: str) -> list[dict]:
    """Every JSON object printed, in order (one-line reports, then the indented final)."""
    decoder = json.JSONDecoder()
    objects, index = [], 0
    while (start := stdout.find("{", index)) != -1:
        value, index = decoder.raw_decode(stdout, start)
        objects.append(value)
    return objects
