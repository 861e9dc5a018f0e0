"""The dashboards' Plotly figures: built from analysis results, with the traces, values and
axes each view promises."""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from dashboards.figures.lr_window import lr_window_figure
from dashboards.figures.mechanism import mechanism_figure
from dashboards.figures.overview import best_curves_figure, learning_curves_figure, status_figure
from dashboards.figures.robustness import (
    divergence_figure,
    intervals_figure,
    paired_difference_figure,
)
from dashboards.figures.sensitivity import heatmap_figure, importance_figure, slice_figure
from dashboards.figures.style import (
    STATUS_COLORS,
    format_value,
    interval_text,
    params_label,
    value_axis_type,
)
from dashboards.figures.table import comparison_table_figure
from studies.analysis.arms import best_per_cell, configurations
from studies.analysis.curves import best_configuration_curves, learning_curves
from studies.analysis.importance import parameter_importance
from studies.analysis.intervals import divergence_rates, range_interval
from studies.analysis.lr_window import lr_windows
from studies.analysis.mechanism import mechanism_series
from studies.analysis.pairing import paired_comparison
from studies.analysis.status import status_counts
from studies.analysis.table import comparison_table
from studies.records import Arm
from tests.dashboards_fixtures import Rows
from worker.contract import TrialStatus

DENSE = Arm("adamw", "dense")
MAGMA = Arm("adamw", "magma")
#: t_{0.975, 1}, the two-seed quantile
T1 = math.tan(math.pi * 0.475)


def log_interval(a: float, b: float) -> tuple[float, float]:
    """The 95% interval of two seeds' values in log space, back-transformed: centred on
    their geometric mean, t_{0.975,1} * |ln(b/a)| / 2 either side in log."""
    centre, ratio = math.sqrt(a * b), (b / a) ** (T1 / 2)
    return centre / ratio, centre * ratio


def bar_bottoms(trace: go.Scatter) -> list[float]:
    """Where each error bar of a trace ends below its point."""
    return [y - (minus or 0) for y, minus in zip(trace.y, trace.error_y.arrayminus, strict=True)]


@pytest.fixture
def lr_sweep() -> Rows:
    """Figure A3 in small: dense has a one-decade window and diverges at 3e-2; magma
    stays within 5% of its best from 1e-3 to 3e-2. Two seeds each."""
    rows = Rows()
    dense = {1e-3: (20.5, 20.5), 3e-3: (19.0, 21.0), 1e-2: (20.8, 21.0), 3e-2: None}
    magma = {1e-3: (19.5, 19.9), 3e-3: (19.0, 19.4), 1e-2: (19.2, 19.4), 3e-2: (19.8, 20.0)}
    for variant, curve in (("dense", dense), ("magma", magma)):
        for lr, values in curve.items():
            for seed in range(2):
                if values is None:
                    rows.add(None, seed=seed, variant=variant, lr=lr, status="diverged")
                else:
                    rows.add(values[seed], seed=seed, variant=variant, lr=lr)
    return rows


def test_status_figure_has_a_bar_per_status():
    rows = Rows()
    rows.add(1.0, variant="dense")
    rows.add(None, variant="magma", status="running")
    fig = status_figure(status_counts(rows.trials()))
    [bar] = fig.data
    assert isinstance(bar, go.Bar)
    assert list(bar.x) == list(TrialStatus.values())
    assert list(bar.y) == [0, 1, 1, 0, 0, 0, 0]
    assert bar.marker.color[TrialStatus.values().index("complete")] == STATUS_COLORS["complete"]


