"""Replicated parameters (``replicas=S``): S copies of a model stacked along dim 0 and
stepped as one batched model must be masked, scored and moved exactly as S separate
optimizers, one per seed, would mask, score and move each copy.

Every base of tests/optimizer_infos.py (and the generic path) runs side by side with its S
separate twins on the same random gradients: the masks each replica draws must be EQUAL to
its twin's (recorded where the wrapper counts survival), and parameters, every state entry,
scores and per-replica telemetry close within the base's float32 tolerance (``info.tol``;
Muon's: ``MUON_TOL``). Block masks of a replica that is dropped must leave its slice
bitwise unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import magma
from magma import Magma, SkipUpdate
from tests.optimizer_infos import INFOS, OptimizerInfo

REPLICAS = 3
SEEDS = [11, 4, 27]
STEPS = 5
SHAPES = [(4, 3), (5,), (3, 2, 2), (2, 4)]
MATRIX_SHAPES = [(4, 3), (3, 5), (2, 4)]  # Muon: 2-D only
GRANULARITIES = ("block", "row", "column", "element")
# Muon orthogonalises in bfloat16: the batched Newton-Schulz (batched matmuls, a norm per
# matrix) may round an update entry one bf16 ulp (~0.4%) away from torch's one matrix at a
# time, lr * 4e-3 = 8e-5 on a parameter at lr 0.02. On this CPU the largest difference
# measured over the 5 steps was 7e-7; the gradients do not depend on the parameters, so
# differences never feed back.
MUON_TOL = {"rtol": 1e-5, "atol": 1e-4}

#: wrapper variants: SkipUpdate, and Magma at each sampling x damping of Table A2
VARIANTS: dict[str, dict[str, Any]] = {
    "skip": {"wrapper": "skip"},
    **{
        f"magma-{sampling}-{'damped' if damping else 'undamped'}": {
            "wrapper": "magma",
            "sampling": sampling,
            "damping": damping,
        }
        for sampling in ("uniform", "alignment", "none")
        for damping in (True, False)
    },
}

#: every configuration of every base, by test id
CONFIGS = {
    info.config_id(config): (info, dict(config.kwargs))
    for info in INFOS.values()
    for config in info.configs()
}


def wrap(
    variant: dict[str, Any], base: torch.optim.Optimizer, params: list[Tensor], **kwargs: Any
) -> magma.MaskedOptimizer:
    if variant["wrapper"] == "skip":
        return SkipUpdate(base, p=0.5, params=params, **kwargs)
    return Magma(
        base,
        p=0.5,
        tau=0.5,
        ema=0.8,
        params=params,
        sampling=variant["sampling"],
        damping=variant["damping"],
        **kwargs,
    )


def record_masks(opt: magma.MaskedOptimizer) -> list[tuple[Tensor, Tensor]]:
    """Every (tensor, mask) the wrapper counts survival of, in order: the masks it drew."""
    seen: list[tuple[Tensor, Tensor]] = []
    count = opt._count_survival

    def counting(param: Tensor, keep: Any) -> None:
        seen.append((param, torch.as_tensor(keep).detach().to("cpu", torch.float32).clone()))
        count(param, keep)

    opt._count_survival = counting  # type: ignore[method-assign]
    return seen


def close(a: Tensor, b: Tensor, tol: dict[str, float], where: str) -> None:
    if not torch.allclose(a, b, **tol):
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{where}: {m}")


class Twins:
    """S separate optimizers over S models and one replicated optimizer over the stack."""

    def __init__(
        self,
        info: OptimizerInfo,
        kwargs: dict[str, Any],
        make: Callable[..., torch.optim.Optimizer],
    ) -> None:
        self.shapes = MATRIX_SHAPES if info.matrices_only else SHAPES
        gen = torch.Generator().manual_seed(0)
        self.singles = [[torch.randn(s, generator=gen) for s in self.shapes] for _ in SEEDS]
        self.stacked = [torch.stack(ts) for ts in zip(*self.singles, strict=True)]
        self.separate = [
            make(info.build(ps, **kwargs), ps[:-1], seed=seed)  # the last tensor unmasked
            for ps, seed in zip(self.singles, SEEDS, strict=True)
        ]
        base = info.build_replicated(self.stacked, REPLICAS, **kwargs)
        self.batched = make(base, self.stacked[:-1], seed=SEEDS, replicas=REPLICAS)
        self.gen = torch.Generator().manual_seed(7)

    def step(self) -> None:
        grads = [[torch.randn(s, generator=self.gen) for s in self.shapes] for _ in SEEDS]
        for opt, ps, gs in zip(self.separate, self.singles, grads, strict=True):
            for q, g in zip(ps, gs, strict=True):
                q.grad = g.clone()
            opt.step()
        for i, q in enumerate(self.stacked):
            q.grad = torch.stack([gs[i] for gs in grads])
        self.batched.step()

    def assert_close(self, tol: dict[str, float], where: str) -> None:
        """Parameters, base state, scores and own moments of replica r against twin r's."""
        for r, opt in enumerate(self.separate):
            for i, (q, twin) in enumerate(zip(self.stacked, self.singles[r], strict=True)):
                at = f"{where} replica {r} tensor {i}"
                close(q[r], twin, tol, at)
                state, expected = self.batched.state[q], opt.state[twin]
                assert state.keys() == expected.keys(), at
                for key, value in expected.items():
                    ours = state[key] if value.dim() == 0 else state[key][r]
                    close(ours, value, tol, f"{at} state[{key!r}]")
                if not isinstance(opt, magma.MaskedOptimizer):
                    continue
                for mine, theirs in (
                    (self.batched._scores, opt._scores),
                    (self.batched._own_moments, opt._own_moments),
                ):
                    assert (q in mine) is (twin in theirs), at
                    if twin in theirs:
                        close(mine[q][r], theirs[twin], tol, f"{at} score/own moment")


