"""How the studies one driver runs at once share the Ray cluster.

Ray schedules trials' placement groups as they come, so left alone the study that
started first keeps the cluster: each finished trial is replaced by its next one before
a waiting study's request gets in. The driver instead gives each running study a limit
on the trials it has in flight, recomputed whenever a study starts or ends, or the
cluster's size changes:

* progressive filling (Dominant Resource Fairness with whole trials): one trial at a time
  goes to the study whose trials hold the smallest share of the cluster's dominant
  resource (CPUs or GPUs, whichever the study's trials need more of), as long as the
  trial fits in what is left and the study is below its own ``max_concurrent``;
* so equal studies split the cluster evenly, a study capped below its share leaves the
  rest to the others, and no trial slot stays idle that a running study could use;
* every study may have at least one trial in flight, even where none fits (a cluster
  without a GPU, workers not joined yet): it then waits at Ray;
* a study running alone has only its own ``max_concurrent``, as without this module: its
  trials beyond the cluster's size wait at Ray, where an autoscaler sees the demand.

A lowered limit takes effect as running trials finish: none is stopped for it. The
limits cover the studies of one driver; several drivers on one cluster each split the
whole cluster among their own studies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from studies.spec import StudySpec

#: how long a reading of the cluster's size is used before it is asked again
CLUSTER_REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class Demand:
    """What one trial of a study needs (Ray resource name -> amount) and how many of its
    trials may run at once."""

    need: Mapping[str, float]
    max_concurrent: int

    @classmethod
    def of(cls, spec: StudySpec) -> Demand:
        need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
        return cls({k: v for k, v in need.items() if v > 0}, spec.max_concurrent)


def fair_limits(demands: Mapping[int, Demand], total: Mapping[str, float]) -> dict[int, int]:
    """Trials each study (by id) may have in flight on a cluster of ``total`` resources."""
    if len(demands) == 1:
        return {study: demand.max_concurrent for study, demand in demands.items()}
    free = dict(total)
    counts = dict.fromkeys(demands, 0)

    def dominant(study: int) -> float:
        need = demands[study].need
        return max((v / total[k] for k, v in need.items() if total.get(k)), default=0.0)

    def fits(study: int) -> bool:
        return all(free.get(k, 0.0) >= v for k, v in demands[study].need.items())

    while True:
        open_ = [s for s in demands if counts[s] < demands[s].max_concurrent and fits(s)]
        if not open_:
            break
        study = min(open_, key=lambda s: (counts[s] * dominant(s), s))
        counts[study] += 1
        for k, v in demands[study].need.items():
            free[k] -= v
    return {study: max(1, count) for study, count in counts.items()}


class FairShare:
    """The running studies' limits, kept current for their searchers (thread-safe: each
    study runs in a thread of its own)."""

    def __init__(self, cluster: Callable[[], Mapping[str, float]]) -> None:
        self.cluster = cluster  # the cluster's total resources, e.g. ray.cluster_resources
        self.lock = threading.Lock()
        self.demands: dict[int, Demand] = {}
        self.total: dict[str, float] = {}
        self.read_at = -CLUSTER_REFRESH_SECONDS
        self.limits: dict[int, int] = {}

    def enter(self, study_id: int, spec: StudySpec) -> None:
        with self.lock:
            self.demands[study_id] = Demand.of(spec)
            self._update(refresh=True)

    def leave(self, study_id: int) -> None:
        with self.lock:
            self.demands.pop(study_id, None)
            self._update(refresh=False)

    def limit(self, study_id: int) -> int:
        """This study's current limit (a running study's searcher asks before each
        trial it would start)."""
        with self.lock:
            if time.monotonic() - self.read_at >= CLUSTER_REFRESH_SECONDS:
                self._update(refresh=True)
            return self.limits[study_id]

    def _update(self, refresh: bool) -> None:
        if refresh:
            self.total = {k: float(v) for k, v in self.cluster().items() if k in ("CPU", "GPU")}
            self.read_at = time.monotonic()
        self.limits = fair_limits(self.demands, self.total)
