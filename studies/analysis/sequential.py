"""Sequential seeding: seeds added in rounds until a paired comparison decides, with tests
that stay valid however the stopping depends on the data. Pure numbers in, dataclasses
out; no I/O. The README's "Sequential seeding" paragraph states the same.

**The design.** A stage is seeded in rounds of ``round_seeds`` fresh seeds per arm, up to
``max_seeds``; the *looks* are planned before the run, at ``round_seeds``, 2 x
``round_seeds``, ..., ``max_seeds`` seeds. Look k spends ``alpha_k`` = A(t_k) - A(t_{k-1})
of the overall ``alpha``, where t_k = seeds at look k / ``max_seeds`` and A is a Lan-DeMets
spending function:

- ``pocock`` (the default): A(t) = alpha ln(1 + (e - 1) t), nearly even across the looks,
  so a large effect can stop the seeding early (at 5 of 100 seeds alpha_1 ~ alpha / 12);
- ``obrien-fleming``: A(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), which keeps almost all of
  alpha for the last looks (the early ones can only stop on an overwhelming difference).

At look k each comparison gets ``inference``'s exact paired t test, its t interval and its
TOST all at ``alpha_k``: better or worse when the two-sided test rejects, equivalent when
TOST does against the margin, else *continue*; at the cap, *inconclusive*, with the seeds a
test at that level would need (``SeedsNeeded``). Holm across a claim's comparisons runs at
the look's ``alpha_k``.

**The guarantee, and why this design.** The sum of the alpha_k is alpha (A(1) = alpha),
so by the union bound the chance of any false better/worse (or equivalent) call at any
look, and of any look's interval missing the true change, is at most alpha, whatever rule
decides when to stop: each look's t test is exact at its own n (``inference``: exact for
normal differences, conservative for symmetric heavier tails), so nothing rests on the
joint normality of the looks' statistics that classical group-sequential boundaries (and
their "exact" crossing probabilities) need, which t statistics at 5 to 20 seeds do not
have. The price is conservatism: the looks are correlated, so the true family-wise rate is
below alpha (``tests/test_sequential`` measures it). An anytime-valid confidence sequence
was the alternative; the t-based ones (mixture-martingale bounds with an unknown variance)
are not in scipy or statsmodels, and their boundaries are wider than a spending design's
at the handful of seeds a study affords. The reported interval is the stopping look's at
level 1 - alpha_k: all looks' intervals hold together with probability >= 1 - alpha, so
the one chosen by a data-dependent stop does too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy import stats

from studies.analysis.inference import ALPHA, PairedTest, Verdict
from worker.contract import Names

__all__ = ["Decision", "Look", "SequentialDesign", "Spending", "decide", "design_of", "spent"]


class Spending(Names):
    pocock = "pocock"
    obrien_fleming = "obrien-fleming"


class Decision(Names):
    better = "better"
    worse = "worse"
    equivalent = "equivalent"
    #: undecided before the cap: the next round adds seeds
    continue_ = "continue"
    #: undecided at the cap
    inconclusive = "inconclusive"


def spent(spending: Spending | str, fraction: float, alpha: float = ALPHA) -> float:
    """The alpha spent by information ``fraction`` t in [0, 1] (Lan-DeMets): A(0) = 0,
    A(1) = alpha."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if Spending(spending) == Spending.pocock:
        return alpha * math.log1p((math.e - 1) * fraction)
    if fraction == 0:
        return 0.0
    return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(fraction)))


@dataclass(frozen=True)
class Look:
    """One planned look of a design: its place, its seeds and the alpha it spends."""

    #: 0-based
    index: int
    #: how many looks the design plans
    looks: int
    #: the seeds per arm the design has run by this look
    seeds: int
    #: the level this look's tests and intervals use
    alpha: float

    @property
    def final(self) -> bool:
        """The cap: an undecided comparison stays inconclusive."""
        return self.index == self.looks - 1

    def describe(self) -> str:
        """``look 3 of 20 (15 seeds), alpha 0.0024``."""
        return f"look {self.index + 1} of {self.looks} ({self.seeds} seeds), alpha {self.alpha:.2g}"