def masks_by_step(seen: list[tuple[Tensor, Tensor]], per_step: int) -> list[list[Tensor]]:
    assert len(seen) % per_step == 0
    return [[m for _, m in seen[t : t + per_step]] for t in range(0, len(seen), per_step)]


def run_twins(
    info: OptimizerInfo,
    kwargs: dict[str, Any],
    make: Callable[..., magma.MaskedOptimizer],
    granularity: str = "block",
) -> list[Tensor]:
    """STEPS steps side by side, comparing after each; returns every mask drawn."""
    tol = MUON_TOL if info.bf16_update else info.tol
    twins = Twins(info, kwargs, make)
    separate_seen = [record_masks(opt) for opt in twins.separate]
    batched_seen = record_masks(twins.batched)
    masked = len(twins.shapes) - 1
    drawn: list[Tensor] = []
    for t in range(STEPS):
        before = [q.detach().clone() for q in twins.stacked]
        twins.step()
        twins.assert_close(tol, f"step {t}")
        # the masks: replica r's equal twin r's, and a dropped block leaves its slice as it was
        ours = {id(q): m for q, m in batched_seen[-masked:]}
        for r, seen in enumerate(separate_seen):
            for i, (twin_param, theirs) in enumerate(seen[-masked:]):
                assert twin_param is twins.singles[r][i]
                mine = ours[id(twins.stacked[i])][r]
                assert torch.equal(mine, theirs), f"step {t} replica {r} tensor {i}: mask"
                drawn.append(mine)
                if granularity == "block" and not bool(mine):
                    assert torch.equal(twins.stacked[i][r], before[i][r]), f"step {t} r{r} i{i}"
        assert len(batched_seen) == masked * (t + 1)
    fused = bool(twins.batched.fused)  # the twins step eagerly: no fallback share to report
    for r, report in enumerate(twins.batched.replica_telemetry()):
        expected = twins.separate[r].telemetry()
        for label, entry in expected.items():
            assert report[label]["eager_fallback"] == (0.0 if fused else None)
            for key, value in entry.items():
                if key == "eager_fallback":
                    assert value is None
                    continue
                assert (report[label][key] is None) is (value is None)
                if value is not None:
                    assert report[label][key] == pytest.approx(value, rel=1e-5), (r, key)
    return drawn


