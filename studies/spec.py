"""The study specification: what to search, how, and on what workload.

A versioned pydantic model, read from YAML or JSON. Validation reuses
``TrialConfig`` so a searched value is checked exactly as a trial would check it,
and every message names the field and its allowed values.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from studies.analysis.sequential import SequentialDesign, Spending
from worker.config import JOINT_FIELDS, TrialConfig
from worker.contract import (
    DEFAULT_METRIC,
    DEFAULT_SEED_BATCH,
    Mode,
    WorkloadName,
    check_metric,
    metrics_of,
)

SEARCHABLE = (
    "base",
    "variant",
    "lr",
    "p",
    "tau",
    "components",
    "granularity",
    "weight_decay",
    "score_init",
    "momentum",
    "decay_on_skip",
)
WORKLOAD_FIELDS = (
    "model",
    "steps",
    "batch_size",
    "grad_accum",
    "seq_len",
    "packing",
    "eval_interval",
    "eval_tokens",
    "hessian",
    "covariates",
    "condition_number",
)
#: parameters searched as numbers (a range allowed); score_init's one word, 'first', may
#: stand among its numbers
NUMERIC = ("lr", "p", "tau", "weight_decay", "score_init")


class Range(BaseModel):
    """A continuous search range; ``log`` for scale parameters such as the LR."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


SearchValue = Range | list[Any] | str | float | int


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: WorkloadName = "llama-c4"
    model: str = "llama-nano"
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=8)
    packing: Literal["pack", "truncate"] = "pack"
    eval_interval: int = Field(50, ge=1)
    eval_tokens: int | None = Field(None, ge=1)
    hessian: Literal["homogeneous", "heterogeneous"] = "heterogeneous"
    covariates: Literal["light", "heavy"] = "heavy"
    condition_number: bool = False


class EarlyStopping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class Objective(BaseModel):
    """What the study optimises: any metric its workload reports (``worker.contract``)."""

    model_config = ConfigDict(extra="forbid")
    metric: str | None = Field(
        None, description="a metric the workload reports; default: val_ppl (llama), val_loss"
    )
    mode: Mode | None = Field(None, description="default: the metric's natural direction")


#: the fewest seeds a bracket study may choose each arm's LR on: with one, the choice is
#: one seed's luck, and the chosen configuration has no spread to judge it by
BRACKET_MIN_SEEDS = 2
#: the most seeds a study may run each configuration on: seeds train in batches
#: (``seed_batch``), so hundreds cost little more than one (``studies.caps`` bounds the runs)
MAX_SEEDS = 1000


class Sequential(BaseModel):
    """Seeds added in rounds of ``round_seeds`` per arm until every comparison of the study
    decides, up to ``max_seeds`` (``studies.sequential`` plans the rounds; the tests, valid
    under this optional stopping, are ``studies.analysis.sequential``'s)."""

    model_config = ConfigDict(extra="forbid")
    round_seeds: int = Field(5, ge=2, le=MAX_SEEDS, description="seeds per arm each round adds")
    max_seeds: int = Field(
        le=MAX_SEEDS, description="the cap: a multiple of round_seeds above it (e.g. 50, 100)"
    )
    spending: Spending = Field(Spending.pocock, description="how alpha is spent over the looks")
    margin: float | None = Field(
        None, gt=0, lt=1, description="equivalence margin (TOST) that also stops the rounds"
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description="searched values naming a reference configuration: each other "
        "configuration of its arm is compared with it at every look too, and the rounds go on "
        "while any of those comparisons is undecided (the implementations preset's choices)",
    )

    @model_validator(mode="after")
    def _design(self) -> Sequential:
        """The design's own checks, with its messages (``sequential.design_of`` reads it)."""
        SequentialDesign(self.round_seeds, self.max_seeds, self.spending, self.margin)
        return self


