"""Objective against learning rate per arm, with each arm's window of good LRs shaded
(the paper's Figure A3)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import plotly.graph_objects as go

from dashboards.analysis.lr_window import LRWindow
from dashboards.figures.style import DIVERGED_SYMBOL, arm_colors, new_figure, objective_title
from dashboards.records import Arm


def lr_window_figure(windows: Mapping[Arm, LRWindow], metric: str) -> go.Figure:
    """Per arm: stable LRs as a line with seed-interval error bars, diverged LRs as
    ``x`` markers drawn at the worst objective plotted (they have none to place them by),
    and the window as a shaded band, the legend giving its width in decades."""
    fig = new_figure(f"{objective_title(metric).capitalize()} against learning rate")
    colors = arm_colors(windows)
    worst = _worst(windows.values())
    for arm, window in windows.items():
        stable = [p for p in window.points if not p.diverged]
        diverged = [p for p in window.points if p.diverged]
        width = "no window" if window.width is None else f"window {window.width:.2f} decades"
        fig.add_scatter(
            x=[p.lr for p in stable],
            y=[p.mean for p in stable],
            error_y={
                "type": "data",
                "array": [p.configuration.summary.half_width for p in stable],
            },
            mode="lines+markers",
            name=f"{arm.label} ({width})",
            legendgroup=arm.label,
            line={"color": colors[arm]},
            customdata=[list(p.configuration.trial_ids) for p in stable],
        )
        if diverged:
            fig.add_scatter(
                x=[p.lr for p in diverged],
                y=[worst] * len(diverged),
                mode="markers",
                name=f"{arm.label} diverged",
                legendgroup=arm.label,
                marker={"symbol": DIVERGED_SYMBOL, "size": 12, "color": colors[arm]},
                hovertext=[
                    f"lr {p.lr:g}: diverged on {p.configuration.diverged} of "
                    f"{len(p.configuration.trials)} seeds"
                    for p in diverged
                ],
                customdata=[list(p.configuration.trial_ids) for p in diverged],
            )
        if window.low is not None:
            fig.add_vrect(
                x0=window.low,
                x1=window.high,
                fillcolor=colors[arm],
                opacity=0.12,
                line={"color": colors[arm], "width": 1, "dash": "dot"},
                layer="below",
            )
    fig.update_xaxes(type="log", title="learning rate")
    fig.update_yaxes(title=objective_title(metric))
    return fig


def _worst(windows: Collection[LRWindow]) -> float:
    """The worst end of the stable points' error bars: the top when minimising, the
    bottom when maximising (1.0 when nothing is stable, so markers still show)."""
    tops, bottoms = [], []
    for window in windows:
        for point in window.points:
            summary = point.configuration.summary
            if not point.diverged:
                tops.append(summary.mean if summary.high is None else summary.high)
                bottoms.append(summary.mean if summary.low is None else summary.low)
    if not tops:
        return 1.0
    modes = {window.mode for window in windows}
    return min(bottoms) if modes == {"max"} else max(tops)
