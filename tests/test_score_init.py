"""``score_init``: s_0, which Algorithm 1 leaves undefined (Issue 23's first open choice).

"first" (the default) starts s_1 = s~_1; a number c starts s_1 = ema * c + (1 - ema) * s~_1.
Each path (eager, compiled, replicated, another granularity) is checked against that
written out by hand for one AdamW step of one block that always survives (p = 1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from magma import Magma, SkipUpdate

TAU, EMA, LR = 2.0, 0.9, 0.1


def _block() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)


def _expected(theta: Tensor, grad: Tensor, score_init: str | float) -> tuple[Tensor, float]:
    """theta after one AdamW step (no decay) scaled by s_1, and s_1, in float64."""
    g = grad.double()
    m, v = 0.1 * g, 0.001 * g * g  # the moments after one step from zero
    fresh = 1 / (1 + math.exp(-float((m * g).sum() / (m.norm() * g.norm())) / TAU))
    s1 = fresh if score_init == "first" else EMA * score_init + (1 - EMA) * fresh
    delta = LR * (m / 0.1) / ((v / 0.001).sqrt() + 1e-8)
    return theta.double() - s1 * delta, s1


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize("score_init", ["first", 0.5, 1.0, 0.0])
@pytest.mark.parametrize("path", ["eager", "fused", "replicated", "rows"])
def test_first_score_follows_score_init(path: str, score_init: str | float) -> None:
    theta, grad = _block()
    expected, s1 = _expected(theta, grad, score_init)
    replicas = 2 if path == "replicated" else None
    param = torch.stack([theta, theta]) if replicas else theta.clone()
    param.grad = torch.stack([grad, grad]) if replicas else grad.clone()
    opt = Magma(
        torch.optim.AdamW([param], lr=LR, weight_decay=0.0),
        p=1.0,
        tau=TAU,
        ema=EMA,
        seed=0,
        fused=path == "fused",
        replicas=replicas,
        granularity="row" if path == "rows" else "block",
        score_init=score_init,
    )
    opt.step()
    moved = param if replicas is None else param[1]
    if path == "rows":  # one score per row: the same formula row by row
        rows = [_expected(theta[i : i + 1], grad[i : i + 1], score_init)[0] for i in range(5)]
        expected = torch.cat(rows)
    torch.testing.assert_close(moved.double(), expected, rtol=1e-5, atol=1e-6)
    if path != "rows":
        assert opt.telemetry()["masked"]["alignment"] == pytest.approx(s1, rel=1e-5)


def test_score_init_changes_the_trajectory() -> None:
    """The same run with s_0 = 1.0 instead of the first score ends elsewhere."""
    ends = []
    for score_init in ("first", 1.0):
        theta, grad = _block()
        param = theta.clone().requires_grad_()
        opt = Magma(torch.optim.AdamW([param], lr=LR), seed=0, score_init=score_init)
        for step in range(5):
            param.grad = grad * (step + 1)
            opt.step()
        ends.append(param.detach().clone())
    assert not torch.allclose(ends[0], ends[1])


@pytest.mark.parametrize("value", ["last", -0.1, 1.5, True, None, float("nan")])
def test_score_init_must_be_first_or_a_number_in_the_unit_interval(value: object) -> None:
    param = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="score_init must be 'first' or a number in"):
        Magma(torch.optim.AdamW([param]), score_init=value)  # type: ignore[arg-type]


def test_state_dict_records_score_init() -> None:
    param = torch.zeros(3, requires_grad=True)
    param.grad = torch.ones(3)
    opt = Magma(torch.optim.AdamW([param]), seed=0, score_init=0.5)
    opt.step()
    state = opt.state_dict()
    assert state["masking"]["score_init"] == 0.5
    Magma(torch.optim.AdamW([param]), seed=0, score_init=0.5).load_state_dict(state)
    with pytest.raises(ValueError, match="score_init=0.5"):
        Magma(torch.optim.AdamW([param]), seed=0).load_state_dict(state)
    assert (
        SkipUpdate(torch.optim.AdamW([param]), seed=0).state_dict()["masking"]["score_init"]
        == "first"
    )
