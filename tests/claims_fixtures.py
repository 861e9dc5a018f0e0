"""A quadratic-preset study written with the engine's repository functions, for the tests
of the claims report (the service's and the browser's)."""

from __future__ import annotations

from studies.bracket import initial_indices, lr_at
from studies.presets import load_preset
from studies.storage.repository import event_log, lease, trial_lifecycle
from tests.db_fixtures import Database

#: the dense arm's objective per seed; the magma arm's is these times a factor, so every
#: pair has the same ratio and the paired interval has zero width
DENSE = (1.0, 2.0, 4.0)


def write_quadratic(
    db: Database, hessian: str, factor: float, status: str, bracket: bool = False
) -> int:
    """A quadratic-preset study at one lr (no bracket protocol): dense (DENSE) and magma
    (DENSE x factor) on 3 seeds, finished with ``status`` (or left running); its id.

    ``bracket``: the preset's bracket protocol instead, its first round only (the three
    LRs around 0.1, each 1.0 worse than the best): dense best at 0.1, bracketed; magma
    best at the largest LR, stopped there by the run cap, as the study's bracket event
    says."""
    overrides = {"workload": {"hessian": hessian}, "protocol": {"kind": "none"}}
    spec = load_preset("quadratic", {**overrides, "search": {"lr": 0.1}})
    lrs: dict[str, list[float | None]] = {"dense": [None], "magma": [None]}
    if bracket:
        spec = load_preset("quadratic", {"workload": {"hessian": hessian}})
        grid = [lr_at(spec.protocol, k) for k in initial_indices(spec.protocol)]
        lrs = {"dense": [grid[1], grid[0], grid[2]], "magma": [grid[2], grid[0], grid[1]]}
    study_id = db.create_study(spec)
    with db.transaction() as session:
        number = 0
        for variant in ("dense", "magma"):
            for worse, lr in enumerate(lrs[variant]):  # the first LR is the best
                params = {"variant": variant, **({"lr": lr} if lr is not None else {})}
                configs = [spec.complete_trial_config(params, seed) for seed in range(len(DENSE))]
                trials = trial_lifecycle.create_configuration(
                    session, study_id, number, params, configs
                )
                number += 1
                for trial, dense in zip(trials, DENSE, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    value = dense * (factor if variant == "magma" else 1.0) + min(worse, 1)
                    trial_lifecycle.finish_trial(session, trial.id, "complete", value, 500)
        if bracket:
            report = {
                "done": True,
                "rounds": 1,
                "arms": [
                    {
                        "arm": {"variant": variant},
                        "status": stop,
                        "lrs": sorted(lrs[variant]),
                        "best_lr": lrs[variant][0],
                        "best_value": sum(DENSE) / len(DENSE) * scale,
                    }
                    for variant, stop, scale in (
                        ("dense", "bracketed", 1.0),
                        ("magma", "caps", factor),
                    )
                ],
            }
            event_log.add_event(session, study_id, "bracket", report)
        if status != "running":
            lease.finish_study(session, study_id, status)
    return study_id
