"""Sequential seeding (``studies.analysis.sequential``): its error rates under optional
stopping by simulation, its power and the coverage of the stopping look's interval.

Every simulation is seeded; as in ``tests/test_inference``, the Monte-Carlo bound on an
error rate is 0.05 + 3 sqrt(0.05 * 0.95 / replicates). ``pytest -s`` prints the rates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from ray.tune.search import Searcher

from studies.analysis import claims_report
from studies.analysis.inference import ALPHA, PairedTest, Verdict, paired_tests
from studies.analysis.sequential import (
    Decision,
    SequentialDesign,
    Spending,
    decide,
    design_of,
    spent,
)
from studies.analysis.table import comparison_table
from studies.analysis.verdict import compare_configurations, verdicts
from studies.engine.searcher import StudySearcher
from studies.records import Arm, TrialRecord
from studies.sequential import SeedPlan, plan
from studies.spec import StudySpec
from studies.storage.repository import event_log, reads, trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec

REPLICATES = 2000
DIFFERENCE = (Decision.better, Decision.worse)


def bound(replicates: int, rate: float = ALPHA) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / replicates)


def seeded(
    design: SequentialDesign,
    baseline: np.ndarray,
    treatment: np.ndarray,
    mode: str = "min",
    margin: float | None = None,
) -> tuple[list[Decision], list[PairedTest]]:
    """Each replicate (a row of ``max_seeds`` pairs) seeded round by round, stopped at the
    first look that decides: its decision and its stopping look's test."""
    decisions: list[Decision | None] = [None] * len(baseline)
    stopped: list[PairedTest | None] = [None] * len(baseline)
    active = np.arange(len(baseline))
    for k in range(design.looks):
        look = design.look((k + 1) * design.round_seeds)
        n = look.seeds
        pairs = list(zip(baseline[active, :n], treatment[active, :n], strict=True))
        tests = paired_tests(pairs, mode, margin=margin, alpha=look.alpha)
        going = []
        for i, test in zip(active, tests, strict=True):
            decision = decide(test, look)
            if decision == Decision.continue_:
                going.append(i)
            else:
                decisions[i], stopped[i] = decision, test
        active = np.array(going, dtype=int)
        if not active.size:
            break
    assert not active.size and all(d is not None for d in decisions)
    return decisions, stopped  # type: ignore[return-value]


# --- the design -----------------------------------------------------------------------------


def test_spending_matches_lan_demets_published_values() -> None:
    """Lan and DeMets (1983): at half the information, two-sided alpha 0.05, the O'Brien-
    Fleming-type function has spent 0.0056 and the Pocock-type 0.0310; both spend it all."""
    assert spent(Spending.obrien_fleming, 0.5) == pytest.approx(0.00557, abs=5e-5)
    assert spent(Spending.pocock, 0.5) == pytest.approx(0.0310, abs=5e-5)
    for spending in Spending:
        assert spent(spending, 0.0) == 0.0
        assert spent(spending, 1.0) == pytest.approx(ALPHA)
        design = SequentialDesign(5, 100, spending)
        assert len(design.alphas) == design.looks == 20
        assert sum(design.alphas) == pytest.approx(ALPHA)
        assert all(a >= 0 for a in design.alphas)
    # Pocock spends early, O'Brien-Fleming late
    pocock, obf = SequentialDesign(5, 100).alphas, SequentialDesign(5, 100, "obrien-fleming").alphas
    assert pocock[0] > 10 * obf[0] and obf[-1] > pocock[-1]


def test_looks_follow_the_rounds_and_stop_at_the_cap() -> None:
    design = SequentialDesign(5, 50)
    assert [design.look(n).index for n in (1, 5, 6, 10, 50, 55)] == [0, 0, 1, 1, 9, 9]
    assert design.look(7).seeds == 10 and not design.look(7).final
    assert design.look(50).final and design.look(50).alpha == design.alphas[-1]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"round_seeds": 1, "max_seeds": 10}, "round_seeds"),
        ({"round_seeds": 5, "max_seeds": 5}, "max_seeds"),
        ({"round_seeds": 5, "max_seeds": 52}, "max_seeds"),
        ({"round_seeds": 5, "max_seeds": 50, "margin": 1.5}, "margin"),
        ({"round_seeds": 5, "max_seeds": 50, "spending": "linear"}, "linear"),
        ({"round_seeds": 5, "max_seeds": 50, "stage": "final"}, "stage"),
    ],
)
def test_a_bad_design_is_refused_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SequentialDesign(**fields)


