"""Where a study stands: how many trials are in each status."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from studies.records import TrialRecord
from worker.contract import TrialStatus


def status_counts(trials: Iterable[TrialRecord]) -> dict[str, int]:
    """Every status in lifecycle order, zeros included, so the bars keep their places."""
    counts = Counter(trial.status for trial in trials)
    return {status: counts[status] for status in TrialStatus.values()}
