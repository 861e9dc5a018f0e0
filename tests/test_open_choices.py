"""``momentum`` and ``decay_on_skip``: two of Algorithm 1's open choices (Issue 23).

``momentum="previous"`` scores with mu_{t-1}, the first moment before this step's update
(the NorMuon pull requests); ``decay_on_skip=True`` gives a masked-out block the base's
decoupled decay, theta <- theta (1 - lr * wd). Each path (eager, compiled, replicated,
rows, the generic snapshot path) is checked against the steps written out by hand in
float64; ``score_init`` has its own file (``test_score_init.py``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from magma import Magma, SkipUpdate
from tests import optimizer_infos
from worker.contract import COUPLED_DECAY_BASES, Base

TAU, EMA, LR, WD = 2.0, 0.9, 0.1, 0.5
PATHS = ["eager", "fused", "replicated", "fused-replicated", "rows"]


def _block() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(5, 4, generator=gen) for _ in range(3))  # type: ignore[return-value]


def _sigmoid_cosine(mu: Tensor, g: Tensor) -> float:
    norms = float(mu.norm() * g.norm())
    cosine = float((mu * g).sum()) / norms if norms > 0 else 0.0
    return 1 / (1 + math.exp(-cosine / TAU))


def _two_adamw_steps(theta: Tensor, g1: Tensor, g2: Tensor, momentum: str) -> Tensor:
    """theta after two AdamW steps (no decay) of a block that survives both (p = 1), each
    scaled by s_t, in float64: the cosine reads m_t or, with "previous", m_{t-1}."""
    theta, g1, g2 = theta.double(), g1.double(), g2.double()
    m0 = torch.zeros_like(theta)
    m1, v1 = 0.1 * g1, 0.001 * g1 * g1
    m2, v2 = 0.9 * m1 + 0.1 * g2, 0.999 * v1 + 0.001 * g2 * g2
    previous = momentum == "previous"
    s1 = _sigmoid_cosine(m0 if previous else m1, g1)
    s2 = EMA * s1 + (1 - EMA) * _sigmoid_cosine(m1 if previous else m2, g2)
    theta = theta - s1 * LR * (m1 / 0.1) / ((v1 / 0.001).sqrt() + 1e-8)
    bc1, bc2 = 1 - 0.9**2, 1 - 0.999**2
    return theta - s2 * LR * (m2 / bc1) / ((v2 / bc2).sqrt() + 1e-8)


def _stacked(t: Tensor, replicas: int | None) -> Tensor:
    return torch.stack([t] * replicas) if replicas else t.clone()


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("momentum", ["updated", "previous"])
@pytest.mark.parametrize("path", PATHS)
def test_the_cosine_reads_the_momentum_it_is_told(path: str, momentum: str) -> None:
    theta, g1, g2 = _block()
    replicas = 2 if "replicated" in path else None
    param = _stacked(theta, replicas)
    opt = Magma(
        torch.optim.AdamW([param], lr=LR, weight_decay=0.0),
        p=1.0,
        tau=TAU,
        ema=EMA,
        seed=0,
        fused=path.startswith("fused"),
        replicas=replicas,
        granularity="row" if path == "rows" else "block",
        momentum=momentum,
    )
    for g in (g1, g2):
        param.grad = _stacked(g, replicas)
        opt.step()
    if path == "rows":  # one score per row: the same steps row by row
        expected = torch.cat(
            [
                _two_adamw_steps(theta[i : i + 1], g1[i : i + 1], g2[i : i + 1], momentum)
                for i in range(5)
            ]
        )
    else:
        expected = _two_adamw_steps(theta, g1, g2, momentum)
    moved = param if replicas is None else param[1]
    torch.testing.assert_close(moved.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "base",
    [
        lambda ps: torch.optim.RMSprop(ps, lr=LR),  # the wrapper's own moment
        lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9),  # a buffer made at step 1
        lambda ps: torch.optim.Adam(ps, lr=LR, weight_decay=0.1),  # g with coupled decay
    ],
    ids=["rmsprop", "sgd", "adam-l2"],
)
def test_previous_momentum_scores_the_first_step_at_one_half(base) -> None:
    """mu_0 = 0, so with "previous" the first cosine is 0 and s_1 = sigmoid(0) = 0.5,
    whichever moment the base keeps; with "updated" it is not."""
    scores = {}
    for momentum in ("updated", "previous"):
        param = torch.ones(4, 3, requires_grad=True)
        param.grad = torch.arange(12.0).reshape(4, 3) - 3
        opt = Magma(base([param]), p=1.0, seed=0, momentum=momentum)
        opt.step()
        scores[momentum] = opt.telemetry()["masked"]["alignment"]
    assert scores["previous"] == pytest.approx(0.5, abs=1e-7)
    assert scores["updated"] > 0.55


def _adamw_delta(theta: Tensor, grad: Tensor) -> Tensor:
    """AdamW's first-step Delta with decoupled decay, in float64."""
    g = grad.double()
    return LR * g / (g.abs() + 1e-8) + LR * WD * theta.double()