def test_design_of_a_spec() -> None:
    sequential = {"round_seeds": 5, "max_seeds": 50, "spending": "obrien-fleming", "margin": 0.02}
    bracket = design_of({"protocol": {"kind": "bracket", "sequential": sequential}})
    grid = design_of({"protocol": {"kind": "none", "sequential": sequential}})
    assert bracket is not None and bracket.stage == "confirmation"
    assert grid is not None and grid.stage == "selection"
    assert bracket.as_dict() == {**sequential, "stage": "confirmation", "alpha": ALPHA}
    assert design_of({"protocol": {"kind": "bracket", "sequential": None}}) is None
    assert design_of({}) is None


# --- error rates under optional stopping ------------------------------------------------------

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
NULLS: dict[str, Draw] = {
    "normal": lambda rng, shape: rng.normal(3.0, 0.1, shape),
    # heavier tails; values <= 0 take the scaled path
    "student-t3": lambda rng, shape: rng.standard_t(3, shape),
    "lognormal": lambda rng, shape: rng.lognormal(1.0, 0.5, shape),
}


@pytest.mark.parametrize("name", NULLS)
def test_null_data_is_rarely_called_at_any_look(name: str) -> None:
    """No true difference, rounds of 5 up to 100 seeds (20 looks), stopping at the first
    look that calls anything: a false better/worse at most 5% of the time."""
    rng = np.random.default_rng(sorted(NULLS).index(name) + 100)
    baseline = NULLS[name](rng, (REPLICATES, 100))
    treatment = NULLS[name](rng, (REPLICATES, 100))
    rates = {}
    for spending in Spending:
        decisions, _ = seeded(SequentialDesign(5, 100, spending), baseline, treatment)
        counts = Counter(decisions)
        rates[spending.value] = sum(counts[d] for d in DIFFERENCE) / REPLICATES
    print(f"\nnull {name}, 5..100 seeds: false better/worse {rates}")
    assert all(rate <= bound(REPLICATES) for rate in rates.values()), rates


def test_looking_at_every_round_at_alpha_would_not_be_valid() -> None:
    """The reason for spending: the fixed-n test at alpha at each of 20 looks calls a
    false difference far more often than 5% (so the simulation can see the difference)."""
    rng = np.random.default_rng(7)
    baseline = NULLS["normal"](rng, (REPLICATES, 100))
    treatment = NULLS["normal"](rng, (REPLICATES, 100))
    called = np.zeros(REPLICATES, dtype=bool)
    for n in range(5, 101, 5):
        tests = paired_tests(list(zip(baseline[:, :n], treatment[:, :n], strict=True)), "min")
        called |= np.array([t.p_value < ALPHA for t in tests])
    print(f"\nnull, 20 looks each at alpha: false calls {called.mean():.3f}")
    assert called.mean() > bound(REPLICATES)


def test_equivalence_at_the_margin_is_rarely_claimed_at_any_look() -> None:
    """A true change of exactly the margin (2%, the log path), rounds of 5 to 50 seeds,
    stopping at the first decisive look: a false ``equivalent`` at most 5% of the time."""
    rng = np.random.default_rng(31)
    margin = 0.02
    baseline = rng.lognormal(1.0, 0.1, (REPLICATES, 50))
    treatment = baseline * (1 + margin) * np.exp(rng.normal(0, 0.02, baseline.shape))
    rates = {}
    for spending in Spending:
        decisions, _ = seeded(SequentialDesign(5, 50, spending), baseline, treatment, margin=margin)
        rates[spending.value] = Counter(decisions)[Decision.equivalent] / REPLICATES
    print(f"\ntrue change = margin, 5..50 seeds: false equivalent {rates}")
    assert all(rate <= bound(REPLICATES) for rate in rates.values()), rates


