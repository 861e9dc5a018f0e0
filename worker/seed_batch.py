"""Many seeds of one configuration in one process, trained as one batched model.

``train_seeds(configs)`` runs the configs (one per seed, equal but for ``seed`` and
``mask_seed``) as ``worker.trainer.train`` would run each, step for step: every seed
keeps its own initialisation, data order, masks and metrics (the trainer's own
``Progression`` and ``metrics_row``), but one vmapped forward/backward and one optimizer
step serve them all (``worker.workloads.stacked``; ``worker.optimizers`` with
``replicas``). A small model's step costs about as much for hundreds of seeds as for
one, so the harness cost of a trial is paid once per batch.

Per seed, as in ``train``: gradient clipping (the global norm over that seed's tensors),
divergence (a non-finite loss, or a held-out loss above ``divergence_factor`` x its
start), the LR schedule, the evaluations. A diverged seed is reported once, with status
diverged, and then no more; its slice keeps being stepped (cheaper than compacting the
stack), but nothing reduces across slices, so its NaNs reach no other seed.

A seed whose loss stops being finite between evaluation points is evaluated at that
step, like the single run, and its row is reported at the next report (or at once, when
no seed is left running).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from worker.config import TrialConfig
from worker.contract import STATUS_KEY, TrialStatus
from worker.optimizers import build_optimizers, replica_telemetry
from worker.trainer import (
    Metrics,
    Progress,
    Progression,
    SaveCheckpoint,
    build_schedulers,
    check_resumable,
    evaluation_due,
    held_out_diverged,
    metrics_row,
    resolve_device,
    restore_checkpoint,
    step_optimizers,
    write_checkpoint,
)
from worker.workloads import build_workload
from worker.workloads.stacked import StackedWorkloads

SEED_BATCH_CHECKPOINT_FILE = "seed_batch.pt"
#: the fields a batch's configs may differ in: each seed's own
PER_SEED_FIELDS = ("seed", "mask_seed")

#: ``report(rows, save)``: ``rows[r]`` is seed r's metrics row at this evaluation point,
#: None once it has stopped; ``save(directory)`` checkpoints the whole batch
BatchReporter = Callable[[list[Metrics | None], SaveCheckpoint], None]


def check_batch(configs: Sequence[TrialConfig]) -> TrialConfig:
    """The configs' shared settings (the first config); ValueError if they are empty or
    differ in any field but ``PER_SEED_FIELDS``, naming those fields."""
    if not configs:
        raise ValueError("configs is empty: a seed batch needs at least one config")
    dumps = [c.model_dump(mode="json") for c in configs]
    differing = sorted(
        key
        for key in dumps[0]
        if key not in PER_SEED_FIELDS and any(d[key] != dumps[0][key] for d in dumps[1:])
    )
    if differing:
        raise ValueError(
            f"configs of a seed batch may differ only in {list(PER_SEED_FIELDS)}; they "
            f"differ in {differing}"
        )
    return configs[0]


def clip_per_replica(tensors: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` for each replica (dim 0) of stacked tensors: every seed's
    gradients scaled by its own global norm, as its single run would scale them."""
    grads = [t.grad for t in tensors if t.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)  # (S,)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(coef.shape + (1,) * (g.dim() - 1)))