@pytest.mark.parametrize(
    ("metric", "x_title", "y_title"),
    [("val_ppl", "tokens", "validation perplexity"), ("train_loss", "step", "training loss")],
)
def test_learning_curves_figure(metric: str, x_title: str, y_title: str):
    rows = Rows()
    trials = [
        rows.add(20.0, seed=0, variant="dense", lr=1e-3),
        rows.add(21.0, seed=1, variant="dense", lr=1e-3),
        rows.add(None, variant="magma", lr=1e-3, status="diverged"),
    ]
    for trial_id in trials:
        rows.metric(trial_id, 10, val_ppl=40.0, val_loss=3.7, tokens=640)
        rows.metric(trial_id, 20, val_ppl=30.0, val_loss=3.4, tokens=1280)
    curves = learning_curves(rows.trials(), rows.metrics(), "val_ppl", "tokens")
    fig = learning_curves_figure(curves, metric, x_title)
    assert len(fig.data) == 3
    assert [trace.showlegend for trace in fig.data] == [True, False, True]
    assert [trace.name for trace in fig.data] == ["adamw", "adamw", "adamw+magma"]
    assert fig.data[2].line.dash == "dot"  # the diverged trial
    assert list(fig.data[0].x) == [640.0, 1280.0] and list(fig.data[0].y) == [40.0, 30.0]
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.title.text == x_title
    assert fig.layout.yaxis.title.text == y_title


def test_best_curves_figure(lr_sweep: Rows):
    # dense's best is lr 3e-3 (seeds 19 and 21), magma's 3e-3 (19.0, 19.4); perplexity
    # falls from hundreds to about twenty
    trials = {(t.arm, t.value("lr"), t.seed_index): t.id for t in lr_sweep.trials()}
    for (_, lr, seed), trial_id in trials.items():
        for step, ppl in ((10, 400.0 + 20 * seed), (20, 30.0 + seed)):
            lr_sweep.metric(trial_id, step, val_ppl=ppl * (1 + lr), tokens=640 * step)
    curves = learning_curves(lr_sweep.trials(), lr_sweep.metrics(), "val_ppl", "tokens")
    fig = best_curves_figure(
        best_configuration_curves(lr_sweep.trials(), curves), "val_ppl", "tokens"
    )
    names = [trace.name for trace in fig.data]
    assert names == [
        "adamw seed 0",
        "adamw seed 1",
        "adamw max over seeds",
        "adamw min over seeds",
        "adamw (lr=0.003)",
        "adamw+magma seed 0",
        "adamw+magma seed 1",
        "adamw+magma max over seeds",
        "adamw+magma min over seeds",
        "adamw+magma (lr=0.003)",
    ]
    seed0, seed1, top, bottom, median = fig.data[:5]
    assert [trace.showlegend for trace in fig.data[:5]] == [False, False, False, False, None]
    assert seed0.customdata[0] == trials[(DENSE, 3e-3, 0)]
    # the arm's colour (Plotly's first, #636EFA), faint for a seed's own run
    assert median.line.color == "#636EFA" and fig.data[9].line.color != median.line.color
    assert seed0.line.color == "rgba(99, 110, 250, 0.35)" and seed0.line.width == 1
    factor = 1 + 3e-3
    assert list(median.x) == [6400.0, 12800.0]
    assert list(median.y) == pytest.approx([410 * factor, 30.5 * factor])
    assert list(top.y) == pytest.approx([420 * factor, 31 * factor])
    assert list(bottom.y) == pytest.approx([400 * factor, 30 * factor])
    assert bottom.fill == "tonexty" and bottom.fillcolor == "rgba(99, 110, 250, 0.2)"
    assert fig.layout.yaxis.type == "log"  # 30 to 420
    assert fig.layout.xaxis.title.text == "tokens"
    assert fig.layout.yaxis.title.text == "validation perplexity"