def test_a_real_effect_stops_early_and_the_interval_covers() -> None:
    """A true 3% gain with 5% paired noise (d = 0.6 SD), rounds of 5 to 100: found before
    the cap in most runs (the rate is printed and must reach 90%), never called worse, and
    the stopping look's interval (at its spent level) covers the true change in >= 95% of
    runs, within Monte-Carlo error, although the stop depends on the data."""
    rng = np.random.default_rng(41)
    true = -0.03
    baseline = rng.lognormal(1.0, 0.1, (REPLICATES, 100))
    treatment = baseline * (1 + true) * np.exp(rng.normal(0, 0.05, baseline.shape))
    design = SequentialDesign(5, 100)
    decisions, stopped = seeded(design, baseline, treatment)
    counts = Counter(decisions)
    early = np.mean(
        [d == Decision.better and t.n < 100 for d, t in zip(decisions, stopped, strict=True)]
    )
    seeds = np.mean([t.n for t in stopped])
    covered = np.mean([t.low <= true <= t.high for t in stopped])
    print(
        f"\n3% gain, 5% noise: better before the cap {early:.3f}, mean seeds {seeds:.1f}, "
        f"worse {counts[Decision.worse]}, interval coverage {covered:.3f}"
    )
    assert early >= 0.9
    assert counts[Decision.worse] == 0
    assert covered >= 1 - bound(REPLICATES)
    # the fixed interval at alpha, read at the same data-dependent stop, covers less often:
    # the spent level is what keeps the coverage
    fixed = paired_tests(
        [(b[: t.n], v[: t.n]) for b, v, t in zip(baseline, treatment, stopped, strict=True)], "min"
    )
    assert np.mean([t.low <= true <= t.high for t in fixed]) < covered


# --- the verdict on a stage seeded in rounds --------------------------------------------------

DENSE, MAGMA = Arm("adamw", "dense"), Arm("adamw", "magma")
#: the dense arm's seeds, and the masked arm's log ratios to them: -5% with SD 0.02, so three
#: pairs give p = 0.049 (better at a fixed 0.05) and six give p ~ 0.001
DENSE_SEEDS = (2.0, 4.0, 5.0, 3.0, 6.0, 2.5, 3.5, 4.5, 5.5)
K = 2 * math.log(1.01)
LOGS = tuple(-0.05 + K * step for step in (-1, 0, 1) * 3)


def record(number: int, config: int, variant: str, seed: int, value: float | None, **params):
    status = "queued" if value is None else "complete"
    return TrialRecord(
        id=number,
        number=number,
        configuration=config,
        seed_index=seed,
        status=status,
        objective=value,
        params={"variant": variant, "lr": 0.01, **params},
        config={"base": "adamw", "variant": variant, "lr": 0.01},
    )


def grid_trials(seeds: int, *, pending: int = 0, logs: tuple[float, ...] = LOGS) -> list:
    """Dense (configuration 0) and magma (1) on ``seeds`` seeds, the last ``pending`` of
    magma's still queued."""
    trials = []
    for seed in range(seeds):
        dense = DENSE_SEEDS[seed]
        masked = None if seed >= seeds - pending else dense * math.exp(logs[seed])
        trials += [record(2 * seed, 0, "dense", seed, dense)]
        trials += [record(2 * seed + 1, 1, "magma", seed, masked)]
    return trials


def test_a_look_tests_at_its_spent_alpha_not_at_alpha() -> None:
    """Three pairs with p = 0.049: a fixed-n study calls it better; at look 1 of 3 (alpha
    0.023, Pocock) the sequential verdict must not, and says the next round decides."""
    design = SequentialDesign(3, 9, stage="selection")
    trials = grid_trials(3)
    fixed = verdicts(trials, "min")[0]
    looked = verdicts(trials, "min", design=design)[0]
    assert fixed.decision == Verdict.better and fixed.deciding.test.p_value < ALPHA
    stage = looked.deciding
    assert stage.look == design.look(3) and stage.test.alpha == design.alphas[0] < 0.025
    assert stage.test.p_value == fixed.deciding.test.p_value > stage.test.alpha
    # the interval is the look's: wider than the fixed one
    assert stage.test.low < fixed.deciding.test.low and stage.test.high > fixed.deciding.test.high
    assert stage.sequential == Decision.continue_ and looked.undecided
    assert looked.decision is None and looked.decision_code == "inconclusive"
    assert any("undecided at look 1 of 3 (3 seeds)" in limit for limit in looked.limits)
    # six pairs: decided at look 2's alpha, no limit left
    decided = verdicts(grid_trials(6), "min", design=design)[0]
    assert decided.decision == Verdict.better and not decided.undecided and not decided.limits
    level = f"at alpha {design.alphas[1]:.2g}"
    assert level in decided.summary and "look 2 of 3 (6 seeds)" in decided.summary


