"""Magma / SkipUpdate as torch.optim.Optimizer objects: argument checks, plumbing,
schedulers, closures, hooks, param groups, deepcopy and bf16."""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    OneCycleLR,
    SequentialLR,
)

import magma
from magma import Magma, SkipUpdate
from tests.models import TinyLlama, lm_loss, make_batch, seeded, single_thread, train_step
from tests.optimizer_infos import INFOS


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with single_thread():
        yield


WRAPPERS = [
    pytest.param(lambda base, **kw: Magma(base, **kw), id="Magma"),
    pytest.param(lambda base, **kw: SkipUpdate(base, **kw), id="SkipUpdate"),
]


def _model() -> TinyLlama:
    return seeded(TinyLlama, n_layers=1)


def _adamw(model: nn.Module, lr: float = 1e-2) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)


def _named(name: str) -> str:
    """A regex matching ``name`` as a whole word (so "p" is not found in "optimizer")."""
    return rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])"


# --- argument checks ---------------------------------------------------------------------


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("p", [0, 0.0, -0.1, 1.5, float("nan"), True, None, "a"])
def test_bad_p(wrap, p):
    with pytest.raises(ValueError, match=_named("p")):
        wrap(_adamw(_model()), p=p)


@pytest.mark.parametrize("tau", [0, 0.0, -1.0, "a", None])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=_named("tau")):
        Magma(_adamw(_model()), tau=tau)


@pytest.mark.parametrize("ema", [-0.1, 1.0, 1.5, "a"])
def test_bad_ema(ema):
    with pytest.raises(ValueError, match=_named("ema")):
        Magma(_adamw(_model()), ema=ema)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_bad_granularity_names_allowed_values(wrap):
    with pytest.raises(ValueError) as info:
        wrap(_adamw(_model()), granularity="tensor")
    message = str(info.value)
    assert re.search(_named("granularity"), message)
    for allowed in ("block", "row", "column", "element"):
        assert allowed in message


def test_bad_sampling_names_allowed_values():
    with pytest.raises(ValueError) as info:
        Magma(_adamw(_model()), sampling="random")
    message = str(info.value)
    assert re.search(_named("sampling"), message)
    for allowed in ("uniform", "alignment", "none"):
        assert allowed in message


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize(
    "base",
    [
        lambda m: torch.optim.AdamW,  # the class, not an instance
        lambda m: list(m.parameters()),
        lambda m: None,
    ],
    ids=["class", "params", "none"],
)
def test_non_optimizer_base(wrap, base):
    with pytest.raises(TypeError, match=_named("optimizer")):
        wrap(base(_model()))


@pytest.mark.parametrize("outer", WRAPPERS)
@pytest.mark.parametrize("inner", WRAPPERS)
def test_wrapping_a_wrapper_rejected(outer, inner):
    wrapped = inner(_adamw(_model()))
    with pytest.raises(TypeError, match=_named("optimizer")):
        outer(wrapped)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_params_not_owned_by_base(wrap):
    model = _model()
    base = torch.optim.AdamW(model.model.parameters(), lr=1e-3)  # lm_head left out
    with pytest.raises(ValueError, match=_named("params")):
        wrap(base, params=[model.lm_head.weight])
    with pytest.raises(ValueError, match=_named("params")):
        wrap(base, params={"attention": [nn.Parameter(torch.zeros(3))]})


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("params", [[], {}, {"attention": [], "mlp": []}], ids=repr)
def test_empty_params(wrap, params):
    with pytest.raises(ValueError, match=_named("params")):
        wrap(_adamw(_model()), params=params)


def test_params_must_hold_tensors():
    model = _model()
    with pytest.raises(TypeError, match=_named("params")):
        Magma(_adamw(model), params=model.lm_head.weight)
    with pytest.raises(TypeError, match=_named("params")):
        Magma(_adamw(model), params=[1.0, 2.0])


