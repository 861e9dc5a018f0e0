"""Objective against learning rate per arm, with each arm's window of good LRs shaded and
its stability frontier marked (the paper's Figure A3)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import plotly.graph_objects as go

from dashboards.figures.style import (
    DIVERGED_SYMBOL,
    arm_colors,
    error_bars,
    format_value,
    interval_values,
    new_figure,
    objective_title,
    value_axis_type,
)
from studies.analysis.lr_window import LRWindow
from studies.records import Arm

#: the frontier's vertical lines: the largest LR with no diverged seed, the smallest with one
STABLE_DASH = "dash"
DIVERGED_DASH = "dot"


def lr_window_figure(windows: Mapping[Arm, LRWindow], metric: str) -> go.Figure:
    """Per arm: stable LRs as a line (the interpolation the window is measured on, when the
    objective axis is logarithmic) with 95% seed intervals (``range_interval``: never below
    zero for a loss), diverged LRs as ``x`` markers drawn at the worst objective plotted
    (they have none to place them by), the window as a shaded band, the legend giving its
    width in decades, and the stability frontier as vertical lines: dashed at the largest
    LR with no diverged seed, dotted at the smallest with one. The objective axis is
    logarithmic where the plotted values span more than a decade (``value_axis_type``)."""
    fig = new_figure(f"{objective_title(metric).capitalize()} against learning rate")
    colors = arm_colors(windows)
    worst = _worst(windows.values())
    plotted: list[float | None] = []
    for arm, window in windows.items():
        stable = [p for p in window.points if not p.diverged]
        diverged = [p for p in window.points if p.diverged]
        intervals = [p.configuration.interval for p in stable]
        plotted += interval_values(intervals)
        width = "no window" if window.width is None else f"window {window.width:.2f} decades"
        fig.add_scatter(
            x=[p.lr for p in stable],
            y=[p.mean for p in stable],
            error_y=error_bars(intervals),
            mode="lines+markers",
            name=f"{arm.label} ({width})",
            legendgroup=arm.label,
            line={"color": colors[arm]},
            customdata=[list(p.configuration.trial_ids) for p in stable],
        )
        if diverged:
            plotted.append(worst)
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
                line_width=0,
                layer="below",
            )
        frontier = (
            (window.max_stable_lr, STABLE_DASH, "largest LR without divergence"),
            (window.min_diverged_lr, DIVERGED_DASH, "smallest diverged LR"),
        )
        for lr, dash, what in frontier:
            if lr is not None:
                fig.add_vline(
                    x=lr,
                    line={"color": colors[arm], "dash": dash, "width": 1.5},
                    name=f"{arm.label} {what} {format_value(lr)}",
                    legendgroup=arm.label,
                    showlegend=True,
                )
    fig.update_xaxes(type="log", title="learning rate")
    fig.update_yaxes(type=value_axis_type(plotted), title=objective_title(metric))
    return fig


def _worst(windows: Collection[LRWindow]) -> float:
    """The worst end of the stable points' error bars: the top when minimising, the
    bottom when maximising (1.0 when nothing is stable, so markers still show)."""
    tops, bottoms = [], []
    for window in windows:
        for point in window.points:
            interval = point.configuration.interval
            if not point.diverged:
                tops.append(interval.mean if interval.high is None else interval.high)
                bottoms.append(interval.mean if interval.low is None else interval.low)
    if not tops:
        return 1.0
    modes = {window.mode for window in windows}
    return min(bottoms) if modes == {"max"} else max(tops)