def test_lr_window_figure(lr_sweep: Rows):
    windows = lr_windows(lr_sweep.trials())
    fig = lr_window_figure(windows, "val_ppl")
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.yaxis.title.text == "validation perplexity"
    names = [trace.name for trace in fig.data]
    assert names == [
        "adamw (window 1.00 decades)",
        "adamw diverged",
        f"adamw+magma (window {math.log10(30):.2f} decades)",
    ]
    dense, diverged, magma = fig.data
    assert list(dense.x) == [1e-3, 3e-3, 1e-2]
    assert list(dense.y) == pytest.approx([20.5, 20.0, 20.9])
    # seed intervals in log space: zero-width at 1e-3 (20.5 twice); around 19 and 21 at
    # 3e-3, asymmetric about their mean 20
    low, high = log_interval(19.0, 21.0)
    assert dense.error_y.symmetric is False
    assert (dense.error_y.arrayminus[0], dense.error_y.array[0]) == pytest.approx((0.0, 0.0))
    assert dense.error_y.arrayminus[1] == pytest.approx(20.0 - low)
    assert dense.error_y.array[1] == pytest.approx(high - 20.0)
    assert list(diverged.x) == [3e-2] and diverged.marker.symbol == "x"
    # drawn at the worst plotted value: the top of dense's error bar at 3e-3
    assert diverged.y[0] == pytest.approx(high)
    assert dense.mode == "lines+markers" and diverged.mode == "markers"
    assert list(magma.x) == [1e-3, 3e-3, 1e-2, 3e-2]
    assert fig.layout.yaxis.type == "linear"  # 19 to 38: within a decade
    rects = [(shape.x0, shape.x1) for shape in fig.layout.shapes if shape.type == "rect"]
    assert rects == [(1e-3, 1e-2), (1e-3, 3e-2)]
    # the stability frontier: dense stable up to 1e-2 and diverged at 3e-2, magma stable
    # up to 3e-2; dashed for stable, dotted for diverged, in the arm's colour
    lines = [(s.x0, s.line.dash, s.name) for s in fig.layout.shapes if s.type == "line"]
    assert lines == [
        (1e-2, "dash", "adamw largest LR without divergence 0.01"),
        (3e-2, "dot", "adamw smallest diverged LR 0.03"),
        (3e-2, "dash", "adamw+magma largest LR without divergence 0.03"),
    ]
    assert all(s.showlegend for s in fig.layout.shapes if s.type == "line")


def test_lr_window_figure_of_an_arm_that_only_diverged():
    rows = Rows()
    rows.add(None, variant="magma", lr=1e-1, status="diverged")
    fig = lr_window_figure(lr_windows(rows.trials()), "val_loss")
    stable, diverged = fig.data
    assert list(stable.x) == [] and list(diverged.x) == [0.1]
    assert [(shape.type, shape.x0, shape.line.dash) for shape in fig.layout.shapes] == [
        ("line", 0.1, "dot")  # only the frontier's diverged end
    ]
    assert stable.name == "adamw+magma (no window)"


def test_lr_window_figure_of_a_loss_spanning_decades_is_logarithmic_and_stays_positive():
    """The issue's chart: a loss from about 1 to 4,000 with two seeds that disagree, whose
    symmetric t bars (mean +- 12.7 * sem) reached far below zero."""
    rows = Rows()
    for lr, seeds in {1e-3: (4000.0, 3000.0), 1e-2: (1.0, 3.0), 1e-1: (40.0, 60.0)}.items():
        for seed, value in enumerate(seeds):
            rows.add(value, seed=seed, variant="dense", lr=lr)
    windows = lr_windows(rows.trials())
    fig = lr_window_figure(windows, "val_loss")
    [curve] = [trace for trace in fig.data if trace.error_y.type == "data"]
    assert fig.layout.yaxis.type == "log"
    assert windows[DENSE].best.configuration.summary.low < 0  # what the table's mean +- says
    assert min(bar_bottoms(curve)) > 0
    # at 1e-2: seeds 1 and 3, the bar down to sqrt(3) * 3^(-t/2) = 3^((1 - t) / 2)
    assert bar_bottoms(curve)[1] == pytest.approx(3 ** ((1 - T1) / 2))