def test_components_unknown_name_rejected_before_wrapping():
    model = _model()
    with pytest.raises(ValueError, match=_named("names")):
        Magma(_adamw(model), params=magma.components(model, ("attention", "feedforward")))


@pytest.mark.parametrize("seed", [1.5, "0", True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=_named("seed")):
        Magma(_adamw(_model()), seed=seed)


# --- torch.optim.Optimizer plumbing --------------------------------------------------------


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_is_an_optimizer_sharing_the_base_state(wrap):
    model = _model()
    base = _adamw(model)
    opt = wrap(base, seed=0)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state
    assert opt.defaults is base.defaults
    train_step(model, opt, 0)
    assert opt.state is base.state and len(base.state) == len(list(model.parameters()))
    opt.param_groups[0]["lr"] = 0.123
    assert base.param_groups[0]["lr"] == 0.123
    assert type(opt).__name__ in repr(opt) and "AdamW" in repr(opt)


def _schedulers():
    return [
        pytest.param(lambda o: LambdaLR(o, lambda s: 1.0 / (1 + s)), id="LambdaLR"),
        pytest.param(lambda o: CosineAnnealingLR(o, T_max=8, eta_min=1e-4), id="Cosine"),
        pytest.param(lambda o: OneCycleLR(o, max_lr=0.05, total_steps=10), id="OneCycle"),
        pytest.param(
            lambda o: SequentialLR(
                o,
                [LinearLR(o, start_factor=0.1, total_iters=3), CosineAnnealingLR(o, T_max=7)],
                milestones=[3],
            ),
            id="warmup+cosine",
        ),
    ]


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("make_scheduler", _schedulers())
def test_lr_schedulers_drive_the_base(wrap, make_scheduler):
    plain_model, model = _model(), _model()
    plain = _adamw(plain_model)
    plain_sched = make_scheduler(plain)
    base = _adamw(model)
    opt = wrap(base, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = make_scheduler(opt)
        plain_lrs, lrs, base_lrs = [], [], []
        for step in range(10):
            train_step(plain_model, plain, step)
            plain_sched.step()
            train_step(model, opt, step)
            sched.step()
            plain_lrs.append(plain.param_groups[0]["lr"])
            lrs.append(sched.get_last_lr()[0])
            base_lrs.append(base.param_groups[0]["lr"])
    assert lrs == plain_lrs
    assert base_lrs == plain_lrs
    assert len(set(base_lrs)) > 3  # the schedule really moved the base's lr
    scheduler_warnings = [str(w.message) for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert scheduler_warnings == []


def test_scheduler_warns_on_wrong_order_through_the_wrapper():
    # Sanity check of the warning test above: the warning is visible through the wrapper.
    model = _model()
    opt = Magma(_adamw(model), seed=0)
    sched = LambdaLR(opt, lambda s: 1.0)
    with pytest.warns(UserWarning, match=re.escape("lr_scheduler.step()")):
        sched.step()


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_step_with_closure_equals_backward_then_step(wrap):
    model_a, model_b = _model(), _model()
    opt_a = wrap(_adamw(model_a), seed=3)
    opt_b = wrap(_adamw(model_b), seed=3)
    for step in range(5):
        ids = make_batch(model_a.vocab, step)
        calls = []

        def closure(ids=ids, calls=calls):
            opt_a.zero_grad()
            loss = lm_loss(model_a, ids)
            loss.backward()
            calls.append(torch.is_grad_enabled())
            return loss

        loss_a = opt_a.step(closure)
        assert calls == [True]  # ran once, with grad enabled

        opt_b.zero_grad()
        loss_b = lm_loss(model_b, ids)
        loss_b.backward()
        opt_b.step()
        assert torch.equal(loss_a, loss_b.detach())
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_step_without_closure_returns_none(wrap):
    model = _model()
    opt = wrap(_adamw(model), seed=0)
    lm_loss(model, make_batch(model.vocab, 0)).backward()
    assert opt.step() is None


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(wrap, set_to_none):
    model = _model()
    opt = wrap(_adamw(model), seed=0)
    lm_loss(model, make_batch(model.vocab, 0)).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad(set_to_none=set_to_none)
    for p in model.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert p.grad is not None and not p.grad.any()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def _set_grads(params, value: float = 1.0) -> None:
    for q in params:
        q.grad = torch.full_like(q, value)


def test_add_param_group_masked_when_params_is_none():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))
    # p tiny: a masked tensor essentially never survives
    opt = SkipUpdate(torch.optim.SGD([a], lr=0.1), p=1e-6, seed=0)
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert len(opt.param_groups) == 2 and opt.param_groups is opt.optimizer.param_groups
    assert set(opt.masked_params) == {a, b}
    for _ in range(5):
        _set_grads([a, b])
        opt.step()
    assert not a.any() and not b.any()


def test_add_param_group_dense_when_params_given():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(4))
    opt = SkipUpdate(torch.optim.SGD([a], lr=0.1), p=1e-6, params=[a], seed=0)
    opt.add_param_group({"params": [b], "lr": 0.1})
    assert set(opt.masked_params) == {a}
    for step in range(1, 6):
        _set_grads([a, b])
        opt.step()
        assert torch.allclose(b, torch.full_like(b, -0.1 * step))
    assert not a.any()


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_step_hooks_on_the_wrapper_fire_once_per_step(wrap):
    model = _model()
    base = _adamw(model)
    opt = wrap(base, seed=0)
    pre, post, base_calls = [], [], []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: pre.append(o))
    h2 = opt.register_step_post_hook(lambda o, args, kwargs: post.append(o))
    base.register_step_post_hook(lambda o, args, kwargs: base_calls.append(o))
    for step in range(3):
        train_step(model, opt, step)
    assert len(pre) == len(post) == 3
    assert all(o is opt for o in pre + post)
    assert len(base_calls) == 3 and all(o is base for o in base_calls)
    h1.remove()
    h2.remove()
    train_step(model, opt, 3)
    assert len(pre) == len(post) == 3