def _mixed(masks: list[Tensor]) -> bool:
    flat = torch.cat([m.reshape(-1) for m in masks])
    return bool(flat.any()) and not bool(flat.all())


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", list(CONFIGS))
def test_replicas_match_separate_optimizers(case: str, variant: str, granularity: str) -> None:
    info, kwargs = CONFIGS[case]
    spec = VARIANTS[variant]
    drawn = run_twins(
        info,
        kwargs,
        lambda base, ps, **kw: wrap(spec, base, ps, granularity=granularity, **kw),
        granularity,
    )
    if VARIANTS[variant].get("sampling") == "none":
        assert all(bool(m.all()) for m in drawn)
    else:
        assert _mixed(drawn)


def test_telemetry_is_the_mean_over_replicas_and_one_read_resets_all() -> None:
    twins = Twins(
        INFOS["adamw"],
        {},
        lambda base, ps, **kw: Magma(base, params={"a": ps[:2], "b": ps[2:]}, **kw),
    )
    for _ in range(3):
        twins.step()
    reports = twins.batched.replica_telemetry(reset=False)
    mean = twins.batched.telemetry(reset=False)
    assert list(mean) == ["a", "b"]
    for label, entry in mean.items():
        for key, value in entry.items():
            per_replica = [report[label][key] for report in reports]
            if key == "eager_fallback":  # eager here: nothing compiled to fall back from
                assert value is None and per_replica == [None] * REPLICAS
                continue
            assert value == pytest.approx(sum(per_replica) / REPLICAS)
    assert len({report["a"]["survival"] for report in reports}) > 1  # replicas differ
    twins.batched.replica_telemetry()  # resets every replica's counts
    assert all(
        entry["survival"] is None and entry["alignment"] is not None
        for report in twins.batched.replica_telemetry()
        for entry in report.values()
    )
    assert twins.batched.telemetry()["a"]["survival"] is None


# --- the bases themselves over stacked parameters -------------------------------------------


@pytest.mark.parametrize("case", list(CONFIGS))
def test_base_over_stacked_params_is_separate_bases(case: str) -> None:
    """Dense: each base (C-AdamW told ``replicas``, Muon as magma.BatchedMuon) over the
    stack moves replica r as its own base moves model r."""
    info, kwargs = CONFIGS[case]
    twins = Twins(info, kwargs, lambda base, ps, **kw: base)
    for t in range(STEPS):
        twins.step()
        twins.assert_close(MUON_TOL if info.bf16_update else info.tol, f"step {t}")


def test_cautious_adamw_normalises_per_replica() -> None:
    """Replica 0 agrees in every coordinate, replica 1 in half: with replicas the caution
    rescales each by its own fraction (1 and 2), without by the stack's (4/3 for both)."""
    grad = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]])
    moved = {}
    for replicas in (None, 2):
        param = torch.zeros(2, 4, requires_grad=True)
        opt = magma.CAdamW(
            [param], lr=0.1, betas=(0.5, 0.0), eps=0.0, weight_decay=0.0, replicas=replicas
        )
        opt.state[param] = {
            "step": torch.tensor(0.0),
            "exp_avg": torch.tensor([[1.0] * 4, [3.0] * 4]),
            "exp_avg_sq": torch.zeros(2, 4),
        }
        param.grad = grad.clone()
        opt.step()
        moved[replicas] = param.detach()
    # m = (m0 + g) / 2 = [[1, 1, 1, 1], [2, 2, 1, 1]], u = m / (1 - 0.5) / |g| = 2m; the
    # caution keeps all of replica 0 and half of replica 1 (m g < 0 in its last two)
    u = torch.tensor([[2.0, 2.0, 2.0, 2.0], [4.0, 4.0, 2.0, 2.0]])
    agree = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    per_replica = torch.tensor([[1.0], [0.5]])
    torch.testing.assert_close(moved[2], -0.1 * u * agree / per_replica)
    torch.testing.assert_close(moved[None], -0.1 * u * agree / 0.75)


# --- seeds, validation, repr -------------------------------------------------------------------


def _stacked(shapes: list[tuple[int, ...]] = SHAPES) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn((REPLICAS, *s), generator=gen) for s in shapes]


