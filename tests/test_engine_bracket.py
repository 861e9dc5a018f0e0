"""The bracket protocol in the engine: round by round through restarted searchers over
SQLite and PostgreSQL (trials finished by hand, hand-computed rounds), and end to end with
the real driver on a real local Ray and SQLite, on the stochastic quadratic (40 steps),
dense vs magma, with a confirmation stage.

On Ray what the trials score is measured, not hand-computed; that test derives each arm's
outcome from the SQL results by the protocol's definition, written out here (``by_hand``),
not by the planner (``tests/test_bracket.py`` checks the planner on hand-computed cases),
and checks what the searcher ran and recorded against it. The hand-finished tests cover an
arm that a failed neighbour leaves unbracketed and one that max_extensions stops."""

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
from tests.db_fixtures import Database, fresh_database, quadratic_spec
from tests.engine_runs import run_study

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
        seeds=2,
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


def by_hand(spec: StudySpec, selection: list[Trial]) -> list[dict]:
    """Each arm's final bracket report derived from its selection trials by the protocol's
    definition, without ``studies.bracket``: a configuration is complete when every seed
    completed (its score the mean), diverged when a seed diverged; the best is the lowest
    complete mean (ties: the lower LR); it is bracketed when some complete or diverged LR
    lies below it and some above it; otherwise the search stopped at max_extensions (the
    budget here is never reached)."""
    reports = []
    for arm in ARMS:
        seeds: dict[float, list[Trial]] = {}
        for trial in selection:
            if trial.params["variant"] == arm["variant"]:
                seeds.setdefault(trial.params["lr"], []).append(trial)
        complete = {
            lr: sum(t.objective for t in group) / len(group)
            for lr, group in seeds.items()
            if all(t.status == "complete" for t in group)
        }
        diverged = {lr for lr, group in seeds.items() if any(t.status == "diverged" for t in group)}
        closing = set(complete) | diverged
        best = min(complete, key=lambda lr: (complete[lr], lr)) if complete else None
        bracketed = best is not None and min(closing) < best < max(closing)
        reports.append(
            {
                "arm": arm,
                "status": "bracketed" if bracketed else "max_extensions",
                "lrs": sorted(seeds),
                "best_lr": best,
                "best_value": pytest.approx(complete[best]) if best is not None else None,
            }
        )
    return reports


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
    # an upper bound: arms x (initial + extensions) x 2 seeds + arms x confirm_seeds
    assert run.study.runs == {"extending": 2 * (5 * 2 + 2), "one-point": 2 * 1 * 2}[name]
    selection = [t for t in run.trials if not is_confirmation(t.params)]
    assert sorted(t.seed_index for t in selection) == sorted([0, 1] * (len(selection) // 2))
    arm_points = points(spec, selection)
    # equal budgets: every arm ran the same LRs count, the first round around lr_start
    assert len(arm_points[0]) == len(arm_points[1]) >= protocol.initial_points
    for ks in arm_points:
        assert set(bracket.initial_indices(protocol)) <= set(ks)
        assert sorted(ks) == list(range(min(ks), max(ks) + 1))
    # the recorded outcome is the protocol's, derived here from the SQL results
    expected = by_hand(spec, selection)
    reports = [e.payload for e in run.events if e.kind == "bracket"]
    assert reports[-1]["done"] is True
    assert reports[-1]["arms"] == expected
    assert [r["rounds"] for r in reports] == list(range(len(reports)))
    for arm in expected:  # an arm left unbracketed used every extension
        assert arm["status"] == "bracketed" or len(arm["lrs"]) == (
            protocol.initial_points + protocol.max_extensions
        )
    if len(reports) > 2:  # the last round was needed: before it, some arm was unbracketed
        last_round = {max(g, key=lambda t: t.configuration).configuration for g in (
            [t for t in selection if t.params["variant"] == arm["variant"]] for arm in ARMS
        )}  # fmt: skip
        before = by_hand(spec, [t for t in selection if t.configuration not in last_round])
        assert any(arm["status"] != "bracketed" for arm in before)
    if name == "one-point":  # one LR each cannot be bracketed, and no extension is allowed
        assert [arm["status"] for arm in expected] == ["max_extensions", "max_extensions"]
    # the confirmation stage: each arm's chosen LR on seed indices 2 and 3, never chosen
    confirmation = [t for t in run.trials if is_confirmation(t.params)]
    chosen = [arm["best_lr"] for arm in expected if arm["best_lr"] is not None]
    assert sorted(t.params["lr"] for t in confirmation) == sorted(
        lr for lr in chosen for _ in range(protocol.confirm_seeds)
    )
    fresh = list(range(spec.seeds, spec.seeds + protocol.confirm_seeds))
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


def finish(
    db: Database, study_id: int, results: dict[tuple[str, float], float | str | None]
) -> None:
    """Finish each queued trial (every seed) of (variant, lr) with its objective (None:
    diverged; a status, such as "failed": that status, no objective)."""
    with db.transaction() as session:
        for trial in reads.study_trials(session, study_id):
            if trial.status == "queued":
                value = results[(trial.params["variant"], trial.params["lr"])]
                if isinstance(value, str):
                    status, value = value, None
                else:
                    status = "complete" if value is not None else "diverged"
                trial_lifecycle.finish_trial(session, trial.id, status, value, 40)


def test_each_round_is_planned_from_sql_by_a_restarted_searcher(db: Database) -> None:
    """No Ray: a new searcher per round (as after a driver restart), trials finished by hand.
    dense {3.16e-3: 3, 1e-2: 2, 3.16e-2: 4} is bracketed at 1e-2 and widens on its better
    edge (3 < 4) to 1e-3; magma {5, 4, 3} extends up to 1e-1, which diverges: bracketed at
    3.16e-2. Then each choice runs once more, on seed index 2 (seeds 0 and 1 chose it)."""
    spec = quadratic_spec(
        name="bracket-rounds",
        search={"variant": ["dense", "magma"]},
        seeds=2,
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
    assert [(t.configuration, t.params, t.seed_index) for t in trials[12:]] == [
        (6, {"variant": "dense", "lr": 1e-3}, 0),
        (6, {"variant": "dense", "lr": 1e-3}, 1),
        (7, {"variant": "magma", "lr": 0.1}, 0),
        (7, {"variant": "magma", "lr": 0.1}, 1),
        (8, {"variant": "dense", "lr": 0.01, "stage": "confirm"}, 2),
        (9, {"variant": "magma", "lr": 3.16228e-2, "stage": "confirm"}, 2),
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


def test_a_failed_neighbour_does_not_close_and_max_extensions_stops(db: Database) -> None:
    """Hand-finished rounds, max_extensions 1. dense {3.16e-3: 3, 1e-2: 2, 3.16e-2: failed}
    has no closing LR above its best (a failed one says nothing), so it extends up past it
    to 1e-1 (2.5): bracketed at 1e-2 by 3.16e-3 and 1e-1. magma {5, 4, 3} extends up to
    1e-1 (2.0), its best again at the top: the one extension is used, so it stops there
    unbracketed (max_extensions)."""
    spec = quadratic_spec(
        name="bracket-failed",
        search={"variant": ["dense", "magma"]},
        seeds=2,
        protocol={"kind": "bracket", "lr_start": 0.01, "max_extensions": 1, "confirm_seeds": 0},
    )
    study_id = db.create_study(spec)

    def suggest() -> dict | str | None:
        return StudySearcher(study_id, spec, db.sessions).suggest("tune-trial")

    assert isinstance(suggest(), dict)
    lrs = (3.16228e-3, 0.01, 3.16228e-2)
    finish(db, study_id, {("dense", lr): v for lr, v in zip(lrs, (3.0, 2.0, "failed"), strict=True)}
           | {("magma", lr): v for lr, v in zip(lrs, (5.0, 4.0, 3.0), strict=True)})  # fmt: skip
    second = suggest()
    # the old rule closed dense's bracket with the failed LR, and widened it down to 1e-3
    assert isinstance(second, dict) and (second["variant"], second["lr"]) == ("dense", 0.1)
    finish(db, study_id, {("dense", 0.1): 2.5, ("magma", 0.1): 2.0})
    assert suggest() == Searcher.FINISHED
    trials = db.trials(study_id)
    assert len(trials) == 2 * 4 * 2  # 2 arms x 4 LRs x 2 seeds, no confirmation
    with db.sessions() as session:
        reports = [e.payload for e in event_log.events_after(session, study_id, 0, 100)
                   if e.kind == "bracket"]  # fmt: skip
    assert [(r["rounds"], r["done"]) for r in reports] == [(0, False), (1, False), (2, True)]
    assert [a["status"] for a in reports[1]["arms"]] == ["running", "running"]
    assert reports[-1]["arms"] == [
        {"arm": {"variant": "dense"}, "status": "bracketed", "lrs": [*lrs, 0.1],
         "best_lr": 0.01, "best_value": 2.0},
        {"arm": {"variant": "magma"}, "status": "max_extensions", "lrs": [*lrs, 0.1],
         "best_lr": 0.1, "best_value": 2.0},
    ]  # fmt: skip
    assert reports[-1]["arms"] == by_hand(spec, trials)


def test_a_dense_arm_that_ignores_a_searched_value_is_tuned_once(db: Database) -> None:
    """dense x components {attention+mlp, all} is one run (``TrialConfig.run_key``): the
    first round plans 3 arms, not 4, and magma keeps both components values."""
    spec = quadratic_spec(
        name="bracket-dedupe",
        search={"variant": ["dense", "magma"], "components": ["attention+mlp", "all"]},
        seeds=2,
        protocol={"kind": "bracket", "lr_start": 0.01, "initial_points": 1,
                  "max_extensions": 0, "confirm_seeds": 0},
    )  # fmt: skip
    study_id = db.create_study(spec)
    assert isinstance(StudySearcher(study_id, spec, db.sessions).suggest("tune-trial"), dict)
    assert [t.params for t in db.trials(study_id) if t.seed_index == 0] == [
        {"variant": "dense", "components": "attention+mlp", "lr": 0.01},
        {"variant": "magma", "components": "attention+mlp", "lr": 0.01},
        {"variant": "magma", "components": "all", "lr": 0.01},
    ]