def test_at_the_cap_an_undecided_comparison_is_inconclusive_with_the_seeds_it_needs() -> None:
    design = SequentialDesign(3, 6, stage="selection")
    noise = tuple(K * step for step in (-1, 0, 1, 1, 0, -1))  # a true 0, mean exactly 0
    comparison = verdicts(grid_trials(6, logs=noise), "min", design=design)[0]
    stage = comparison.deciding
    assert stage.look.final and stage.sequential == Decision.inconclusive
    assert not comparison.undecided and comparison.decision is None
    needed = stage.test.seeds_needed
    assert needed is not None and needed.estimate > 6
    assert any(
        "undecided at the cap (look 2 of 2 (6 seeds)" in limit and f"{needed.estimate}" in limit
        for limit in comparison.limits
    )


def test_runs_in_flight_keep_a_look_from_deciding() -> None:
    design = SequentialDesign(3, 9, stage="selection")
    comparison = verdicts(grid_trials(6, pending=3), "min", design=design)[0]
    assert comparison.deciding.in_flight == 0  # the best configurations are complete ones
    stage = compare_configurations(
        [t for t in grid_trials(6, pending=3) if t.configuration == 0],
        [t for t in grid_trials(6, pending=3) if t.configuration == 1],
        "min",
        design=design,
    )
    assert stage.in_flight == 3 and stage.look.seeds == 6 and stage.n == 3
    assert any("3 runs of look 2 of 3 (6 seeds), alpha" in limit for limit in stage.round_limits)


def test_a_fixed_n_stage_is_unchanged_by_a_design_for_the_other_stage() -> None:
    """A bracket study's design seeds its confirmation: its selection stage stays fixed-n."""
    design = SequentialDesign(3, 9, stage="confirmation")
    trials = grid_trials(3)
    assert verdicts(trials, "min", design=design) == verdicts(trials, "min")


# --- the planner ------------------------------------------------------------------------------


def grid_spec(round_seeds: int, max_seeds: int, **sequential) -> StudySpec:
    return quadratic_spec(
        name="sequential",
        search={"variant": ["dense", "magma"], "lr": 0.01},
        protocol={"sequential": {"round_seeds": round_seeds, "max_seeds": max_seeds, **sequential}},
    )


def seeded_study(
    spec: StudySpec, change: float, noise: float, seed: int, budget: int = 10_000
) -> tuple[list[TrialRecord], list[SeedPlan]]:
    """Plans a grid study round by round, finishing each round's runs: seed i's dense value
    is lognormal across seeds, magma's ``change`` from it with paired ``noise`` (in log)."""
    trials: list[TrialRecord] = []

    def run(configuration: int, variant: str, first: int, count: int) -> None:
        for seed_index in range(first, first + count):
            draw = np.random.default_rng([seed, seed_index])  # the same for both arms
            value = math.exp(draw.normal(1.0, 0.3))
            if variant == "magma":
                value *= math.exp(math.log1p(change) + draw.normal(0, noise))
            trials.append(record(len(trials), configuration, variant, seed_index, value))

    for configuration, variant in enumerate(("dense", "magma")):
        run(configuration, variant, 0, spec.seeds)
    plans: list[SeedPlan] = []
    while not (plans and plans[-1].done):
        plans.append(plan(spec, trials, budget=budget))
        assert not plans[-1].waiting
        for extension in plans[-1].extensions:
            run(extension.configuration, extension.params["variant"], extension.first_seed,
                extension.count)  # fmt: skip
    return trials, plans


