"""Server-side limits so that one study cannot exhaust the cluster.

The caps are settings (``MAGMA_MAX_TRIALS``, ``MAGMA_MAX_STEPS``, ``MAGMA_MAX_CONCURRENT``,
read by ``worker.settings``); the API rejects a study over them with HTTP 422. A bracket
study's ``runs`` is an upper bound: it must fit its first round and confirmation under
``max_trials``, and its searcher stops extending at the cap (``studies.bracket``).
"""

from __future__ import annotations

from studies.spec import StudySpec
from worker.settings import Caps


def check_caps(spec: StudySpec, caps: Caps) -> None:
    """ValueError naming the field over its cap."""
    if spec.bracket:
        if spec.first_round_runs > caps.max_trials:
            raise ValueError(
                f"protocol: the first round and confirmation need {spec.first_round_runs} runs, "
                f"over the server cap of {caps.max_trials}"
            )
    elif (runs := spec.configurations * spec.seeds) > caps.max_trials:
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