def train_seeds(
    configs: Sequence[TrialConfig],
    *,
    resume_from: Path | None = None,
    report: BatchReporter | None = None,
    progress: Progress | None = None,
) -> list[Metrics]:
    """Train the configs' seeds as one batch; each seed's last metrics row, in order.

    ``progress(step, loss)`` gets the mean training loss of the seeds still running."""
    config = check_batch(configs)
    replicas = len(configs)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config)
    stack = StackedWorkloads([build_workload(c, device) for c in configs])
    optimizers = build_optimizers(
        config,
        stack.trainable(),
        stack.masked_params(),
        replicas=replicas,
        mask_seeds=[c.mask_seed for c in configs],
    )
    schedulers = build_schedulers(config, optimizers)
    states = [Progression() for _ in configs]
    step = 0
    if resume_from is not None:
        step, states = _load(
            resume_from / SEED_BATCH_CHECKPOINT_FILE, configs, stack, optimizers, schedulers
        )
    if config.compile:
        stack.compile()
    trainable = stack.trainable()

    def save(directory: Path) -> None:
        _save(
            directory / SEED_BATCH_CHECKPOINT_FILE,
            configs,
            stack,
            optimizers,
            schedulers,
            step,
            states,
        )

    for r, state in enumerate(states):
        if state.initial_loss is None:  # the held-out loss before training (``train``)
            state.initial_loss = stack.evaluate(r)["val_loss"]
    running = [state.last_metrics.get(STATUS_KEY) != TrialStatus.diverged.value for state in states]
    pending: list[Metrics | None] = [None] * replicas  # rows of seeds diverged off a report
    for workload in stack.workloads:
        workload.model.train()
    while step < config.steps and any(running):
        started = time.perf_counter()
        losses = torch.zeros(replicas, device=device)
        tokens = [0] * replicas
        for micro_step in range(config.grad_accum):
            batch, own = stack.batch(step, micro_step)
            micro_losses = stack.loss(batch) / config.grad_accum
            micro_losses.sum().backward()  # each replica gets its own loss's gradient
            losses += micro_losses.detach()
            tokens = [n + w.tokens(b) for n, w, b in zip(tokens, stack.workloads, own, strict=True)]
        if config.grad_clip is not None:
            clip_per_replica(trainable, config.grad_clip)
        step_optimizers(optimizers, schedulers)
        step_losses = losses.tolist()  # the one host sync per step
        step += 1
        seconds = time.perf_counter() - started
        blown = [
            r
            for r in range(replicas)
            if running[r] and states[r].record_step(config, step_losses[r], seconds, tokens[r])
        ]
        if progress is not None:
            alive = [step_losses[r] for r in range(replicas) if running[r]]
            progress(step, sum(alive) / len(alive))
        if blown:  # evaluated now, like a single run; reported with the next rows
            telemetry = replica_telemetry(optimizers, replicas, reset=False)
            for r in blown:
                pending[r] = metrics_row(
                    config, states[r], stack.evaluate(r), optimizers[0], telemetry[r], True
                )
                running[r] = False
        if evaluation_due(config, step) or not any(running):
            telemetry = replica_telemetry(optimizers, replicas)
            rows = pending
            for r in range(replicas):
                if running[r]:
                    evaluation = stack.evaluate(r)
                    diverged = held_out_diverged(config, states[r], evaluation)
                    rows[r] = metrics_row(
                        config, states[r], evaluation, optimizers[0], telemetry[r], diverged
                    )
                    running[r] = not diverged
            pending = [None] * replicas
            if report is not None:
                report(rows, save)
    return [state.last_metrics for state in states]


def _save(
    path: Path,
    configs: Sequence[TrialConfig],
    stack: StackedWorkloads,
    optimizers: list,
    schedulers: list,
    step: int,
    states: list[Progression],
) -> None:
    payload = {
        "configs": [c.model_dump(mode="json") for c in configs],
        "stack": stack.state_dict(),
        "step": step,
        "progressions": [asdict(state) for state in states],
    }
    write_checkpoint(path, payload, optimizers, schedulers)


def _load(
    path: Path,
    configs: Sequence[TrialConfig],
    stack: StackedWorkloads,
    optimizers: list,
    schedulers: list,
) -> tuple[int, list[Progression]]:
    """(the batch's step, each seed's progression), with everything else restored."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if len(payload["configs"]) != len(configs):
        raise ValueError(
            f"checkpoint {path} holds {len(payload['configs'])} seeds, not {len(configs)}; "
            "resume with the same configs or start a new checkpoint directory"
        )
    for saved, config in zip(payload["configs"], configs, strict=True):
        check_resumable(path, saved, config)
    stack.load_state_dict(payload["stack"])
    restore_checkpoint(payload, optimizers, schedulers)
    return payload["step"], [Progression(**p) for p in payload["progressions"]]
