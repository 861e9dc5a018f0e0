"""A Ray Tune searcher whose state lives in SQL alone.

Tune asks for the next trial; the answer is, in order: a chunk of queued trials already
in the database (after a driver restart, with the batch checkpoint to resume from), or a
new configuration from Optuna (or the next grid point), written to the database as one
queued trial per seed, in one transaction, before it runs. A Tune trial runs a chunk: up
to ``seed_batch`` seeds of one configuration, trained as one batch (``worker.trainable``,
``trial_lifecycle.next_chunk``); each seed keeps its SQL trial, finished from its own
last row. Because the database, not
this object, knows what exists, a restarted driver neither loses nor duplicates trials,
and a grid runs each point exactly once.

Optuna's study lives in memory only. A new searcher rebuilds it from SQL: one Optuna
trial per configuration, numbered as the configurations are, in the state and with the
value ``studies.best.score`` gives it (still running: ``RUNNING``). Asking and telling
touch only memory, so no second store can fall out of step with SQL: a driver that dies
between an ask and its SQL commit leaves nothing behind, and one that dies after a trial
finished in SQL leaves a configuration the next searcher rebuilds as finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher
from sqlalchemy.orm import Session, sessionmaker

from studies import bracket, sequential
from studies.best import CONFIRM_STAGE, STAGE_KEY, Score, is_confirmation, score
from studies.engine._pickling import Unpicklable
from studies.finite import jsonable
from studies.records import trials_from_rows
from studies.results import trial_row
from studies.samplers import distributions, in_memory_study, optuna_state
from studies.spec import StudySpec
from studies.storage.engine import transaction
from studies.storage.models import Trial
from studies.storage.repository import event_log, reads, trial_lifecycle
from worker.config import TrialConfig
from worker.contract import OBJECTIVE_KEY, REPORTED_TRIAL_STATUSES, STATUS_KEY, TrialStatus
from worker.settings import get_settings
from worker.trainable import META_KEY


class StudySearcher(Unpicklable, Searcher):
    _picklable = ("study_id", "spec")

    def __init__(
        self,
        study_id: int,
        spec: StudySpec,
        sessions: sessionmaker[Session],
        flush: Callable[[], None] = lambda: None,
        max_runs: int | None = None,
        limit: Callable[[], int] | None = None,
        claim_lost: threading.Event | None = None,
    ) -> None:
        super().__init__(metric=OBJECTIVE_KEY, mode=spec.mode)
        self.study_id, self.spec, self.sessions = study_id, spec, sessions
        self.distributions = distributions(spec)
        self.flush = flush  # metric rows before the completion that follows them
        self.handed_out: dict[str, list[int]] = {}  # Tune trial id -> its seeds' SQL ids
        self.max_runs = (
            max_runs or get_settings().caps.max_trials
        )  # the server cap a bracket study's extensions stop at
        self.cancelled = False
        # set once another driver took the study over: nothing more is handed out or written
        self.claim_lost = claim_lost or threading.Event()
        # trials in flight the driver allows now (its share of the cluster among the studies
        # it runs, ``studies.engine.fairness``); None: only Tune's ``max_concurrent`` limit
        self.limit = limit
        with transaction(sessions) as session:
            configurations = trial_lifecycle.configurations(session, study_id)
        self.optuna = in_memory_study(spec, configurations)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.cancelled or self.claim_lost.is_set():
            return Searcher.FINISHED
        if self.limit is not None and len(self.handed_out) >= self.limit():
            return None  # asked again as Tune loops
        with transaction(self.sessions) as session:
            chunk = self._next_chunk(session)
            created = trial_lifecycle.configurations_created(session, self.study_id)
        if not chunk:
            if self.spec.bracket:
                new = self._next_round()
            elif created < self.spec.configurations:
                new = self._new_configuration(created)
            elif self.spec.protocol.sequential:
                new = self._next_seeds()
            else:
                new = None
            if new is not None:
                with transaction(self.sessions) as session:
                    chunk = self._next_chunk(session)
        if not chunk:
            return None if self.handed_out else Searcher.FINISHED
        self.handed_out[trial_id] = [trial.id for trial in chunk]
        first = chunk[0].config
        meta: dict[str, Any] = {
            "trial_ids": self.handed_out[trial_id],
            "study_id": self.study_id,
            "seed_fields": [
                {k: v for k, v in trial.config.items() if v != first.get(k)} for trial in chunk
            ],
        }
        if chunk[0].checkpoint_path:
            meta["resume_from"] = chunk[0].checkpoint_path
        return {**first, META_KEY: meta}

    def _next_chunk(self, session: Session) -> list[Trial]:
        handed_out = [sql_id for sql_ids in self.handed_out.values() for sql_id in sql_ids]
        return trial_lifecycle.next_chunk(
            session, self.study_id, handed_out, size=self.spec.seed_batch or 1
        )

    def _new_configuration(self, created: int) -> Trial:
        """Ask Optuna (in memory), then record every seed's trial in one transaction."""
        if self.spec.sampler == "grid":
            self.optuna.enqueue_trial(self.spec.grid_points()[created])
        optuna_trial = self.optuna.ask(self.distributions)
        params = dict(optuna_trial.params)
        configs = [self.spec.complete_trial_config(params, s) for s in range(self.spec.seeds)]
        with transaction(self.sessions) as session:
            if trial_lifecycle.configurations_created(session, self.study_id) != created:
                # Only a driver that lost its claim and still runs gets here: the numbers
                # it would write belong to the driver that took the study over.
                raise RuntimeError(f"study {self.study_id} gained configurations elsewhere")
            trials = trial_lifecycle.create_configuration(
                session, self.study_id, optuna_trial.number, params, configs
            )
            event_log.add_event(
                session,
                self.study_id,
                "configuration",
                {"configuration": optuna_trial.number, "params": params},
            )
        return trials[0]

    def _next_round(self) -> Trial | None:
        """Bracket protocol: once every planned run has finished, the planner's next round
        of LRs for every arm, or, when it is done, the confirmation stage (None: wait, or
        nothing is left). Rounds are synchronous: an extension needs the last results."""
        with transaction(self.sessions) as session:
            existing = trial_lifecycle.configurations(session, self.study_id)
            last = event_log.latest_event(session, self.study_id, "bracket")
            reported = last.payload if last is not None else None
        arms = self.arms
        points: list[dict[int, Score]] = [{} for _ in arms]
        confirming = False
        for params, seeds in existing.values():
            if is_confirmation(params):
                confirming = True
                continue
            arm = arms.index({k: v for k, v in params.items() if k != "lr"})
            points[arm][bracket.index_of(self.spec.protocol, params["lr"])] = score(
                seeds, self.spec.mode
            )
        if confirming:
            return self._next_seeds() if self.spec.protocol.sequential else None
        protocol, seeds = self.spec.protocol, self.spec.seeds
        budget = min(self.spec.runs, self.max_runs) - len(arms) * protocol.confirm_seeds
        runs_used = seeds * sum(len(arm_points) for arm_points in points)
        plan = bracket.plan(
            protocol, points, self.spec.mode, seeds=seeds, runs_used=runs_used, budget=budget
        )
        if plan.waiting:
            return None
        rounds = max(len(arm_points) for arm_points in points) - protocol.initial_points + 1
        report = {
            "done": plan.done,
            "rounds": rounds if any(points) else 0,
            "arms": [
                {"arm": arm, **state.as_dict()} for arm, state in zip(arms, plan.arms, strict=True)
            ],
        }
        new: list[tuple[dict[str, Any], int, int]] = []  # params, first seed, seeds
        if not plan.done:
            new = [
                ({**arm, "lr": lr}, 0, seeds)
                for lrs, arm in zip(plan.next_lrs, arms, strict=True)
                for lr in lrs
            ]
        elif protocol.confirm_seeds:
            new = [
                (
                    {**arm, "lr": state.best_lr, STAGE_KEY: CONFIRM_STAGE},
                    seeds,
                    protocol.confirm_seeds,
                )
                for arm, state in zip(arms, plan.arms, strict=True)
                if state.best_lr is not None
            ]
        if report == reported and not new:
            return None
        return self._create(len(existing), new, report)

    @cached_property
    def arms(self) -> list[dict[str, Any]]:
        """Each arm's searched values: a point of the grid of the searched lists, once per
        distinct run (``TrialConfig.run_key``): the dense arm of a components study is
        tuned once, not once per components value it ignores."""
        names = [name for name in self.distributions if name not in ("lr", STAGE_KEY)]
        arms: dict[str, dict[str, Any]] = {}
        for point in self.spec.grid_points():
            arm = {name: point[name] for name in names}
            key = TrialConfig(**self.spec.trial_config(arm)).run_key()
            arms.setdefault(key, arm)
        return list(arms.values())

    def _next_seeds(self) -> Trial | None:
        """Sequential seeding: once a round has finished, the next round of seeds for the
        stage seeded in rounds (``studies.sequential``), with the look's decisions as a
        ``sequential`` event; None: wait, or done (its last report recorded once)."""
        with transaction(self.sessions) as session:
            rows = reads.study_trials(session, self.study_id)
            trials = trials_from_rows(trial_row(t) for t in rows)
            last = event_log.latest_event(session, self.study_id, "sequential")
            reported = last.payload if last is not None else None
            created = trial_lifecycle.configurations_created(session, self.study_id)
        budget = min(self.spec.runs, self.max_runs)
        seeding = sequential.plan(self.spec, trials, budget=budget)
        if seeding.waiting or (seeding.done and jsonable(seeding.report) == reported):
            return None
        return self._create(
            created, [], seeding.report, kind="sequential", extensions=seeding.extensions
        )

    def _create(
        self,
        created: int,
        new: list[tuple[dict[str, Any], int, int]],
        report: dict[str, Any],
        *,
        kind: str = "bracket",
        extensions: list[sequential.Extension] | None = None,
    ) -> Trial | None:
        """Configurations ``new`` (params, first seed index, seeds), each asked of Optuna
        so that numbers stay Optuna's, more seeds for the configurations ``extensions``
        name (sequential seeding), and the ``kind`` report, in one transaction."""
        asked = []
        for params, first_seed, count in new:
            self.optuna.enqueue_trial(params)
            trial = self.optuna.ask({name: self.distributions[name] for name in params})
            run = {k: v for k, v in params.items() if k != STAGE_KEY}
            configs = [self.spec.complete_trial_config(run, first_seed + s) for s in range(count)]
            asked.append((trial.number, params, first_seed, configs))
        with transaction(self.sessions) as session:
            if trial_lifecycle.configurations_created(session, self.study_id) != created:
                raise RuntimeError(f"study {self.study_id} gained configurations elsewhere")
            event_log.add_event(session, self.study_id, kind, report)
            first = None
            for extension in extensions or []:
                run = {k: v for k, v in extension.params.items() if k != STAGE_KEY}
                seeds = range(extension.first_seed, extension.first_seed + extension.count)
                trials = trial_lifecycle.create_configuration(
                    session,
                    self.study_id,
                    extension.configuration,
                    extension.params,
                    [self.spec.complete_trial_config(run, s) for s in seeds],
                    extension.first_seed,
                )
                first = first or trials[0]
            for number, params, first_seed, configs in asked:
                trials = trial_lifecycle.create_configuration(
                    session, self.study_id, number, params, configs, first_seed
                )
                event_log.add_event(
                    session,
                    self.study_id,
                    "configuration",
                    {"configuration": number, "params": params},
                )
                first = first or trials[0]
        return first

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Finish each seed of the chunk from its own last row: complete or diverged as it
        reported; otherwise failed (the chunk's process failed), cancelled, or pruned
        (ASHA stopped the chunk before its last step). ``result``, the chunk's last, is
        not read: the recorder has each seed's rows, and a seed that stopped before the
        chunk resumed from a checkpoint reported its last row in an earlier run."""
        sql_ids = self.handed_out.pop(trial_id, None)
        if sql_ids is None or self.claim_lost.is_set():
            return
        self.flush()
        configurations = set()
        with transaction(self.sessions) as session:
            rows = trial_lifecycle.last_rows(session, sql_ids)
            for sql_id in sql_ids:
                row = rows.get(sql_id, {})
                reported = row.get(STATUS_KEY)
                if reported in REPORTED_TRIAL_STATUSES:
                    status = reported
                elif error:  # no objective: the run never got to report one as its end
                    status, row = TrialStatus.failed.value, {}
                elif self.cancelled:
                    status = TrialStatus.cancelled.value
                else:
                    status = TrialStatus.pruned.value
                trial = trial_lifecycle.finish_trial(
                    session,
                    sql_id,
                    status,
                    row.get(OBJECTIVE_KEY),
                    row.get("step"),
                    error="trial process failed" if status == TrialStatus.failed.value else None,
                )
                if trial is not None:
                    configurations.add(trial.configuration)
            seeds = {
                configuration: [
                    (t.status, t.objective)
                    for t in trial_lifecycle.configuration_trials(
                        session, self.study_id, configuration
                    )
                ]
                for configuration in configurations
            }
        for configuration, outcomes in seeds.items():
            state, value = optuna_state(score(outcomes, self.spec.mode))
            if state != TrialState.RUNNING:  # every seed has finished
                self.optuna.tell(configuration, value, state=state, skip_if_finished=True)