@pytest.mark.parametrize(
    ("values", "axis"),
    [
        ([1.0, 4000.0], "log"),
        ([None, 2.0, 30.0], "log"),  # None: nothing drawn
        ([1.0, 10.0], "linear"),  # a span of exactly ten stays linear
        ([0.0, 100.0], "linear"),
        ([-1.0, 100.0], "linear"),
        ([], "linear"),
    ],
)
def test_value_axis_type(values: list[float | None], axis: str):
    assert value_axis_type(values) == axis


def test_heatmap_figure():
    rows = Rows()
    rows.add(21.0, variant="magma", p=0.25, tau=1.0, lr=1e-3)
    rows.add(22.0, variant="magma", p=0.25, tau=1.0, lr=1e-2)
    rows.add(20.0, variant="magma", p=0.5, tau=1.0, lr=1e-2)
    rows.add(None, variant="magma", p=0.5, tau=2.0, lr=1e-2, status="diverged")
    rows.add(19.0, variant="magma", p=0.25, tau=2.0, lr=3e-3)
    cells = best_per_cell(rows.trials(), "p", "tau", "min")
    fig = heatmap_figure(cells, "p", "tau", "val_ppl")
    [heatmap] = fig.data
    assert list(heatmap.x) == ["0.25", "0.5"] and list(heatmap.y) == ["1", "2"]
    assert [list(row) for row in heatmap.z] == [[21.0, 20.0], [19.0, None]]
    assert [list(row) for row in heatmap.text] == [
        ["21<br>lr=0.001", "20<br>lr=0.01"],
        ["19<br>lr=0.003", "diverged"],
    ]
    assert fig.layout.xaxis.type == "category" and fig.layout.xaxis.title.text == "p"
    assert heatmap.colorbar.title.text == "validation perplexity"


def test_importance_figure_shows_bars_and_reasons():
    rows = Rows()
    for p in (0.25, 0.5, 0.75):
        for tau in (0.5, 1.0, 2.0, 4.0):
            rows.add(20 + 100 * (p - 0.5) ** 2 + 0.01 * tau, variant="magma", p=p, tau=tau)
    rows.add(20.0, variant="dense", p=0.5, tau=1.0)
    fig = importance_figure(parameter_importance(rows.trials()))
    [bar] = fig.data
    assert bar.name == "adamw+magma" and bar.orientation == "h"
    assert list(bar.y) == ["p", "tau"] and sum(bar.x) == pytest.approx(1.0)
    [note] = fig.layout.annotations
    assert note.text == "adamw: needs 10 stable configurations, has 1"


def test_slice_figure_uses_a_log_axis_for_lr(lr_sweep: Rows):
    lr_sweep.add(22.0, seed=0, variant="magma", lr=1e-1)
    lr_sweep.add(None, seed=1, variant="magma", lr=1e-1, status="diverged")
    configs = configurations(lr_sweep.trials())
    fig = slice_figure(configs, ["lr", "variant"], "val_ppl")
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "lr"
    assert fig.layout.xaxis2.type == "category"  # the categorical panel has its own axis
    assert fig.layout.yaxis.type == fig.layout.yaxis2.type == "linear"  # 19 to 22
    assert all(min(bar_bottoms(trace)) > 0 for trace in fig.data)
    lr_traces = [trace for trace in fig.data if trace.xaxis == "x"]
    assert [trace.name for trace in lr_traces] == ["adamw", "adamw+magma"]
    magma = lr_traces[1]
    assert list(magma.x) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    assert list(magma.marker.symbol) == ["circle"] * 4 + ["x"]
    assert [trace.showlegend for trace in fig.data] == [True, True, False, False]
    with pytest.raises(ValueError, match="at least one parameter"):
        slice_figure(configs, [], "val_ppl")


