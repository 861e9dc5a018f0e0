"""The bracket protocol in the engine: round by round through restarted searchers over
SQLite and PostgreSQL (trials finished by hand, hand-computed rounds), and end to end with
the real driver on a real local Ray and SQLite, on the stochastic quadratic (40 steps),
dense vs magma, with a confirmation stage.

On Ray what the trials score is measured, not hand-computed; that test checks that what the
searcher ran and recorded is exactly what the planner (``tests/test_bracket.py`` checks it
on hand-computed cases) makes of the SQL results."""

from __future__ import annotations

import pytest
from ray.tune.search import Searcher

from service.api.views import detail
from studies import bracket
from studies.analysis.verdict import WarningCode, verdicts
from studies.best import Score, best_configuration, is_confirmation, score
from studies.engine.searcher import StudySearcher
from studies.results import load_study
from studies.spec import StudySpec
from studies.storage.models import Study, Trial
from studies.storage.repository import best_sql, event_log, reads, trial_lifecycle

pytest.register_assert_rewrite("tests.db_fixtures")
from tests.db_fixtures import Database, fresh_database, quadratic_spec  # noqa: E402
from tests.test_engine import run_study  # noqa: E402

pytest_plugins = ("tests.db_fixtures",)

ARMS = [{"variant": "dense"}, {"variant": "magma"}]


#: the full protocol (slow: up to 14 runs, rounds one at a time, then the confirmation) and
#: a one-round one without confirmation, fast enough for the default suite
PROTOCOLS = {
    "extending": {"initial_points": 3, "max_extensions": 2, "confirm_seeds": 2},
    "one-point": {"initial_points": 1, "max_extensions": 0, "confirm_seeds": 0},
}


def bracket_spec(name: str) -> StudySpec:
    return quadratic_spec(
        name="bracket",
        search={"variant": ["dense", "magma"], "p": 0.5},
        seeds=1,
        base_seed=3,
        protocol={"kind": "bracket", "lr_start": 0.01, "lr_step_decades": 0.5, **PROTOCOLS[name]},
    )


def points(spec: StudySpec, trials: list[Trial]) -> list[dict[int, Score]]:
    """Each arm's selection points, scored by the one rule."""
    by_configuration: dict[int, list[Trial]] = {}
    for trial in trials:
        if not is_confirmation(trial.params):
            by_configuration.setdefault(trial.configuration, []).append(trial)
    result: list[dict[int, Score]] = [{} for _ in ARMS]
    for group in by_configuration.values():
        params = group[0].params
        arm = ARMS.index({"variant": params["variant"]})
        k = bracket.index_of(spec.protocol, params["lr"])
        result[arm][k] = score([(t.status, t.objective) for t in group], spec.mode)
    return result


@pytest.fixture(
    scope="module",
    params=[pytest.param("extending", marks=pytest.mark.slow), "one-point"],
)
def bracket_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, ray_local: None
):
    directory = tmp_path_factory.mktemp(f"bracket-{request.param}")
    with fresh_database("sqlite", directory) as url:
        db = Database(url)
        try:
            yield request.param, db, run_study(db, bracket_spec(request.param), directory / "ray")
        finally:
            db.dispose()


def test_bracket_study_runs_the_planners_rounds_then_confirms(bracket_run) -> None:
    name, db, run = bracket_run
    spec = bracket_spec(name)
    protocol = spec.protocol
    assert run.study.status == "complete", run.study.error
    # an upper bound: arms x (initial + extensions) x 1 seed + arms x confirm_seeds
    assert run.study.runs == {"extending": 2 * (5 + 2), "one-point": 2 * 1}[name]
    selection = [t for t in run.trials if not is_confirmation(t.params)]
    arm_points = points(spec, selection)
    # equal budgets: every arm ran the same LRs count, the first round around lr_start
    assert len(arm_points[0]) == len(arm_points[1]) >= protocol.initial_points
    for ks in arm_points:
        assert set(bracket.initial_indices(protocol)) <= set(ks)
        assert sorted(ks) == list(range(min(ks), max(ks) + 1))
    # the recorded outcome is the planner's on the SQL results
    final = bracket.plan(
        protocol, arm_points, spec.mode, seeds=1, runs_used=len(selection), budget=10**6
    )
    assert final.done
    reports = [e.payload for e in run.events if e.kind == "bracket"]
    assert reports[-1]["done"] is True
    assert reports[-1]["arms"] == [
        {"arm": arm, **state.as_dict()} for arm, state in zip(ARMS, final.arms, strict=True)
    ]
    assert [r["rounds"] for r in reports] == list(range(len(reports)))
    # the confirmation stage: each arm's chosen LR on seed indices 1 and 2, never chosen
    confirmation = [t for t in run.trials if is_confirmation(t.params)]
    chosen = [state.best_lr for state in final.arms if state.best_lr is not None]
    assert sorted(t.params["lr"] for t in confirmation) == sorted(
        lr for lr in chosen for _ in range(protocol.confirm_seeds)
    )
    fresh = list(range(1, 1 + protocol.confirm_seeds))
    assert sorted(t.seed_index for t in confirmation) == sorted(fresh * len(chosen))
    assert all(t.config["seed"] == 3 + t.seed_index for t in confirmation)
    assert all(t.config["lr"] == t.params["lr"] for t in run.trials)
    best = best_configuration(run.trials, spec.mode)
    assert best is not None and not is_confirmation(best.params)
    assert best == best_configuration(selection, spec.mode)
    with db.transaction() as session:
        assert best_sql.best_configuration_number(session, run.study.id, spec.mode) == (
            best.configuration
        )
        data = load_study(session, run.study.id)
        shown = detail(session, session.get(Study, run.study.id)).bracket  # GET /studies/{id}
    assert shown is not None and shown.model_dump() == reports[-1]
    assert data is not None
    (comparison,) = verdicts(data.trials, data.mode, bracket=data.bracket)
    # the confirmation's fresh seeds, paired by seed index, give their own estimate
    assert (comparison.confirmation is not None) == bool(protocol.confirm_seeds)
    # every arm the driver's last report says stopped unbracketed is warned about
    warned = [w.message for w in comparison.warnings if w.code == WarningCode.unbracketed]
    labels = {"dense": "adamw", "magma": "adamw+magma"}
    stopped = [a for a in reports[-1]["arms"] if a["status"] != "bracketed"]
    assert [m.split(":")[0] for m in warned] == [labels[a["arm"]["variant"]] for a in stopped]
    if name == "one-point":  # one LR each, and no extension allowed
        assert warned == [
            f"{label}: best LR 0.01 is the only one tested; "
            "the search stopped at max_extensions=0 before bracketing it"
            for label in ("adamw", "adamw+magma")
        ]


