"""The ``fused=`` switch of Magma/SkipUpdate (magma/fused.py): what it accepts, when auto
selects it, and what a masked-out block skips. Its equivalence with Algorithm 1 is
checked against tests/reference.py in tests/test_equivalence.py (``FUSED``).

fused=True forces the compiled kernels on CPU; the CUDA selection is checked through the
decision alone, as this machine has no GPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError
from torch import Tensor, nn
from torch.optim import Optimizer

import magma
from benchmarks.optimizer_step import llama60m_parameters
from magma import Magma, SkipUpdate
from magma.rules.base import bias_corrections, on_device_bias_corrections, step_sizes
from tests.optimizer_infos import FUSED, GENERIC, INFOS, OPTIMIZERS, UNFUSED, OptimizerInfo
from tests.reference import expected_block_keeps
from worker.config import TrialConfig
from worker.contract import FUSED_STEP_BASES
from worker.optimizers import build_optimizers

SHAPES = [(4, 3), (5,), (3, 2, 2), (6, 4)]


def _params() -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen) for s in SHAPES]


_adamw = INFOS["adamw"].build

# Each base with a kernel (magma.bases.FUSED_BASES), as the equivalence tests build it.
KERNEL_BASES = [info.name for info in FUSED]


def _builder(info: OptimizerInfo, kwargs: dict) -> Callable[[list[Tensor]], Optimizer]:
    """A configuration of a base, over the tensors it takes (Muon: the 2-D ones)."""
    return lambda ps: info.build(
        [q for q in ps if q.dim() == 2] if info.matrices_only else ps, **kwargs
    )


#: every configuration of every base without a kernel, and of the generic path
WITHOUT_KERNEL = {
    info.config_id(config): _builder(info, dict(config.kwargs))
    for info in (*UNFUSED, GENERIC)
    for config in info.configs()
}


WRAPPERS = {
    "magma": lambda base, **kw: Magma(base, **kw),
    "skip": lambda base, **kw: SkipUpdate(base, **kw),
}


@pytest.mark.parametrize("fused", ["yes", 1, 0.0])
@pytest.mark.parametrize("variant", list(WRAPPERS))
def test_fused_must_be_a_bool_or_none(variant: str, fused: object) -> None:
    with pytest.raises(ValueError, match=r"fused must be True, False or None"):
        WRAPPERS[variant](_adamw(_params()), fused=fused)


class _SubclassedCAdamW(magma.CAdamW):
    """A subclass may change the math: only exact types take a kernel."""


SUPPORTED = "torch.optim.Adam, torch.optim.AdamW, magma.CAdamW, magma.LaProp (exact types"
IMPOSSIBLE = {
    **{name: (make, {}, SUPPORTED) for name, make in WITHOUT_KERNEL.items()},
    "cadamw-subclass": (_SubclassedCAdamW, {}, SUPPORTED),
    "row": (_adamw, {"granularity": "row"}, "needs 'block'"),
    "laprop-row": (INFOS["laprop"].build, {"granularity": "row"}, "needs 'block'"),
    "alignment": (_adamw, {"sampling": "alignment"}, "needs 'uniform' or 'none'"),
}


@pytest.mark.parametrize("case", list(IMPOSSIBLE))
def test_fused_true_when_impossible_names_fused_and_what_it_needs(case: str) -> None:
    make, kwargs, needs = IMPOSSIBLE[case]
    with pytest.raises(ValueError, match=r"fused=True is impossible") as info:
        Magma(make(_params()), fused=True, **kwargs)
    assert needs in str(info.value)


def test_fused_true_checks_groups_added_later() -> None:
    params = _params()
    opt = Magma(_adamw(params[:2]), fused=True)
    with pytest.raises(ValueError, match=r"fused=True is impossible"):
        opt.add_param_group({"params": params[2:], "differentiable": True})


@pytest.mark.parametrize(
    "fused, kwargs, cpu, cuda",
    [
        (None, {}, False, True),
        (None, {"sampling": "none"}, False, True),
        (None, {"sampling": "alignment"}, False, False),
        (None, {"granularity": "column"}, False, False),
        (True, {}, True, True),
        (False, {}, False, False),
    ],
)
def test_auto_selects_fused_on_cuda_only_where_it_applies(
    fused: bool | None, kwargs: dict, cpu: bool, cuda: bool
) -> None:
    opt = Magma(_adamw(_params()), fused=fused, **kwargs)
    group = opt.param_groups[0]
    assert opt._uses_fused(group, torch.device("cpu")) is cpu
    assert opt._uses_fused(group, torch.device("cuda")) is cuda


@pytest.mark.parametrize("base", KERNEL_BASES)
def test_auto_selects_fused_on_cuda_for_every_fused_base(base: str) -> None:
    opt = Magma(INFOS[base].build(_params()))
    group = opt.param_groups[0]
    assert not opt._uses_fused(group, torch.device("cpu"))
    assert opt._uses_fused(group, torch.device("cuda"))


@pytest.mark.parametrize("base", list(WITHOUT_KERNEL))
def test_auto_never_selects_a_base_without_a_fused_kernel(base: str) -> None:
    opt = Magma(WITHOUT_KERNEL[base](_params()))
    assert not opt._uses_fused(opt.param_groups[0], torch.device("cuda"))


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("base_name", KERNEL_BASES)
@pytest.mark.parametrize("variant", list(WRAPPERS))
def test_fused_masked_out_blocks_are_not_written(variant: str, base_name: str) -> None:
    """Tensor version counters count in-place writes: a masked-out block's parameter is
    neither written nor changed, a survivor's is, and every block's moments are."""
    params = _params()
    seed, p, steps = 11, 0.5, 6
    base = INFOS[base_name].build(params)
    opt = WRAPPERS[variant](base, p=p, seed=seed, fused=True)
    keeps = expected_block_keeps(seed, len(params), p, steps)
    gen = torch.Generator().manual_seed(7)
    seen = {"kept": 0, "dropped": 0}
    for t in range(steps):
        for q in params:
            q.grad = torch.randn(q.shape, generator=gen)
        before = [(q.detach().clone(), q._version) for q in params]
        moments = [base.state[q]["exp_avg"]._version if base.state[q] else -1 for q in params]
        opt.step()
        for i, (q, (old, version)) in enumerate(zip(params, before, strict=True)):
            assert base.state[q]["exp_avg"]._version > moments[i], f"step {t} block {i}"
            if keeps[t][i]:
                assert q._version > version and not torch.equal(q, old), f"step {t} block {i}"
                seen["kept"] += 1
            else:
                assert q._version == version and torch.equal(q, old), f"step {t} block {i}"
                seen["dropped"] += 1
    assert seen["kept"] > 0 and seen["dropped"] > 0


# --- the worker's TrialConfig option -------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"base": info.name} for info in UNFUSED] + [{"variant": "dense"}, {"granularity": "row"}],
)
def test_trial_config_rejects_impossible_fused_step(fields: dict) -> None:
    with pytest.raises(ValidationError, match="fused_step") as info:
        TrialConfig(fused_step=True, **fields)
    assert "base one of ['adam', 'adamw', 'laprop', 'c-adamw']" in str(info.value)


@pytest.mark.parametrize("base", [info.name for info in OPTIMIZERS])
def test_trial_config_fused_bases_are_the_ones_with_a_kernel(base: str) -> None:
    """worker.contract.FUSED_STEP_BASES names, in the worker's words, exactly the bases
    whose optimizer (as the worker builds it: the registry's class) magma.fused supports;
    those validate."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    config = TrialConfig(base=base, variant="dense")
    built = build_optimizers(config, model, {"mlp": list(model[0].parameters())})[0]
    assert type(built) is INFOS[base].optim_cls
    assert magma.fused.supports(built, built.param_groups[0]) is (base in FUSED_STEP_BASES)
    assert INFOS[base].fused is (base in FUSED_STEP_BASES)
    if base in FUSED_STEP_BASES:
        assert TrialConfig(base=base, fused_step=True).fused_step is True


@pytest.mark.parametrize("fused_step", [None, True, False])
@pytest.mark.parametrize("variant", ["magma", "skipupdate"])
def test_trial_config_fused_step_reaches_the_wrapper(variant: str, fused_step: bool | None):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    config = TrialConfig(variant=variant, fused_step=fused_step)
    (opt,) = build_optimizers(config, model, {"mlp": list(model[0].parameters())})
    assert isinstance(opt, magma.MaskedOptimizer)
    assert opt.fused is fused_step


# --- the kernel: tensor_step ----------------------------------------------------------------


def _kernel_step(
    param: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    grad: Tensor,
    step_size: float | Tensor,
    bc2_sqrt: float | Tensor,
    *,
    kind: str = "adam",
    scale: float = 1.0,
    beta1: float = 0.0,
    beta2: float = 0.0,
    eps: float = 0.0,
    decay: float = 0.0,
    maximize: bool = False,
) -> None:
    """One survivor's compiled step (the kernel the wrapper calls), no scores."""
    _, fallback = magma.fused.run_compiled(
        magma.fused.tensor_step,
        param, grad, exp_avg, exp_avg_sq, None, None, None, step_size, bc2_sqrt, scale,
        beta1, beta2, eps, 0.0, decay, 0.9, 2.0, 0.9,
        kind=kind, maximize=maximize, coupled_decay=False, apply=True, replicated=False,
        previous_momentum=False,
    )  # fmt: skip
    assert fallback is None


@pytest.mark.usefixtures("every_graph_compiled")
def test_kernel_takes_on_device_bias_corrections() -> None:
    """Capturable and fused bases keep ``step`` as a tensor on the parameter's device (CUDA
    there, so not reachable on CPU through the wrapper): ``on_device_bias_corrections`` and
    ``step_sizes`` give lr / bc1 and sqrt(bc2) as tensors, equal to the host numbers, and
    the kernel's update
    from either matches Adam's (moments first, then the step) written out in float64."""
    gen = torch.Generator().manual_seed(3)
    param, exp_avg = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    exp_avg_sq, grad = torch.rand(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    beta1, beta2, lr, eps, decay, scale, t = 0.9, 0.99, 0.1, 1e-8, 0.01, 0.7, 4.0
    m = beta1 * exp_avg.double() + (1 - beta1) * grad.double()
    v = beta2 * exp_avg_sq.double() + (1 - beta2) * grad.double() ** 2
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    expected = param.double() * (1 - scale * decay) - scale * lr * (m / bc1) / (
        (v / bc2).sqrt() + eps
    )
    steps = [torch.tensor(t)]
    bc1_host, bc2_host = bias_corrections(steps, beta1, beta2)
    bc1_device, bc2_device = on_device_bias_corrections(steps, beta1, beta2)
    host = step_sizes(lr, bc1_host), bc2_host
    device = step_sizes(lr, bc1_device), bc2_device
    assert host[0][0] == pytest.approx(lr / bc1) and host[1][0] == pytest.approx(bc2**0.5)
    torch.testing.assert_close(device[0][0].double(), torch.tensor(lr / bc1).double())
    torch.testing.assert_close(device[1][0].double(), torch.tensor(bc2**0.5).double())
    for step_size, bc2_sqrt in ((host[0][0], host[1][0]), (device[0][0], device[1][0])):
        moved, m_state, v_state = param.clone(), exp_avg.clone(), exp_avg_sq.clone()
        _kernel_step(
            moved, m_state, v_state, grad, step_size, bc2_sqrt,
            scale=scale, beta1=beta1, beta2=beta2, eps=eps, decay=decay,
        )  # fmt: skip
        torch.testing.assert_close(moved.double(), expected, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(m_state.double(), m, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(v_state.double(), v, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize(
    "grad, maximize, moved",
    [
        ([1.0, 1.0, -1.0, -1.0], False, [-0.8, 0.0, 0.0, 0.8]),  # 2 of 4 agree: c = 2 there
        ([1.0, 1.0, -1.0, -1.0], True, [0.0, 0.8, -0.8, 0.0]),  # maximize: g = -grad
        ([-1.0, 1.0, -1.0, 1.0], False, [0.0, 0.0, 0.0, 0.0]),  # none agrees: c = 0
    ],
)
def test_cautious_update_keeps_agreeing_coordinates_rescaled(
    grad: list[float], maximize: bool, moved: list[float]
) -> None:
    """C-AdamW's kernel at step 1 with beta1 = 0.5, beta2 = 0 and eps = 0 from
    m = (3, -3, 3, -3): m <- (m + g) / 2, v = g^2 = 1, so theta = -lr * (m / 0.5) * c with
    c = 1[m * g > 0] / max(mean, 1e-3), lr = 0.1; g = -grad under maximize."""
    param, exp_avg = torch.zeros(4), torch.tensor([3.0, -3.0, 3.0, -3.0])
    _kernel_step(
        param, exp_avg, torch.ones(4), torch.tensor(grad), 0.1 / 0.5, 1.0,
        kind="cautious", beta1=0.5, beta2=0.0, maximize=maximize,
    )  # fmt: skip
    torch.testing.assert_close(param, torch.tensor(moved))


# --- staying compiled, and falling back visibly ---------------------------------------------


def _llama_step(size: str, wrapper: type[magma.MaskedOptimizer]) -> magma.MaskedOptimizer:
    """``wrapper`` over AdamW(fused=True) on the ``size`` Llama parameter set of
    benchmarks/optimizer_step.py, attention+MLP masked, stepped three times."""
    parts = llama60m_parameters("cpu", torch.float32, size)
    every = parts["attention"] + parts["mlp"] + parts["rest"]
    base = torch.optim.AdamW(every, lr=1e-3, weight_decay=0.1, fused=True)
    opt = wrapper(base, params=parts["attention"] + parts["mlp"], seed=0, fused=True)
    for _ in range(3):
        opt.step()
    return opt


@pytest.mark.usefixtures("every_graph_compiled")
def test_llama_60m_stays_compiled_at_the_default_recompile_limit() -> None:
    """The paper's 60M parameter set, then a model of other shapes, under Magma and
    SkipUpdate, at dynamo's default limits: every call compiled (a fallback warning is an
    error here), one graph per setting (survivor or not, damped or not; every masked tensor
    is a matrix), and the second model's new shapes compile nothing."""
    assert torch._dynamo.config.recompile_limit == 8  # torch's default, not raised
    counters = torch._dynamo.utils.counters
    counters.clear()
    for wrapper in (Magma, SkipUpdate):
        opt = _llama_step("60m", wrapper)
        assert opt.fused_fallbacks == []
        assert all(entry["eager_fallback"] == 0.0 for entry in opt.telemetry().values())
    graphs = counters["stats"]["unique_graphs"]
    assert 0 < graphs <= 4
    for wrapper in (Magma, SkipUpdate):
        _llama_step("small", wrapper)
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


def _twins(variant: str) -> tuple[Optimizer, Optimizer, list[Tensor], list[Tensor]]:
    """A fused=True wrapper and a fused=False one over equal copies of SHAPES' tensors."""
    first, second = _params(), _params()
    gen = torch.Generator().manual_seed(1)
    for a, b in zip(first, second, strict=True):
        a.grad = torch.randn(a.shape, generator=gen)
        b.grad = a.grad.clone()
    wrap = WRAPPERS[variant]
    return (
        wrap(_adamw(first, lr=0.1), seed=0, fused=True),
        wrap(_adamw(second, lr=0.1), seed=0, fused=False),
        first,
        second,
    )


#: inductor's CPU backend without a working C++ compiler (and no cached kernels to reuse)
NO_CXX_COMPILER = {"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}


@pytest.mark.parametrize("variant", list(WRAPPERS))
def test_a_failing_compiler_backend_falls_back_to_eager_with_one_warning(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No working C++ compiler (inductor's CPU backend): the masked step runs the same math
    eagerly, warns once naming the cause, and says so in ``fused_fallbacks`` and in the
    telemetry; its parameters stay those of the eager (fused=False) path."""
    torch._dynamo.reset()
    monkeypatch.setattr(magma.fused, "_backend_failure", [])
    fused, eager, first, second = _twins(variant)
    with (
        torch._inductor.config.patch(
            {"cpp.cxx": (None, "/nonexistent/c++"), "fx_graph_cache": False}
        ),
        torch._functorch.config.patch(enable_autograd_cache=False),
        pytest.warns(magma.fused.FusedFallbackWarning, match="compiler backend failed") as caught,
    ):
        for _ in range(3):
            fused.step()
            eager.step()
    assert len([w for w in caught if w.category is magma.fused.FusedFallbackWarning]) == 1
    assert len(fused.fused_fallbacks) == 1 and "C++ compiler" in fused.fused_fallbacks[0]
    assert fused.telemetry()["masked"]["eager_fallback"] == 1.0
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()


def test_a_recompile_limit_hit_falls_back_to_eager_visibly() -> None:
    """With the limit at 1 graph (lowered, to reach it with a few shapes), the tensors of a
    second rank cannot compile: they run eagerly with one warning naming the limit, the
    first rank's stay compiled, and the parameters are the eager path's."""
    torch._dynamo.reset()
    fused, eager, first, second = _twins("skip")
    fused.p = eager.p = 1.0  # every block survives: one graph per rank
    with (
        torch._dynamo.config.patch(recompile_limit=1),
        pytest.warns(magma.fused.FusedFallbackWarning, match="recompile_limit") as caught,
    ):
        for _ in range(2):
            fused.step()
            eager.step()
    assert len([w for w in caught if w.category is magma.fused.FusedFallbackWarning]) == 1
    share = fused.telemetry()["masked"]["eager_fallback"]
    assert 0.0 < share < 1.0  # some tensors ran compiled, the others' rank fell back
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch._dynamo.reset()


@pytest.mark.parametrize("variant", list(WRAPPERS))
def test_eager_rule_with_on_device_counters_matches_host_numbers(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eager Adam rule (``direction`` and ``apply``) from device-tensor corrections, as
    a fused or capturable base's counters give them on CUDA (forced here on CPU), moves
    the parameters as from host numbers."""
    _, host, _, host_params = _twins(variant)
    _, on_device, _, device_params = _twins(variant)
    for _ in range(3):
        host.step()
        with monkeypatch.context() as patch:
            patch.setattr(magma.rules.adam, "bias_corrections", on_device_bias_corrections)
            on_device.step()
    for a, b in zip(device_params, host_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("base_name", KERNEL_BASES)
@pytest.mark.parametrize("variant", list(WRAPPERS))
def test_a_schedule_and_new_steps_compile_nothing_new(base_name: str, variant: str) -> None:
    """20 steps with the learning rate changing every step (so every step size, bias
    correction and decay is new) over matrices and vectors: one graph per rank and
    survivor-or-not, none per value of a number."""
    counters = torch._dynamo.utils.counters
    counters.clear()
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(6, 4, generator=gen) for _ in range(5)]
    params += [torch.randn(5, generator=gen) for _ in range(4)]
    for q in params:
        q.grad = torch.randn(q.shape, generator=gen)
    base = INFOS[base_name].build(params, lr=1e-3, weight_decay=0.1)
    opt = WRAPPERS[variant](base, seed=0, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(base, lambda t: 1 / (t + 1))
    for _ in range(20):
        opt.step()
        schedule.step()
    assert counters["stats"]["unique_graphs"] == 4  # 2 ranks x survivor or not
    assert opt.fused_fallbacks == []
