"""The tests' optimizer registry (tests/optimizer_infos.py) against the library and the
worker: the bases are the worker's, each class is the one its name resolves to, each has a
magma rule, and what an entry says of its fused step and first moment is what the wrapper
does."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor

import magma
from magma import Magma
from magma.bases import FUSED_BASES
from magma.rules import rule_for
from tests.optimizer_infos import FUSED, GENERIC, INFOS, OPTIMIZERS, OptimizerInfo, info_for
from worker.contract import FUSED_STEP_BASES, Base

#: (entry, configuration) for every configuration of every entry, by test id
CONFIGS = {
    info.config_id(config): (info, dict(config.kwargs))
    for info in INFOS.values()
    for config in info.configs()
}


def _tensors(info: OptimizerInfo) -> list[Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (6, 4)] if info.matrices_only else [(4, 3), (5,), (3, 2, 2)]
    return [torch.randn(s, generator=gen) for s in shapes]


def test_one_entry_per_base_in_the_workers_order() -> None:
    assert [info.base for info in OPTIMIZERS] == list(Base)
    assert GENERIC.base is None and GENERIC.name not in Base.values()
    assert list(INFOS) == [*Base.values(), GENERIC.name]


def test_the_fused_bases_are_the_librarys() -> None:
    assert sorted(info.library_name for info in FUSED) == sorted(FUSED_BASES)
    assert [info.base for info in FUSED] == list(FUSED_STEP_BASES)


@pytest.mark.parametrize("name", list(INFOS))
def test_each_name_resolves_to_its_class(name: str) -> None:
    info = INFOS[name]
    module, attribute = info.library_name.rsplit(".", 1)
    assert module in ("torch.optim", "magma")
    assert info.optim_cls is getattr(sys.modules[module], attribute)
    assert info.optim_cls.__name__ == attribute
    assert info_for(info.build(_tensors(info))) is (None if info is GENERIC else info)


@pytest.mark.parametrize("case", list(CONFIGS))
def test_rule_and_fused_step_agree_with_the_library(case: str) -> None:
    """Every configuration of a base has a rule (the generic path's none), and the kernels
    take it exactly where its entry says."""
    info, kwargs = CONFIGS[case]
    base = info.build(_tensors(info), **kwargs)
    group = base.param_groups[0]
    assert (rule_for(base, group) is None) is (info is GENERIC)
    assert magma.fused.supports(base, group) is info.fused


@pytest.mark.parametrize("case", list(CONFIGS))
def test_first_moment_is_what_the_wrapper_scores_with(case: str) -> None:
    """Where the entry names a state entry as mu, Magma reuses it (and keeps none of its
    own); elsewhere it keeps its own EMA of g for every masked tensor."""
    info, kwargs = CONFIGS[case]
    params = _tensors(info)
    base = info.build(params, **kwargs)
    opt = Magma(base, seed=0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        for q in params:
            q.grad = torch.randn(q.shape, generator=gen)
        opt.step()
    key = info.moment_key(base.param_groups[0])
    own = opt.state_dict()["masking"]["first_moments"]
    if key is None:
        assert len(own) == len(params)
    else:
        assert own == {}
        assert all(key in base.state[q] for q in params)
