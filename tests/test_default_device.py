"""Host draws and host state stay on the host under ``torch.set_default_device``.

A CPU generator draws on the CPU only: ``torch.randperm(n, generator=g)`` under
``torch.set_default_device("cuda")`` raises, and a state tensor made without ``device=``
lands on the default device. CUDA cannot run here, so the default device in these tests
is "meta", which breaks the same code the same way; each case must give exactly the
values it gives without a default device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

import magma
from worker.config import TrialConfig
from worker.data.batches import TrainOrder
from worker.workloads import build_workload
from worker.workloads.linear_transformer import LinearTransformer
from worker.workloads.quadratic import random_rotation


def _under_meta_default(make: Callable[[], object]) -> object:
    torch.set_default_device("meta")
    try:
        return make()
    finally:
        torch.set_default_device(None)


@pytest.fixture(autouse=True)
def _default_device_restored() -> Iterator[None]:
    yield
    torch.set_default_device(None)
    assert torch.empty(0).device.type == "cpu"


def _assert_same_tensors(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        assert a.device.type == "cpu"
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_train_order_permutation() -> None:
    expected = TrainOrder(1000, seed=3).rows(990, 20)  # crosses into the second epoch
    got = _under_meta_default(lambda: TrainOrder(1000, seed=3).rows(990, 20))
    assert sorted(expected[:10]) == sorted(set(expected[:10]))  # distinct rows, an epoch's
    assert (got == expected).all()


def _laprop_run() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.randn(4, 3, generator=generator, device="cpu").requires_grad_(),
        torch.randn(5, generator=generator, device="cpu").requires_grad_(),
    ]
    optimizer = magma.LaProp(params, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, device="cpu")
        optimizer.step()
    steps = [optimizer.state[p]["step"] for p in params]
    return [p.detach() for p in params] + steps


def test_laprop_step_counter_on_the_host() -> None:
    expected = _laprop_run()
    got = _under_meta_default(_laprop_run)
    _assert_same_tensors(got, expected)
    assert [float(step) for step in got[2:]] == [3.0, 3.0]


def test_linear_transformer_init() -> None:
    expected = list(LinearTransformer(seed=5).parameters())
    got = list(_under_meta_default(lambda: LinearTransformer(seed=5)).parameters())
    _assert_same_tensors([p.detach() for p in got], [p.detach() for p in expected])


def test_quadratic_instance_and_batches() -> None:
    config = TrialConfig(workload="quadratic", batch_size=3, seed=2)

    def build() -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(7)
        workload = build_workload(config, torch.device("cpu"))
        model = workload.model
        return [
            random_rotation(3, generator),
            *(p.detach() for p in model.parameters()),
            model.hessian,
            model.design,
            workload.batch(4, 0),
            workload.batch(5, 1),
        ]

    expected = build()
    _assert_same_tensors(_under_meta_default(build), expected)


def test_host_mask_draws() -> None:
    """SkipUpdate's block masks are drawn on the host from its CPU generators, with or
    without replicas: the same draws under a meta default device."""

    def draws(replicas: int | None) -> list[torch.Tensor]:
        shape = (3, 4, 2) if replicas else (4, 2)
        params = [torch.zeros(shape, device="cpu") for _ in range(6)]
        opt = magma.SkipUpdate(torch.optim.SGD(params, lr=0.1), seed=5, replicas=replicas)
        return [torch.tensor(list(opt._draw_host_masks().values()), device="cpu") for _ in range(3)]

    for replicas in (None, 3):
        _assert_same_tensors(_under_meta_default(lambda r=replicas: draws(r)), draws(replicas))
