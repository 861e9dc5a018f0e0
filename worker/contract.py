"""The names every layer shares, defined once: statuses, optimizer and workload names, the
metrics each workload reports, telemetry keys, and the mask-seed rule.

Imports only the standard library, ``magma.bases`` and ``magma.choices`` (names, no torch),
so the API, the CLI, the dashboards, the driver and the trainer can all import it without
pulling in torch or SQLAlchemy. Everything else that needs one of these names imports it
from here; nothing spells the lists out again.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from magma.bases import FUSED_BASES
from magma.choices import DEFAULTS, MOMENTA, SCORE_INIT_FIRST


class Names(str, Enum):
    """A string enum whose members print, format and compare as their plain values (so a
    member can go straight into SQL, JSON, an f-string or a Literal-typed field)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


# --- lifecycles -------------------------------------------------------------------------


class TrialStatus(Names):
    """A trial (one seed of one configuration), in lifecycle order."""

    queued = "queued"
    running = "running"
    complete = "complete"
    pruned = "pruned"  # stopped early by the scheduler (ASHA)
    diverged = "diverged"  # a non-finite loss, or held-out loss far above its start
    failed = "failed"  # its process failed more often than the retries allow
    cancelled = "cancelled"


#: statuses a trial never leaves: every one after queued and running
FINISHED_TRIAL_STATUSES: tuple[str, ...] = TrialStatus.values()[2:]
#: statuses a trial reports itself when it stops on its own (the rest are decided outside)
REPORTED_TRIAL_STATUSES: tuple[str, ...] = (TrialStatus.complete.value, TrialStatus.diverged.value)


class StudyStatus(Names):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"  # asked to stop; its driver stops the running trials
    cancelled = "cancelled"
    complete = "complete"
    failed = "failed"


#: statuses a study never leaves
FINISHED_STUDY_STATUSES: tuple[str, ...] = tuple(
    status.value for status in (StudyStatus.cancelled, StudyStatus.complete, StudyStatus.failed)
)
#: statuses of a study that a driver owns (and heartbeats)
ACTIVE_STUDY_STATUSES: tuple[str, ...] = (StudyStatus.running.value, StudyStatus.cancelling.value)


# --- what a trial runs ------------------------------------------------------------------


class Base(Names):
    """Base optimizers, in the order the paper's tables read."""

    adam = "adam"
    adamw = "adamw"
    rmsprop = "rmsprop"
    laprop = "laprop"
    muon = "muon"
    c_adamw = "c-adamw"
    sgd = "sgd"


#: the optimizer class each base builds (``worker.optimizers``; Muon's leftover parameters
#: go to an AdamW), by the qualified name magma gives it in ``magma.bases``
BASE_CLASSES: dict[Base, str] = {
    Base.adam: "torch.optim.Adam",
    Base.adamw: "torch.optim.AdamW",
    Base.rmsprop: "torch.optim.RMSprop",
    Base.laprop: "magma.LaProp",
    Base.muon: "torch.optim.Muon",
    Base.c_adamw: "magma.CAdamW",
    Base.sgd: "torch.optim.SGD",
}
#: the bases whose masked step magma's compiled kernels take (``fused_step``): those whose
#: class is in the library's ``magma.bases.FUSED_BASES``, in ``Base`` order
FUSED_STEP_BASES: tuple[Base, ...] = tuple(b for b in Base if BASE_CLASSES[b] in FUSED_BASES)


class Variant(Names):
    """How the base's update is masked; the dense baseline first."""

    dense = "dense"
    skipupdate = "skipupdate"
    magma = "magma"


class WorkloadKind(Names):
    llama_c4 = "llama-c4"
    quadratic = "quadratic"
    linear_transformer = "linear-transformer"


class Components(Names):
    """Which parameter groups a masked variant masks (``magma.components`` labels)."""

    attention = "attention"
    mlp = "mlp"
    attention_mlp = "attention+mlp"
    all = "all"


class Granularity(Names):
    block = "block"
    row = "row"
    column = "column"
    element = "element"


