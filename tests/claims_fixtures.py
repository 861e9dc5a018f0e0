"""A quadratic-preset study written with the engine's repository functions, for the tests
of the claims report (the service's and the browser's)."""

from __future__ import annotations

from studies.presets import load_preset
from studies.storage import repository as repo
from tests.db_fixtures import Database

#: the dense arm's objective per seed; the magma arm's is these times a factor, so every
#: pair has the same ratio and the paired interval has zero width
DENSE = (1.0, 2.0, 4.0)


def write_quadratic(db: Database, hessian: str, factor: float, status: str) -> int:
    """A quadratic-preset study at one lr (no bracket protocol): dense (DENSE) and magma
    (DENSE x factor) on 3 seeds, finished with ``status`` (or left running); its id."""
    overrides = {"workload": {"hessian": hessian}, "protocol": {"kind": "none"}}
    spec = load_preset("quadratic", {**overrides, "search": {"lr": 0.1}})
    study_id = db.create_study(spec)
    with db.transaction() as session:
        for number, variant in enumerate(("dense", "magma")):
            params = {"variant": variant}
            configs = [spec.complete_trial_config(params, seed) for seed in range(len(DENSE))]
            trials = repo.create_configuration(session, study_id, number, params, configs)
            for trial, dense in zip(trials, DENSE, strict=True):
                repo.mark_trial_running(session, trial.id)
                value = dense * (factor if variant == "magma" else 1.0)
                repo.finish_trial(session, trial.id, "complete", value, 500)
        if status != "running":
            repo.finish_study(session, study_id, status)
    return study_id
