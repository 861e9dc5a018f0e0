"""What each dashboard page shows: a study's records in, figures and template context out.

A page is its options (parsed from the query string, so a figure exported from a page
is the figure the page showed), the analyses it runs and the figures it draws. Figures
are built lazily: a page renders all of its own, an export builds only the one asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import plotly.graph_objects as go
from pydantic import BaseModel, ConfigDict, Field

from dashboards.figures.lr_window import lr_window_figure
from dashboards.figures.mechanism import mechanism_figure
from dashboards.figures.overview import best_curves_figure, learning_curves_spec, status_figure
from dashboards.figures.robustness import (
    divergence_figure,
    intervals_figure,
    paired_difference_figure,
)
from dashboards.figures.sensitivity import heatmap_figure, importance_figure, slice_figure
from dashboards.figures.style import objective_title, params_text
from dashboards.figures.table import comparison_table_figure
from studies.analysis.arms import (
    ARM_PARAMS,
    Configuration,
    best_per_cell,
    configurations,
    group_by_arm,
    searched_values,
)
from studies.analysis.curves import best_configuration_curves, learning_curves
from studies.analysis.importance import parameter_importance
from studies.analysis.intervals import divergence_rates
from studies.analysis.lr_window import lr_windows
from studies.analysis.mechanism import mechanism_series
from studies.analysis.objective import rank
from studies.analysis.pairing import paired_comparison
from studies.analysis.status import status_counts
from studies.analysis.table import comparison_table
from studies.analysis.verdict import Comparison
from studies.best import is_confirmation
from studies.records import BASES, VARIANTS, Arm, TrialRecord
from studies.results import StudyData
from worker.contract import FINISHED_TRIAL_STATUSES, PROGRESS_METRIC

#: a figure, or a plain figure dict drawn unvalidated (``export.embed_html``)
FigureBuilder = Callable[[], go.Figure | dict[str, Any]]
#: best configurations listed on the overview
BEST_SHOWN = 10


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SensitivityOptions(NoOptions):
    x: str | None = Field(None, max_length=40, description="heatmap x axis (default p)")
    y: str | None = Field(None, max_length=40, description="heatmap y axis (default tau)")


class LRWindowOptions(NoOptions):
    delta: float = Field(
        0.05, ge=0, le=10, allow_inf_nan=False, description="tolerance, relative to the best"
    )


class RobustnessOptions(NoOptions):
    a: str | None = Field(None, max_length=80, description="baseline arm, e.g. adamw")
    b: str | None = Field(None, max_length=80, description="compared arm, e.g. adamw+magma")


class OptionError(ValueError):
    """A query value the study has no use for (``field: message``)."""


@dataclass
class PageView:
    #: name -> builder, in the order the page shows them
    figures: dict[str, FigureBuilder] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    slug: str
    title: str
    template: str
    options: type[NoOptions]
    #: which metric rows the page needs (``loader.load_study``)
    metrics: Literal["none", "curves", "all"]
    build: Callable[[StudyData, Any], PageView]


# --- overview ---------------------------------------------------------------------------


def overview(data: StudyData, _: NoOptions) -> PageView:
    counts = status_counts(data.trials)
    y, x = data.metric, PROGRESS_METRIC[data.workload]
    curves = learning_curves(data.trials, data.metrics, y, x)
    best_curves = best_configuration_curves(data.trials, curves, data.mode)
    configs = configurations(data.trials)
    stable = sorted(
        (c for c in configs if c.eligible),
        key=lambda c: (rank(c.summary.mean, data.mode), c.number),
    )
    finished = sum(n for status, n in counts.items() if status in FINISHED_TRIAL_STATUSES)
    view = PageView(
        figures={
            "status": lambda: status_figure(counts),
            "curves": lambda: learning_curves_spec(curves, data.metric, x),
        },
        context={
            "counts": counts,
            "finished_trials": finished,
            "best": [_config_row(c) for c in stable[:BEST_SHOWN]],
            "stable_count": len(stable),
            "spec_json": json.dumps(data.spec, indent=2, sort_keys=True),
            "live": {
                "study": data.id,
                "after": data.last_event_id,
                "finished": data.finished,
                "y": y,
                "x": x,
            },
        },
    )
    if best_curves:
        view.figures["best-curves"] = lambda: best_curves_figure(best_curves, data.metric, x)
    return view


def _config_row(config: Configuration) -> dict[str, Any]:
    interval = config.interval  # the charts' interval: within the metric's range
    return {
        "arm": config.arm.label,
        "params": params_text(config.params) or "-",
        "mean": interval.mean,
        "low": interval.low,
        "high": interval.high,
        "n": interval.n,
        "seeds": len(config.trials),
        "trial_ids": config.trial_ids,
    }


# --- sensitivity ------------------------------------------------------------------------


def sensitivity(data: StudyData, options: SensitivityOptions) -> PageView:
    # a confirmation stage reruns a choice on fresh seeds: no point of the search
    configs = [c for c in configurations(data.trials) if not is_confirmation(c.params)]
    axes = _axis_candidates(configs)
    x, y = _heatmap_axes(axes, options)
    view = PageView(context={"axes": list(axes), "x": x, "y": y, "heatmaps": []})
    if x is not None and y is not None:
        for label, trials in _groups(data.trials, (x, y)):
            cells = best_per_cell(trials, x, y, data.mode)
            if len(cells) < 2:  # an arm that does not search these: one default cell
                continue
            name = "heatmap-" + _slug(label)
            view.figures[name] = _titled(
                lambda cells=cells: heatmap_figure(cells, x, y, data.metric), label
            )
            view.context["heatmaps"].append(name)
    with _quiet_optuna():
        importances = parameter_importance(data.trials, data.mode)
    view.context["importance_reasons"] = [
        f"{item.arm.label}: {item.reason}" for item in importances.values() if item.reason
    ]
    view.figures["importance"] = lambda: importance_figure(importances)
    sliced = [name for name, values in searched_values(configs).items() if len(values) > 1]
    view.context["sliced"] = sliced
    if sliced:
        view.figures["slices"] = lambda: slice_figure(configs, sliced, data.metric)
    return view


def _axis_candidates(configs: list[Configuration]) -> dict[str, list[Any]]:
    """Every parameter with more than one value among the configurations: the arm's
    (base, variant) first, then the searched ones."""
    found: dict[str, list[Any]] = {}
    for name in ARM_PARAMS:
        values = sorted({str(c.value(name)) for c in configs}, key=_arm_value_order(name))
        if len(values) > 1:
            found[name] = values
    for name, values in searched_values(configs).items():
        if len(values) > 1:
            found[name] = values
    return found


def _arm_value_order(name: str) -> Callable[[str], tuple[int, str]]:
    known = BASES if name == "base" else VARIANTS
    return lambda value: (known.index(value) if value in known else len(known), value)


def _heatmap_axes(
    axes: dict[str, list[Any]], options: SensitivityOptions
) -> tuple[str | None, str | None]:
    """The requested axes, else p x tau (the paper's Figure A1), else the two searched
    parameters with the most values, else a searched parameter against an arm's."""
    for field_name, name in (("x", options.x), ("y", options.y)):
        if name is not None and name not in axes:
            raise OptionError(
                f"{field_name}: must be a parameter that varies in this study: {list(axes)}"
            )
    if options.x and options.y:
        if options.x == options.y:
            raise OptionError("y: must differ from x")
        return options.x, options.y
    if "p" in axes and "tau" in axes:
        preferred = ["p", "tau"]
    else:
        searched = sorted(
            (n for n in axes if n not in ARM_PARAMS), key=lambda n: (-len(axes[n]), n)
        )
        preferred = searched + [n for n in ARM_PARAMS if n in axes]
    chosen = [n for n in (options.x, options.y) if n]
    for name in preferred:
        if len(chosen) == 2:
            break
        if name not in chosen:
            chosen.append(name)
    if len(chosen) < 2:
        return None, None
    if options.y and not options.x:
        chosen.reverse()
    return chosen[0], chosen[1]


def _groups(
    trials: list[TrialRecord], axes: tuple[str, str]
) -> Iterator[tuple[str, list[TrialRecord]]]:
    """The trials split by the arm parameters that are not an axis: one heatmap per arm
    for p x tau, one per base for lr x variant."""
    split = [name for name in ARM_PARAMS if name not in axes]
    groups: dict[tuple[str, ...], list[TrialRecord]] = {}
    for trial in trials:
        groups.setdefault(tuple(str(trial.value(n)) for n in split), []).append(trial)

    def order(key: tuple[str, ...]) -> tuple[Any, ...]:
        return tuple(_arm_value_order(n)(v) for n, v in zip(split, key, strict=True))

    whole_arm = split == list(ARM_PARAMS)
    for key in sorted(groups, key=order):
        yield (Arm(*key).label if whole_arm else " ".join(key) or "all trials"), groups[key]


def _titled(build: Callable[[], go.Figure], label: str) -> Callable[[], go.Figure]:
    def titled() -> go.Figure:
        fig = build()
        fig.update_layout(title_text=f"{label}: {fig.layout.title.text}")
        return fig

    return titled


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "all"


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Importance builds throwaway in-memory studies; Optuna logs each one at INFO."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


# --- LR window --------------------------------------------------------------------------


def lr_window(data: StudyData, options: LRWindowOptions) -> PageView:
    windows = lr_windows(data.trials, data.mode, options.delta)
    rows = []
    for arm, window in windows.items():
        rows.append(
            {
                "arm": arm.label,
                "slug": _slug(arm.label),
                "tested": len(window.points),
                "best_lr": window.best.lr if window.best else None,
                "best": window.best.mean if window.best else None,
                "threshold": window.threshold,
                "low": window.low,
                "high": window.high,
                "width": window.width,
                "max_stable_lr": window.max_stable_lr,
                "min_diverged_lr": window.min_diverged_lr,
                "diverged": [p.lr for p in window.points if p.diverged],
            }
        )
    return PageView(
        figures={"lr-window": lambda: lr_window_figure(windows, data.metric)},
        context={"delta": options.delta, "windows": rows},
    )


# --- robustness -------------------------------------------------------------------------


def parse_arm(label: str) -> Arm:
    """``adamw`` -> (adamw, dense); ``adamw+magma`` -> (adamw, magma)."""
    base, _, variant = label.partition("+")
    return Arm(base, variant or "dense")


def robustness(data: StudyData, options: RobustnessOptions) -> PageView:
    configs = configurations(data.trials)
    rates = divergence_rates(data.trials)
    arms = list(group_by_arm(data.trials))
    a, b = _pair(arms, options)
    view = PageView(
        figures={
            "intervals": lambda: intervals_figure(configs, data.metric),
            "divergence": lambda: divergence_figure(rates),
        },
        context={
            "arms": [arm.label for arm in arms],
            "a": a.label if a else None,
            "b": b.label if b else None,
            "rates": [
                {"arm": arm.label, "diverged": r.diverged, "finished": r.finished, "rate": r.rate}
                for arm, r in rates.items()
            ],
            "comparison": None,
        },
    )
    if a is not None and b is not None:
        comparison = paired_comparison(data.trials, a, b, data.mode)
        d = comparison.difference
        view.context["comparison"] = {
            "pairs": len(comparison.pairs),
            "mean": d.mean,
            "low": d.low,
            "high": d.high,
            "confidence": d.confidence,
            "unpaired": len(comparison.unpaired),
            # each arm's best configuration (None: none whose every seed completed)
            "a_best": _best_text(comparison.a_best),
            "b_best": _best_text(comparison.b_best),
        }
        view.figures["paired"] = lambda: paired_difference_figure(comparison, data.metric)
    return view


def _best_text(best: Configuration | None) -> str | None:
    """A best configuration as the page names it: its searched values (``-`` when the arm
    searched none), or None when the arm has no best."""
    if best is None:
        return None
    return params_text(best.params) or "-"


def _pair(arms: list[Arm], options: RobustnessOptions) -> tuple[Arm | None, Arm | None]:
    """The requested arms, else a base's dense baseline and its first masked variant,
    else the first two arms."""
    labels = [arm.label for arm in arms]
    for field_name, label in (("a", options.a), ("b", options.b)):
        if label is not None and label not in labels:
            raise OptionError(f"{field_name}: must be an arm of this study: {labels}")
    if options.a and options.b:
        if options.a == options.b:
            raise OptionError("b: must differ from a")
        return parse_arm(options.a), parse_arm(options.b)
    if len(arms) < 2:
        return None, None
    a = parse_arm(options.a) if options.a else None
    b = parse_arm(options.b) if options.b else None
    if a is None:
        dense = [arm for arm in arms if arm.variant == "dense" and arm != b]
        a = dense[0] if dense else next(arm for arm in arms if arm != b)
    if b is None:
        others = [arm for arm in arms if arm != a]
        same_base = [arm for arm in others if arm.base == a.base]
        b = (same_base or others)[0]
    return a, b


# --- comparison table -------------------------------------------------------------------


def table(data: StudyData, _: NoOptions) -> PageView:
    result = comparison_table(
        data.trials,
        data.mode,
        data.bracket,
        confirming=data.confirming,
        metric=data.metric,
        design=data.design,
    )
    rows = []
    for base, cells in result.rows.items():
        row = []
        for variant in result.variants:
            cell = cells.get(variant)
            if cell is None:
                row.append(None)
                continue
            best = cell.best
            row.append(
                {
                    "value": cell.value,
                    # the interval the charts draw (within the metric's range)
                    "low": cell.interval.low if cell.interval else None,
                    "high": cell.interval.high if cell.interval else None,
                    "params": params_text(best.params) if best else "",
                    "trial_ids": cell.trial_ids,
                    "reason": cell.reason,
                    "verdict": _verdict_row(cell.comparison),
                }
            )
        rows.append({"base": base, "cells": row})
    return PageView(
        figures={"table": lambda: comparison_table_figure(result, data.metric)},
        context={"variants": result.variants, "rows": rows},
    )


def _verdict_row(comparison: Comparison | None) -> dict[str, Any] | None:
    """A masked cell's paired comparison against its dense base (its one difference from
    dense): the summary (the decision, then both stages, the deciding one marked), the
    decision (``inconclusive`` when a limit applies) and the warnings."""
    if comparison is None:
        return None
    return {
        "summary": comparison.summary,
        "decision": comparison.decision_code,
        "deciding_stage": comparison.deciding.stage.value,
        "warnings": [warning.message for warning in comparison.warnings],
    }


# --- mechanism --------------------------------------------------------------------------


def mechanism(data: StudyData, _: NoOptions) -> PageView:
    series = mechanism_series(data.trials, data.metrics)
    final = [
        {
            "arm": s.arm.label,
            "quantity": s.quantity,
            "component": s.component,
            "step": s.steps[-1],
            "value": s.mean[-1],
            "trials": s.trials[-1],
        }
        for s in series
    ]
    view = PageView(context={"final": final})
    if series:
        view.figures["mechanism"] = lambda: mechanism_figure(series)
    return view


#: the pages' Jinja templates, which the service's router renders
TEMPLATE_DIR = Path(__file__).parent / "templates"

PAGES: dict[str, Page] = {
    page.slug: page
    for page in (
        Page("overview", "Overview", "overview.html", NoOptions, "curves", overview),
        Page(
            "sensitivity",
            "Sensitivity",
            "sensitivity.html",
            SensitivityOptions,
            "none",
            sensitivity,
        ),
        Page("lr-window", "LR window", "lr_window.html", LRWindowOptions, "none", lr_window),
        Page("robustness", "Robustness", "robustness.html", RobustnessOptions, "none", robustness),
        Page("table", "Comparison table", "table.html", NoOptions, "none", table),
        Page("mechanism", "Mechanism", "mechanism.html", NoOptions, "all", mechanism),
    )
}


def template_globals() -> dict[str, Any]:
    """Helpers the templates format numbers with."""
    return {
        "fmt": _fmt,
        "objective_title": objective_title,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)
