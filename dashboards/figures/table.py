"""The Table-1 comparison as a Plotly table (the analysis' ``ComparisonTable`` is also
the data for an HTML table with links to each cell's trials)."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboards.figures.style import format_value, interval_text, new_figure, objective_title
from studies.analysis.table import ComparisonTable, TableCell


def comparison_table_figure(table: ComparisonTable, metric: str) -> go.Figure:
    """Rows are base optimizers, columns variants; a cell reads the best mean objective
    with the interval the charts draw, a masked cell its paired comparison against dense
    (both stages, the deciding one marked), and the LR it was reached at."""
    columns = [
        list(table.rows),
        *[[_cell_text(table.rows[base].get(v)) for base in table.rows] for v in table.variants],
    ]
    fig = new_figure(f"Best {objective_title(metric)} per optimizer")
    fig.add_table(
        header={"values": ["base", *table.variants], "align": "left"},
        cells={"values": columns, "align": "left"},
    )
    return fig


def _cell_text(cell: TableCell | None) -> str:
    if cell is None:
        return ""
    if cell.best is None:
        return cell.reason or ""
    text = interval_text(cell.interval)
    if cell.difference is not None:
        text += f"<br>{cell.difference}"
    if "lr" in cell.best.params:
        text += f"<br>lr {format_value(cell.best.params['lr'])}"
    return text