def _decayed_opt(
    param: Tensor, wrapper: type, *, p: float, path: str, decay_on_skip: bool, seed=0
) -> Magma | SkipUpdate:
    replicas = param.shape[0] if "replicated" in path else None
    return wrapper(
        torch.optim.AdamW([param], lr=LR, weight_decay=WD),
        p=p,
        seed=seed,
        fused=path.startswith("fused"),
        replicas=replicas,
        granularity="row" if path == "rows" else "block",
        decay_on_skip=decay_on_skip,
    )


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("wrapper", [Magma, SkipUpdate])
@pytest.mark.parametrize("decay_on_skip", [False, True])
@pytest.mark.parametrize("path", [*PATHS, "generic"])
def test_a_masked_out_block_decays_only_with_decay_on_skip(
    path: str, decay_on_skip: bool, wrapper: type
) -> None:
    """p ~ 0: every block is dropped; it stays put, or with decay_on_skip takes exactly
    theta (1 - lr * wd), as AdamW alone would decay it."""
    theta, grad, _ = _block()
    replicas = 2 if "replicated" in path else None
    if path == "generic":  # complex parameters take the snapshot path
        theta, grad = torch.complex(theta, theta), torch.complex(grad, -grad)
    param = _stacked(theta, replicas)
    param.grad = _stacked(grad, replicas)
    opt = _decayed_opt(param, wrapper, p=1e-9, path=path, decay_on_skip=decay_on_skip)
    opt.step()
    factor = 1 - LR * WD if decay_on_skip else 1.0
    torch.testing.assert_close(param, _stacked(theta, replicas) * factor, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("path", ["rows", "replicated", "fused-replicated"])
def test_decay_on_skip_decays_the_dropped_slices_and_leaves_survivors_as_algorithm_1(
    path: str,
) -> None:
    """Rows (or replicas) masked apart: each dropped one is theta (1 - lr * wd), each kept
    one theta - s Delta (its decay scaled with the update); over a few seeds both occur."""
    theta, grad, _ = _block()
    kinds = set()
    for seed in range(4):
        replicas = 3 if "replicated" in path else None
        param = _stacked(theta, replicas)
        param.grad = _stacked(grad, replicas)
        opt = _decayed_opt(param, SkipUpdate, p=0.5, path=path, decay_on_skip=True, seed=seed)
        opt.step()
        kept = theta.double() - 2.0 * _adamw_delta(theta, grad)  # SkipUpdate: scale 1/p
        dropped = theta.double() * (1 - LR * WD)
        slices = param.unbind(0) if replicas else param.split(1)
        references = [kept, dropped] if replicas else None
        for i, moved in enumerate(slices):
            pair = references or [kept[i : i + 1], dropped[i : i + 1]]
            matches = [torch.allclose(moved.double(), ref, rtol=1e-5, atol=1e-6) for ref in pair]
            assert any(matches), f"seed {seed}, slice {i} is neither kept nor decayed"
            kinds.add(matches.index(True))
    assert kinds == {0, 1}


def test_decay_on_skip_leaves_survivors_alone() -> None:
    """p = 1: nothing is dropped, so decay_on_skip changes nothing."""
    ends = []
    for decay_on_skip in (False, True):
        theta, grad, _ = _block()
        param = theta.clone()
        param.grad = grad
        _decayed_opt(param, Magma, p=1.0, path="eager", decay_on_skip=decay_on_skip).step()
        ends.append(param)
    torch.testing.assert_close(ends[0], ends[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("option", "values"), [("momentum", ("updated", "previous")), ("decay_on_skip", (False, True))]
)
def test_each_option_changes_the_trajectory(option: str, values: tuple) -> None:
    """The same seeded run with the option flipped ends elsewhere."""
    ends = []
    for value in values:
        theta, grad, other = _block()
        params = [theta.clone().requires_grad_(), other.clone().requires_grad_()]
        opt = Magma(torch.optim.AdamW(params, lr=LR, weight_decay=WD), seed=0, **{option: value})
        for step in range(6):
            for q in params:
                q.grad = grad * (step - 2) + q.detach()
            opt.step()
        ends.append(torch.cat([q.detach().flatten() for q in params]))
    assert not torch.allclose(ends[0], ends[1])


class _Custom(torch.optim.SGD):
    """A subclass: magma has no rule for it (its math may differ), so the generic path."""


@pytest.mark.parametrize(
    ("base", "match"),
    [
        (lambda ps: torch.optim.RMSprop(ps, weight_decay=0.1), "couples its weight_decay=0.1"),
        (lambda ps: torch.optim.Adam(ps, weight_decay=0.1), "couples its weight_decay=0.1"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1), "couples its weight_decay"),
        (lambda ps: _Custom(ps, lr=0.1), "has no rule in magma.rules"),
    ],
    ids=["rmsprop", "adam", "sgd", "custom"],
)
def test_decay_on_skip_needs_a_decoupled_decay(base, match: str) -> None:
    param = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=rf"decay_on_skip=True .*{match}"):
        Magma(base([param]), decay_on_skip=True)
    Magma(base([param]))  # without the option the base is fine
    Magma(torch.optim.Adam([param], weight_decay=0.0), decay_on_skip=True)  # nothing coupled


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"momentum": "last"}, r"momentum must be one of \('updated', 'previous'\)"),
        ({"momentum": None}, "momentum must be one of"),
        ({"decay_on_skip": "yes"}, "decay_on_skip must be True or False"),
        ({"decay_on_skip": 1}, "decay_on_skip must be True or False"),
    ],
)
def test_bad_values_are_refused(kwargs: dict, match: str) -> None:
    param = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        Magma(torch.optim.AdamW([param]), **kwargs)


