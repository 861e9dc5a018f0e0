"""The training loop every trial runs, whatever the workload.

    for step in range(start, steps):
        loss = sum(workload.loss(workload.batch(step, k)) / accum for k in range(accum))
        loss.backward(); clip; optimizer.step(); scheduler.step(); zero_grad()
        stop early if the loss is not finite, or the held-out loss far above its start
        add log(loss) to a running sum; note the first step with loss <= the target
        every eval_interval steps: evaluate, report metrics with a checkpoint

Batches depend only on (seed, step), so a checkpoint is model + optimizer + scheduler
state + the step, and a resumed trial is bitwise identical to an uninterrupted one.

Two metrics measure convergence speed rather than the end point, from every step's
training loss (the mean over its micro-batches, the value ``progress`` is given):

- ``log_loss_auc``: the mean of log(loss) over steps 1..step, i.e. the area under the
  log-loss curve divided by the steps. A loss at or below ``LOSS_FLOOR`` (0 included)
  counts as ``LOSS_FLOOR``; a non-finite loss (inf, NaN) counts as +inf, so a run that
  blew up reports +inf, as its objective would be (a run stopped by the held-out check
  with finite losses reports its finite mean, like its other metrics; its status says
  diverged).
- ``steps_to_target``: the first step whose loss is at most ``target_loss_fraction`` x
  the held-out loss before training (the reference of the divergence check), or
  ``steps + 1`` while no step has reached it: worse than any step that did, under "min".
  One step's loss decides, so on a stochastic workload a lucky batch counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from worker.config import TrialConfig
from worker.contract import OBJECTIVE_KEY, STATUS_KEY, TrialStatus
from worker.optimizers import build_optimizers, telemetry
from worker.schedule import lr_factor
from worker.workloads import build_workload

CHECKPOINT_FILE = "trial.pt"
#: fields a resumed trial may change: where and how fast it runs, and how long
RESUMABLE_CHANGES = {"device", "threads", "compile", "cache_dir", "steps", "eval_interval"}

Metrics = dict[str, Any]
SaveCheckpoint = Callable[[Path], None]
Reporter = Callable[[Metrics, SaveCheckpoint], None]
Progress = Callable[[int, float], None]

#: the smallest loss ``log_loss_auc`` takes the log of: a loss at or below it (0 included)
#: counts as this, so the metric stays finite
LOSS_FLOOR = 1e-30


@dataclass
class Progression:
    """Loop state beyond model and optimizer: what a checkpoint must carry."""

    step: int = 0
    tokens: int = 0
    initial_loss: float | None = None
    elapsed: float = 0.0
    window_loss: float = 0.0
    window_steps: int = 0
    window_tokens: int = 0
    window_time: float = 0.0
    log_loss_sum: float = 0.0  # log_loss_auc's numerator
    target_step: int | None = None  # steps_to_target, once reached
    last_metrics: Metrics = field(default_factory=dict)
    recent: list[float] = field(default_factory=list)  # the objective window's metric values

    def record_step(self, config: TrialConfig, loss: float, seconds: float, tokens: int) -> bool:
        """Count one optimizer step whose training loss was ``loss``; True if it is not
        finite (the run diverged)."""
        self.step += 1
        self.window_time += seconds
        self.window_tokens += tokens
        self.window_loss += loss
        self.window_steps += 1
        diverged = not math.isfinite(loss)
        self.log_loss_sum += math.inf if diverged else math.log(max(loss, LOSS_FLOOR))
        target_loss = config.target_loss_fraction * self.initial_loss  # steps_to_target's
        if self.target_step is None and loss <= target_loss:
            self.target_step = self.step
        return diverged


def evaluation_due(config: TrialConfig, step: int) -> bool:
    """Whether ``step`` (counted from 1) ends with an evaluation and a report."""
    return step % config.eval_interval == 0 or step == config.steps


def resolve_device(config: TrialConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA device is available")
    return torch.device(config.device)


def build_schedulers(config: TrialConfig, optimizers: list[Optimizer]) -> list[LambdaLR]:
    """Warmup then cosine decay (``worker.schedule``), one scheduler per optimizer."""
    factor = partial(
        lr_factor,
        total_steps=config.steps,
        warmup_fraction=config.warmup_fraction,
        min_ratio=config.min_lr_ratio,
    )
    return [LambdaLR(opt, factor) for opt in optimizers]


def step_optimizers(optimizers: list[Optimizer], schedulers: list[LambdaLR]) -> None:
    """One optimizer step of every base, then its LR schedule, then fresh gradients."""
    for opt in optimizers:
        opt.step()
    for scheduler in schedulers:
        scheduler.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)


def train(
    config: TrialConfig,
    *,
    resume_from: Path | None = None,
    report: Reporter | None = None,
    progress: Progress | None = None,
) -> Metrics:
    """Run one trial; returns the last metrics, with ``status`` complete or diverged."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config)
    workload = build_workload(config, device)
    model = workload.model
    optimizers = build_optimizers(config, model, workload.masked_params())
    schedulers = build_schedulers(config, optimizers)
    state = Progression()
    if resume_from is not None:
        state = _load(resume_from / CHECKPOINT_FILE, config, model, optimizers, schedulers)
    if config.compile:
        model.compile()
    params = [p for p in model.parameters() if p.requires_grad]

    def save(directory: Path) -> None:
        _save(directory / CHECKPOINT_FILE, config, model, optimizers, schedulers, state)

    if state.initial_loss is None:
        # The held-out loss before training: what a diverging run is judged against
        # (per-step train losses of the stochastic workloads are too noisy for it).
        state.initial_loss = workload.evaluate()["val_loss"]
    metrics: Metrics = state.last_metrics  # a finished trial resumed: its final metrics
    model.train()
    while state.step < config.steps:
        started = time.perf_counter()
        loss = torch.zeros((), device=device)
        tokens = 0
        for micro_step in range(config.grad_accum):
            batch = workload.batch(state.step, micro_step)
            micro_loss = workload.loss(batch) / config.grad_accum
            micro_loss.backward()
            loss += micro_loss.detach()
            tokens += workload.tokens(batch)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        step_optimizers(optimizers, schedulers)
        step_loss = float(loss)  # the one host sync per step: divergence needs it
        diverged = state.record_step(config, step_loss, time.perf_counter() - started, tokens)
        if progress is not None:
            progress(state.step, step_loss)
        if diverged or evaluation_due(config, state.step):
            evaluation = workload.evaluate()
            diverged = diverged or held_out_diverged(config, state, evaluation)
            metrics = metrics_row(
                config, state, evaluation, optimizers[0], telemetry(optimizers), diverged
            )
            if report is not None:
                report(metrics, save)
            if diverged:
                break
    return metrics


