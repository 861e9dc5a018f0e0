"""Server-side limits so that one study cannot exhaust the cluster.

The caps are settings (``MAGMA_MAX_TRIALS``, ``MAGMA_MAX_STEPS``, ``MAGMA_MAX_CONCURRENT``,
read by ``worker.settings``); the API rejects a study over them with HTTP 422.
"""

from __future__ import annotations

from studies.spec import StudySpec
from worker.settings import Caps


def check_caps(spec: StudySpec, caps: Caps) -> None:
    """ValueError naming the field over its cap."""
    runs = spec.configurations * spec.seeds
    if runs > caps.max_trials:
        raise ValueError(
            f"trials: {spec.configurations} configurations x {spec.seeds} seeds = {runs} runs "
            f"exceeds the server cap of {caps.max_trials}"
        )
    if spec.workload.steps > caps.max_steps:
        raise ValueError(
            f"workload.steps: {spec.workload.steps} exceeds the server cap of {caps.max_steps}"
        )
    if spec.max_concurrent > caps.max_concurrent:
        raise ValueError(
            f"max_concurrent: {spec.max_concurrent} exceeds the server cap of {caps.max_concurrent}"
        )
