"""The best rule of ``studies/best.py``, as one SQL query: the API's ``/best`` and study
detail find the best configuration here, so a 10k-trial study stays cheap, then score it
with ``studies.best`` itself.

A twin of the rule, not a second rule: it takes the rule's constants from ``studies.best``
and must name the configuration ``studies.best.best_configuration`` names. That they agree
is checked by ``tests/test_best_rule.py`` (every reader, the API's ``/best`` through this
query among them, names the same configuration on a study with pruned, failed and
diverged seeds) and by ``tests/test_storage.py::test_confirmation_runs_never_compete_for_best``.
A change to the rule changes both.
"""

from __future__ import annotations

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from studies.best import CONFIRM_STAGE, STAGE_KEY
from studies.storage.models import Trial
from worker.contract import TrialStatus


def best_configuration_number(session: Session, study_id: int, mode: str) -> int | None:
    """The configuration with the best mean objective among those whose every trial
    completed, confirmation stages aside (see ``studies.best``); ties go to the earliest."""
    complete = func.sum(case((Trial.status == TrialStatus.complete.value, 1), else_=0))
    mean = func.avg(Trial.objective)
    stage = func.coalesce(Trial.params[STAGE_KEY].as_string(), "")
    query = (
        select(Trial.configuration)
        .where(Trial.study_id == study_id, stage != CONFIRM_STAGE)
        .group_by(Trial.configuration)
        .having(complete == func.count(), func.count(Trial.objective) == func.count())
        .order_by(mean.asc() if mode == "min" else mean.desc(), Trial.configuration)
        .limit(1)
    )
    return session.scalar(query)
