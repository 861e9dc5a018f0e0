"""Checkpointing: state_dict -> torch.save -> fresh objects -> load_state_dict resumes
bitwise identically, for every code path (rule-based bases, own first moments, the
device generator of non-block granularities, the generic path)."""

from __future__ import annotations

import functools

import pytest
import torch

import magma
from magma import Magma, SkipUpdate
from tests.models import TinyLlama, seeded, single_thread, train_step
from tests.optimizer_infos import GENERIC, INFOS, OPTIMIZERS


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with single_thread():
        yield


_adamw = INFOS["adamw"].build

#: case -> (the base, from tests/optimizer_infos.py; the wrapper around it)
CASES = {
    "magma-adamw-block": (
        _adamw,
        lambda base, model: Magma(base, params=magma.components(model), seed=7),
    ),
    "magma-rmsprop": (
        functools.partial(INFOS["rmsprop"].build, momentum=0.9),
        lambda base, model: Magma(base, seed=7),
    ),
    "skipupdate-sgd-momentum": (
        functools.partial(INFOS["sgd"].build, momentum=0.9),
        lambda base, model: SkipUpdate(base, seed=7),
    ),
    "magma-adamw-element": (
        _adamw,
        lambda base, model: Magma(base, granularity="element", seed=7),
    ),
    "magma-adamw-row-alignment-sampling": (
        _adamw,
        lambda base, model: Magma(base, granularity="row", sampling="alignment", seed=7),
    ),
    "magma-adagrad-generic": (
        GENERIC.build,
        lambda base, model: Magma(base, params=magma.components(model), seed=7),
    ),
}
# ... and every other base whose rule takes these tensors (Muon: 2-D only), at its defaults
CASES.update(
    {
        f"magma-{info.name}": (info.build, lambda base, model: Magma(base, seed=7))
        for info in OPTIMIZERS
        if not info.matrices_only and f"magma-{info.name}" not in CASES
    }
)

TOTAL, SPLIT = 8, 4


def _build(case: str, dtype: torch.dtype = torch.float32):
    make_base, make_wrapper = CASES[case]
    model = seeded(TinyLlama, n_layers=1).to(dtype)
    base = make_base(model.parameters())
    return model, base, make_wrapper(base, model)


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bitwise_identical(case, tmp_path):
    model_a, _, opt_a = _build(case)
    for step in range(TOTAL):
        train_step(model_a, opt_a, step)

    model_b, _, opt_b = _build(case)
    for step in range(SPLIT):
        train_step(model_b, opt_b, step)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model_b.state_dict(), "optim": opt_b.state_dict()}, path)
    at_split = _params(model_b)
    del model_b, opt_b

    model_c, _, opt_c = _build(case)
    checkpoint = torch.load(path)  # weights_only: the state dict holds only plain data
    model_c.load_state_dict(checkpoint["model"])
    opt_c.load_state_dict(checkpoint["optim"])
    for step in range(SPLIT, TOTAL):
        train_step(model_c, opt_c, step)

    final_a, final_c = _params(model_a), _params(model_c)
    for a, c in zip(final_a, final_c, strict=True):
        assert torch.equal(a, c)
    # the continuation really trained (the comparison above is not vacuous)
    assert any(not torch.equal(s, c) for s, c in zip(at_split, final_c, strict=True))