@pytest.mark.parametrize("replicas", [0, -1, True, 2.5, "3"])
def test_replicas_must_be_a_positive_int(replicas: object) -> None:
    with pytest.raises(ValueError, match=r"replicas must be None or an int >= 1"):
        Magma(torch.optim.AdamW(_stacked()), replicas=replicas)


def test_every_masked_tensor_must_stack_the_replicas() -> None:
    params = [*_stacked(), torch.randn(2, 3)]
    with pytest.raises(ValueError, match=r"shape\[0\] == 3.*shape \(2, 3\)"):
        SkipUpdate(torch.optim.AdamW(params), replicas=REPLICAS)
    # ... an unmasked one need not
    SkipUpdate(torch.optim.AdamW(params), params=params[:-1], replicas=REPLICAS)


def test_tensors_added_later_must_stack_the_replicas() -> None:
    opt = Magma(torch.optim.AdamW(_stacked()), replicas=REPLICAS)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        opt.add_param_group({"params": [torch.zeros(4)]})


@pytest.mark.parametrize(
    "seed, replicas, match",
    [
        ([1, 2], 3, r"one int per replica \(3\)"),
        ([1, 2, 3.0], 3, r"one int per replica"),
        ([1, 2, True], 3, r"one int per replica"),
        ([1, 2, 3], None, r"a sequence of seeds needs replicas"),
        ("123", 3, r"seed must be an int, a sequence of ints or None"),
        (1.5, None, r"seed must be an int, a sequence of ints or None"),
    ],
)
def test_seed_must_fit_the_replicas(seed: object, replicas: int | None, match: str) -> None:
    params = _stacked()
    with pytest.raises(ValueError, match=match):
        Magma(torch.optim.AdamW(params), seed=seed, replicas=replicas)


def _host_masks(opt: magma.MaskedOptimizer, steps: int = 4) -> list[Any]:
    return [list(opt._draw_host_masks().values()) for _ in range(steps)]


def test_an_int_seed_gives_replica_r_seed_plus_r() -> None:
    params = _stacked()
    by_int = SkipUpdate(torch.optim.AdamW(params), seed=40, replicas=REPLICAS)
    by_list = SkipUpdate(torch.optim.AdamW(params), seed=[40, 41, 42], replicas=REPLICAS)
    assert by_int.seed == by_list.seed == (40, 41, 42)
    assert _host_masks(by_int) == _host_masks(by_list)


def test_no_seed_gives_replica_r_the_initial_seed_plus_r() -> None:
    opt = SkipUpdate(torch.optim.AdamW(_stacked()), replicas=REPLICAS)
    first = torch.initial_seed()
    assert opt.seed == (first, first + 1, first + 2)


def test_replicas_in_repr() -> None:
    opt = Magma(torch.optim.AdamW(_stacked()), seed=SEEDS, replicas=REPLICAS)
    assert "replicas=3" in repr(opt) and "(11, 4, 27)" in repr(opt)
    assert "replicas" not in repr(Magma(torch.optim.AdamW(_stacked()), seed=0))


def test_cadamw_must_be_told_the_wrappers_replicas() -> None:
    params = _stacked()
    with pytest.raises(ValueError, match=r"built with replicas=None"):
        Magma(magma.CAdamW(params), replicas=REPLICAS)
    with pytest.raises(ValueError, match=r"built with replicas=3"):
        Magma(magma.CAdamW(params, replicas=REPLICAS))
    with pytest.raises(ValueError, match=r"shape\[0\] == 2"):
        magma.CAdamW(params, replicas=2)
    with pytest.raises(ValueError, match=r"replicas must be None or an int >= 1"):
        magma.CAdamW(params, replicas=0)


def test_muon_replicas_need_batched_muon_and_matrix_stacks() -> None:
    matrices = _stacked([(4, 3)])
    with pytest.raises(ValueError, match=r"needs 3-D \(S, m, n\).*BatchedMuon"):
        Magma(torch.optim.Muon([q[0].clone() for q in matrices]), replicas=4)
    with pytest.raises(ValueError, match=r"BatchedMuon needs real \(m, n\) or \(S, m, n\)"):
        magma.BatchedMuon([torch.zeros(3)])
    Magma(magma.BatchedMuon(matrices), replicas=REPLICAS)


