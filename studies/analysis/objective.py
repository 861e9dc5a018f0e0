"""Which way is better: a study minimises its objective (perplexity, loss) or maximises it.

``Mode`` and ``MODES`` live in the contract; this module adds the checks and the ranking."""

from __future__ import annotations

from worker.contract import MODES, Mode

__all__ = ["Mode", "check_mode", "rank"]


def check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"mode must be {' or '.join(map(repr, MODES))}, got {mode!r}")
    return mode  # type: ignore[return-value]


def rank(value: float, mode: Mode) -> float:
    """A sort key under which the best value comes first, whatever the mode."""
    return value if check_mode(mode) == "min" else -value