@dataclass(frozen=True)
class SequentialDesign:
    """Rounds of ``round_seeds`` seeds per arm up to ``max_seeds``, alpha spent by
    ``spending``; ``margin``: the equivalence margin that also stops the seeding (None: only
    a detected difference does); ``stage``: the stage seeded in rounds (``confirmation``
    for a bracket study, ``selection`` for a grid)."""

    round_seeds: int
    max_seeds: int
    spending: Spending = Spending.pocock
    margin: float | None = None
    stage: str = "confirmation"
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        object.__setattr__(self, "spending", Spending(self.spending))
        if self.round_seeds < 2:
            raise ValueError(f"round_seeds must be >= 2 (a t test needs 2), got {self.round_seeds}")
        if self.max_seeds <= self.round_seeds or self.max_seeds % self.round_seeds:
            raise ValueError(
                f"max_seeds must be a multiple of round_seeds ({self.round_seeds}) above it, "
                f"got {self.max_seeds}"
            )
        if self.margin is not None and not 0 < self.margin < 1:
            raise ValueError(f"margin must be a fraction in (0, 1), got {self.margin}")
        if self.stage not in ("selection", "confirmation"):
            raise ValueError(f"stage must be 'selection' or 'confirmation', got {self.stage!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    @property
    def looks(self) -> int:
        return self.max_seeds // self.round_seeds

    @property
    def alphas(self) -> tuple[float, ...]:
        """Each look's alpha_k = A(t_k) - A(t_{k-1}); they sum to ``alpha``."""
        cumulative = [
            spent(self.spending, (k + 1) / self.looks, self.alpha) for k in range(self.looks)
        ]
        return tuple(b - a for a, b in zip([0.0, *cumulative], cumulative, strict=False))

    def look(self, seeds: int) -> Look:
        """The look a stage is at with ``seeds`` seeds run (created) per arm: the round
        they belong to, the last one past the cap."""
        index = min(max(math.ceil(seeds / self.round_seeds), 1), self.looks) - 1
        return Look(index, self.looks, (index + 1) * self.round_seeds, self.alphas[index])

    def as_dict(self) -> dict[str, Any]:
        """What a report records of the design (fixed before the run, in the spec)."""
        return {
            "round_seeds": self.round_seeds,
            "max_seeds": self.max_seeds,
            "spending": self.spending.value,
            "margin": self.margin,
            "stage": self.stage,
            "alpha": self.alpha,
        }

    def describe(self) -> str:
        """``sequential confirmation: rounds of 5 seeds to 100, pocock spending of alpha
        0.05 over 20 looks``."""
        margin = f", stops on equivalence within +-{self.margin:.1%}" if self.margin else ""
        return (
            f"sequential {self.stage}: rounds of {self.round_seeds} seeds to {self.max_seeds}, "
            f"{self.spending.value} spending of alpha {self.alpha:g} over {self.looks} looks"
            f"{margin}"
        )


def design_of(spec: Mapping[str, Any]) -> SequentialDesign | None:
    """A study's design from its spec as stored (``protocol.sequential``); None when the
    study seeds a fixed number of times. A bracket study seeds its confirmation stage in
    rounds, any other study its configurations (the selection stage)."""
    protocol = spec.get("protocol") or {}
    sequential = protocol.get("sequential")
    if not sequential:
        return None
    return SequentialDesign(
        round_seeds=sequential["round_seeds"],
        max_seeds=sequential["max_seeds"],
        spending=Spending(sequential.get("spending", Spending.pocock.value)),
        margin=sequential.get("margin"),
        stage="confirmation" if protocol.get("kind") == "bracket" else "selection",
    )


def decide(test: PairedTest, look: Look) -> Decision:
    """A comparison's decision at ``look`` from its test at the look's alpha (Holm-adjusted
    or not, as the verdict says): better, worse or equivalent, else continue, or
    inconclusive at the cap."""
    if test.verdict != Verdict.no_detectable_difference:
        return Decision(test.verdict.value)
    return Decision.inconclusive if look.final else Decision.continue_
