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

from studies.analysis.inference import ALPHA, PairedTest, paired_tests
from studies.analysis.sequential import (
    Decision,
    SequentialDesign,
    Spending,
    decide,
    design_of,
    spent,
)

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