def finish(db: Database, study_id: int, results: dict[tuple[str, float], float | None]) -> None:
    """Finish each queued trial of (variant, lr) with its objective (None: diverged)."""
    with db.transaction() as session:
        for trial in reads.study_trials(session, study_id):
            if trial.status == "queued":
                value = results[(trial.params["variant"], trial.params["lr"])]
                status = "complete" if value is not None else "diverged"
                trial_lifecycle.finish_trial(session, trial.id, status, value, 40)


def test_each_round_is_planned_from_sql_by_a_restarted_searcher(db: Database) -> None:
    """No Ray: a new searcher per round (as after a driver restart), trials finished by hand.
    dense {3.16e-3: 3, 1e-2: 2, 3.16e-2: 4} is bracketed at 1e-2 and widens on its better
    edge (3 < 4) to 1e-3; magma {5, 4, 3} extends up to 1e-1, which diverges: bracketed at
    3.16e-2. Then each choice runs once more, on seed index 1."""
    spec = quadratic_spec(
        name="bracket-rounds",
        search={"variant": ["dense", "magma"]},
        seeds=1,
        protocol={"kind": "bracket", "lr_start": 0.01, "max_extensions": 2, "confirm_seeds": 1},
    )
    study_id = db.create_study(spec)

    def suggest() -> dict | str | None:
        return StudySearcher(study_id, spec, db.sessions).suggest("tune-trial")

    first = suggest()
    assert isinstance(first, dict) and (first["variant"], first["lr"]) == ("dense", 3.16228e-3)
    lrs = (3.16228e-3, 0.01, 3.16228e-2)
    finish(db, study_id, {("dense", lr): v for lr, v in zip(lrs, (3.0, 2.0, 4.0), strict=True)}
           | {("magma", lr): v for lr, v in zip(lrs, (5.0, 4.0, 3.0), strict=True)})  # fmt: skip
    second = suggest()
    assert isinstance(second, dict) and (second["variant"], second["lr"]) == ("dense", 1e-3)
    finish(db, study_id, {("dense", 1e-3): 6.0, ("magma", 0.1): None})
    suggest()
    finish(db, study_id, {("dense", 0.01): 2.5, ("magma", 3.16228e-2): 2.0})
    assert suggest() == Searcher.FINISHED
    trials = db.trials(study_id)
    assert [(t.configuration, t.params, t.seed_index) for t in trials[6:]] == [
        (6, {"variant": "dense", "lr": 1e-3}, 0),
        (7, {"variant": "magma", "lr": 0.1}, 0),
        (8, {"variant": "dense", "lr": 0.01, "stage": "confirm"}, 1),
        (9, {"variant": "magma", "lr": 3.16228e-2, "stage": "confirm"}, 1),
    ]
    with db.sessions() as session:
        reports = [e.payload for e in event_log.events_after(session, study_id, 0, 100)
                   if e.kind == "bracket"]  # fmt: skip
    assert [(r["rounds"], r["done"]) for r in reports] == [(0, False), (1, False), (2, True)]
    assert reports[-1]["arms"] == [
        {"arm": {"variant": "dense"}, "status": "bracketed", "lrs": [1e-3, *lrs],
         "best_lr": 0.01, "best_value": 2.0},
        {"arm": {"variant": "magma"}, "status": "bracketed", "lrs": [*lrs, 0.1],
         "best_lr": 3.16228e-2, "best_value": 3.0},
    ]  # fmt: skip
    best = best_configuration(trials, spec.mode)  # the confirmation's 2.0 does not compete
    assert best is not None and (best.configuration, best.objective) == (1, 2.0)


def test_a_dense_arm_that_ignores_a_searched_value_is_tuned_once(db: Database) -> None:
    """dense x components {attention+mlp, all} is one run (``TrialConfig.run_key``): the
    first round plans 3 arms, not 4, and magma keeps both components values."""
    spec = quadratic_spec(
        name="bracket-dedupe",
        search={"variant": ["dense", "magma"], "components": ["attention+mlp", "all"]},
        seeds=1,
        protocol={"kind": "bracket", "lr_start": 0.01, "initial_points": 1,
                  "max_extensions": 0, "confirm_seeds": 0},
    )  # fmt: skip
    study_id = db.create_study(spec)
    assert isinstance(StudySearcher(study_id, spec, db.sessions).suggest("tune-trial"), dict)
    assert [t.params for t in db.trials(study_id)] == [
        {"variant": "dense", "components": "attention+mlp", "lr": 0.01},
        {"variant": "magma", "components": "attention+mlp", "lr": 0.01},
        {"variant": "magma", "components": "all", "lr": 0.01},
    ]
