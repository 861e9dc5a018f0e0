"""How sensitive an arm is to its hyperparameters: a two-parameter heatmap of best
configurations (the paper's Figure A1), parameter importance, and one-parameter slices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.figures.style import (
    DIVERGED_SYMBOL,
    TEMPLATE,
    arm_colors,
    error_bars,
    format_value,
    interval_values,
    new_figure,
    objective_title,
    params_label,
    value_axis_type,
)
from studies.analysis.arms import ARM_PARAMS, Configuration, sort_key
from studies.analysis.importance import LOG_SCALE, Importance
from studies.records import Arm


def heatmap_figure(
    cells: Mapping[tuple[Any, Any], Configuration | None], x: str, y: str, metric: str
) -> go.Figure:
    """Each (x, y) cell's best mean objective (from ``best_per_cell``), annotated with
    the values of the other parameters that achieved it; cells that only diverged read
    "diverged", cells never run stay blank. Axes are categorical: grids are rarely even."""
    xs = sorted({cell[0] for cell in cells}, key=sort_key)
    ys = sorted({cell[1] for cell in cells}, key=sort_key)
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    for y_value in ys:
        z.append([])
        text.append([])
        for x_value in xs:
            key = (x_value, y_value)
            best = cells.get(key)
            z[-1].append(best.summary.mean if best is not None else None)
            text[-1].append(_cell_text(best, x, y) if key in cells else "")
    fig = new_figure(f"Best {objective_title(metric)} per ({x}, {y})")
    fig.add_heatmap(
        x=[format_value(v) for v in xs],
        y=[format_value(v) for v in ys],
        z=z,
        text=text,
        texttemplate="%{text}",
        colorscale="Viridis",
        colorbar={"title": {"text": objective_title(metric)}},
    )
    fig.update_xaxes(type="category", title=x)
    fig.update_yaxes(type="category", title=y)
    return fig


def _cell_text(best: Configuration | None, x: str, y: str) -> str:
    if best is None:
        return "diverged"
    others = [
        f"{name}={format_value(value)}"
        for name, value in sorted(best.params.items())
        if name not in (x, y, *ARM_PARAMS)
    ]
    return "<br>".join([f"{best.summary.mean:.4g}", *others])


def importance_figure(importances: Mapping[Arm, Importance]) -> go.Figure:
    """Horizontal bars of each arm's parameter importances (from ``parameter_importance``);
    an arm without importances is named with its reason below the plot."""
    fig = new_figure("Parameter importance")
    colors = arm_colors(item.arm for item in importances.values())
    missing = []
    for item in importances.values():
        if not item.importances:
            missing.append(f"{item.arm.label}: {item.reason}")
            continue
        fig.add_bar(
            x=list(item.importances.values()),
            y=list(item.importances),
            orientation="h",
            name=item.arm.label,
            marker_color=colors[item.arm],
        )
    fig.update_layout(barmode="group", xaxis_title="importance (sums to 1)")
    if missing:
        fig.add_annotation(
            text="<br>".join(missing),
            xref="paper",
            yref="paper",
            x=0,
            y=-0.2,
            showarrow=False,
            align="left",
        )
    return fig


def slice_figure(configs: Sequence[Configuration], params: Sequence[str], metric: str) -> go.Figure:
    """The mean objective of every configuration against each parameter in ``params``,
    one panel each, coloured by arm; error bars are 95% seed intervals in the metric's
    range (``range_interval``), configurations with a diverged seed are drawn with the
    diverged marker, the LR axis is logarithmic, a parameter with any non-numeric value
    categorical, and the shared objective axis logarithmic where its values span more than a
    decade (``value_axis_type``)."""
    if not params:
        raise ValueError("slice_figure needs at least one parameter")
    fig = make_subplots(rows=1, cols=len(params), shared_yaxes=True, subplot_titles=params)
    fig.update_layout(title={"text": "Slices"}, template=TEMPLATE)
    colors = arm_colors(config.arm for config in configs)
    shown = set()
    plotted: list[float | None] = []
    for column, name in enumerate(params, start=1):
        values = sorted({c.params[name] for c in configs if name in c.params}, key=sort_key)
        # Plotly reads a mix of words and numbers (score_init: 'first', 0.5) as numbers and
        # drops the words: any word makes the panel categorical, its values in sort_key order.
        categorical = any(isinstance(v, str | bool) for v in values)
        for arm in colors:
            drawn = [
                c
                for c in configs
                if c.arm == arm and name in c.params and c.summary.mean is not None
            ]
            if not drawn:
                continue
            intervals = [c.interval for c in drawn]
            plotted += interval_values(intervals)
            xs = [c.params[name] for c in drawn]
            fig.add_scatter(
                x=[format_value(x) for x in xs] if categorical else xs,
                y=[c.summary.mean for c in drawn],
                error_y=error_bars(intervals),
                mode="markers",
                marker={
                    "color": colors[arm],
                    "symbol": [DIVERGED_SYMBOL if c.diverged else "circle" for c in drawn],
                },
                name=arm.label,
                legendgroup=arm.label,
                showlegend=arm not in shown,
                hovertext=[params_label(c.arm, c.params) for c in drawn],
                row=1,
                col=column,
            )
            shown.add(arm)
        fig.update_xaxes(title=name, row=1, col=column)
        if categorical:
            order = [format_value(v) for v in values]
            fig.update_xaxes(
                type="category", categoryorder="array", categoryarray=order, row=1, col=column
            )
        elif name in LOG_SCALE:
            fig.update_xaxes(type="log", row=1, col=column)
    fig.update_yaxes(type=value_axis_type(plotted))
    fig.update_yaxes(title=objective_title(metric), row=1, col=1)
    return fig