def test_state_dict_records_the_options() -> None:
    param = torch.zeros(3, requires_grad=True)
    param.grad = torch.ones(3)
    options = {"momentum": "previous", "decay_on_skip": True}
    opt = Magma(torch.optim.AdamW([param]), seed=0, **options)
    opt.step()
    state = opt.state_dict()
    assert {k: state["masking"][k] for k in options} == options
    Magma(torch.optim.AdamW([param]), seed=0, **options).load_state_dict(state)
    with pytest.raises(ValueError, match="momentum='previous'"):
        Magma(torch.optim.AdamW([param]), seed=0, decay_on_skip=True).load_state_dict(state)
    with pytest.raises(ValueError, match="decay_on_skip=True"):
        Magma(torch.optim.AdamW([param]), seed=0, momentum="previous").load_state_dict(state)
    older = {**state, "masking": {k: v for k, v in state["masking"].items() if k not in options}}
    Magma(torch.optim.AdamW([param]), seed=0).load_state_dict(older)  # the defaults


@pytest.mark.parametrize("info", optimizer_infos.OPTIMIZERS, ids=lambda info: info.name)
def test_the_service_knows_which_bases_couple_their_decay(info) -> None:
    """``worker.contract.COUPLED_DECAY_BASES`` (the service refuses decay_on_skip there
    without loading torch) is exactly the bases whose rule has no decoupled decay."""
    params = [torch.zeros(3, 2, requires_grad=True)]
    base = info.build(params, weight_decay=0.1)
    if Base(info.name) in COUPLED_DECAY_BASES:
        with pytest.raises(ValueError, match="decay_on_skip=True"):
            Magma(base, decay_on_skip=True)
    else:
        Magma(base, decay_on_skip=True)


def test_with_previous_momentum_a_half_s0_is_the_first_score() -> None:
    """mu_0 = 0 makes s~_1 = 0.5 under "previous", so s_0 = 0.5 gives s_1 = 0.5 = s~_1:
    the NorMuon pull request's s_0 changes nothing beside its momentum (why its arm's
    numbers equal the momentum flip's in the implementations run)."""
    ends = []
    for score_init in ("first", 0.5):
        theta, grad, other = _block()
        param = theta.clone()
        opt = Magma(
            torch.optim.AdamW([param], lr=LR), seed=0, momentum="previous", score_init=score_init
        )
        for step in range(5):
            param.grad = grad * (step - 2) + other
            opt.step()
        ends.append(param)
    torch.testing.assert_close(ends[0], ends[1], rtol=1e-6, atol=1e-7)
