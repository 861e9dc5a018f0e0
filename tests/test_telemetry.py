"""telemetry(): labels, survival fractions, alignment scores, reset semantics, and what
the wrapper keeps in memory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import magma
from magma import Magma, SkipUpdate
from tests.models import TinyLlama, TinyMixtral, seeded, single_thread, train_step
from tests.optimizer_infos import GENERIC, INFOS, OptimizerInfo


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with single_thread():
        yield


def _synthetic(n: int = 20, shape: tuple[int, ...] = (4, 4)) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=g)) for _ in range(n)]


def _random_grads(params, step: int) -> None:
    g = torch.Generator().manual_seed(10_000 + step)
    for q in params:
        q.grad = torch.randn(q.shape, generator=g)


# --- labels ----------------------------------------------------------------------------


def test_labels_follow_components_keys():
    model = seeded(TinyMixtral, n_layers=1)
    groups = magma.components(model, ("mlp", "router", "attention"))
    opt = Magma(torch.optim.AdamW(model.parameters(), lr=1e-3), params=groups, seed=0)
    for step in range(3):
        train_step(model, opt, step)
    report = opt.telemetry()
    assert list(report) == ["mlp", "router", "attention"]
    for entry in report.values():
        assert set(entry) == {"alignment", "survival", "eager_fallback"}
        assert isinstance(entry["alignment"], float) and isinstance(entry["survival"], float)
        assert entry["eager_fallback"] is None  # the eager step: nothing compiled


def test_labels_for_plain_and_custom_params():
    model = seeded(TinyLlama, n_layers=1)
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert list(Magma(base, seed=0).telemetry()) == ["masked"]
    assert list(Magma(base, params=list(model.parameters()), seed=0).telemetry()) == ["masked"]
    custom = {"first": [model.lm_head.weight], 2: [model.model.norm.weight]}
    assert list(Magma(base, params=custom, seed=0).telemetry()) == ["first", "2"]


def test_telemetry_before_any_step_is_empty():
    model = seeded(TinyLlama, n_layers=1)
    opt = Magma(torch.optim.AdamW(model.parameters()), params=magma.components(model), seed=0)
    assert opt.telemetry() == {
        "attention": {"alignment": None, "survival": None, "eager_fallback": None},
        "mlp": {"alignment": None, "survival": None, "eager_fallback": None},
    }


# --- survival --------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [Magma, SkipUpdate])
def test_block_survival_near_p(wrap):
    params = _synthetic(20)
    groups = {"a": params[:10], "b": params[10:]}
    opt = wrap(torch.optim.AdamW(params, lr=1e-3), p=0.25, params=groups, seed=1)
    for step in range(200):
        _random_grads(params, step)
        opt.step()
    report = opt.telemetry()
    for label in ("a", "b"):  # 2000 draws each: std ~0.0097
        assert abs(report[label]["survival"] - 0.25) < 0.05, report
    assert 0.2 < (report["a"]["survival"] + report["b"]["survival"]) / 2 < 0.3


@pytest.mark.parametrize("granularity", ["element", "row", "column"])
def test_fine_granularity_survival_near_p(granularity):
    params = _synthetic(10, (8, 8))
    opt = Magma(torch.optim.AdamW(params, lr=1e-3), p=0.25, granularity=granularity, seed=1)
    for step in range(200):
        _random_grads(params, step)
        opt.step()
    survival = opt.telemetry()["masked"]["survival"]
    band = 0.02 if granularity == "element" else 0.03
    assert abs(survival - 0.25) < band


@pytest.mark.parametrize("base", list(INFOS))
def test_block_survival_counts_the_blocks_that_moved(base):
    params = _synthetic(12)
    opt = Magma(INFOS[base].build(params, lr=1e-2), p=0.5, seed=3)
    moved = 0
    for step in range(30):
        _random_grads(params, step)
        before = [q.detach().clone() for q in params]
        opt.step()
        moved += sum(not torch.equal(b, q) for b, q in zip(before, params, strict=True))
    survival = opt.telemetry()["masked"]["survival"]
    assert 0 < moved < 30 * 12
    assert survival == pytest.approx(moved / (30 * 12), abs=1e-9)


# --- alignment -------------------------------------------------------------------------


def _at_lr_1e3(info: OptimizerInfo, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The base with its class's own defaults but lr = 1e-3: the first moment its entry
    names reused (AdamW's exp_avg, Muon's momentum_buffer), or the wrapper's own (RMSprop,
    LaProp, SGD without momentum), or the generic path's (Adagrad)."""
    return info.optim_cls(params, lr=1e-3)


@pytest.mark.parametrize("base", list(INFOS))
@pytest.mark.parametrize("tau", [0.5, 2.0])
@pytest.mark.parametrize("granularity", ["block", "element"])
def test_constant_gradient_alignment_is_sigmoid_one_over_tau(base, tau, granularity):
    # Minimising a linear function: the gradient never changes, so the momentum is
    # parallel to it, cos = 1 and every score is sigmoid(1 / tau).
    params = _synthetic(6, (3, 5))
    g = torch.Generator().manual_seed(1)
    slopes = [torch.randn(q.shape, generator=g) for q in params]
    opt = Magma(_at_lr_1e3(INFOS[base], params), p=0.5, tau=tau, granularity=granularity, seed=0)
    for _ in range(30):
        opt.zero_grad()
        sum((c * q).sum() for c, q in zip(slopes, params, strict=True)).backward()
        opt.step()
    alignment = opt.telemetry()["masked"]["alignment"]
    expected = 1 / (1 + math.exp(-1 / tau))
    assert alignment == pytest.approx(expected, abs=1e-4)