def test_slice_figure_keeps_score_inits_word_among_its_numbers():
    """score_init searched over ['first', 0.5, 1.0]: a categorical panel in sort_key order
    (plotly would read the mix as numbers and drop 'first'), as is decay_on_skip's."""
    rows = Rows()
    for value, objective in (("first", 3.0), (1.0, 2.0), (0.5, 1.0)):
        for decay in (False, True):
            rows.add(objective + decay, variant="magma", score_init=value, decay_on_skip=decay)
    fig = slice_figure(configurations(rows.trials()), ["score_init", "decay_on_skip"], "val_loss")
    assert fig.layout.xaxis.type == fig.layout.xaxis2.type == "category"
    assert list(fig.layout.xaxis.categoryarray) == ["0.5", "1", "first"]
    assert list(fig.layout.xaxis2.categoryarray) == ["False", "True"]
    (score_init,) = (trace for trace in fig.data if trace.xaxis == "x")  # one arm
    assert sorted(zip(score_init.x, score_init.y, strict=True)) == [
        ("0.5", 1.0),
        ("0.5", 2.0),
        ("1", 2.0),
        ("1", 3.0),
        ("first", 3.0),
        ("first", 4.0),
    ]


def test_intervals_figure_sorts_configurations_and_shows_seeds(lr_sweep: Rows):
    configs = configurations(lr_sweep.trials())
    fig = intervals_figure(configs, "val_ppl")
    means, seeds = fig.data
    assert list(means.y) == sorted(means.y) and len(means.y) == 7  # 3e-2 dense diverged
    assert means.x[0] == "adamw+magma lr=0.003" and means.y[0] == pytest.approx(19.2)
    # seeds 19.0 and 19.4: a log-space interval about their mean 19.2
    low, high = log_interval(19.0, 19.4)
    assert means.error_y.arrayminus[0] == pytest.approx(19.2 - low)
    assert means.error_y.array[0] == pytest.approx(high - 19.2)
    assert means.error_y.color == "#444"
    assert len(seeds.y) == 14 and fig.layout.xaxis.type == "category"
    assert fig.layout.yaxis.type == "linear"


def test_intervals_figure_turns_logarithmic_and_keeps_bars_above_zero():
    rows = Rows()
    for seed, value in enumerate((1.0, 3.0)):
        rows.add(value, seed=seed, variant="dense", lr=1e-2)
    rows.add(4000.0, variant="dense", lr=1e-4)
    fig = intervals_figure(configurations(rows.trials()), "val_loss")
    means, _ = fig.data
    assert fig.layout.yaxis.type == "log"
    assert bar_bottoms(means)[0] == pytest.approx(3 ** ((1 - T1) / 2))
    assert means.error_y.array[1] is None  # one seed: no bar


def test_divergence_figure(lr_sweep: Rows):
    fig = divergence_figure(divergence_rates(lr_sweep.trials()))
    [bar] = fig.data
    assert list(bar.x) == ["adamw", "adamw+magma"]
    assert list(bar.y) == [0.25, 0.0] and list(bar.text) == ["2/8", "0/8"]
    assert fig.layout.yaxis.tickformat == ".0%"


def test_paired_difference_figure(lr_sweep: Rows):
    """Each arm at its best LR, one dot per seed: dense's best is 3e-3 (19.0, 21.0), magma's
    3e-3 (19.0, 19.4); its 4 LRs x 2 seeds pooled would give 6 dots, not 2."""
    comparison = paired_comparison(lr_sweep.trials(), DENSE, MAGMA, "min")
    fig = paired_difference_figure(comparison, "val_ppl")
    [pairs] = fig.data
    assert len(pairs.y) == 2 == len(comparison.pairs)
    assert list(pairs.x) == ["seed 0", "seed 1"]
    assert list(pairs.y) == pytest.approx([0.0, -1.6])
    assert list(pairs.hovertext) == ["adamw lr=0.003 vs adamw+magma lr=0.003"] * 2
    assert fig.layout.title.text == (
        "Paired difference in validation perplexity at each arm's best: "
        "adamw+magma - adamw (n=2 seeds)"
    )
    zero, mean = (shape for shape in fig.layout.shapes if shape.type == "line")
    assert zero.y0 == 0 and mean.y0 == pytest.approx(comparison.difference.mean)
    [band] = (shape for shape in fig.layout.shapes if shape.type == "rect")
    assert (band.y0, band.y1) == (comparison.difference.low, comparison.difference.high)
    assert all("left out" not in a.text for a in fig.layout.annotations)
    assert fig.layout.xaxis.title.text == "seed"
    assert fig.layout.yaxis.title.text == "validation perplexity difference (adamw+magma - adamw)"


