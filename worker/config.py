"""One trial's configuration: everything a worker needs to train and report.

A pydantic model so that a bad value fails before any work starts, with a message
that names the field and its allowed values (the CLI, Ray trials and the study
engine all build trials through it).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.contract import (
    COUPLED_DECAY_BASES,
    DEFAULT_METRIC,
    FUSED_STEP_BASES,
    OPEN_CHOICE_DEFAULTS,
    SCORE_INIT_FIRST,
    Base,
    BaseName,
    ComponentsName,
    Granularity,
    GranularityName,
    MomentumName,
    ScoreInitName,
    Variant,
    VariantName,
    WorkloadName,
    check_metric,
    mask_seed,
)
from worker.data.tokenizer import BYTES
from worker.models import model_fields, model_names, model_sha256, model_tokenizer

#: validation tokens per evaluation when none are given: GaLore's harness evaluates 10M
DEFAULT_EVAL_TOKENS = 10_000_000
#: the settings only a masked variant reads (``TrialConfig.run_key``)
MASKING_FIELDS = (
    "p",
    "tau",
    "components",
    "granularity",
    "score_init",
    "momentum",
    "decay_on_skip",
    "mask_seed",
    "fused_step",
)
#: Magma's own settings (its alignment score): SkipUpdate has no score, so it refuses them
MAGMA_FIELDS = ("score_init", "momentum")
#: the searchable fields that TrialConfig's validators check against one another (the Magma
#: fields against variant; decay_on_skip against base, variant and weight_decay): a study
#: checks every combination of their searched values (``studies.spec``)
JOINT_FIELDS = ("base", "variant", "weight_decay", *MAGMA_FIELDS, "decay_on_skip")


class TrialConfig(BaseModel):
    """Defaults follow the paper: AdamW base, attention+MLP masked, p=0.5, tau=2,
    warmup over 10% of steps then cosine decay to 10% of the peak LR (Appendix B.1).

    ``metric`` and ``mask_seed`` are filled in when left out, so a validated config is
    complete: what a study stores is exactly what its trial ran."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: WorkloadName = "llama-c4"
    # --- llama-c4 ----------------------------------------------------------------
    model: str = Field(
        "llama-nano",
        description="a bundled model name, or the path of a Hugging Face LlamaConfig JSON file "
        "(stored absolute)",
    )
    model_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the model's JSON file, filled in when None; a trial refuses to "
        "build from a file that no longer matches it",
    )
    seq_len: int = Field(256, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, description="sequences per optimizer step")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    packing: Literal["pack", "truncate"] = "pack"
    train_files: list[str] | None = Field(
        None, description="paths/globs of C4 shards, or 'hf:allenai/c4:en'; None: bundled sample"
    )
    validation_files: list[str] | None = None
    max_documents: int | None = Field(
        None, ge=1, description="per split: read at most this many documents of any source"
    )
    tokenizer: str | None = Field(
        None,
        description=f"{BYTES!r} (UTF-8 bytes), a SentencePiece .model file, or an HF name or "
        "path; None: the one the model's config names, else the bundled T5 spiece",
    )
    eval_tokens: int = Field(
        DEFAULT_EVAL_TOKENS,
        ge=1,
        description="validation tokens evaluated (and, from a large source, read); null reads "
        "as the default, 10M as in GaLore's harness",
    )
    cache_dir: Path | None = None
    # --- synthetic workloads -------------------------------------------------------
    hessian: Literal["homogeneous", "heterogeneous"] = "heterogeneous"
    covariates: Literal["light", "heavy"] = "heavy"
    condition_number: bool = False
    instance: Literal["per_seed", "shared"] = Field(
        "per_seed",
        description="quadratic only: 'per_seed' draws the block rotations and start point from "
        "the seed; 'shared' from one fixed seed, so seeds vary only the row sampling and masks",
    )
    # --- optimisation ------------------------------------------------------------
    steps: int = Field(300, ge=1)
    eval_interval: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    base: BaseName = "adamw"
    variant: VariantName = "magma"
    p: float = Field(0.5, gt=0, le=1)
    tau: float = Field(2.0, gt=0)
    components: ComponentsName = "attention+mlp"
    granularity: GranularityName = "block"
    weight_decay: float = Field(0.0, ge=0)
    # --- Algorithm 1's open choices (after base, variant and weight_decay: checked with them)
    score_init: ScoreInitName | float = Field(
        OPEN_CHOICE_DEFAULTS["score_init"],
        description=f"Magma's s_0: {SCORE_INIT_FIRST!r} (s_1 is the first step's own score) or "
        "a number in [0, 1]",
    )
    momentum: MomentumName = Field(
        OPEN_CHOICE_DEFAULTS["momentum"],
        description="the first moment Magma's cosine uses: 'updated' (mu_t, after this step's "
        "update) or 'previous' (mu_{t-1})",
    )
    decay_on_skip: bool = Field(
        OPEN_CHOICE_DEFAULTS["decay_on_skip"],
        description="a masked-out block still takes the base's decoupled weight decay, "
        "unscaled (both masked variants); refused with weight_decay > 0 and base one of "
        f"{[b.value for b in COUPLED_DECAY_BASES]}, whose decay is L2 in the gradient",
    )
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(None, gt=0)
    # --- seeds: data order and init are shared across arms; masks have their own ---
    seed: int = 0
    mask_seed: int | None = Field(None, description="None: worker.contract.mask_seed(seed)")
    # --- what the trial reports as its objective -----------------------------------
    metric: str | None = Field(
        None, description="the reported metric that is the objective; None: the workload's"
    )
    objective_window: int = Field(
        1,
        ge=1,
        description="the objective is the mean of the metric over the last this many "
        "evaluations (fewer at the start); the metric itself is reported raw",
    )
    target_loss_fraction: float = Field(
        0.1,
        description="steps_to_target's target, in (0, 1): this fraction of the held-out loss "
        "before training",
    )
    # --- execution ---------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="llama-c4 autocast: 'bf16' on any device, 'fp32' none; 'auto': bf16 on "
        "CUDA, fp32 on CPU",
    )
    compile: bool = False
    fused_step: bool | None = Field(
        None,
        description="magma's compiled masked step: None on CUDA where it applies, true forces "
        f"it (base one of {[b.value for b in FUSED_STEP_BASES]}, a masked variant, granularity "
        "'block'), false never",
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    divergence_factor: float = Field(3.0, gt=1, description="loss > factor * initial: diverged")

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, data: Any) -> Any:
        """Fill in the derived fields, so every reader sees the values the trial used."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("mask_seed") is None:
            seed = data.get("seed", 0)
            data["mask_seed"] = mask_seed(seed) if isinstance(seed, int) else None
        if data.get("eval_tokens", DEFAULT_EVAL_TOKENS) is None:
            # never "the whole split": a hub split is far too large to evaluate
            data["eval_tokens"] = DEFAULT_EVAL_TOKENS
        if data.get("metric") is None:
            data["metric"] = DEFAULT_METRIC.get(str(data.get("workload", "llama-c4")))
        if "bf16" in data:  # configs stored before ``precision``: bf16 meant CUDA only
            legacy = data.pop("bf16")
            if not isinstance(legacy, bool):
                raise ValueError(f"bf16: must be true or false, got {legacy!r}; or set precision")
            data.setdefault("precision", "auto" if legacy else "fp32")
        model = data.get("model", cls.model_fields["model"].default)
        if isinstance(model, str) and model not in model_names():
            # A path: absolute, so the driver's trials find it whatever their working directory.
            model = data["model"] = os.path.abspath(os.path.expanduser(model))
        try:
            if data.get("model_sha256") is None:
                data["model_sha256"] = model_sha256(model)
            if data.get("tokenizer") is None:
                data["tokenizer"] = model_tokenizer(model)
        except (TypeError, ValueError):  # a bad model: its field validator reports it
            pass
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        model_fields(value)  # raises a ValueError saying what is allowed
        return value

    @field_validator("tokenizer")
    @classmethod
    def _fits_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A model's vocabulary is sized for one tokenizer: reject a pair that would waste
        it (bytes into a 32000-row embedding) or overflow it (T5 ids into 258 rows)."""
        model = info.data.get("model")
        if model is None:  # the model itself was invalid and is reported
            return value
        needed = model_tokenizer(model)
        if needed is not None and value != needed:
            raise ValueError(f"model {model!r} needs tokenizer {needed!r}, got {value!r}")
        if value == BYTES and needed != BYTES:
            byte_models = [name for name in model_names() if model_tokenizer(name) == BYTES]
            raise ValueError(
                f"{BYTES!r} needs a byte-vocabulary model, one of {byte_models}; "
                f"{model!r} has a T5 vocabulary"
            )
        return value

    @field_validator("metric")
    @classmethod
    def _reported_metric(cls, value: str | None, info: ValidationInfo) -> str | None:
        workload = info.data.get("workload")
        return value if value is None or workload is None else check_metric(workload, value)

    @field_validator("target_loss_fraction")
    @classmethod
    def _fraction_in_range(cls, value: float) -> float:
        if not 0 < value < 1:  # NaN too
            raise ValueError(f"target_loss_fraction must be in (0, 1), got {value!r}")
        return value

    @field_validator("score_init", mode="before")
    @classmethod
    def _score_init_in_range(cls, value: Any) -> Any:
        """One message naming both allowed kinds, where the union would give one per member;
        a number given as text (the CLI's, YAML's ``1e-1``) is read as the number."""
        number = value
        if isinstance(value, str) and value != SCORE_INIT_FIRST:
            with contextlib.suppress(ValueError):
                number = float(value)
        if number == SCORE_INIT_FIRST:
            return number
        if isinstance(number, int | float) and not isinstance(number, bool) and 0 <= number <= 1:
            return float(number)
        raise ValueError(
            f"score_init must be {SCORE_INIT_FIRST!r} or a number in [0, 1], got {value!r}"
        )

    @field_validator(*MAGMA_FIELDS)
    @classmethod
    def _magma_only(cls, value: Any, info: ValidationInfo) -> Any:
        """An option SkipUpdate would accept and ignore is refused instead."""
        default = cls.model_fields[str(info.field_name)].default
        if info.data.get("variant") == Variant.skipupdate and value != default:
            raise ValueError(
                f"{info.field_name} {value!r} sets Magma's alignment score, which variant "
                f"'skipupdate' does not have: use variant 'magma', or {info.field_name} "
                f"{default!r} (the default)"
            )
        return value

    @field_validator("decay_on_skip")
    @classmethod
    def _decay_decoupled(cls, value: bool, info: ValidationInfo) -> bool:
        """Coupled decay is part of the gradient a skipped block never applies: there is no
        separate decay term to keep (magma raises the same)."""
        base, wd = info.data.get("base"), info.data.get("weight_decay")
        masked = info.data.get("variant") not in (None, Variant.dense)
        if value and masked and base in COUPLED_DECAY_BASES and wd:
            decoupled = [b.value for b in Base if b not in COUPLED_DECAY_BASES]
            raise ValueError(
                f"decay_on_skip needs decoupled weight decay, but base {base!r} folds its "
                f"weight_decay ({wd}) into the gradient (L2): use a base in {decoupled}, "
                "weight_decay 0, or decay_on_skip false"
            )
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError("both betas must be in [0, 1)")
        return value

    def bf16(self, device: str) -> bool:
        """Whether the model runs under bf16 autocast on ``device`` ("cpu", "cuda")."""
        return self.precision == "bf16" or (self.precision == "auto" and device == "cuda")

    def run_key(self) -> str:
        """What the run computes, as text: two configs with the same key train the same
        run. A dense run never reads the masking settings (``worker.optimizers`` masks
        only a masked variant; Muon's dense arm still splits its weights by components),
        so dense configs that differ only there are one run."""
        ignored = set() if self.variant != Variant.dense else set(MASKING_FIELDS)
        if self.base == Base.muon:
            ignored.discard("components")
        return json.dumps(self.model_dump(mode="json", exclude=ignored), sort_keys=True)

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                f"({self.grad_accum})"
            )
        fusable = (
            self.base in FUSED_STEP_BASES
            and self.variant != Variant.dense
            and self.granularity == Granularity.block
        )
        if self.fused_step and not fusable:
            raise ValueError(
                f"fused_step: true needs base one of {[b.value for b in FUSED_STEP_BASES]}, "
                "variant 'magma' or 'skipupdate' and granularity 'block'; got base "
                f"{self.base!r}, variant {self.variant!r}, granularity {self.granularity!r}"
            )
        if self.metric == "condition_number" and not self.condition_number:
            raise ValueError("metric 'condition_number' needs condition_number: true")
        if self.instance == "shared" and self.workload != "quadratic":
            raise ValueError(
                f"instance: 'shared' applies to workload 'quadratic' only; {self.workload!r} "
                "draws its problem from the seed ('per_seed')"
            )
        if self.precision == "bf16" and self.workload != "llama-c4":
            raise ValueError(
                f"precision: 'bf16' applies to workload 'llama-c4' only; {self.workload!r} "
                "runs in fp32 ('auto' or 'fp32')"
            )
        return self
