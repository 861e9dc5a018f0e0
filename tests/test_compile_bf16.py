"""``precision: bf16`` (autocast) and ``compile: true`` run on CPU: they train, resume
bitwise, and a blown-up bf16 run is recorded as diverged.

llama-nano at CPU test scale (4 x 64 tokens, a handful of steps): under bf16 autocast
its matmuls run in bf16 on CPU too, so the loss path differs from fp32 but is just as
deterministic, and a resumed run must match an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from tests.worker_fixtures import (
    UNIFORM_LOSS,
    Recorder,
    assert_same_checkpoint,
    deterministic,
    llama_config,
    load_checkpoint,
)
from worker.config import TrialConfig
from worker.trainer import CHECKPOINT_FILE, train
from worker.workloads import build_workload

STEPS = 8
LR = 1e-2


def _mlp_output_dtype(config: TrialConfig) -> torch.dtype:
    """The dtype a Linear layer computes in during a training loss: autocast's evidence."""
    workload = build_workload(config, torch.device("cpu"))
    seen: list[torch.dtype] = []
    layer = workload.model.model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    loss = workload.loss(workload.batch(0, 0))
    handle.remove()
    assert loss.dtype == torch.float32  # HF upcasts the logits for the loss
    return seen[0]


def test_bf16_autocasts_on_cpu_and_auto_does_not(token_cache_dir):
    assert _mlp_output_dtype(llama_config(token_cache_dir, precision="bf16")) == torch.bfloat16
    assert _mlp_output_dtype(llama_config(token_cache_dir, precision="auto")) == torch.float32
    assert _mlp_output_dtype(llama_config(token_cache_dir, precision="fp32")) == torch.float32


@pytest.mark.parametrize(
    ("precision", "cpu", "cuda"),
    [("auto", False, True), ("bf16", True, True), ("fp32", False, False)],
)
def test_precision_rule(precision, cpu, cuda):
    config = TrialConfig(precision=precision)
    assert (config.bf16("cpu"), config.bf16("cuda")) == (cpu, cuda)


def test_bf16_trains_and_resumes_bitwise(token_cache_dir, tmp_path):
    config = llama_config(
        token_cache_dir, precision="bf16", lr=LR, steps=STEPS, eval_interval=STEPS // 2
    )
    uninterrupted = Recorder(tmp_path / "a")
    final = uninterrupted.run(config)
    assert final["status"] == "complete" and final["step"] == STEPS
    # bf16 keeps ~3 significant digits, enough to see an untrained model guess uniformly
    assert abs(uninterrupted.losses[0] - UNIFORM_LOSS) < 0.1
    first, last = uninterrupted.reports
    assert last["val_loss"] < first["val_loss"] < UNIFORM_LOSS - 0.05, (first, last)
    assert uninterrupted.losses[-1] < uninterrupted.losses[0] - 0.3, uninterrupted.losses

    resumed = Recorder(tmp_path / "b")
    resumed_final = resumed.run(config, resume_from=uninterrupted.checkpoint(STEPS // 2))
    assert resumed.losses == uninterrupted.losses[STEPS // 2 :]
    assert deterministic(resumed_final) == deterministic(final)
    assert_same_checkpoint(
        load_checkpoint(uninterrupted.checkpoint(STEPS)), load_checkpoint(resumed.checkpoint(STEPS))
    )


def test_bf16_divergence_is_recorded_not_raised(token_cache_dir):
    """AdamW at lr 10 blows llama-nano up within a few steps, in bf16 as in fp32."""
    config = llama_config(
        token_cache_dir,
        precision="bf16",
        variant="dense",
        lr=10.0,
        steps=8,
        eval_interval=4,
        warmup_fraction=0.0,
    )
    recorder = Recorder()
    final = recorder.run(config)  # must not raise
    assert final["status"] == "diverged"
    assert final["step"] < config.steps and len(recorder.reports) == 1
    assert final["objective"] > 1e6 or final["objective"] == math.inf


def test_bf16_is_for_llama_only():
    with pytest.raises(ValidationError, match="precision: 'bf16' applies to workload 'llama-c4'"):
        TrialConfig(workload="quadratic", precision="bf16")
    assert TrialConfig(workload="quadratic", precision="fp32").precision == "fp32"


def test_configs_and_checkpoints_from_before_precision_still_load(tmp_path):
    """Stored trial configs and checkpoints say ``bf16: true|false`` and have no
    ``model_sha256``: true meant bf16 on CUDA only, which is ``auto``."""
    assert TrialConfig(bf16=True).precision == "auto"
    assert TrialConfig(bf16=False).precision == "fp32"
    with pytest.raises(ValidationError, match="bf16: must be true or false"):
        TrialConfig(bf16="yes")

    config = TrialConfig(workload="quadratic", variant="magma", lr=0.1, steps=20, eval_interval=10)
    first = Recorder(tmp_path / "a")
    final = first.run(config)
    path = first.checkpoint(10) / CHECKPOINT_FILE
    payload = torch.load(path, weights_only=False)
    legacy = dict(payload["config"])
    del legacy["precision"], legacy["model_sha256"]
    payload["config"] = {**legacy, "bf16": True}
    torch.save(payload, path)
    assert deterministic(train(config, resume_from=path.parent)) == deterministic(final)


#: A resumed compiled trial's weights and moments against the uninterrupted one's. Inductor's
#: CPU embedding backward accumulates gradient rows in parallel, so float sums land in a
#: different order run to run: the embedding differed by up to 1.9e-9 after 4 steps
#: (measured), while every loss and metric stayed bitwise equal.
COMPILED_STATE_ATOL = 1e-6


@pytest.mark.slow
def test_compile_trains_and_resumes_bitwise(token_cache_dir, tmp_path):
    """``compile: true`` (inductor, C++ on CPU). Measured on the 2-core CPU: ~60-160 s, nearly
    all of it compiling the train and eval graphs, hence ``slow``.

    A resumed compiled trial runs the same kernels on the same state, so its losses and
    metrics must match the uninterrupted compiled trial's bitwise, and its state within
    ``COMPILED_STATE_ATOL``. Against eager, inductor fuses and reorders float
    sums, so the two agree only to rounding: within 1e-4 in loss here (measured: ~1e-6).
    """
    steps = 4
    config = llama_config(
        token_cache_dir, compile=True, lr=LR, steps=steps, eval_interval=steps // 2
    )
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = Recorder(tmp_path / "compiled")
    final = compiled.run(config)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the model
    assert final["status"] == "complete" and final["step"] == steps
    assert compiled.losses[-1] < compiled.losses[0]
    assert compiled.reports[1]["val_loss"] < compiled.reports[0]["val_loss"]

    eager = Recorder()
    eager_final = eager.run(config.model_copy(update={"compile": False}))
    assert compiled.losses == pytest.approx(eager.losses, abs=1e-4)
    assert final["val_loss"] == pytest.approx(eager_final["val_loss"], abs=1e-4)

    resumed = Recorder(tmp_path / "resumed")
    resumed_final = resumed.run(config, resume_from=compiled.checkpoint(steps // 2))
    assert resumed.losses == compiled.losses[steps // 2 :]
    assert deterministic(resumed_final) == deterministic(final)
    assert_same_checkpoint(
        load_checkpoint(compiled.checkpoint(steps)),
        load_checkpoint(resumed.checkpoint(steps)),
        atol=COMPILED_STATE_ATOL,
    )