def test_skip_update_p1_equals_plain_base():
    plain_model, model = _model(), _model()
    plain = _adamw(plain_model)
    opt = SkipUpdate(_adamw(model), p=1.0, seed=0)
    for step in range(10):
        train_step(plain_model, plain, step)
        train_step(model, opt, step)
    for p0, p1 in zip(plain_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p1, p0, rtol=1e-5, atol=1e-6)
    # moments are the base's own, and match the plain run
    for q0, q1 in zip(plain_model.parameters(), model.parameters(), strict=True):
        s0, s1 = plain.state[q0], opt.state[q1]
        assert s0.keys() == s1.keys()
        torch.testing.assert_close(s1["exp_avg_sq"], s0["exp_avg_sq"], rtol=1e-5, atol=1e-9)


#: every configuration of every base that takes all of TinyLlama's tensors (not Muon's 2-D
#: only), the generic path's, and SGD with plain momentum
OTHER_BASES = {
    **{
        info.config_id(config): (info, dict(config.kwargs))
        for info in INFOS.values()
        if not info.matrices_only
        for config in info.configs()
    },
    "sgd-momentum": (INFOS["sgd"], {"momentum": 0.9}),
}


@pytest.mark.parametrize("base", list(OTHER_BASES))
def test_skip_update_p1_equals_plain_base_other_bases(base):
    info, kw = OTHER_BASES[base]
    plain_model, model = _model(), _model()
    plain = info.build(plain_model.parameters(), **kw)
    opt = SkipUpdate(info.build(model.parameters(), **kw), p=1.0, seed=0)
    for step in range(6):
        train_step(plain_model, plain, step)
        train_step(model, opt, step)
    for p0, p1 in zip(plain_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p1, p0, **info.tol)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_deepcopy(wrap):
    model = _model()
    opt = wrap(_adamw(model), params=magma.components(model), seed=5)
    for step in range(3):
        train_step(model, opt, step)
    twin = copy.deepcopy(opt)
    assert type(twin) is type(opt)
    assert twin.optimizer is not opt.optimizer
    assert twin.param_groups is twin.optimizer.param_groups
    twin_params = [q for g in twin.param_groups for q in g["params"]]
    orig_params = [q for g in opt.param_groups for q in g["params"]]
    assert all(a is not b for a, b in zip(twin_params, orig_params, strict=True))
    assert len(twin.masked_params) == len(opt.masked_params)
    assert set(twin.masked_params) <= set(twin_params)
    # the copy continues exactly like the original: same grads, same masks, same params
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        for a, b in zip(orig_params, twin_params, strict=True):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt.step()
        twin.step()
    for a, b in zip(orig_params, twin_params, strict=True):
        assert torch.equal(a, b)
    assert twin.telemetry() == opt.telemetry()


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_bf16_params_train(wrap):
    model = _model().to(torch.bfloat16)
    opt = wrap(_adamw(model, lr=1e-2), p=0.5, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    losses = [train_step(model, opt, step % 2) for step in range(8)]
    assert all(torch.isfinite(loss) for loss in losses)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)  # 8 steps at p=0.5: every block survived at least once (seed 0)
    assert losses[6] < losses[0]  # same batch, six steps later
    scores = opt.state_dict()["masking"]["scores"]
    if isinstance(opt, Magma):
        assert len(scores) == len(before)
        assert all(s.dtype == torch.float32 for s in scores.values())
        assert all(0 < float(s) < 1 for s in scores.values())
    else:
        assert scores == {}


