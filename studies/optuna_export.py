"""A study as a real Optuna study, for optuna-dashboard and ``optuna.load_study``.

``magma-bench export STUDY --format optuna --to TARGET`` builds it from the API's JSON (the
study detail and every trial), with the same trials the searcher rebuilds from SQL
(``studies.samplers.optuna_trials``): Optuna trial numbers are configuration numbers, and
each configuration's state and value follow ``studies.best.score``. Nothing here touches
the service's database, so the CLI stays an HTTP client.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend

from studies.samplers import Configuration, direction, optuna_trials
from studies.spec import StudySpec


def study_name(study_id: int) -> str:
    return f"magma-bench-study-{study_id}"


def storage(target: str) -> str | BaseStorage:
    """A database URL (``sqlite:///x.db``, ``postgresql://...``) is Optuna's RDB storage;
    anything else is the path of a journal file (``optuna-dashboard x.log`` opens both)."""
    if "://" in target:
        return target
    return JournalStorage(JournalFileBackend(target))


def configurations(trials: Iterable[dict[str, Any]]) -> dict[int, Configuration]:
    """The API's trial summaries, grouped by configuration, seeds in trial order."""
    result: dict[int, Configuration] = {}
    for trial in sorted(trials, key=lambda t: t["number"]):
        seeds = result.setdefault(trial["configuration"], (trial["params"], []))[1]
        seeds.append((trial["status"], trial["objective"]))
    return result


def export_study(
    detail: dict[str, Any], trials: Iterable[dict[str, Any]], target: str
) -> optuna.Study:
    """Write the study (``GET /studies/{id}`` and its trial pages) to ``target``,
    replacing an earlier export of it there."""
    spec = StudySpec.model_validate(detail["spec"])
    name, destination = study_name(detail["id"]), storage(target)
    with contextlib.suppress(KeyError):  # not exported there before
        optuna.delete_study(study_name=name, storage=destination)
    study = optuna.create_study(storage=destination, study_name=name, direction=direction(spec))
    with warnings.catch_warnings():  # flagged experimental since 3.2, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])
    study.set_user_attr("magma_bench_study", {"id": detail["id"], "name": detail["name"]})
    study.set_user_attr("spec", detail["spec"])
    study.add_trials(optuna_trials(spec, configurations(trials)))
    return study