class Protocol(BaseModel):
    """How the arms' learning rates are tuned (``studies.bracket``).

    ``none``: the sampler searches ``lr`` like any other value. ``bracket``: every arm (a
    point of the grid of the other searched lists) runs the same log grid of LRs,
    ``lr_start x 10^(k lr_step_decades)``, extended one step per round on the side of its
    best until that best is bracketed, so no arm is judged at an LR its tuning never got
    past; ``confirm_seeds`` reruns each arm's choice on fresh seeds (winner's curse)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "bracket"] = "none"
    lr_start: float = Field(1e-3, gt=0, description="the grid's centre")
    lr_step_decades: float = Field(0.5, gt=0, le=2, description="grid step, in decades")
    initial_points: int = Field(3, ge=1, le=15, description="LRs of the first round")
    max_extensions: int = Field(4, ge=0, le=20, description="rounds after the first")
    confirm_seeds: int = Field(0, ge=0, le=MAX_SEEDS, description="fresh seeds for the choices")
    sequential: Sequential | None = Field(
        None,
        description="seed in rounds until decided: a bracket study its confirmation stage "
        "(its first round is confirm_seeds = round_seeds), any other study its configurations",
    )

    @model_validator(mode="after")
    def _confirm_in_rounds(self) -> Protocol:
        """A stored spec names its confirmation seeds: under ``sequential``, a bracket
        study's confirmation stage starts with one round."""
        if self.sequential is None or self.kind != "bracket":
            return self
        rounds = self.sequential.round_seeds
        if self.confirm_seeds not in (0, rounds):
            raise ValueError(
                f"confirm_seeds: with sequential, the confirmation stage starts with one round "
                f"of round_seeds = {rounds} seeds: give confirm_seeds {rounds} or omit it "
                f"(got {self.confirm_seeds})"
            )
        self.confirm_seeds = rounds
        return self