#: Magma's ``momentum`` values, the default first (``magma.choices.MOMENTA``): the first
#: moment its cosine uses, which Algorithm 1 leaves open: "updated", mu_t after this step's
#: update, or "previous", mu_{t-1} before it
Momentum = Names("Momentum", {value: value for value in MOMENTA})
#: the default of each choice Algorithm 1 leaves open (``magma.choices.DEFAULTS``; for
#: ``score_init`` SCORE_INIT_FIRST: s_1 is the first step's own score): today's behaviour
OPEN_CHOICE_DEFAULTS: dict[str, object] = dict(DEFAULTS)
#: bases whose ``weight_decay`` is coupled L2, folded into the gradient before the moments
#: (``magma/rules``: adam, rmsprop, sgd); the rest decay decoupled (lr * wd * theta), so only
#: they can still decay a masked-out block (``decay_on_skip``)
COUPLED_DECAY_BASES: tuple[Base, ...] = (Base.adam, Base.rmsprop, Base.sgd)


#: the ``magma.components`` labels each ``components`` setting masks; None: every label
COMPONENT_LABELS: dict[str, tuple[str, ...] | None] = {
    Components.attention.value: ("attention",),
    Components.mlp.value: ("mlp",),
    Components.attention_mlp.value: ("attention", "mlp"),
    Components.all.value: None,
}

# Literal twins of the enums for pydantic fields, query parameters and type hints: a field
# typed with one stores a plain string, and its error message lists the allowed values.
TrialStatusName = Literal[TrialStatus.values()]  # type: ignore[valid-type]
StudyStatusName = Literal[StudyStatus.values()]  # type: ignore[valid-type]
BaseName = Literal[Base.values()]  # type: ignore[valid-type]
VariantName = Literal[Variant.values()]  # type: ignore[valid-type]
WorkloadName = Literal[WorkloadKind.values()]  # type: ignore[valid-type]
ComponentsName = Literal[Components.values()]  # type: ignore[valid-type]
GranularityName = Literal[Granularity.values()]  # type: ignore[valid-type]
MomentumName = Literal[Momentum.values()]  # type: ignore[valid-type]
ScoreInitName = Literal[SCORE_INIT_FIRST]  # type: ignore[valid-type]
Mode = Literal["min", "max"]
MODES: tuple[str, ...] = ("min", "max")


# --- what a trial reports ---------------------------------------------------------------

