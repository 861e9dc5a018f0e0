"""Shared look of the dashboards: arm colours, axis titles and value formatting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboards.analysis.arms import ARM_PARAMS
from dashboards.records import Arm
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
