"""SkipUpdate and Magma against the plain reference of Algorithm 1 (tests/reference.py).

The wrapper and the reference run side by side from identical model copies on identical
data; their masks come from the same documented RNG protocol, so the parameters must
agree up to float32 reordering error. Further tests pin down the properties the paper
relies on: unmasked parameters follow the base exactly, masked-out blocks do not move,
moments stay dense, and SkipUpdate's update is unbiased.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping

import pytest
import torch
from torch import Tensor, nn

import magma
from magma import Magma, SkipUpdate
from tests import optimizer_infos
from tests.optimizer_infos import INFOS, OptimizerInfo
from tests.reference import ReferenceMasking, alignment_score, expected_block_keeps

GRANULARITIES = ("block", "row", "column", "element")
STEPS = 15
BF16_STEPS = 10  # a base whose update is in bf16 (Muon's Newton-Schulz) is slow on CPU
# Tolerances are each base's (OptimizerInfo.tol), for float32 reordering: the wrapper folds
# scales into denominators, uses foreach kernels and float32 scores where the reference
# uses float64; errors stay near a few ulps.


# --- models and data -------------------------------------------------------------------


class TinyNet(nn.Module):
    """A 3-D weight (einsum) -> Linear -> Linear: 1-D, 2-D and 3-D parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.w3 = nn.Parameter(torch.randn(4, 6, 3) / 6**0.5)
        self.fc1 = nn.Linear(12, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(torch.einsum("bi,oij->boj", x, self.w3)).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


class TinyMLP(nn.Module):
    """Three Linear layers: for Muon, whose parameters must be 2-D."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 12)
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def batches(steps: int, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 6, generator=gen), torch.randn(8, 3, generator=gen)) for _ in range(steps)
    ]


# --- base optimizers -------------------------------------------------------------------
# Every configuration of every entry of tests/optimizer_infos.py (the generic path's too),
# and AdamW with two param groups. Each setup takes the model and returns (base, masked
# tensors, auxiliary optimizers that step the remaining parameters in both runs).

Setup = tuple[torch.optim.Optimizer, list[Tensor], list[torch.optim.Optimizer]]


def _setup(info: OptimizerInfo, kwargs: Mapping[str, object]) -> Callable[[nn.Module], Setup]:
    def build(model: nn.Module) -> Setup:
        if info.matrices_only:  # Muon: the 2-D weights, the rest to an AdamW
            weights = [q for q in model.parameters() if q.dim() == 2]
            rest = [q for q in model.parameters() if q.dim() != 2]
            return info.build(weights, **kwargs), weights, [torch.optim.AdamW(rest, lr=1e-2)]
        params = list(model.parameters())  # all but the last bias
        return info.build(params, **kwargs), params[:-1], []

    return build


def _two_groups(model: nn.Module) -> Setup:
    """Biases first, in their own group with other hyperparameters: the masked tensors'
    order (hence the RNG stream order) is the base's group order, not model order."""
    named = list(model.named_parameters())
    biases = [q for n, q in named if n.endswith("bias")]
    weights = [q for n, q in named if not n.endswith("bias")]
    base = INFOS["adamw"].build(
        [{"params": biases, "lr": 5e-3, "weight_decay": 0.0}, {"params": weights}]
    )
    return base, [q for n, q in named if n != "fc1.bias"], []


#: case id -> (the base's entry, its setup)
BASES: dict[str, tuple[OptimizerInfo, Callable[[nn.Module], Setup]]] = {
    **{
        info.config_id(config): (info, _setup(info, config.kwargs))
        for info in INFOS.values()
        for config in info.configs()
    },
    "adamw-two-groups": (INFOS["adamw"], _two_groups),
}


# --- the side-by-side harness ----------------------------------------------------------


def assert_same(a: Tensor, b: Tensor, tol: dict[str, float], where: str) -> None:
    """assert_close, with atol relative to the tensor's scale when that exceeds 1: a
    moment whose entries reach ~20 (centered RMSprop) carries absolute rounding errors
    ~20x those of O(1) parameters, visible wherever an entry cancels to near 0."""
    scale = max(1.0, float(b.detach().abs().max())) if b.numel() and b.is_floating_point() else 1.0
    tol = {"rtol": tol["rtol"], "atol": tol["atol"] * scale}
    if not torch.allclose(a, b, **tol):  # assert_close is slow; call it only to report
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{where}: {m}")


def run_side_by_side(
    base_name: str,
    wrap: Callable[..., magma.MaskedOptimizer],
    settings: dict,
    seed: int = 1234,
    gradless_on_odd_steps: tuple[str, ...] = (),
) -> list[Tensor]:
    """Train a wrapped base and the reference from identical copies; after every step
    compare all parameters and all base state. Returns every mask the reference drew.

    ``settings`` holds the reference's keyword arguments (p, tau, ema, granularity,
    sampling, damping). Parameters named in ``gradless_on_odd_steps`` have their
    gradient removed (None) on odd steps, in both runs."""
    info, setup = BASES[base_name]
    torch.manual_seed(0)
    model = TinyMLP() if info.matrices_only else TinyNet()
    ref_model = copy.deepcopy(model)
    base, masked, aux = setup(model)
    ref_base, ref_masked, ref_aux = setup(ref_model)
    opt = wrap(base, masked, seed)
    ref = ReferenceMasking(ref_base, ref_masked, seed=seed, **settings)
    pairs = list(zip(model.named_parameters(), ref_model.parameters(), strict=True))
    masks_seen: list[Tensor] = []
    steps = BF16_STEPS if info.bf16_update else STEPS
    for t, (x, y) in enumerate(batches(steps)):
        for net, optim, extra in ((model, opt, aux), (ref_model, ref, ref_aux)):
            optim.zero_grad()
            for o in extra:
                o.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            if t % 2:
                for name, q in net.named_parameters():
                    if name in gradless_on_odd_steps:
                        q.grad = None
            optim.step()
            for o in extra:
                o.step()
        masks_seen.extend(ref.last_masks)
        for (name, q), q_ref in pairs:
            assert_same(q, q_ref, info.tol, f"step {t} {name}")
            state, ref_state = base.state.get(q, {}), ref_base.state.get(q_ref, {})
            assert state.keys() == ref_state.keys(), f"step {t} {name}: state keys"
            for key, value in ref_state.items():
                assert_same(state[key], value, info.tol, f"step {t} {name} state[{key!r}]")
        if info.bf16_update:
            # Muon orthogonalises in bfloat16, so a 1e-9 difference in its input can move
            # an update entry by a whole bf16 ulp (~0.4%) and trajectories then drift
            # apart chaotically. Each step is compared above at the float32 tolerance;
            # re-syncing the reference to the wrapper makes the next step start from
            # bitwise identical parameters and momenta.
            with torch.no_grad():
                for (_, q), q_ref in pairs:
                    q_ref.copy_(q)
                    for key, value in base.state.get(q, {}).items():
                        ref_base.state[q_ref][key].copy_(value)
    return masks_seen


#: Algorithm 1's open choices (Issue 23), passed alike to the wrapper and the reference
CHOICES = ("score_init", "momentum", "decay_on_skip")


def _choices(settings: dict, *names: str) -> dict:
    return {name: settings[name] for name in names if name in settings}


def skip_update(settings: dict, fused: bool | None = None) -> Callable[..., magma.MaskedOptimizer]:
    return lambda base, masked, seed: SkipUpdate(
        base,
        p=settings["p"],
        params=masked,
        granularity=settings["granularity"],
        seed=seed,
        fused=fused,
        **_choices(settings, "decay_on_skip"),
    )


def magma_wrapper(
    settings: dict, fused: bool | None = None
) -> Callable[..., magma.MaskedOptimizer]:
    return lambda base, masked, seed: Magma(
        base,
        p=settings["p"],
        tau=settings["tau"],
        ema=settings["ema"],
        params=masked,
        granularity=settings["granularity"],
        seed=seed,
        sampling=settings["sampling"],
        damping=settings["damping"],
        fused=fused,
        **_choices(settings, *CHOICES),
    )


def _mixed(masks: list[Tensor]) -> bool:
    """Whether some block/slice was kept and some masked out over the run."""
    flat = torch.cat([m.reshape(-1) for m in masks])
    return bool(flat.any()) and not bool(flat.all())


# --- every base x variant x granularity ------------------------------------------------


# Block masks (uniform) go through each rule's fused ``apply``; every other granularity
# through ``direction`` and the multipliers. Every configuration runs at all four (a run
# takes a fraction of a second).
MATRIX = [(name, granularity) for name in BASES for granularity in GRANULARITIES]


@pytest.mark.parametrize("base_name, granularity", MATRIX)
def test_skip_update_matches_reference(base_name: str, granularity: str) -> None:
    settings = {
        "p": 0.5,
        "tau": 1.0,
        "ema": 0.0,
        "granularity": granularity,
        "sampling": "uniform",
        "damping": False,
    }
    masks = run_side_by_side(base_name, skip_update(settings), settings)
    assert _mixed(masks)


@pytest.mark.parametrize("base_name, granularity", MATRIX)
def test_magma_matches_reference(base_name: str, granularity: str) -> None:
    settings = {
        "p": 0.5,
        "tau": 2.0,
        "ema": 0.9,
        "granularity": granularity,
        "sampling": "uniform",
        "damping": True,
    }
    masks = run_side_by_side(base_name, magma_wrapper(settings), settings)
    assert _mixed(masks)


# --- Algorithm 1's open choices (Issue 23) ---------------------------------------------

#: each choice flipped from the default alone; weight decay raised so that decay_on_skip
#: moves something on every base that decouples it
FLIPPED = {
    "score-init-half": {"score_init": 0.5},
    "score-init-one": {"score_init": 1.0},
    "previous-momentum": {"momentum": "previous"},
    "decay-on-skip": {"decay_on_skip": True},
}


def _couples_decay(base_name: str) -> bool:
    """Whether the case's base adds a nonzero weight decay to the gradient (or is the
    generic path): decay_on_skip has no decoupled decay to apply there."""
    info, setup = BASES[base_name]
    torch.manual_seed(0)
    base, _, _ = setup(TinyMLP() if info.matrices_only else TinyNet())
    return info is optimizer_infos.GENERIC or any(
        group.get("weight_decay", 0) != 0 and info.couples_decay(group)
        for group in base.param_groups
    )


#: (base, variant, granularity, flip): every base with each choice flipped at block
#: granularity (SkipUpdate keeps no score: only decay_on_skip applies to it), and the
#: choices the multipliers path branches on (momentum, decay) at row granularity
OPEN_CHOICE_CASES = [
    (base_name, variant, granularity, flip)
    for base_name in BASES
    for variant, granularity, flips in (
        ("magma", "block", list(FLIPPED)),
        ("skip", "block", ["decay-on-skip"]),
        ("magma", "row", ["previous-momentum", "decay-on-skip"]),
    )
    for flip in flips
]


@pytest.mark.parametrize("base_name, variant, granularity, flip", OPEN_CHOICE_CASES)
def test_open_choices_match_reference(
    base_name: str, variant: str, granularity: str, flip: str
) -> None:
    """Each choice flipped alone matches the reference's reading of it; decay_on_skip on a
    base that couples its decay (or has no rule) is a ValueError instead."""
    settings = {**(SKIP if variant == "skip" else MAGMA), "granularity": granularity}
    settings.update(FLIPPED[flip])
    wrap = (skip_update if variant == "skip" else magma_wrapper)(settings)
    if flip == "decay-on-skip" and _couples_decay(base_name):
        with pytest.raises(ValueError, match="decay_on_skip=True"):
            run_side_by_side(base_name, wrap, settings)
        return
    masks = run_side_by_side(base_name, wrap, settings)
    assert _mixed(masks)


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("flip", list(FLIPPED))
@pytest.mark.parametrize("base_name", [info.name for info in optimizer_infos.FUSED])
def test_open_choices_match_reference_fused(base_name: str, flip: str) -> None:
    settings = {**MAGMA, "granularity": "block", **FLIPPED[flip]}
    masks = run_side_by_side(base_name, magma_wrapper(settings, fused=True), settings)
    assert _mixed(masks)


# --- Table A2: sampling x damping ------------------------------------------------------


@pytest.mark.parametrize("damping", [True, False], ids=["damping", "no-damping"])
@pytest.mark.parametrize("sampling", ["uniform", "alignment", "none"])
@pytest.mark.parametrize(
    "base_name, granularity",
    [("rmsprop", g) for g in GRANULARITIES]  # the paper's ablation base
    + [("adagrad-generic", g) for g in GRANULARITIES]
    + [("adam", "block"), ("adam", "element")],
)
def test_table_a2_switches_match_reference(
    base_name: str, sampling: str, damping: bool, granularity: str
) -> None:
    settings = {
        "p": 0.6,
        "tau": 0.5,
        "ema": 0.8,
        "granularity": granularity,
        "sampling": sampling,
        "damping": damping,
    }
    masks = run_side_by_side(base_name, magma_wrapper(settings), settings)
    if sampling == "none":
        assert all(bool(m.all()) for m in masks)
    else:
        assert _mixed(masks)


@pytest.mark.parametrize(
    "sampling, granularity",
    [("uniform", "block"), ("uniform", "row"), ("alignment", "block"), ("alignment", "element")],
)
@pytest.mark.parametrize("base_name", ["adam", "rmsprop", "adagrad-generic"])
def test_tensors_without_grad_match_reference(
    base_name: str, sampling: str, granularity: str
) -> None:
    """A masked tensor with no gradient is skipped for the step (no moments, no score,
    no move) but still consumes its host draw, so later masks stay aligned."""
    settings = {
        "p": 0.5,
        "tau": 1.0,
        "ema": 0.9,
        "granularity": granularity,
        "sampling": sampling,
        "damping": True,
    }
    masks = run_side_by_side(
        base_name,
        magma_wrapper(settings),
        settings,
        gradless_on_odd_steps=("w3", "fc1.bias"),
    )
    assert _mixed(masks)


def test_mapping_params_and_p_one() -> None:
    """params given as {label: tensors}; p=1 SkipUpdate is the base up to rounding."""
    settings = {
        "p": 1.0,
        "tau": 1.0,
        "ema": 0.0,
        "granularity": "block",
        "sampling": "uniform",
        "damping": False,
    }

    def wrap(base, masked, seed):
        return SkipUpdate(base, p=1.0, params={"a": masked[:2], "b": masked[2:]}, seed=seed)

    masks = run_side_by_side("adamw", wrap, settings)
    assert all(bool(m) for m in masks)


# --- the fused (torch.compile'd) step against the same reference ------------------------

# fused=True forces magma.fused on CPU. Compiling takes seconds per graph on a small CPU,
# so the table is short: every base with a kernel (optimizer_infos.FUSED), both variants
# each: Adam/AdamW, C-AdamW (caution mask) and LaProp (momentum of normalised gradients;
# Magma scores with the wrapper's own first moment); then every Adam flag the kernels
# branch on (coupled decay, amsgrad, maximize), two buckets, the ablations whose masks
# are on the host, and blocks without a gradient (no previous score: NaN, replaced
# in-graph).
SKIP = {"p": 0.5, "tau": 1.0, "ema": 0.0, "sampling": "uniform", "damping": False}
MAGMA = {"p": 0.5, "tau": 2.0, "ema": 0.9, "sampling": "uniform", "damping": True}
FUSED: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    **{
        f"{prefix}-{info.name}": (info.name, variant, ())
        for info in optimizer_infos.FUSED
        for prefix, variant in (("skip", SKIP), ("magma", MAGMA))
    },
    "magma-adam-l2-amsgrad": ("adam-l2-amsgrad", MAGMA, ()),
    "skip-adam-maximize": ("adam-maximize", SKIP, ()),
    "magma-adamw-two-groups": ("adamw-two-groups", MAGMA, ()),
    "magma-no-sampling": ("adamw", {**MAGMA, "sampling": "none"}, ()),
    "magma-no-damping": ("adamw", {**MAGMA, "damping": False}, ()),
    "magma-gradless": ("adamw", MAGMA, ("w3", "fc1.bias")),
}


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("case", list(FUSED))
def test_fused_matches_reference(case: str) -> None:
    """Same mask sequence (same seed, same host generator), parameters and every moment
    within the base's tolerances of the reference after each of the STEPS steps."""
    base_name, variant, gradless = FUSED[case]
    settings = {**variant, "granularity": "block"}
    make = skip_update if variant is SKIP else magma_wrapper
    masks = run_side_by_side(
        base_name, make(settings, fused=True), settings, gradless_on_odd_steps=gradless
    )
    if settings["sampling"] == "none":
        assert all(bool(m) for m in masks)
    else:
        assert _mixed(masks)