def test_batched_muon_on_a_matrix_is_torch_muon() -> None:
    """A 2-D parameter goes through torch's own Newton-Schulz; only the order of the
    decay and the update differs from torch.optim.Muon (float32 rounding)."""
    gen = torch.Generator().manual_seed(2)
    ours, theirs = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    theirs.copy_(ours)
    opts = [magma.BatchedMuon([ours], lr=0.02), torch.optim.Muon([theirs], lr=0.02)]
    for _ in range(3):
        g = torch.randn(5, 3, generator=gen)
        for q, opt in zip((ours, theirs), opts, strict=True):
            q.grad = g.clone()
            opt.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# --- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base, settings",
    [
        ("adamw", {"granularity": "block"}),
        ("laprop", {"granularity": "row", "sampling": "alignment"}),
    ],
)
def test_resumed_replicated_optimizer_continues_identically(base: str, settings: dict) -> None:
    """A run resumed from a replicated optimizer's state_dict (per-replica generators,
    stacked scores, own moments) is bitwise the uninterrupted run."""
    info = INFOS[base]
    params = _stacked()
    opt = Magma(info.build_replicated(params, REPLICAS), seed=SEEDS, replicas=REPLICAS, **settings)
    gen = torch.Generator().manual_seed(5)
    grads = [[torch.randn(q.shape, generator=gen) for q in params] for _ in range(6)]

    def steps(ps: list[Tensor], o: magma.MaskedOptimizer, gs: list[list[Tensor]]) -> None:
        for g in gs:
            for q, gi in zip(ps, g, strict=True):
                q.grad = gi.clone()
            o.step()

    steps(params, opt, grads[:3])
    checkpoint = copy.deepcopy(opt.state_dict())
    assert checkpoint["masking"]["replicas"] == REPLICAS
    assert len(checkpoint["masking"]["rng"]["cpu"]) == REPLICAS
    resumed_params = [q.clone() for q in params]
    resumed = Magma(
        info.build_replicated(resumed_params, REPLICAS), seed=0, replicas=REPLICAS, **settings
    )
    resumed.load_state_dict(checkpoint)
    steps(params, opt, grads[3:])
    steps(resumed_params, resumed, grads[3:])
    for q, r in zip(params, resumed_params, strict=True):
        assert torch.equal(q, r)
    for q, r in zip(params, resumed_params, strict=True):
        assert torch.equal(opt._scores[q], resumed._scores[r])
    alignments = [
        [report["masked"]["alignment"] for report in o.replica_telemetry()] for o in (opt, resumed)
    ]
    # (the mean over tensors is summed in the wrapper's order of its tensors: a set's)
    assert alignments[0] == pytest.approx(alignments[1], rel=1e-6)


def test_a_replicated_checkpoint_needs_the_same_replicas() -> None:
    params = _stacked()
    checkpoint = Magma(torch.optim.AdamW(params), seed=SEEDS, replicas=REPLICAS).state_dict()
    with pytest.raises(ValueError, match=r"replicas=3, this one has replicas=None"):
        Magma(torch.optim.AdamW(params), seed=0).load_state_dict(checkpoint)


# --- the fused (compiled) step ---------------------------------------------------------------


@pytest.mark.usefixtures("every_graph_compiled")
@pytest.mark.parametrize(
    "case, variant",
    [("adamw", "magma-uniform-damped"), ("c-adamw", "skip"), ("laprop", "magma-none-damped")],
)
def test_fused_replicas_match_separate_optimizers(case: str, variant: str) -> None:
    """fused=True over the stack against S separate eager optimizers: the same masks,
    parameters, moments and scores; every kernel compiled without a graph break."""
    counters = torch._dynamo.utils.counters
    counters.clear()
    info, kwargs = CONFIGS[case]
    spec = VARIANTS[variant]

    def make(base, ps, replicas=None, **kw):
        return wrap(spec, base, ps, fused=replicas is not None, replicas=replicas, **kw)

    drawn = run_twins(info, kwargs, make)
    assert _mixed(drawn) if spec.get("sampling") != "none" else all(bool(m) for m in drawn)
    assert counters["stats"]["unique_graphs"] > 0
    assert not counters["graph_break"], dict(counters["graph_break"])
