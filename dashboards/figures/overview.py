"""A study at a glance: trial statuses, every trial's learning curve, and each arm's at its
best configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboards.figures.style import (
    STATUS_COLORS,
    TEMPLATE,
    arm_colors,
    new_figure,
    objective_title,
    params_label,
    params_text,
    translucent,
    value_axis_type,
)
from studies.analysis.curves import ArmCurve, Curve


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


def best_curves_figure(curves: Sequence[ArmCurve], metric: str, progress: str) -> go.Figure:
    """Per arm at its best configuration: the median over seeds as a solid line, the
    seeds' range (min to max) as a band of the arm's colour, and each seed's own run
    faint behind them. The objective axis is logarithmic where the values span more than
    a decade (``value_axis_type``), as a curve's early values usually do."""
    fig = new_figure("Learning curves at each arm's best configuration")
    colors = arm_colors(curve.arm for curve in curves)
    for curve in curves:
        label, color = curve.arm.label, colors[curve.arm]
        for seed in curve.seeds:
            fig.add_scatter(
                x=list(seed.x),
                y=list(seed.y),
                mode="lines",
                name=f"{label} seed {seed.trial.seed_index}",
                legendgroup=label,
                showlegend=False,
                line={"color": translucent(color, 0.35), "width": 1},
                hovertext=f"trial {seed.trial.number} (seed {seed.trial.seed_index})",
                customdata=[seed.trial.id] * len(seed.x),
            )
        # the band: its top edge, then its bottom edge filled up to it
        fig.add_scatter(
            x=list(curve.x),
            y=list(curve.high),
            mode="lines",
            name=f"{label} max over seeds",
            legendgroup=label,
            showlegend=False,
            line={"width": 0},
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=list(curve.x),
            y=list(curve.low),
            mode="lines",
            name=f"{label} min over seeds",
            legendgroup=label,
            showlegend=False,
            line={"width": 0},
            fill="tonexty",
            fillcolor=translucent(color, 0.2),
            hoverinfo="skip",
        )
        fig.add_scatter(
            x=list(curve.x),
            y=list(curve.median),
            mode="lines",
            name=f"{label} ({params_text(curve.configuration.params) or 'defaults'})",
            legendgroup=label,
            line={"color": color, "width": 2.5},
            hovertext=[f"median of {n} seeds" for n in curve.n],
        )
    values = [value for curve in curves for seed in curve.seeds for value in seed.y]
    fig.update_xaxes(title=progress)
    fig.update_yaxes(type=value_axis_type(values), title=objective_title(metric))
    return fig