def test_masking_state_layout():
    def trained(case):
        model, _, opt = _build(case)
        for step in range(2):
            train_step(model, opt, step)
        return model, opt.state_dict()

    model, sd = trained("magma-adamw-block")
    masking = sd["masking"]
    n_masked = len(magma.components(model)["attention"]) + len(magma.components(model)["mlp"])
    assert masking["first_moments"] == {}  # AdamW's exp_avg is reused
    assert len(masking["scores"]) == n_masked
    assert masking["rng"]["devices"] == {}  # block masks come from the host generator

    model, sd = trained("magma-rmsprop")
    n_params = len(list(model.parameters()))
    assert len(sd["masking"]["first_moments"]) == n_params  # RMSprop keeps no EMA of g
    assert len(sd["masking"]["scores"]) == n_params

    _, sd = trained("magma-adamw-element")
    assert list(sd["masking"]["rng"]["devices"]) == ["cpu"]

    _, sd = trained("magma-adagrad-generic")
    assert len(sd["masking"]["first_moments"]) == n_masked

    _, sd = trained("skipupdate-sgd-momentum")
    assert sd["masking"]["scores"] == {} and sd["masking"]["first_moments"] == {}


def test_resume_without_masking_state_diverges():
    # Sensitivity check for the resume test: restoring only the model and the base optimizer
    # (a fresh wrapper restarts its mask generator) gives different parameters.
    case = "magma-adamw-block"
    model_a, _, opt_a = _build(case)
    for step in range(TOTAL):
        train_step(model_a, opt_a, step)
    model_b, _, opt_b = _build(case)
    for step in range(SPLIT):
        train_step(model_b, opt_b, step)
    model_c, base_c, opt_c = _build(case)
    model_c.load_state_dict(model_b.state_dict())
    base_c.load_state_dict(opt_b.state_dict()["base"])
    for step in range(SPLIT, TOTAL):
        train_step(model_c, opt_c, step)
    assert any(
        not torch.equal(a, c)
        for a, c in zip(model_a.parameters(), model_c.parameters(), strict=True)
    )


def test_base_part_loads_into_the_plain_base():
    model, base, opt = _build("magma-adamw-block")
    for step in range(3):
        train_step(model, opt, step)
    plain = _adamw(model.parameters())
    plain.load_state_dict(opt.state_dict()["base"])
    for q in model.parameters():
        assert plain.state[q].keys() == base.state[q].keys()
        for key, value in base.state[q].items():
            assert torch.equal(plain.state[q][key], value)


def test_load_casts_to_parameter_dtype(tmp_path):
    model, _, opt = _build("magma-rmsprop")
    for step in range(3):
        train_step(model, opt, step)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    saved = torch.load(path)
    assert all(
        m.dtype == torch.float32 for m in saved["optim"]["masking"]["first_moments"].values()
    )

    model64, base64, opt64 = _build("magma-rmsprop", dtype=torch.float64)
    model64.load_state_dict(saved["model"])
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    opt64.load_state_dict(saved["optim"])
    masking = opt64.state_dict()["masking"]
    assert len(masking["first_moments"]) == len(list(model64.parameters()))
    assert all(m.dtype == torch.float64 for m in masking["first_moments"].values())
    assert all(s.dtype == torch.float32 for s in masking["scores"].values())
    # the restored values are the saved ones, only widened
    for i, m in masking["first_moments"].items():
        assert torch.equal(m, saved["optim"]["masking"]["first_moments"][i].double())
    for q in model64.parameters():
        assert base64.state[q]["square_avg"].dtype == torch.float64
    # and training continues in float64
    before = _params(model64)
    for step in range(3, 6):
        assert torch.isfinite(train_step(model64, opt64, step))
    assert all(p.dtype == torch.float64 for p in model64.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model64.parameters(), strict=True))
    masking = opt64.state_dict()["masking"]
    assert all(m.dtype == torch.float64 for m in masking["first_moments"].values())
    assert all(s.dtype == torch.float32 for s in masking["scores"].values())


@pytest.mark.parametrize(
    "bad",
    [
        "base-only",
        "missing-masking",
        "list",
        "none",
    ],
)
def test_foreign_state_dict_rejected(bad):
    model, base, opt = _build("magma-adamw-block")
    train_step(model, opt, 0)
    state_dict = {
        "base-only": base.state_dict(),
        "missing-masking": {"base": base.state_dict()},
        "list": [base.state_dict()],
        "none": None,
    }[bad]
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict(state_dict)
