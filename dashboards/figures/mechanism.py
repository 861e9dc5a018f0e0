"""Magma's alignment score and survival fraction against the step, per component."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.figures.style import TEMPLATE, arm_colors
from studies.analysis.mechanism import MechanismSeries
from worker.contract import TELEMETRY_QUANTITIES as QUANTITIES

DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def mechanism_figure(series: Sequence[MechanismSeries]) -> go.Figure:
    """Two panels, alignment and survival; a line per (arm, component), coloured by arm
    and dashed by component."""
    fig = make_subplots(rows=1, cols=len(QUANTITIES), subplot_titles=QUANTITIES)
    fig.update_layout(title={"text": "Alignment and survival over training"}, template=TEMPLATE)
    colors = arm_colors(s.arm for s in series)
    components = sorted({s.component for s in series})
    shown = set()
    for s in series:
        name = f"{s.arm.label} {s.component}"
        fig.add_scatter(
            x=list(s.steps),
            y=list(s.mean),
            mode="lines",
            name=name,
            legendgroup=name,
            showlegend=name not in shown,
            line={
                "color": colors[s.arm],
                "dash": DASHES[components.index(s.component) % len(DASHES)],
            },
            hovertext=[f"{n} trials" for n in s.trials],
            row=1,
            col=QUANTITIES.index(s.quantity) + 1,
        )
        shown.add(name)
    for column, quantity in enumerate(QUANTITIES, start=1):
        fig.update_xaxes(title="step", row=1, col=column)
        fig.update_yaxes(title=quantity, range=[0, 1], row=1, col=column)
    return fig
