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
from magma import Magma, SkipUpdate
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


# --- the update kernel's step counter -------------------------------------------------------


@pytest.mark.usefixtures("every_graph_compiled")
def test_update_kernel_takes_an_on_device_step_counter() -> None:
    """Capturable and fused bases keep ``step`` as a tensor on the parameter's device (CUDA
    here, so not reachable on CPU through the wrapper): the kernel computes the bias
    corrections from it in-graph, to the same result as from the host number, and both
    match Adam's update written out in float64."""
    gen = torch.Generator().manual_seed(3)
    param, exp_avg = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    second = torch.rand(5, 3, generator=gen)
    beta1, beta2, lr, eps, decay, scale, t = 0.9, 0.99, 0.1, 1e-8, 0.01, 0.7, 4.0
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    expected = param.double() * (1 - scale * decay) - scale * lr * (exp_avg.double() / bc1) / (
        (second.double() / bc2).sqrt() + eps
    )
    update = magma.fused._kernels()[1]
    for step in (t, torch.tensor(t)):
        moved = param.clone()
        update(moved, exp_avg, second, step, beta1, beta2, lr, eps, decay, scale)
        torch.testing.assert_close(moved.double(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize(
    "grad, maximize, moved",
    [
        ([1.0, 1.0, -1.0, -1.0], False, [-0.2, 0.0, 0.0, 0.2]),  # 2 of 4 agree: c = 2 there
        ([1.0, 1.0, -1.0, -1.0], True, [0.0, 0.2, -0.2, 0.0]),  # maximize: g = -grad
        ([-1.0, 1.0, -1.0, 1.0], False, [0.0, 0.0, 0.0, 0.0]),  # none agrees: c = 0
    ],
)
def test_cautious_update_keeps_agreeing_coordinates_rescaled(
    grad: list[float], maximize: bool, moved: list[float]
) -> None:
    """C-AdamW's kernel with beta1 = beta2 = 0, eps = 0 and v = 1, so u = m = exp_avg:
    theta = -lr * u * c, c = 1[m * g > 0] / max(mean, 1e-3), lr = 0.1."""
    param, exp_avg = torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, -1.0])
    update = magma.fused._kernels().cautious_update
    update(
        param,
        exp_avg,
        second=torch.ones(4),
        grad=torch.tensor(grad),
        step=1.0,
        beta1=0.0,
        beta2=0.0,
        lr=0.1,
        eps=0.0,
        weight_decay=0.0,
        decay=0.0,
        scale=1.0,
        maximize=maximize,
        coupled_decay=False,
    )
    torch.testing.assert_close(param, torch.tensor(moved))
