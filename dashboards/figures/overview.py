"""A study at a glance: trial statuses and every trial's learning curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboards.analysis.curves import Curve
from dashboards.figures.style import (
    STATUS_COLORS,
    TEMPLATE,
    arm_colors,
    new_figure,
    objective_title,
    params_label,
)


def status_figure(counts: Mapping[str, int]) -> go.Figure:
    """One bar per status (from ``status_counts``), coloured by status."""
    fig = new_figure("Trials by status")
    fig.add_bar(
        x=list(counts),
        y=list(counts.values()),
        marker_color=[STATUS_COLORS.get(status, "#7f7f7f") for status in counts],
        text=list(counts.values()),
        textposition="outside",
        showlegend=False,
    )
    fig.update_layout(xaxis_title="status", yaxis_title="trials")
    return fig


def learning_curves_figure(curves: Sequence[Curve], metric: str, progress: str) -> go.Figure:
    """Validation metric against tokens (language) or steps (synthetic), one line per trial,
    coloured by arm with one legend entry per arm; the y axis is logarithmic because
    curves fall by orders of magnitude early on."""
    return go.Figure(learning_curves_spec(curves, metric, progress))


def learning_curves_spec(curves: Sequence[Curve], metric: str, progress: str) -> dict[str, Any]:
    """``learning_curves_figure`` as the plain figure dict it is built from, for a page to
    draw without Plotly's validation, which costs about 0.3 ms per trace: a third of a
    second for a study of a thousand trials."""
    colors = arm_colors(curve.trial.arm for curve in curves)
    shown = set()
    traces = []
    for curve in curves:
        arm = curve.trial.arm
        traces.append(
            {
                "type": "scatter",
                "x": list(curve.x),
                "y": list(curve.y),
                "mode": "lines",
                "name": arm.label,
                "legendgroup": arm.label,
                "showlegend": arm not in shown,
                "line": {"color": colors[arm], "dash": "dot" if curve.trial.diverged else "solid"},
                "hovertext": (
                    f"trial {curve.trial.number} (seed {curve.trial.seed_index}, "
                    f"{curve.trial.status})<br>{params_label(arm, curve.trial.params)}"
                ),
                "customdata": [curve.trial.id] * len(curve.x),
            }
        )
        shown.add(arm)
    return {
        "data": traces,
        "layout": {
            "title": {"text": "Learning curves"},
            "template": TEMPLATE,
            "xaxis": {"title": {"text": progress}},
            "yaxis": {"title": {"text": objective_title(metric)}, "type": "log"},
        },
    }
