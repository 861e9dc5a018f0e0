"""``magma-bench train ...``: run one trial locally, in the foreground.

Options map one to one onto ``TrialConfig`` fields; anything not given keeps the
config's default, and a bad value is reported with the field's allowed values.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from tqdm import tqdm

from worker.contract import (
    SCORE_INIT_FIRST,
    STATUS_KEY,
    Base,
    Components,
    Granularity,
    Momentum,
    Names,
    TrialStatus,
    Variant,
    WorkloadKind,
)

if TYPE_CHECKING:  # torch and transformers load only when a trial runs: the CLI starts fast
    from worker.config import TrialConfig
    from worker.trainer import Metrics, SaveCheckpoint


def _option(help_text: str) -> Any:
    return typer.Option(help=help_text, show_default=False)


def _choices(names: type[Names]) -> str:
    return " | ".join(names.values())


def train_command(
    config_file: Annotated[Path | None, _option("YAML/JSON file of TrialConfig fields")] = None,
    workload: Annotated[str | None, _option(_choices(WorkloadKind))] = None,
    model: Annotated[
        str | None, _option("llama-bytes | llama-tiny | llama-60m | ... or a LlamaConfig JSON path")
    ] = None,
    base: Annotated[str | None, _option(_choices(Base))] = None,
    variant: Annotated[str | None, _option(_choices(Variant))] = None,
    lr: Annotated[float | None, _option("peak learning rate")] = None,
    steps: Annotated[int | None, _option("optimizer steps")] = None,
    p: Annotated[float | None, _option("survival probability")] = None,
    tau: Annotated[float | None, _option("Magma temperature")] = None,
    components: Annotated[str | None, _option(_choices(Components))] = None,
    granularity: Annotated[str | None, _option(_choices(Granularity))] = None,
    score_init: Annotated[
        str | None, _option(f"Magma's s_0: {SCORE_INIT_FIRST} | a number in [0, 1]")
    ] = None,
    momentum: Annotated[
        str | None, _option(f"first moment of Magma's cosine: {_choices(Momentum)}")
    ] = None,
    decay_on_skip: Annotated[
        bool | None, _option("masked-out blocks still take the decoupled weight decay")
    ] = None,
    batch_size: Annotated[int | None, _option("sequences per step")] = None,
    grad_accum: Annotated[int | None, _option("micro-batches per step")] = None,
    seq_len: Annotated[int | None, _option("tokens per sequence")] = None,
    packing: Annotated[str | None, _option("pack | truncate")] = None,
    eval_interval: Annotated[int | None, _option("steps between evaluations")] = None,
    eval_tokens: Annotated[int | None, _option("validation tokens (default: 10M)")] = None,
    weight_decay: Annotated[float | None, _option("weight decay")] = None,
    grad_clip: Annotated[float | None, _option("gradient-norm clip")] = None,
    seed: Annotated[int | None, _option("data order and init seed")] = None,
    mask_seed: Annotated[int | None, _option("mask RNG seed (default: from --seed)")] = None,
    metric: Annotated[
        str | None, _option("reported metric that is the objective (default: the workload's)")
    ] = None,
    target_loss_fraction: Annotated[
        float | None, _option("steps_to_target's target, a fraction of the initial loss (0.1)")
    ] = None,
    hessian: Annotated[str | None, _option("quadratic: homogeneous | heterogeneous")] = None,
    covariates: Annotated[str | None, _option("linear-transformer: light | heavy")] = None,
    instance: Annotated[
        str | None, _option("quadratic: per_seed (each seed its own H) | shared (one H)")
    ] = None,
    objective_window: Annotated[
        int | None, _option("objective: the mean of the metric's last k evaluations (1)")
    ] = None,
    device: Annotated[str | None, _option("auto | cpu | cuda")] = None,
    threads: Annotated[int | None, _option("torch CPU threads")] = None,
    precision: Annotated[
        str | None, _option("auto (bf16 on CUDA) | bf16 (autocast, CPU too) | fp32")
    ] = None,
    compile: Annotated[bool | None, _option("torch.compile the model")] = None,
    checkpoint_dir: Annotated[
        Path | None, _option("save a checkpoint here at every eval; resume from it if present")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress output")] = False,
) -> None:
    """Train one trial and print its final metrics as JSON.

    Progress goes to stderr: a bar on a terminal, else one line per evaluation."""
    fields = {
        k: v
        for k, v in locals().items()
        if v is not None and k not in {"config_file", "checkpoint_dir", "quiet"}
    }
    if config_file is not None:
        fields = {**yaml.safe_load(config_file.read_text()), **fields}
    try:
        from worker.config import TrialConfig

        config = TrialConfig(**fields)
    except ValidationError as exc:
        for error in exc.errors():
            field = "-".join(str(part) for part in error["loc"]).replace("_", "-")
            typer.echo(f"error: {'--' + field if field else 'config'}: {error['msg']}", err=True)
        raise typer.Exit(2) from None

    # A bar redraws at every step: in a pipe or a log file each redraw would be a line of
    # its own, so there progress is one plain line per evaluation instead.
    terminal = sys.stderr.isatty()
    bar = tqdm(total=config.steps, disable=quiet or not terminal, unit="step", dynamic_ncols=True)

    def progress(step: int, loss: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}")

    def report(metrics: Metrics, save: SaveCheckpoint) -> None:
        if checkpoint_dir is not None:
            save(checkpoint_dir)
        bar.write(json.dumps(_jsonable(metrics)))
        if not (quiet or terminal):
            typer.echo(_evaluation_line(metrics, config), err=True)

    resume = checkpoint_dir if checkpoint_dir and (checkpoint_dir / "trial.pt").exists() else None
    try:
        from worker.trainer import train

        metrics = train(
            config, resume_from=resume, report=report, progress=None if bar.disable else progress
        )
    except ValueError as exc:
        bar.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    bar.close()
    typer.echo(json.dumps(_jsonable(metrics), indent=2))


def _evaluation_line(metrics: Metrics, config: TrialConfig) -> str:
    """One evaluation as a plain progress line: step, train and validation loss, the
    objective metric when it is another one, and how the trial ended once it has."""
    line = (
        f"step {metrics['step']}/{config.steps}  train_loss {metrics['train_loss']:.4g}"
        f"  val_loss {metrics['val_loss']:.4g}"
    )
    if config.metric not in ("train_loss", "val_loss"):
        line += f"  {config.metric} {metrics[config.metric]:.4g}"
    if metrics[STATUS_KEY] != TrialStatus.running:
        line += f"  {metrics[STATUS_KEY]}"
    return line


def _jsonable(metrics: Metrics) -> dict[str, Any]:
    """Non-finite floats become null: JSON has no NaN or Infinity."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