def seeds_per_configuration(trials: list[TrialRecord]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for trial in trials:
        found.setdefault(trial.configuration, []).append(trial.seed_index)
    return found


def test_the_planner_adds_rounds_while_undecided_and_stops_when_decided() -> None:
    """A true 5% gain with 2% paired noise: rounds of 3 until the look decides better,
    well before the cap; every round extends both configurations with the next seeds."""
    spec = grid_spec(3, 30)
    trials, plans = seeded_study(spec, -0.05, 0.02, seed=1)
    last = plans[-1].report
    assert last["done"] and last["reason"] == "decided" and last["look"] < last["looks"]
    assert [c["decision"] for c in last["comparisons"]] == ["better"]
    assert all(p.report["reason"] == "running" for p in plans[:-1])
    assert all(c["decision"] == "continue" for p in plans[:-1] for c in p.report["comparisons"])
    seeds = seeds_per_configuration(trials)
    assert seeds[0] == seeds[1] == list(range(3 * last["look"]))
    assert last["design"] == design_of(spec.model_dump(mode="json")).as_dict()


def test_the_planner_stops_at_the_cap_and_never_passes_it() -> None:
    """No true difference and no margin: nothing can stop the rounds but the cap; they stop
    exactly at max_seeds, undecided (inconclusive)."""
    spec = grid_spec(3, 12)
    trials, plans = seeded_study(spec, 0.0, 0.02, seed=2)
    assert [p.report["look"] for p in plans] == [1, 2, 3, 4]
    assert plans[-1].report["reason"] == "max_seeds" and not plans[-1].extensions
    assert [c["decision"] for c in plans[-1].report["comparisons"]] == ["inconclusive"]
    assert {len(s) for s in seeds_per_configuration(trials).values()} == {12}


def test_the_planners_margin_stops_on_equivalence() -> None:
    spec = grid_spec(3, 30, margin=0.05)
    _, plans = seeded_study(spec, 0.0, 0.005, seed=3)
    assert plans[-1].report["reason"] == "decided" and plans[-1].report["look"] < 10
    assert [c["decision"] for c in plans[-1].report["comparisons"]] == ["equivalent"]


def test_the_planner_waits_for_runs_in_flight_and_stops_at_the_run_budget() -> None:
    spec = grid_spec(3, 30)
    assert plan(spec, grid_trials(3, pending=1), budget=100).waiting
    stopped = plan(spec, grid_trials(3), budget=6 + 5)  # the next round needs 6 more
    assert stopped.done and stopped.report["reason"] == "caps" and not stopped.extensions
    going = plan(spec, grid_trials(3), budget=12)
    assert [(e.configuration, e.first_seed, e.count) for e in going.extensions] == [
        (0, 3, 3),
        (1, 3, 3),
    ]


# --- the engine: the searcher's rounds ----------------------------------------------------------


def finish_queued(db: Database, study_id: int, first_seed: int = 0) -> None:
    """Every queued trial completes: seed i (counted from ``first_seed``) scores
    DENSE_SEEDS[i] on dense, and LOGS[i] from it on magma."""
    with db.transaction() as session:
        for trial in reads.study_trials(session, study_id):
            if trial.status == "queued":
                i = trial.seed_index - first_seed
                masked = trial.params["variant"] == "magma"
                value = DENSE_SEEDS[i] * math.exp(LOGS[i]) if masked else DENSE_SEEDS[i]
                trial_lifecycle.finish_trial(session, trial.id, "complete", value, 40)


def sequential_events(db: Database, study_id: int) -> list[dict]:
    with db.sessions() as session:
        events = event_log.events_after(session, study_id, 0, 100)
        return [e.payload for e in events if e.kind == "sequential"]


def test_the_searcher_creates_each_round_and_records_its_look(db: Database) -> None:
    """No Ray: trials finished by hand as in test_engine_bracket. Rounds of 3 to 9 seeds:
    the first look (p 0.049 at alpha 0.023) continues, the second decides better; the
    round's seeds join the same configurations, and each look is a ``sequential`` event."""
    spec = grid_spec(3, 9)
    study_id = db.create_study(spec)

    def suggest() -> dict | str | None:
        return StudySearcher(study_id, spec, db.sessions).suggest("tune-trial")

    def finish() -> None:
        finish_queued(db, study_id)

    searcher = StudySearcher(study_id, spec, db.sessions)
    for tune_trial in ("a", "b"):  # the grid's two configurations, 3 seeds each
        assert isinstance(searcher.suggest(tune_trial), dict)
    finish()
    assert isinstance(suggest(), dict)  # the second round
    trials = db.trials(study_id)
    assert sorted((t.configuration, t.seed_index) for t in trials) == [
        (c, s) for c in (0, 1) for s in range(6)
    ]
    finish()
    assert suggest() == Searcher.FINISHED
    assert len(db.trials(study_id)) == 12
    events = sequential_events(db, study_id)
    assert [(e["look"], e["reason"]) for e in events] == [(1, "running"), (2, "decided")]
    assert [c["decision"] for e in events for c in e["comparisons"]] == ["continue", "better"]
    assert events[0]["alpha"] == pytest.approx(design_of(spec.model_dump()).alphas[0])


def test_a_bracket_study_confirms_in_rounds(db: Database) -> None:
    """One LR per arm on 2 seeds, no extension: the bracket planner starts the confirmation
    with one round of 3 fresh seeds (indices 2 to 4); its look continues, the next round
    (5 to 7) joins the same confirmation configurations and decides."""
    spec = quadratic_spec(
        name="sequential-bracket",
        search={"variant": ["dense", "magma"]},
        seeds=2,
        protocol={
            "kind": "bracket",
            "initial_points": 1,
            "max_extensions": 0,
            "sequential": {"round_seeds": 3, "max_seeds": 9},
        },
    )
    assert spec.protocol.confirm_seeds == 3
    study_id = db.create_study(spec)

    def suggest() -> dict | str | None:
        return StudySearcher(study_id, spec, db.sessions).suggest("tune-trial")

    assert isinstance(suggest(), dict)  # the selection round: both arms at lr 1e-3
    with db.transaction() as session:
        for trial in reads.study_trials(session, study_id):
            trial_lifecycle.finish_trial(session, trial.id, "complete", 1.0, 40)
    assert isinstance(suggest(), dict)  # the confirmation's first round
    finish_queued(db, study_id, first_seed=2)
    assert isinstance(suggest(), dict)  # its second round
    finish_queued(db, study_id, first_seed=2)
    assert suggest() == Searcher.FINISHED
    confirmation = [t for t in db.trials(study_id) if t.params.get("stage") == "confirm"]
    assert sorted((t.params["variant"], t.seed_index) for t in confirmation) == [
        (variant, s) for variant in ("dense", "magma") for s in range(2, 8)
    ]
    assert len({t.configuration for t in confirmation}) == 2
    events = sequential_events(db, study_id)
    assert [(e["look"], e["reason"]) for e in events] == [(1, "running"), (2, "decided")]
    assert {e["design"]["stage"] for e in events} == {"confirmation"}
    assert [c["decision"] for c in events[-1]["comparisons"]] == ["better"]


# --- what the surfaces show and record ------------------------------------------------------


def test_the_table_and_the_claims_report_use_the_studys_design() -> None:
    """The comparison table (the study page's) tests at the look's alpha when given the
    study's design; the claims report's scale line records the design (fixed in the spec)."""
    spec = grid_spec(3, 9).model_dump(mode="json")
    design = design_of(spec)
    fixed = comparison_table(grid_trials(3), "min").rows["adamw"]["magma"]
    looked = comparison_table(grid_trials(3), "min", design=design).rows["adamw"]["magma"]
    assert (fixed.decision, looked.decision) == ("better", "inconclusive")
    assert claims_report.scale(spec).endswith(
        "3 seeds; sequential selection: rounds of 3 seeds to 9, pocock spending of alpha "
        "0.05 over 3 looks"
    )


# --- the spec -----------------------------------------------------------------------------------


ROUNDS = {"round_seeds": 5, "max_seeds": 50}


@pytest.mark.parametrize(
    ("protocol", "extra", "message"),
    [
        ({"sequential": {"round_seeds": 5, "max_seeds": 52}}, {}, "max_seeds must be a multiple"),
        ({"sequential": {"round_seeds": 1, "max_seeds": 10}}, {}, "round_seeds"),
        ({"sequential": {"round_seeds": 5, "max_seeds": 50, "spending": "x"}}, {}, "pocock"),
        ({"sequential": {"round_seeds": 5, "max_seeds": 50, "margin": 2}}, {}, "margin"),
        ({"sequential": {"round_seeds": 5}}, {}, "max_seeds"),
        ({"sequential": {"round_seeds": 5, "max_seeds": 50}}, {"seeds": 3}, "seeds: under"),
        (
            {"sequential": {"round_seeds": 5, "max_seeds": 50}},
            {"sampler": "random", "trials": 3},
            "sampler: protocol.sequential",
        ),
        (
            {"kind": "bracket", "confirm_seeds": 3, "sequential": ROUNDS},
            {"seeds": 2},
            "confirm_seeds: with sequential",
        ),
    ],
)
def test_a_bad_sequential_spec_names_the_field(protocol: dict, extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quadratic_spec(search={"variant": ["dense", "magma"]}, protocol=protocol, **extra)


def test_a_sequential_spec_is_stored_resolved_and_bounds_its_runs() -> None:
    grid = grid_spec(5, 50)
    assert grid.seeds == 5 and grid.runs == 2 * 50 and grid.first_round_runs == 2 * 5
    assert StudySpec.model_validate(grid.model_dump(mode="json")) == grid
    bracket = quadratic_spec(
        search={"variant": ["dense", "magma"]},
        seeds=2,
        protocol={"kind": "bracket", "sequential": {"round_seeds": 5, "max_seeds": 50}},
    )
    rounds = bracket.protocol.initial_points + bracket.protocol.max_extensions
    assert bracket.protocol.confirm_seeds == 5
    assert bracket.runs == 2 * (rounds * 2 + 50)
    assert bracket.first_round_runs == 2 * (bracket.protocol.initial_points * 2 + 5)


# --- a baseline configuration: its arm's other configurations decide the rounds too ---------


def baseline_study(
    baseline: dict | None, replicate: int = 7
) -> tuple[list[TrialRecord], list[SeedPlan]]:
    """Dense and magma at tau 1 and tau 2, rounds of 3 up to 12: both taus 10% better than
    dense (that comparison decides at the first looks) and no different from each other."""
    sequential = {"round_seeds": 3, "max_seeds": 12}
    if baseline is not None:
        sequential["baseline"] = baseline
    spec = quadratic_spec(
        name="sequential",
        search={"variant": ["dense", "magma"], "tau": [1.0, 2.0], "lr": 0.01},
        protocol={"sequential": sequential},
    )
    points = [("dense", 2.0), ("magma", 1.0), ("magma", 2.0)]
    trials: list[TrialRecord] = []

    def run(configuration: int, first: int, count: int) -> None:
        variant, tau = points[configuration]
        for seed_index in range(first, first + count):
            draw = np.random.default_rng([replicate, seed_index, configuration])
            value = math.exp(draw.normal(0, 0.01)) * (0.9 if variant == "magma" else 1.0)
            trials.append(record(len(trials), configuration, variant, seed_index, value, tau=tau))

    for configuration in range(len(points)):
        run(configuration, 0, spec.seeds)
    plans: list[SeedPlan] = []
    while not (plans and plans[-1].done):
        plans.append(plan(spec, trials, budget=10_000))
        for extension in plans[-1].extensions:
            run(extension.configuration, extension.first_seed, extension.count)
    return trials, plans


def test_a_baseline_keeps_seeding_while_its_arms_configurations_are_undecided() -> None:
    """Without a baseline the rounds stop once magma's best is decided against dense; with
    one (tau 2), tau 1 against it is undecided (no difference, no margin), so they go on to
    the cap, and each look records that comparison."""
    _, alone = baseline_study(None)
    assert alone[-1].report["reason"] == "decided" and alone[-1].report["seeds"] < 12
    trials, plans = baseline_study({"tau": 2.0})
    last = plans[-1].report
    assert last["reason"] == "max_seeds" and last["seeds"] == 12
    assert {len(s) for s in seeds_per_configuration(trials).values()} == {12}
    against = [c for c in last["comparisons"] if c["baseline"] == "adamw+magma (baseline)"]
    assert [c["arm"] for c in against] == ["adamw+magma (tau=1.0)"]
    assert against[0]["decision"] == "inconclusive" and against[0]["pairs"] == 12
    assert [c["decision"] for c in plans[0].report["comparisons"]] == ["better", "continue"]


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"p": 0.5}, r"baseline: 'p' must be a field searched as a list"),
        ({"lr": 0.01}, r"baseline: 'lr' must be a field searched as a list"),
        ({"tau": 3.0}, r"baseline: tau=3.0 is not among the searched values \[1.0, 2.0\]"),
    ],
)
def test_a_bad_baseline_names_the_field(baseline: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        quadratic_spec(
            search={"variant": ["dense", "magma"], "tau": [1.0, 2.0], "lr": 0.01},
            protocol={"sequential": {"round_seeds": 3, "max_seeds": 12, "baseline": baseline}},
        )


def test_a_baseline_comparison_on_null_data_is_rarely_called() -> None:
    """Tau 1 and tau 2 alike: seeded in rounds until the look decides or the cap, the
    baseline comparison is called better or worse in at most alpha of the replicates (the
    rounds stopping on it does not break the looks' spent alpha; 3.7% on 1000 other seeds)."""
    replicates = 1000
    called = 0
    for replicate in range(replicates):
        _, plans = baseline_study({"tau": 2.0}, replicate=1000 + replicate)
        last = [c for c in plans[-1].report["comparisons"] if c["baseline"].endswith("(baseline)")]
        called += last[0]["decision"] in ("better", "worse")
    assert called / replicates <= bound(replicates)