class StudySpec(BaseModel):
    """One study. ``trials`` counts configurations; each runs ``seeds`` times."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    paper_reference: str = ""
    workload: Workload = Workload()
    search: dict[str, SearchValue] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict, description="other TrialConfig fields")
    sampler: Literal["tpe", "random", "grid", "gp", "qmc"] = "tpe"
    trials: int | None = Field(None, ge=1, description="configurations; grid: all points")
    seeds: int = Field(1, ge=1, le=MAX_SEEDS)
    base_seed: int = 0
    seed_batch: int | None = Field(
        None,
        ge=1,
        description="seeds of a configuration trained together in one task; 1: one task "
        "per seed; default: the workload's (worker.contract.DEFAULT_SEED_BATCH)",
    )
    max_concurrent: int = Field(2, ge=1)
    early_stopping: EarlyStopping = EarlyStopping(kind="none")
    resources: Resources = Resources()
    objective: Objective = Objective()
    protocol: Protocol = Protocol()

    @field_validator("search", mode="before")
    @classmethod
    def _parse_ranges(cls, search: Any) -> Any:
        # Parse mappings as ranges here so a bad range gets one message, not one per
        # member of the SearchValue union.
        if not isinstance(search, dict):
            return search
        return {
            name: Range.model_validate(value) if isinstance(value, dict) else _numeric(name, value)
            for name, value in search.items()
        }

    @field_validator("search")
    @classmethod
    def _searchable(cls, search: dict[str, SearchValue]) -> dict[str, SearchValue]:
        unknown = [k for k in search if k not in SEARCHABLE]
        if unknown:
            raise ValueError(f"cannot search {unknown}; searchable: {list(SEARCHABLE)}")
        for name, value in search.items():
            if isinstance(value, list) and not value:
                raise ValueError(f"{name}: an empty list has nothing to search")
            if isinstance(value, Range) and name not in NUMERIC:
                raise ValueError(f"{name}: is categorical; give a list, not a range")
        return search

    @model_validator(mode="after")
    def _resolve_objective(self) -> StudySpec:
        """A stored spec names its metric and mode: readers never apply defaults again."""
        kind = self.workload.kind
        metric = self.objective.metric or DEFAULT_METRIC[kind]
        try:
            mode = self.objective.mode or metrics_of(kind)[check_metric(kind, metric)]
        except ValueError as exc:
            raise ValueError(f"objective.metric: {exc}") from None
        if metric == "condition_number" and not self.workload.condition_number:
            raise ValueError("objective.metric: 'condition_number' needs workload.condition_number")
        self.objective = Objective(metric=metric, mode=mode)
        return self

    @model_validator(mode="after")
    def _resolve_seed_batch(self) -> StudySpec:
        """A stored spec names its seed batch: a changed default never regroups the seeds
        of a study already running (their batch checkpoints)."""
        if self.seed_batch is None:
            self.seed_batch = DEFAULT_SEED_BATCH[self.workload.kind]
        return self

    @model_validator(mode="after")
    def _sequential_grid(self) -> StudySpec:
        """Under ``protocol.sequential`` a study other than a bracket one seeds every point
        of its grid in rounds, the first of ``round_seeds`` seeds (the stored ``seeds``)."""
        sequential = self.protocol.sequential
        if sequential is None or self.bracket:
            return self
        if self.sampler != "grid":
            raise ValueError(
                f"sampler: protocol.sequential seeds every configuration in rounds: use sampler "
                f"'grid' or protocol 'bracket' (got {self.sampler!r})"
            )
        if self.early_stopping.kind != "none":
            raise ValueError(
                "early_stopping: protocol.sequential compares every seed's final value; use 'none'"
            )
        if "seeds" in self.model_fields_set and self.seeds != sequential.round_seeds:
            raise ValueError(
                f"seeds: under protocol.sequential the first round is round_seeds = "
                f"{sequential.round_seeds} seeds: give seeds {sequential.round_seeds} or omit "
                f"it (got {self.seeds})"
            )
        self.seeds = sequential.round_seeds
        return self

    @model_validator(mode="after")
    def _sequential_baseline(self) -> StudySpec:
        """A baseline names one value of each field it sets, among the searched ones."""
        sequential = self.protocol.sequential
        baseline = sequential.baseline if sequential is not None else None
        for name, value in (baseline or {}).items():
            searched = self.search.get(name)
            if name == "lr" or searched is None or isinstance(searched, Range):
                raise ValueError(
                    f"protocol.sequential.baseline: {name!r} must be a field searched as a "
                    f"list (not lr); searched: {[k for k in self.search if k != 'lr']}"
                )
            if _numeric(name, value) not in _choices(searched):
                raise ValueError(
                    f"protocol.sequential.baseline: {name}={value!r} is not among the searched "
                    f"values {_choices(searched)}"
                )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> StudySpec:
        if self.protocol.kind == "bracket":
            self._check_bracket()
        elif self.sampler == "grid":
            ranges = [k for k, v in self.search.items() if isinstance(v, Range)]
            if ranges:
                raise ValueError(f"sampler 'grid' needs lists, not ranges, for {ranges}")
            if self.trials is not None and self.trials != self.grid_size:
                raise ValueError(f"trials: a grid has exactly {self.grid_size} points; omit trials")
        elif self.trials is None:
            raise ValueError(f"trials: required for sampler {self.sampler!r}")
        overlap = set(self.fixed) & (set(self.search) | {"workload", *WORKLOAD_FIELDS})
        if overlap:
            raise ValueError(f"fixed: {sorted(overlap)} are set by search/workload already")
        seeds = set(self.fixed) & {"seed", "mask_seed"}
        if seeds:
            raise ValueError(f"fixed: {sorted(seeds)} come from base_seed and seeds; set those")
        if "metric" in self.fixed:
            raise ValueError("fixed: metric comes from objective.metric; set that")
        # Every value a trial can get must make a valid TrialConfig; the workload and
        # fixed values first, so an error is reported where it was made.
        self._check(self.trial_config({}))
        for name, value in self.search.items():
            for choice in _choices(value):
                self._check(self.trial_config({name: choice}))
        # Fields that TrialConfig checks against one another: every combination searched.
        joint = [name for name in self.search if name in JOINT_FIELDS]
        if len(joint) > 1:
            for values in itertools.product(*(_choices(self.search[n]) for n in joint)):
                combination = dict(zip(joint, values, strict=True))
                self._check(self.trial_config(combination), combination)
        return self

    def _check_bracket(self) -> None:
        """The bracket protocol owns ``lr`` and runs every arm: nothing else samples; it
        chooses each arm's LR on at least ``BRACKET_MIN_SEEDS`` seeds."""
        if self.seeds < BRACKET_MIN_SEEDS:
            raise ValueError(
                f"seeds: protocol 'bracket' chooses each arm's LR on at least "
                f"{BRACKET_MIN_SEEDS} seeds: give {BRACKET_MIN_SEEDS} to {MAX_SEEDS} "
                f"(got {self.seeds})"
            )
        if "lr" in self.search:
            raise ValueError("search.lr: protocol 'bracket' searches the LR; remove it from search")
        if "lr" in self.fixed:
            raise ValueError("fixed.lr: protocol 'bracket' searches the LR; remove it")
        ranges = [k for k, v in self.search.items() if isinstance(v, Range)]
        if ranges:
            raise ValueError(f"protocol 'bracket' runs every arm: give lists, not ranges: {ranges}")
        if self.sampler != "grid" or self.trials is not None:
            raise ValueError("protocol 'bracket' plans its own runs: use sampler 'grid', no trials")
        if self.early_stopping.kind != "none":
            raise ValueError(
                "early_stopping: protocol 'bracket' compares every LR's final value; use 'none'"
            )
        self._check(self.trial_config({"lr": self.protocol.lr_start}))

    def _check(self, config: dict[str, Any], combination: dict[str, Any] | None = None) -> None:
        """ValueError ``where: message`` if ``config`` is no valid TrialConfig; naming
        ``combination``, the searched values that are only invalid together."""
        try:
            TrialConfig(**config)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            if field in self.search:
                where = f"search.{field}"
            elif field in self.fixed:
                where = f"fixed.{field}"
            elif field in WORKLOAD_FIELDS or field == "workload":
                where = f"workload.{'kind' if field == 'workload' else field}"
            else:
                where = field or "spec"
            message = str(first["msg"]).removeprefix("Value error, ")
            if combination:
                together = ", ".join(f"{k}={v!r}" for k, v in combination.items())
                message += f" (the search combines {together}: search them in separate studies)"
            raise ValueError(f"{where}: {message}") from None

    @property
    def grid_size(self) -> int:
        return math.prod(len(_choices(v)) for v in self.search.values()) if self.search else 1

    @property
    def bracket(self) -> bool:
        return self.protocol.kind == "bracket"

    @property
    def configurations(self) -> int:
        """Configurations the study runs; under ``bracket`` at most this many, selection
        and confirmation together: arms x (initial + max_extensions) (+ arms)."""
        if self.bracket:
            rounds = self.protocol.initial_points + self.protocol.max_extensions
            return self.grid_size * rounds + (self.grid_size if self.protocol.confirm_seeds else 0)
        return self.grid_size if self.sampler == "grid" else int(self.trials or 1)

    @property
    def runs(self) -> int:
        """Trials the study runs: every configuration once per seed. Under ``bracket`` an
        upper bound: arms x (initial + max_extensions) x seeds + arms x confirm_seeds.
        Under ``sequential`` an upper bound too: its stage seeded up to ``max_seeds``."""
        sequential = self.protocol.sequential
        if self.bracket:
            rounds = self.protocol.initial_points + self.protocol.max_extensions
            confirm = sequential.max_seeds if sequential else self.protocol.confirm_seeds
            return self.grid_size * (rounds * self.seeds + confirm)
        return self.configurations * (sequential.max_seeds if sequential else self.seeds)

    @property
    def first_round_runs(self) -> int:
        """The runs a study cannot do without: under ``bracket``, its first round and the
        confirmation (extensions and sequential rounds stop at the server cap instead);
        otherwise every configuration's first seeds."""
        if not self.bracket:
            return self.configurations * self.seeds
        protocol = self.protocol
        return self.grid_size * (protocol.initial_points * self.seeds + protocol.confirm_seeds)

    @property
    def metric(self) -> str:
        return str(self.objective.metric)

    @property
    def mode(self) -> Mode:
        return self.objective.mode or "min"

    def grid_points(self) -> list[dict[str, Any]]:
        names = list(self.search)
        return [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(_choices(self.search[n]) for n in names))
        ]

    def trial_config(self, params: dict[str, Any], seed_index: int = 0) -> dict[str, Any]:
        """The TrialConfig fields of one trial: workload + fixed + searched values.

        Data order and init come from ``base_seed + seed_index``, shared by every
        configuration (common random numbers); the masks get their own seed, by the one
        rule ``TrialConfig`` applies (``worker.contract.mask_seed``)."""
        workload = self.workload.model_dump()
        config = {"workload": workload.pop("kind"), **workload, **self.fixed}
        config.update({k: v for k, v in self.search.items() if not _is_searched(v)})
        config.update(params)
        config.update(seed=self.base_seed + seed_index, metric=self.objective.metric)
        return config

    def complete_trial_config(self, params: dict[str, Any], seed_index: int = 0) -> dict[str, Any]:
        """``trial_config`` with every default applied: what a study stores and runs."""
        return TrialConfig(**self.trial_config(params, seed_index)).model_dump(mode="json")


def _is_searched(value: SearchValue) -> bool:
    return isinstance(value, (Range, list))


def _choices(value: SearchValue) -> list[Any]:
    if isinstance(value, Range):
        return [value.low, value.high]
    return list(value) if isinstance(value, list) else [value]


def _numeric(name: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; numeric parameters become floats
    here so that Optuna and the database store numbers (a word, score_init's 'first', stays)."""
    if name not in NUMERIC:
        return value

    def number(v: Any) -> Any:
        try:
            return float(v) if isinstance(v, str) else v
        except ValueError:
            return v

    return [number(v) for v in value] if isinstance(value, list) else number(value)


def load_spec(path: Path | str) -> StudySpec:
    return StudySpec.model_validate(yaml.safe_load(Path(path).read_text()))