#: metrics every workload reports at each evaluation, and which way is better
COMMON_METRICS: dict[str, Mode] = {
    "val_loss": "min",
    "train_loss": "min",
    "tokens_per_s": "max",
    "steps_per_s": "max",
    "train_time": "min",
    # convergence speed, from every step's training loss (``worker.trainer``'s docstring)
    "log_loss_auc": "min",  # mean log(loss) over the steps so far
    "steps_to_target": "min",  # first step at <= target_loss_fraction x the initial loss
}
#: metrics that are themselves a mean of logs: a paired comparison takes exp(value) (the
#: geometric mean) so that its change is a ratio, as for any positive objective
LOG_METRICS: frozenset[str] = frozenset({"log_loss_auc"})
#: the metrics a study may optimise, per workload, with their natural direction
WORKLOAD_METRICS: dict[str, dict[str, Mode]] = {
    WorkloadKind.llama_c4.value: {"val_ppl": "min", **COMMON_METRICS},
    WorkloadKind.quadratic.value: dict(COMMON_METRICS),
    WorkloadKind.linear_transformer.value: {
        **COMMON_METRICS,
        "condition_number": "min",  # only with ``condition_number: true``
    },
}
#: how charts and tables name each metric
METRIC_TITLES: dict[str, str] = {
    "val_ppl": "validation perplexity",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "tokens_per_s": "training tokens/s",
    "steps_per_s": "optimizer steps/s",
    "train_time": "training time (s)",
    "log_loss_auc": "mean log training loss",
    "steps_to_target": "steps to the target loss",
    "condition_number": "robust condition number",
}
#: what a study optimises when its spec names no metric
DEFAULT_METRIC: dict[str, str] = {
    WorkloadKind.llama_c4.value: "val_ppl",
    WorkloadKind.quadratic.value: "val_loss",
    WorkloadKind.linear_transformer.value: "val_loss",
}
#: seeds of one configuration trained as one batch in one task (``worker.seed_batch``) when
#: a study's spec sets no ``seed_batch``: small models batch by the dozen at the cost of one.
#: A llama step is compute-bound on CPU (its matmuls near peak FLOP/s): llama-bytes at the
#: claims suite's size trains 0.89, 0.96, 1.06, 1.01, 0.95 x the seeds per CPU-second of
#: single runs in one process at S = 1, 2, 4, 8, 16 (one thread), so 4, fastest; what a
#: batch saves there is the harness of S - 1 trials (a Ray task, a process, a workload). The
#: quadratic's step is all harness: through the driver, 64 seeds a task measured 88 x the
#: seeds per CPU-second of one trial a seed, 256 a task 228 x (benchmarks/seed_throughput.py)
DEFAULT_SEED_BATCH: dict[str, int] = {
    WorkloadKind.llama_c4.value: 4,
    WorkloadKind.quadratic.value: 256,
    WorkloadKind.linear_transformer.value: 64,
}
#: the key of a metric row holding the value of the trial's objective metric; the SQL
#: ``objective`` columns, Ray Tune and ASHA all read this key
OBJECTIVE_KEY = "objective"
#: the key of a metric row holding the trial's status at that evaluation
STATUS_KEY = "status"
#: what a learning curve's x axis is, per workload (synthetic workloads train on no tokens)
PROGRESS_METRIC: dict[str, str] = {
    WorkloadKind.llama_c4.value: "tokens",
    WorkloadKind.quadratic.value: "step",
    WorkloadKind.linear_transformer.value: "step",
}


def metric_title(metric: str) -> str:
    """``validation perplexity`` for ``val_ppl``: a metric's name on a chart."""
    return METRIC_TITLES.get(metric, metric)


def metrics_of(workload: str) -> dict[str, Mode]:
    """The metrics a workload reports that a study may optimise (ValueError if unknown)."""
    if workload not in WORKLOAD_METRICS:
        raise ValueError(f"workload must be one of {WorkloadKind.values()}, got {workload!r}")
    return WORKLOAD_METRICS[workload]


def check_metric(workload: str, metric: str) -> str:
    """``metric`` if ``workload`` reports it, else a ValueError naming the allowed ones."""
    allowed = metrics_of(workload)
    if metric not in allowed:
        raise ValueError(
            f"workload {workload!r} reports no metric {metric!r}; allowed: {sorted(allowed)}"
        )
    return metric


#: the telemetry a masked optimizer reports per component that the mechanism dashboard
#: plots, and its metric-key prefix (the rest, e.g. ``eager_fallback/<component>``, the
#: share of compiled steps that ran eagerly, is recorded as the optimizer reports it)
TELEMETRY_QUANTITIES: tuple[str, ...] = ("alignment", "survival")


def telemetry_key(quantity: str, component: str) -> str:
    """The metric key of one telemetry value, e.g. ``alignment/attention``."""
    return f"{quantity}/{component}"


def parse_telemetry_key(key: str) -> tuple[str, str] | None:
    """``(quantity, component)`` of a telemetry key, None for any other metric key."""
    quantity, sep, component = key.partition("/")
    if sep and component and quantity in TELEMETRY_QUANTITIES:
        return quantity, component
    return None


# --- seeds --------------------------------------------------------------------------------

#: added to a trial's seed to get the seed of its masks when none is given
MASK_SEED_OFFSET = 1_000_003


def mask_seed(seed: int) -> int:
    """The mask seed of a trial with data/init seed ``seed``: the same rule for the CLI, a
    study, the export and a resumed trial, so one configuration always draws one mask
    sequence. Offset so that masks never share a stream with data order or init."""
    return seed + MASK_SEED_OFFSET
