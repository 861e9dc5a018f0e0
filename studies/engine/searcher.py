"""A Ray Tune searcher whose state lives in SQL and Optuna's RDB storage.

Tune asks for the next trial; the answer is, in order: a queued trial already in the
database (after a driver restart, with the checkpoint to resume from), or a new
configuration from Optuna (or the next grid point), written to the database as one
queued trial per seed before it runs. Because the database, not this object, knows
what exists, a restarted driver neither loses nor duplicates trials, and a grid runs
each point exactly once. When every seed of a configuration has finished, Optuna is
told the configuration's mean objective (or that it was pruned or failed).

SQL and Optuna's storage are written in separate transactions, so a driver killed
between two writes leaves them disagreeing; a new searcher reconciles them first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from sqlalchemy.orm import Session, sessionmaker

from studies.engine._pickling import Unpicklable
from studies.samplers import distributions, make_sampler
from studies.spec import StudySpec
from studies.storage import repository as repo
from studies.storage.engine import transaction
from studies.storage.models import Trial
from worker.trainable import META_KEY

#: trial status from the last metrics a trial reported before Tune stopped it
FINAL_STATUSES = ("complete", "diverged")


class StudySearcher(Unpicklable, Searcher):
    _picklable = ("study_id", "spec")

    def __init__(
        self,
        study_id: int,
        spec: StudySpec,
        sessions: sessionmaker[Session],
        optuna_storage: optuna.storages.BaseStorage,
        optuna_study_name: str,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(metric="objective", mode=spec.objective.mode)
        self.study_id, self.spec, self.sessions = study_id, spec, sessions
        self.optuna_storage = optuna_storage
        self.optuna = optuna.create_study(
            storage=optuna_storage,
            study_name=optuna_study_name,
            sampler=make_sampler(spec),
            direction="minimize" if spec.objective.mode == "min" else "maximize",
            load_if_exists=True,
        )
        self.distributions = distributions(spec)
        self.flush = flush  # metric rows before the completion that follows them
        self.handed_out: dict[str, int] = {}  # Tune trial id -> SQL trial id
        self.cancelled = False
        self._reconcile()

    def _reconcile(self) -> None:
        """Optuna trials asked or enqueued but never recorded in SQL are failed (a grid
        point enqueued twice would otherwise be handed out twice); configurations whose
        trials all finished in SQL but were never told are told now."""
        with transaction(self.sessions) as session:
            outcomes = repo.configuration_outcomes(session, self.study_id)
        unfinished = (TrialState.WAITING, TrialState.RUNNING)
        study_id = self.optuna_storage.get_study_id_from_name(self.optuna.study_name)
        for orphan in self.optuna.get_trials(deepcopy=False, states=unfinished):
            if orphan.number not in outcomes:
                trial_id = self.optuna_storage.get_trial_id_from_study_id_trial_number(
                    study_id, orphan.number
                )
                self.optuna_storage.set_trial_state_values(trial_id, TrialState.FAIL)
        for configuration, outcome in outcomes.items():
            self._tell(configuration, outcome)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.cancelled:
            return Searcher.FINISHED
        with transaction(self.sessions) as session:
            trial = repo.next_queued(session, self.study_id, self.handed_out.values())
            created = repo.configurations_created(session, self.study_id)
        if trial is None and created < self.spec.configurations:
            trial = self._new_configuration(created)
        if trial is None:
            return None if self.handed_out else Searcher.FINISHED
        self.handed_out[trial_id] = trial.id
        meta = {"trial_id": trial.id, "study_id": self.study_id}
        if trial.checkpoint_path:
            meta["resume_from"] = trial.checkpoint_path
        return {**trial.config, META_KEY: meta}

    def _new_configuration(self, created: int) -> Trial:
        """Ask Optuna (outside any SQL transaction), then record every seed's trial."""
        if self.spec.sampler == "grid":
            self.optuna.enqueue_trial(self.spec.grid_points()[created])
        optuna_trial = self.optuna.ask(self.distributions)
        params = dict(optuna_trial.params)
        configs = [self.spec.trial_config(params, s) for s in range(self.spec.seeds)]
        with transaction(self.sessions) as session:
            trials = repo.create_configuration(
                session, self.study_id, optuna_trial.number, params, configs
            )
            repo.add_event(
                session,
                self.study_id,
                "configuration",
                {"configuration": optuna_trial.number, "params": params},
            )
        return trials[0]

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        sql_id = self.handed_out.pop(trial_id, None)
        if sql_id is None:
            return
        result = result or {}
        reported = result.get("status")
        if error:
            status = "failed"
        elif reported in FINAL_STATUSES:
            status = reported
        elif self.cancelled:
            status = "cancelled"
        else:
            status = "pruned"  # stopped by ASHA before its last step
        self.flush()
        with transaction(self.sessions) as session:
            trial = repo.finish_trial(
                session,
                sql_id,
                status,
                result.get("objective"),
                result.get("step"),
                error="trial process failed" if error else None,
            )
            if trial is None:
                return
            siblings = repo.configuration_trials(session, self.study_id, trial.configuration)
            outcome = [(t.status, t.objective) for t in siblings]
        # After the commit: SQLite allows one writer, and Optuna has its own connection.
        self._tell(trial.configuration, outcome)

    def _tell(self, configuration: int, outcome: list[tuple[str, float | None]]) -> None:
        """Tell Optuna once every seed of the configuration has finished."""
        statuses = {status for status, _ in outcome}
        if not statuses <= set(repo.FINISHED_TRIAL_STATUSES):
            return
        if self.optuna.get_trials(deepcopy=False)[configuration].state.is_finished():
            return
        if statuses <= {"complete", "diverged"}:
            worst = math.inf if self.spec.objective.mode == "min" else -math.inf
            values = [worst if value is None else value for _, value in outcome]
            self.optuna.tell(configuration, statistics.fmean(values))
        elif "pruned" in statuses:
            self.optuna.tell(configuration, state=TrialState.PRUNED)
        else:
            self.optuna.tell(configuration, state=TrialState.FAIL)
