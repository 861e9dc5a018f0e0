"""A quadratic-preset study written with the engine's repository functions, for the tests
of the claims report (the service's and the browser's)."""

from __future__ import annotations

import math

from studies.best import CONFIRM_STAGE, STAGE_KEY
from studies.bracket import initial_indices, lr_at
from studies.presets import load_preset
from studies.storage.repository import event_log, lease, trial_lifecycle
from tests.db_fixtures import Database

#: the dense arm's objective per seed: the preset's log_loss_auc, a mean log loss. The
#: magma arm's is these plus ln factor plus a seed's own deviation (JITTER, SD 0.01), so
#: its geometric-mean loss is about factor times dense's on every seed, with the real
#: seed variance a paired t test needs (one ratio repeated is never a detectable
#: difference at 3 seeds). Close together, so the raw values differ detectably too.
DENSE = (2.0, 2.5, 3.0)
JITTER = (0.01, -0.01, 0.0)
#: the dense values on a bracket study's confirmation seeds
CONFIRM_DENSE = (2.2, 2.8, 2.4)


def magma_values(dense: tuple[float, ...], factor: float) -> list[float]:
    """The magma arm's objective on the seeds whose dense values are ``dense``."""
    return [d + math.log(factor) + j for d, j in zip(dense, JITTER, strict=True)]


def write_quadratic(
    db: Database, hessian: str, factor: float, status: str, bracket: bool = False
) -> int:
    """A quadratic-preset study at one lr (no bracket protocol, so no confirmation
    stage): dense (DENSE) and magma (``magma_values``: about factor x dense's loss) on 3
    seeds, finished with ``status`` (or left running); its id.

    ``bracket``: the preset's bracket protocol instead, its first round (the three LRs
    around 0.1, each 1.0 worse in log loss than the best: dense best at 0.1, bracketed;
    magma best at the largest LR, stopped there by the run cap, as the study's bracket
    event says) and its confirmation stage (each arm's best rerun on the preset's
    confirm_seeds fresh seeds: dense CONFIRM_DENSE, magma ``magma_values`` of them)."""
    overrides = {
        "workload": {"hessian": hessian},
        "protocol": {"kind": "none", "confirm_seeds": 0},
    }
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
                values = magma_values(DENSE, factor) if variant == "magma" else DENSE
                for trial, value in zip(trials, values, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(
                        session, trial.id, "complete", value + min(worse, 1), 500
                    )
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
                        "best_value": sum(values) / len(values),
                    }
                    for variant, stop, values in (
                        ("dense", "bracketed", DENSE),
                        ("magma", "caps", magma_values(DENSE, factor)),
                    )
                ],
            }
            event_log.add_event(session, study_id, "bracket", report)
            fresh = spec.seeds
            for variant in ("dense", "magma"):
                run = {"variant": variant, "lr": lrs[variant][0]}
                configs = [
                    spec.complete_trial_config(run, fresh + seed)
                    for seed in range(spec.protocol.confirm_seeds)
                ]
                trials = trial_lifecycle.create_configuration(
                    session, study_id, number, {**run, STAGE_KEY: CONFIRM_STAGE}, configs, fresh
                )
                number += 1
                values = CONFIRM_DENSE
                if variant == "magma":
                    values = tuple(magma_values(CONFIRM_DENSE, factor))
                for trial, value in zip(trials, values, strict=True):
                    trial_lifecycle.mark_trial_running(session, trial.id)
                    trial_lifecycle.finish_trial(session, trial.id, "complete", value, 500)
        if status != "running":
            lease.finish_study(session, study_id, status)
    return study_id