def test_paired_difference_figure_with_a_single_pair_has_no_band():
    rows = Rows()
    rows.add(2.0, variant="dense", lr=1e-2)
    rows.add(2.5, seed=1, variant="dense", lr=1e-2)  # magma's best never ran seed 1
    rows.add(1.5, variant="magma", lr=1e-2)
    comparison = paired_comparison(rows.trials(), DENSE, MAGMA, "min")
    fig = paired_difference_figure(comparison, "val_loss")
    assert [shape.type for shape in fig.layout.shapes] == ["line", "line"]
    assert fig.layout.yaxis.title.text == "validation loss difference (adamw+magma - adamw)"
    notes = [a.text for a in fig.layout.annotations]
    assert "left out: 1 trials whose seed the other arm's best did not run" in notes


def test_paired_difference_figure_names_an_arm_without_a_best():
    rows = Rows()
    rows.add(2.0, variant="dense", lr=1e-2)
    rows.add(None, variant="magma", lr=1e-2, status="diverged")
    fig = paired_difference_figure(
        paired_comparison(rows.trials(), DENSE, MAGMA, "min"), "val_loss"
    )
    assert list(fig.data[0].y) == [] and "(n=0 seeds)" in fig.layout.title.text
    notes = [a.text for a in fig.layout.annotations]
    assert notes == [
        "adamw+magma: no configuration whose every seed completed; "
        "left out: 1 trials whose seed the other arm's best did not run"
    ]


def test_comparison_table_figure():
    rows = Rows()
    dense_seeds = (20.0, 40.0, 30.0)
    # log ratios -0.08, -0.1, -0.12: mean -0.1, SD 0.02, t = -8.66 on 2 df: p = 0.013
    for seed, (dense, log) in enumerate(zip(dense_seeds, (-0.08, -0.1, -0.12), strict=True)):
        rows.add(dense, seed=seed, variant="dense", lr=1e-3)
        rows.add(dense * math.exp(log), seed=seed, variant="magma", lr=1e-2)
    rows.add(None, base="rmsprop", variant="dense", lr=1e-3, status="diverged")
    result = comparison_table(rows.trials())
    fig = comparison_table_figure(result, "val_ppl")
    [table] = fig.data
    assert list(table.header.values) == ["base", "dense", "magma"]
    # each cell's mean [the interval the charts draw]; the magma cell's difference is its
    # paired comparison's summary, the deciding stage marked
    dense = range_interval(dense_seeds)
    magma = result.rows["adamw"]["magma"]
    assert [list(column) for column in table.cells.values] == [
        ["adamw", "rmsprop"],
        [f"30 [{dense.low:.4g}, {dense.high:.4g}]<br>lr 0.001", "diverged"],
        [f"{interval_text(magma.interval)}<br>{magma.difference}<br>lr 0.01", ""],
    ]
    assert interval_text(magma.interval).startswith(f"{magma.value:.4g} [")
    assert magma.difference.startswith("adamw+magma vs adamw: better; selection (decides): -9.5% [")