@pytest.mark.parametrize("wrap", WRAPPERS)
@pytest.mark.parametrize("base_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_zero_lr_step_leaves_params_unchanged(wrap, base_cls):
    # lr == 0 is what a warmup-from-zero or a cosine-to-zero schedule produces.
    model = _model()
    base = base_cls(model.parameters(), lr=0.0)
    opt = wrap(base, p=1.0, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    train_step(model, opt, 0)
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b, p)
    assert all(int(s["step"]) == 1 for s in base.state.values())


@pytest.mark.parametrize(
    "wrap",
    [
        # With p=1 and no damping, both wrappers must reproduce the base exactly.
        pytest.param(lambda base, **kw: Magma(base, damping=False, **kw), id="Magma-undamped"),
        pytest.param(lambda base, **kw: SkipUpdate(base, **kw), id="SkipUpdate"),
    ],
)
def test_linear_warmup_from_zero(wrap):
    # The usual transformer schedule (HF get_linear_schedule_with_warmup) starts at lr 0.
    plain_model, model = _model(), _model()
    plain = _adamw(plain_model)
    opt = wrap(_adamw(model), p=1.0, seed=0)
    warmup = lambda step: min(1.0, step / 3)  # noqa: E731
    plain_sched, sched = LambdaLR(plain, warmup), LambdaLR(opt, warmup)
    assert opt.param_groups[0]["lr"] == 0.0
    for step in range(6):
        train_step(plain_model, plain, step)
        plain_sched.step()
        train_step(model, opt, step)
        sched.step()
    for p0, p1 in zip(plain_model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p1, p0, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_sparse_gradients_take_the_generic_path(wrap):
    emb = seeded(nn.Embedding, num_embeddings=10, embedding_dim=4, sparse=True)
    opt = wrap(torch.optim.SGD(emb.parameters(), lr=0.1), p=1.0, seed=0)
    before = emb.weight.detach().clone()
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    opt.step()
    changed = (emb.weight != before).any(dim=1)
    assert changed.tolist() == [i in (1, 2) for i in range(10)]
    assert opt.telemetry()["masked"]["survival"] == 1.0


@pytest.mark.parametrize("wrap", WRAPPERS)
def test_state_dict_hooks_registered_on_the_wrapper_fire(wrap):
    model = _model()
    opt = wrap(_adamw(model), seed=0)
    train_step(model, opt, 0)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("save-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("save-post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    opt.load_state_dict(opt.state_dict())
    assert calls == ["save-pre", "save-post", "load-pre", "load-post"]
