"""Builders of trial and metric rows, shaped as the service reads them from SQL, for the
dashboard tests."""

from __future__ import annotations

from typing import Any

from studies.records import MetricPoint, TrialRecord, metrics_from_rows, trials_from_rows
from worker.config import TrialConfig


class Rows:
    """A study's trial rows: every distinct set of searched values is one configuration,
    numbered in the order first seen, as the study engine numbers them."""

    def __init__(self) -> None:
        self.trial_rows: list[dict[str, Any]] = []
        self.metric_rows: list[dict[str, Any]] = []
        self._configurations: dict[tuple[tuple[str, Any], ...], int] = {}

    def add(
        self,
        objective: float | None,
        *,
        seed: int = 0,
        status: str = "complete",
        **params: Any,
    ) -> int:
        """A trial of ``params`` (searched values, e.g. ``variant="magma", lr=1e-3``);
        returns its id."""
        key = tuple(sorted(params.items()))
        configuration = self._configurations.setdefault(key, len(self._configurations))
        trial_id = 100 + len(self.trial_rows)
        self.trial_rows.append(
            {
                "id": trial_id,
                "number": len(self.trial_rows),
                "configuration": configuration,
                "seed_index": seed,
                "status": status,
                "objective": objective,
                "params": dict(params),
                # stored configs are complete TrialConfig dumps, as the engine writes them
                "config": TrialConfig(**params, seed=seed).model_dump(mode="json"),
                "last_step": 100,
            }
        )
        return trial_id

    def metric(self, trial_id: int, step: int, **values: Any) -> None:
        self.metric_rows.append({"trial_id": trial_id, "step": step, "values": values})

    def trials(self) -> list[TrialRecord]:
        return trials_from_rows(self.trial_rows)

    def metrics(self) -> list[MetricPoint]:
        return metrics_from_rows(self.metric_rows)
