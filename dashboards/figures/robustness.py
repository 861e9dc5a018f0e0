"""How robust results are to the seed: per-configuration intervals, divergence rates and
the paired difference between two arms, each at its best configuration, one pair a seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from dashboards.figures.style import (
    DIVERGED_SYMBOL,
    arm_colors,
    error_bars,
    interval_values,
    new_figure,
    objective_title,
    params_label,
    value_axis_type,
)
from studies.analysis.arms import Configuration
from studies.analysis.intervals import DivergenceRate
from studies.analysis.pairing import PairedComparison
from studies.records import Arm


def intervals_figure(configs: Sequence[Configuration], metric: str) -> go.Figure:
    """Each configuration's mean over seeds with its 95% interval in the metric's range
    (``range_interval``: a log-space t interval for a loss, never below zero), lowest
    first, and every completed seed as a small dot; a configuration with a diverged seed
    gets the diverged marker. Configurations with no completed seed are left out. The
    objective axis is logarithmic where the values span more than a decade."""
    shown = [config for config in configs if config.summary.mean is not None]
    shown.sort(key=lambda config: config.summary.mean)
    labels = [params_label(config.arm, config.params) for config in shown]
    colors = arm_colors(config.arm for config in shown)
    intervals = [config.interval for config in shown]
    fig = new_figure(f"{objective_title(metric).capitalize()} over seeds")
    fig.add_scatter(
        x=labels,
        y=[config.summary.mean for config in shown],
        # an explicit colour: by default error bars take the marker's, a list here
        error_y=error_bars(intervals, color="#444"),
        mode="markers",
        name="mean, 95% interval",
        marker={
            "size": 10,
            "color": [colors[config.arm] for config in shown],
            "symbol": [DIVERGED_SYMBOL if config.diverged else "circle" for config in shown],
        },
        hovertext=[f"n={config.summary.n} seeds, {config.diverged} diverged" for config in shown],
        customdata=[list(config.trial_ids) for config in shown],
    )
    seeds = [
        (label, trial.result, trial.id)
        for label, config in zip(labels, shown, strict=True)
        for trial in config.trials
        if trial.result is not None
    ]
    fig.add_scatter(
        x=[label for label, _, _ in seeds],
        y=[value for _, value, _ in seeds],
        mode="markers",
        name="seeds",
        marker={"size": 5, "color": "#444", "opacity": 0.6},
        customdata=[trial_id for _, _, trial_id in seeds],
    )
    fig.update_xaxes(type="category", title="configuration")
    values = [*interval_values(intervals), *(value for _, value, _ in seeds)]
    fig.update_yaxes(type=value_axis_type(values), title=objective_title(metric))
    return fig


def divergence_figure(rates: Mapping[Arm, DivergenceRate]) -> go.Figure:
    """Share of each arm's finished trials that diverged, labelled ``k/n``."""
    colors = arm_colors(rates)
    fig = new_figure("Divergence rate")
    fig.add_bar(
        x=[arm.label for arm in rates],
        y=[rate.rate for rate in rates.values()],
        text=[f"{rate.diverged}/{rate.finished}" for rate in rates.values()],
        textposition="outside",
        marker_color=[colors[arm] for arm in rates],
        showlegend=False,
    )
    fig.update_yaxes(title="diverged / finished trials", range=[0, 1.05], tickformat=".0%")
    fig.update_xaxes(title="arm")
    return fig


def paired_difference_figure(comparison: PairedComparison, metric: str) -> go.Figure:
    """Each arm at its best configuration, one dot per seed: that seed's difference b - a,
    with the mean and its paired 95% interval as a line and band, and zero marked: the band
    clear of zero means the arms differ beyond seed noise."""
    a, b = comparison.a.label, comparison.b.label
    name = objective_title(metric)
    n = len(comparison.pairs)
    fig = new_figure(
        f"Paired difference in {name} at each arm's best: {b} - {a} "
        f"(n={n} seed{'' if n == 1 else 's'})"
    )
    fig.add_scatter(
        x=[f"seed {pair.a.seed_index}" for pair in comparison.pairs],
        y=[pair.difference for pair in comparison.pairs],
        mode="markers",
        name="seeds",
        hovertext=[
            f"{params_label(comparison.a, pair.a.params)} vs "
            f"{params_label(comparison.b, pair.b.params)}"
            for pair in comparison.pairs
        ],
        customdata=[[pair.a.id, pair.b.id] for pair in comparison.pairs],
    )
    fig.add_hline(y=0, line={"color": "#444", "width": 1})
    difference = comparison.difference
    if difference.mean is not None:
        fig.add_hline(
            y=difference.mean,
            line={"color": "#d62728", "dash": "dash"},
            annotation_text=f"mean {difference.mean:+.4g}",
        )
    if difference.low is not None:
        fig.add_hrect(
            y0=difference.low, y1=difference.high, fillcolor="#d62728", opacity=0.12, line_width=0
        )
    notes = [
        f"{arm.label}: no configuration whose every seed completed"
        for arm, best in ((comparison.a, comparison.a_best), (comparison.b, comparison.b_best))
        if best is None
    ]
    if comparison.unpaired:
        notes.append(
            f"left out: {len(comparison.unpaired)} trials whose seed the other arm's best "
            "did not run"
        )
    if notes:
        fig.add_annotation(
            text="; ".join(notes),
            xref="paper",
            yref="paper",
            x=0,
            y=1.0,
            yanchor="bottom",
            showarrow=False,
        )
    fig.update_xaxes(type="category", title="seed")
    fig.update_yaxes(title=f"{name} difference ({b} - {a})")
    return fig