# --- synthetic-gradient helpers ----------------------------------------------------------

SHAPES = [(4, 3), (5,), (3, 2, 2), (6, 4), (4,), (2, 5)]


def synthetic_params(seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def synthetic_grads(steps: int, seed: int = 7) -> list[list[Tensor]]:
    """Gradients that do not depend on the parameters: both runs see exactly these."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(steps)]


def set_grads(params: list[Tensor], grads: list[Tensor]) -> None:
    for q, g in zip(params, grads, strict=True):
        q.grad = g.clone()


# --- unmasked params follow the base bit for bit ---------------------------------------

#: every configuration of every base that takes these shapes (Muon: 2-D only), the
#: generic path's, and AdamW's for-loop and foreach implementations
UNMASKED_BASES: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]] = {
    **{
        info.config_id(config): functools.partial(info.build, **config.kwargs)
        for info in INFOS.values()
        if not info.matrices_only
        for config in info.configs()
    },
    "adamw-forloop": functools.partial(INFOS["adamw"].build, foreach=False),
    "adamw-foreach": functools.partial(INFOS["adamw"].build, foreach=True),
    "sgd-momentum": functools.partial(INFOS["sgd"].build, momentum=0.9, weight_decay=0.01),
}


@pytest.mark.parametrize("variant", ["skip", "magma"])
@pytest.mark.parametrize("base_name", list(UNMASKED_BASES))
def test_unmasked_params_follow_base_bitwise(base_name: str, variant: str) -> None:
    make = UNMASKED_BASES[base_name]
    plain, wrapped = synthetic_params(), synthetic_params()
    masked_idx, free_idx = [0, 2, 3], [1, 4, 5]
    plain_opt = make(plain)
    base = make(wrapped)
    masked = [wrapped[i] for i in masked_idx]
    opt = (
        SkipUpdate(base, params=masked, seed=3)
        if variant == "skip"
        else Magma(base, params=masked, seed=3)
    )
    for grads in synthetic_grads(10):
        set_grads(plain, grads)
        set_grads(wrapped, grads)
        plain_opt.step()
        opt.step()
        for i in free_idx:
            assert torch.equal(wrapped[i], plain[i]), f"unmasked tensor {i} diverged"
    # ... while the masked ones did not follow the base.
    assert any(not torch.equal(wrapped[i], plain[i]) for i in masked_idx)


# --- masked-out blocks are bitwise unchanged -------------------------------------------

#: every configuration of every base that takes these shapes (Muon: 2-D only), the
#: generic path's, RMSprop with momentum and SGD with Nesterov momentum alone
HOOK_BASES: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]] = {
    **{
        info.config_id(config): functools.partial(info.build, **config.kwargs)
        for info in INFOS.values()
        if not info.matrices_only
        for config in info.configs()
    },
    "rmsprop-momentum": functools.partial(INFOS["rmsprop"].build, momentum=0.9),
    "sgd-nesterov": functools.partial(INFOS["sgd"].build, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("variant", ["skip", "magma"])
@pytest.mark.parametrize("base_name", list(HOOK_BASES))
def test_masked_out_blocks_unchanged(base_name: str, variant: str) -> None:
    params = synthetic_params()
    seed, p, steps = 11, 0.5, 8
    opt = (
        SkipUpdate(HOOK_BASES[base_name](params), p=p, seed=seed)
        if variant == "skip"
        else Magma(HOOK_BASES[base_name](params), p=p, seed=seed)
    )
    keeps = expected_block_keeps(seed, len(params), p, steps)
    snapshots: list[list[Tensor]] = []
    checked = {"kept": 0, "dropped": 0}

    def before(optimizer, args, kwargs):
        snapshots.append([q.detach().clone() for q in params])

    def after(optimizer, args, kwargs):
        t = len(snapshots) - 1
        for i, (q, old) in enumerate(zip(params, snapshots[t], strict=True)):
            if keeps[t][i]:
                assert not torch.equal(q, old), f"step {t}: kept block {i} did not move"
                checked["kept"] += 1
            else:
                assert torch.equal(q, old), f"step {t}: masked-out block {i} moved"
                checked["dropped"] += 1

    opt.register_step_pre_hook(before)
    opt.register_step_post_hook(after)
    for grads in synthetic_grads(steps):
        set_grads(params, grads)
        opt.step()
    assert len(snapshots) == steps
    assert checked["kept"] > 0 and checked["dropped"] > 0


# --- moments are dense -----------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["block", "element"])
@pytest.mark.parametrize("variant", ["skip", "magma"])
def test_moments_are_dense(variant: str, granularity: str) -> None:
    plain, wrapped = synthetic_params(), synthetic_params()
    plain_opt = torch.optim.AdamW(plain, lr=1e-2, weight_decay=0.1)
    base = torch.optim.AdamW(wrapped, lr=1e-2, weight_decay=0.1)
    seed, p, steps = 5, 0.5, 6
    opt = (
        SkipUpdate(base, p=p, seed=seed, granularity=granularity)
        if variant == "skip"
        else Magma(base, p=p, seed=seed, granularity=granularity)
    )
    keeps = expected_block_keeps(seed, len(wrapped), p, steps)
    dropped_checked = 0
    for t, grads in enumerate(synthetic_grads(steps)):
        set_grads(plain, grads)
        set_grads(wrapped, grads)
        plain_opt.step()
        opt.step()
        for i, (q, q_plain) in enumerate(zip(wrapped, plain, strict=True)):
            state, expected = base.state[q], plain_opt.state[q_plain]
            assert set(state) == set(expected)
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert state[key].dtype == expected[key].dtype
                assert torch.equal(state[key], expected[key]), f"step {t} tensor {i}: {key}"
            if granularity == "block" and not keeps[t][i]:
                dropped_checked += 1
    if granularity == "block":
        assert dropped_checked > 0
    assert any(not torch.equal(q, q_plain) for q, q_plain in zip(wrapped, plain, strict=True))


# --- SkipUpdate is unbiased; Magma damping scales by s_t -------------------------------


def _warm_adamw_state() -> tuple[list[Tensor], list[dict[str, Tensor]], list[Tensor]]:
    """Parameters and AdamW state after a few steps, plus the next gradient; only the
    first three tensors (2-D, 1-D, 3-D), as the wrapper's cost is per tensor."""
    params = synthetic_params()
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    grads = synthetic_grads(4)
    for g in grads[:3]:
        set_grads(params, g)
        opt.step()
    states = [{k: v.clone() for k, v in opt.state[q].items()} for q in params[:3]]
    return [q.detach().clone() for q in params[:3]], states, grads[3][:3]


def _fresh_adamw(
    theta, states, grads, copies: int = 1
) -> tuple[list[Tensor], torch.optim.Optimizer]:
    """``copies`` independent replicas of the parameters, each with the same AdamW state
    and gradient: one masked step then draws ``copies`` independent masks per block."""
    params = [t.clone() for _ in range(copies) for t in theta]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for i, q in enumerate(params):
        opt.state[q] = {k: v.clone() for k, v in states[i % len(theta)].items()}
        q.grad = grads[i % len(theta)].clone()
    return params, opt


def _flat(tensors: list[Tensor], copies: int = 1) -> Tensor:
    """(copies, numel of one replica) in float64."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors])
    return flat.reshape(copies, -1)


def _mean_masked_update(make_wrapper: Callable, seeds: int, copies: int) -> tuple[Tensor, Tensor]:
    """The base's update Delta and the mean masked update over seeds x copies draws."""
    theta, states, grads = _warm_adamw_state()
    params, base = _fresh_adamw(theta, states, grads)
    base.step()
    delta = (_flat(theta) - _flat(params))[0]
    before = _flat(theta).expand(copies, -1)
    total = torch.zeros_like(delta)
    for seed in range(seeds):
        params, base = _fresh_adamw(theta, states, grads, copies)
        make_wrapper(base, seed).step()
        steps = before - _flat(params, copies)
        total += steps.sum(0)
    # A single masked step is not Delta: a good share of its entries did not move.
    dropped = float((steps == 0).double().mean())
    assert 0.2 < dropped < 0.8, f"fraction of entries masked out: {dropped:.2f}"
    return delta, total / (seeds * copies)


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_skip_update_is_unbiased(granularity: str) -> None:
    """E[theta_before - theta_after] = Delta over 2000 independent masks per block."""
    delta, mean = _mean_masked_update(
        lambda base, seed: SkipUpdate(base, p=0.5, seed=seed, granularity=granularity),
        seeds=40,
        copies=50,
    )
    # Per Bernoulli(1/2) / (1/2) draw the relative standard error is 1/sqrt(2000) ~ 2.2%.
    rel = (mean - delta).norm() / delta.norm()
    assert rel < 0.05, f"relative error {rel:.3f}"


def test_alignment_sampling_without_damping_is_unbiased() -> None:
    """m ~ Bernoulli(s_t) rescaled by 1/s_t: E[update] = Delta as well."""
    delta, mean = _mean_masked_update(
        lambda base, seed: Magma(base, seed=seed, sampling="alignment", damping=False),
        seeds=40,
        copies=50,
    )
    rel = (mean - delta).norm() / delta.norm()
    assert rel < 0.05, f"relative error {rel:.3f}"


def test_magma_damping_without_sampling_scales_by_score() -> None:
    """sampling="none", damping=True: theta_after - theta_before = -s_t * Delta exactly
    (up to rounding), with s_t the EMA of sigmoid(cos(exp_avg, g) / tau)."""
    params = synthetic_params()
    tau, ema = 0.5, 0.7
    base = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    opt = Magma(base, tau=tau, ema=ema, sampling="none", seed=0)
    scores: list[float | None] = [None] * len(params)
    for grads in synthetic_grads(4):
        theta = [q.detach().clone() for q in params]
        # Delta from the plain base on a copy of the current state.
        twin, twin_opt = _fresh_adamw(theta, [dict(base.state[q]) for q in params], grads)
        twin_opt.step()
        set_grads(params, grads)
        opt.step()
        for i, q in enumerate(params):
            fresh = alignment_score(base.state[q]["exp_avg"], grads[i], tau)
            scores[i] = fresh if scores[i] is None else ema * scores[i] + (1 - ema) * fresh
            delta = theta[i].double() - twin[i].double()
            torch.testing.assert_close(
                (theta[i].double() - q.double()), scores[i] * delta, **INFOS["adamw"].tol
            )
            assert 0.0 < scores[i] < 1.0
