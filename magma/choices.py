"""Algorithm 1's open choices by value, importable without torch (``worker.contract``
derives its names from these, so the service validates them without loading torch)."""

from __future__ import annotations

#: which first moment Magma's cosine uses: mu_t, updated with g_t (Algorithm 1), or
#: mu_{t-1}, the estimate before this step's update (the NorMuon pull requests)
MOMENTA: tuple[str, ...] = ("updated", "previous")
#: ``score_init``'s one non-numeric value: s_1 = s~_1, the first step's own score (the
#: default); the alternative is a number in [0, 1] taken as s_0
SCORE_INIT_FIRST = "first"
#: each option's default, which is also what a state_dict from before the option means
DEFAULTS: dict[str, object] = {
    "score_init": SCORE_INIT_FIRST,
    "momentum": MOMENTA[0],
    "decay_on_skip": False,
}