def test_interval_text():
    # 1 and 4: the log-space interval exp(ln 2 +- t(0.975, 1) ln 2) = 2^(1 -+ t), in the
    # metric's range, where the symmetric mean +- t reached 2.5 -+ 19.1
    low, high = 2 ** (1 - T1), 2 ** (1 + T1)
    assert interval_text(range_interval([1.0, 4.0])) == f"2.5 [{low:.4g}, {high:.4g}]"
    assert interval_text(range_interval([1.0, 4.0]), digits=2) == "2.5 [0.0003, 1.3e+04]"
    assert interval_text(range_interval([2.0])) == "2"
    assert interval_text(range_interval([])) == "-" and interval_text(None) == "-"


def test_mechanism_figure():
    rows = Rows()
    magma = rows.add(20.0, variant="magma")
    skip = rows.add(20.0, variant="skipupdate")
    for step, alignment in ((10, 0.6), (20, 0.7)):
        rows.metric(
            magma,
            step,
            **{"alignment/attention": alignment, "survival/attention": 0.5, "survival/mlp": 0.5},
        )
        rows.metric(skip, step, **{"survival/attention": 0.5})
    fig = mechanism_figure(mechanism_series(rows.trials(), rows.metrics()))
    placed = [(trace.name, trace.xaxis, trace.showlegend) for trace in fig.data]
    assert placed == [
        ("adamw+skipupdate attention", "x2", True),
        ("adamw+magma attention", "x", True),
        ("adamw+magma attention", "x2", False),
        ("adamw+magma mlp", "x2", True),
    ]
    assert list(fig.data[1].y) == [0.6, 0.7]
    assert fig.data[3].line.dash == "dash"
    assert [a.text for a in fig.layout.annotations] == ["alignment", "survival"]
    assert tuple(fig.layout.yaxis.range) == (0, 1)


def test_labels():
    assert format_value(0.0030000000000000001) == "0.003"
    assert format_value(1e-5) == "1e-05"
    assert format_value("attention+mlp") == "attention+mlp"
    assert params_label(MAGMA, {"variant": "magma", "lr": 1e-3, "p": 0.5}) == (
        "adamw+magma lr=0.001 p=0.5"
    )
    assert params_label(DENSE, {"variant": "dense"}) == "adamw"


def test_every_figure_serialises_to_strict_json(lr_sweep: Rows):
    """The service embeds figures as JSON: every builder's output must serialise to
    strict JSON."""
    trials = lr_sweep.trials()
    for trial in trials:
        lr_sweep.metric(trial.id, 10, val_ppl=40.0, tokens=640, **{"survival/mlp": 0.5})
    configs = configurations(trials)
    figures = [
        status_figure(status_counts(trials)),
        learning_curves_figure(
            learning_curves(trials, lr_sweep.metrics(), "val_ppl", "tokens"), "val_ppl", "tokens"
        ),
        lr_window_figure(lr_windows(trials), "val_ppl"),
        heatmap_figure(best_per_cell(trials, "lr", "variant", "min"), "lr", "variant", "val_ppl"),
        importance_figure(parameter_importance(trials)),
        slice_figure(configs, ["lr"], "val_ppl"),
        intervals_figure(configs, "val_ppl"),
        divergence_figure(divergence_rates(trials)),
        paired_difference_figure(paired_comparison(trials, DENSE, MAGMA, "min"), "val_ppl"),
        best_curves_figure(
            best_configuration_curves(
                trials, learning_curves(trials, lr_sweep.metrics(), "val_ppl", "tokens")
            ),
            "val_ppl",
            "tokens",
        ),
        comparison_table_figure(comparison_table(trials), "val_ppl"),
        mechanism_figure(mechanism_series(trials, lr_sweep.metrics())),
    ]

    def reject(constant: str) -> None:
        raise ValueError(f"{constant} in figure JSON")

    for fig in figures:
        data = json.loads(pio.to_json(fig), parse_constant=reject)
        assert data["layout"]["title"]["text"] == fig.layout.title.text
