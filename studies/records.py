"""Plain, read-only views of a study's trials and metric rows.

The service reads rows from SQL and hands them over as dicts; everything in
``studies.analysis`` works on these records only, so the analysis can be tested
without a database and never issues a query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, get_args

from studies.bracket import Status
from studies.finite import finite
from worker.contract import Base, TrialStatus, Variant

#: base optimizers and variants in the order the paper's tables read (the baseline first)
BASES = Base.values()
VARIANTS = Variant.values()


class Arm(NamedTuple):
    """A base optimizer run as one variant: the unit every comparison is made between."""

    base: str
    variant: str

    @property
    def label(self) -> str:
        """``adamw`` for the dense baseline, ``adamw+magma`` for a masked variant."""
        return self.base if self.variant == "dense" else f"{self.base}+{self.variant}"

    @property
    def order(self) -> tuple[int, str, int, str]:
        """Sort key: bases and variants in their canonical order, unknown names last."""
        return (_index(BASES, self.base), self.base, _index(VARIANTS, self.variant), self.variant)


def _index(names: tuple[str, ...], name: str) -> int:
    return names.index(name) if name in names else len(names)


@dataclass(frozen=True)
class TrialRecord:
    """One trial: one seed of one configuration."""

    id: int
    number: int
    #: seeds of one configuration share it
    configuration: int
    seed_index: int
    status: str
    #: the final objective; None when the trial has none (yet) or it was not finite
    objective: float | None
    #: the searched values of this configuration
    params: dict[str, Any]
    #: the complete ``worker.config.TrialConfig`` the trial ran, every default applied
    config: dict[str, Any]
    last_step: int | None = None

    def value(self, name: str) -> Any:
        """A field's value as the trial ran it (the stored config is complete)."""
        return self.params[name] if name in self.params else self.config.get(name)

    @property
    def arm(self) -> Arm:
        return Arm(str(self.value("base")), str(self.value("variant")))

    @property
    def result(self) -> float | None:
        """The objective of a trial that completed; diverged, pruned, failed or unfinished
        trials have no result even when they recorded a number."""
        return self.objective if self.status == TrialStatus.complete else None

    @property
    def diverged(self) -> bool:
        return self.status == TrialStatus.diverged


@dataclass(frozen=True)
class MetricPoint:
    """One reported metric row of a trial (``values`` as the trial reported them; the
    database stores non-finite numbers as None)."""

    trial_id: int
    step: int
    values: dict[str, Any]


def trials_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[TrialRecord]:
    """Records from dicts with the ``magma_trials`` columns ``id``, ``number``,
    ``configuration``, ``seed_index``, ``status``, ``objective``, ``params``, ``config``
    and optionally ``last_step``; other keys are ignored."""
    records = []
    for row in rows:
        status = row["status"]
        if status not in TrialStatus.values():
            raise ValueError(
                f"trial {row['id']}: status must be one of {TrialStatus.values()}, got {status!r}"
            )
        records.append(
            TrialRecord(
                id=int(row["id"]),
                number=int(row["number"]),
                configuration=int(row["configuration"]),
                seed_index=int(row.get("seed_index") or 0),
                status=status,
                objective=finite(row.get("objective")),
                params=dict(row.get("params") or {}),
                config=dict(row.get("config") or {}),
                last_step=row.get("last_step"),
            )
        )
    return records


def metrics_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[MetricPoint]:
    """Points from dicts with the ``magma_metrics`` columns ``trial_id``, ``step`` and
    ``values``, in the order they were recorded. A trial resumed after a crash can report
    a step twice; the later row wins."""
    latest: dict[tuple[int, int], MetricPoint] = {}
    for row in rows:
        point = MetricPoint(int(row["trial_id"]), int(row["step"]), dict(row["values"]))
        latest[(point.trial_id, point.step)] = point
    return list(latest.values())


@dataclass(frozen=True)
class ArmSearch:
    """How the bracket protocol's LR search went for one of its arms (a point of the grid
    of the study's other searched lists)."""

    #: the arm's searched values other than the LR, as its configurations' params hold them
    params: dict[str, Any]
    #: ``studies.bracket.Status``: bracketed, max_extensions or caps (stopped unbracketed
    #: by that limit), running (another round was planned)
    status: Status
    #: every LR it ran, ascending
    lrs: tuple[float, ...]
    best_lr: float | None
    best_value: float | None

    @property
    def bracketed(self) -> bool:
        return self.status == "bracketed"


@dataclass(frozen=True)
class BracketSearch:
    """A bracket study's LR search as its latest ``bracket`` event left it."""

    #: no more selection rounds (the confirmation may follow)
    done: bool
    #: selection rounds run: the first, then the extensions
    rounds: int
    #: the spec's ``protocol.max_extensions``, the limit a ``max_extensions`` stop names
    max_extensions: int
    arms: tuple[ArmSearch, ...]


def bracket_from_event(payload: Mapping[str, Any], max_extensions: int) -> BracketSearch:
    """The record of a ``bracket`` event's payload (as ``studies.engine.searcher`` writes
    it: ``done``, ``rounds`` and per arm its ``arm`` params, ``status``, ``lrs``,
    ``best_lr`` and ``best_value``)."""
    arms = []
    for arm in payload["arms"]:
        if arm["status"] not in get_args(Status):
            raise ValueError(
                f"bracket event: status must be one of {list(get_args(Status))}, "
                f"got {arm['status']!r}"
            )
        arms.append(
            ArmSearch(
                params=dict(arm["arm"]),
                status=arm["status"],
                lrs=tuple(float(lr) for lr in arm["lrs"]),
                best_lr=arm["best_lr"],
                best_value=arm["best_value"],
            )
        )
    return BracketSearch(
        done=bool(payload["done"]),
        rounds=int(payload["rounds"]),
        max_extensions=max_extensions,
        arms=tuple(arms),
    )


def by_trial(metrics: Iterable[MetricPoint]) -> dict[int, list[MetricPoint]]:
    """Each trial's points, in step order."""
    grouped: dict[int, list[MetricPoint]] = {}
    for point in metrics:
        grouped.setdefault(point.trial_id, []).append(point)
    for points in grouped.values():
        points.sort(key=lambda point: point.step)
    return grouped
