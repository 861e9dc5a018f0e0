"""Shared look of the dashboards: arm colours, axis titles and value formatting."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

from studies.analysis.arms import ARM_PARAMS
from studies.analysis.intervals import Interval
from studies.records import Arm
from worker.contract import TrialStatus, metric_title

TEMPLATE = "plotly_white"
STATUS_COLORS = {
    TrialStatus.queued.value: "#9e9e9e",
    TrialStatus.running.value: "#1f77b4",
    TrialStatus.complete.value: "#2ca02c",
    TrialStatus.pruned.value: "#ff7f0e",
    TrialStatus.diverged.value: "#d62728",
    TrialStatus.failed.value: "#8c564b",
    TrialStatus.cancelled.value: "#7f7f7f",
}
#: the marker of a point whose run diverged
DIVERGED_SYMBOL = "x"
#: a value axis turns logarithmic when its largest value is more than this times its smallest
LOG_SPAN = 10.0


def objective_title(metric: str) -> str:
    """The study's objective metric as an axis title, e.g. ``validation perplexity``."""
    return metric_title(metric)


def arm_colors(arms: Iterable[Arm]) -> dict[Arm, str]:
    """A colour per arm, in canonical arm order, so an arm keeps its colour across the
    figures of one study."""
    palette = qualitative.Plotly
    ordered = sorted(set(arms), key=lambda arm: arm.order)
    return {arm: palette[i % len(palette)] for i, arm in enumerate(ordered)}


def format_value(value: Any) -> str:
    """Compact parameter values: 0.0030000000000000001 -> 0.003, 1e-05, strings as they are."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def interval_text(interval: Interval | None, digits: int = 4) -> str:
    """``2.51 [1.9, 3.3]``: a mean and the interval the charts draw around it
    (``intervals.range_interval``), as every table shows it; the mean alone without an
    interval (one seed), ``-`` without a mean."""
    if interval is None or interval.mean is None:
        return "-"
    mean = f"{interval.mean:.{digits}g}"
    if interval.low is None or interval.high is None:
        return mean
    return f"{mean} [{interval.low:.{digits}g}, {interval.high:.{digits}g}]"


def params_text(params: Mapping[str, Any]) -> str:
    """``lr=0.001 p=0.5``: the searched values other than the arm's."""
    return " ".join(
        f"{name}={format_value(value)}"
        for name, value in sorted(params.items())
        if name not in ARM_PARAMS
    )


def params_label(arm: Arm, params: Mapping[str, Any]) -> str:
    """``adamw+magma lr=0.001 p=0.5``: the arm and the other searched values."""
    return f"{arm.label} {params_text(params)}".rstrip()


def new_figure(title: str) -> go.Figure:
    return go.Figure(layout={"title": {"text": title}, "template": TEMPLATE})


def value_axis_type(values: Iterable[float | None]) -> Literal["log", "linear"]:
    """``log`` when every plotted value is positive and they span more than ``LOG_SPAN``
    (a loss from 1 to 4,000 on a linear axis flattens everything near its best into the
    floor), ``linear`` otherwise. None, a value not drawn, is skipped."""
    drawn = [value for value in values if value is not None and math.isfinite(value)]
    if not drawn or min(drawn) <= 0:
        return "linear"
    return "log" if max(drawn) > LOG_SPAN * min(drawn) else "linear"


def interval_values(intervals: Iterable[Interval]) -> list[float | None]:
    """Every value an error-barred point draws: its mean and both ends of its interval."""
    return [value for i in intervals for value in (i.mean, i.low, i.high)]


def error_bars(intervals: Sequence[Interval], **style: Any) -> dict[str, Any]:
    """Plotly ``error_y`` for intervals that need not be symmetric about their means
    (``range_interval``'s); no bar where an interval has a single seed."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [i.plus for i in intervals],
        "arrayminus": [i.minus for i in intervals],
        **style,
    }


def translucent(color: str, opacity: float) -> str:
    """``#1f77b4`` as ``rgba(31, 119, 180, opacity)``: a band or a faint line of an arm's
    colour."""
    red, green, blue = hex_to_rgb(color)
    return f"rgba({red}, {green}, {blue}, {opacity})"