def test_random_gradients_align_less_than_constant_ones():
    params = _synthetic(6, (16, 16))
    opt = Magma(torch.optim.AdamW(params, lr=1e-3), p=0.5, tau=2.0, seed=0)
    for step in range(60):
        _random_grads(params, step)
        opt.step()
    alignment = opt.telemetry()["masked"]["alignment"]
    # cos(mu, g) ~ 0.44 for iid gradients with beta1 = 0.9: between 0.5 and sigmoid(1/2)
    assert 0.5 < alignment < 1 / (1 + math.exp(-0.5)) - 0.02


def test_alignment_in_unit_interval_while_training():
    model = seeded(TinyLlama, n_layers=1)
    opt = Magma(
        torch.optim.AdamW(model.parameters(), lr=1e-2),
        params=magma.components(model),
        seed=0,
    )
    for step in range(20):
        train_step(model, opt, step)
    for entry in opt.telemetry().values():
        assert 0 < entry["alignment"] < 1
        assert 0 < entry["survival"] < 1


# --- reset semantics -----------------------------------------------------------------


def test_reset_semantics():
    params = _synthetic(8)
    opt = Magma(torch.optim.AdamW(params, lr=1e-3), p=0.5, seed=2)
    for step in range(10):
        _random_grads(params, step)
        opt.step()
    first = opt.telemetry(reset=False)
    assert opt.telemetry(reset=False) == first
    assert opt.telemetry() == first  # reset=True by default, returns the same report
    after_reset = opt.telemetry()
    assert after_reset["masked"]["survival"] is None
    assert after_reset["masked"]["alignment"] == first["masked"]["alignment"]  # not reset

    # the next window counts only its own steps
    _random_grads(params, 10)
    before = [q.detach().clone() for q in params]
    opt.step()
    moved = sum(not torch.equal(b, q) for b, q in zip(before, params, strict=True))
    assert opt.telemetry()["masked"]["survival"] == pytest.approx(moved / len(params))


def test_skip_update_reports_no_alignment():
    params = _synthetic(8)
    opt = SkipUpdate(torch.optim.AdamW(params, lr=1e-3), p=0.5, params={"x": params}, seed=0)
    for step in range(5):
        _random_grads(params, step)
        opt.step()
    report = opt.telemetry()
    assert report["x"]["alignment"] is None
    assert 0 < report["x"]["survival"] < 1


def test_magma_without_damping_or_score_sampling_reports_no_alignment():
    params = _synthetic(8)
    opt = Magma(torch.optim.AdamW(params, lr=1e-3), damping=False, seed=0)
    _random_grads(params, 0)
    opt.step()
    assert opt.telemetry()["masked"]["alignment"] is None
    assert opt.state_dict()["masking"]["scores"] == {}


# --- memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_adamw_keeps_only_scalar_float32_scores(dtype):
    model = seeded(TinyLlama, n_layers=1).to(dtype)
    plain_model = seeded(TinyLlama, n_layers=1).to(dtype)
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-3)
    opt = Magma(base, seed=0)
    for step in range(3):
        train_step(model, opt, step)
        train_step(plain_model, plain, step)
    masking = opt.state_dict()["masking"]
    assert masking["first_moments"] == {}
    assert masking["rng"]["devices"] == {}
    scores = list(masking["scores"].values())
    assert len(scores) == len(list(model.parameters()))
    assert all(s.shape == () and s.dtype == torch.float32 for s in scores)
    # the base keeps exactly what plain AdamW keeps, in the same layout
    for q, q0 in zip(model.parameters(), plain_model.parameters(), strict=True):
        state, state0 = base.state[q], plain.state[q0]
        assert state.keys() == state0.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for key in state:
            assert state[key].shape == state0[key].shape
            assert state[key].dtype == state0[key].dtype
            assert state[key].device == state0[key].device


@pytest.mark.parametrize("base", ["adamw", GENERIC.name])
def test_constant_gradient_alignment_complex_params(base):
    # Complex parameters take the generic path; cos(mu, g) must use the Hermitian inner
    # product Re<mu, g> = Re(sum conj(mu) * g), so a constant gradient still gives cos = 1.
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4, dtype=torch.cfloat, generator=g)) for _ in range(3)]
    slopes = [torch.randn(3, 4, dtype=torch.cfloat, generator=g) for _ in range(3)]
    opt = Magma(_at_lr_1e3(INFOS[base], params), p=0.5, tau=2.0, seed=0)
    for _ in range(10):
        for q, c in zip(params, slopes, strict=True):
            q.grad = c.clone()
        opt.step()
    alignment = opt.telemetry()["masked"]["alignment"]
    assert alignment == pytest.approx(1 / (1 + math.exp(-0.5)), abs=1e-4)
