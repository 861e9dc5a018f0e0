"""Which way is better: a study minimises its objective (perplexity, loss) or maximises it."""

from __future__ import annotations

from typing import Literal

Mode = Literal["min", "max"]


def check_mode(mode: str) -> Mode:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode  # type: ignore[return-value]


def rank(value: float, mode: Mode) -> float:
    """A sort key under which the best value comes first, whatever the mode."""
    return value if check_mode(mode) == "min" else -value