def held_out_diverged(config: TrialConfig, state: Progression, evaluation: Metrics) -> bool:
    """The held-out check: a validation loss far above the one before training."""
    return not evaluation["val_loss"] < config.divergence_factor * state.initial_loss


def metrics_row(
    config: TrialConfig,
    state: Progression,
    evaluation: Metrics,
    optimizer: Optimizer,
    optimizer_telemetry: dict[str, float],
    diverged: bool,
) -> Metrics:
    """The row an evaluation reports; closes the window of steps since the last one and
    keeps the row as ``state.last_metrics``. ``optimizer`` gives the LR."""
    state.tokens += state.window_tokens
    state.elapsed += state.window_time
    done = diverged or state.step >= config.steps
    status = (
        TrialStatus.diverged if diverged else TrialStatus.complete if done else TrialStatus.running
    )
    metrics: Metrics = {
        "step": state.step,
        "tokens": state.tokens,
        "train_loss": state.window_loss / max(state.window_steps, 1),
        **evaluation,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "tokens_per_s": state.window_tokens / state.window_time if state.window_time else 0.0,
        "steps_per_s": state.window_steps / state.window_time if state.window_time else 0.0,
        "train_time": state.elapsed,
        "log_loss_auc": state.log_loss_sum / state.step,
        "steps_to_target": config.steps + 1 if state.target_step is None else state.target_step,
        STATUS_KEY: status.value,
        **optimizer_telemetry,
    }
    # The config's metric under one fixed key: Tune, ASHA and SQL all read OBJECTIVE_KEY,
    # here the mean over the last ``objective_window`` evaluations.
    state.recent = [*state.recent, float(metrics[config.metric])][-config.objective_window :]
    objective = sum(state.recent) / len(state.recent)
    metrics[OBJECTIVE_KEY] = math.inf if diverged and not math.isfinite(objective) else objective
    state.window_loss, state.window_steps = 0.0, 0
    state.window_tokens, state.window_time = 0, 0.0
    state.last_metrics = metrics
    return metrics


def _save(path: Path, config, model, optimizers, schedulers, state: Progression) -> None:
    write_checkpoint(
        path,
        {
            "config": config.model_dump(mode="json"),
            "model": model.state_dict(),
            "progression": asdict(state),
        },
        optimizers,
        schedulers,
    )


def write_checkpoint(path: Path, payload: dict[str, Any], optimizers, schedulers) -> None:
    """``payload`` plus the optimizers', schedulers' and torch RNG's state, written to a
    temporary file first so that a killed process never leaves a torn checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "optimizers": [opt.state_dict() for opt in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def check_resumable(path: Path, saved: dict[str, Any], config: TrialConfig) -> None:
    """ValueError naming the fields ``config`` changed, beyond ``RESUMABLE_CHANGES``, from
    ``saved``, the config a checkpoint at ``path`` was made with."""
    # Read through TrialConfig: a checkpoint from before a field was added or renamed
    # (``bf16``, ``model_sha256``) compares with its values filled in as today's would be.
    before = TrialConfig(**saved).model_dump(mode="json")
    current = config.model_dump(mode="json")
    changed = sorted(
        k for k in current if k not in RESUMABLE_CHANGES and before.get(k) != current[k]
    )
    if changed:
        raise ValueError(
            f"checkpoint {path} was made with different {changed}; resume with the same "
            "config or start a new checkpoint directory"
        )


def _load(path: Path, config: TrialConfig, model, optimizers, schedulers) -> Progression:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    check_resumable(path, payload["config"], config)
    model.load_state_dict(payload["model"])
    restore_checkpoint(payload, optimizers, schedulers)
    return Progression(**payload["progression"])


def restore_checkpoint(payload: dict[str, Any], optimizers, schedulers) -> None:
    """What ``write_checkpoint`` added: the optimizers', schedulers' and RNG's state."""
    for opt, saved in zip(optimizers, payload["optimizers"], strict=True):
        opt.load_state_dict(saved)
    for scheduler, saved in zip(schedulers, payload["schedulers"], strict=True):
        scheduler.load_state_dict(saved)
    torch.set_rng_state(payload["rng"])
