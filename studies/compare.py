"""Verdicts for anyone's numbers: a table of paired results, read, checked and judged by
``studies.analysis.inference``. ``magma-bench compare`` reads it from a CSV file and
``POST /api/v1/compare`` from JSON rows; both go through here, so they accept the same
tables, reject the same mistakes in the same words and return the same objects.

The table: one row per seed of a comparison, with the objective of each arm on that seed.
As CSV, the header is exactly ``comparison,seed,baseline,treatment``; rows sharing
``comparison`` are that comparison's pairs (in the order given), each ``seed`` at most once
within it. A cell of a run that diverged is ``inf``, ``nan`` or ``diverged`` (any case; JSON
has no Infinity, so there it is one of these strings); an empty cell is a mistake, not a
divergence. Blank lines are skipped.

Every mistake is a ``TableError`` naming where it is: ``line 4, column baseline: ...`` (the
file's 1-based line, the header being line 1) or, for JSON rows, the field
``rows.3.baseline`` (the 0-based row index), as the API's validation errors name fields.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studies.analysis.inference import (
    ALPHA,
    DEFAULT_EFFECT,
    POWER,
    PairedTest,
    holm,
    paired_tests,
)
from studies.analysis.objective import Mode, check_mode

COLUMNS = ("comparison", "seed", "baseline", "treatment")
HEADER = ",".join(COLUMNS)
#: cell values (case-insensitive) that mark a diverged run
DIVERGED = ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "diverged")
#: the keys of each result object, in order (``--json`` and the API)
RESULT_KEYS = (
    "comparison",
    "n",
    "method",
    "change",
    "low",
    "high",
    "verdict",
    "seeds_needed",
    "p_value",
)


class TableError(ValueError):
    """A mistake in the table, with where it is: a CSV ``line`` (1-based) or a JSON ``row``
    (0-based), and the ``column`` when one is to blame."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message, self.line, self.row, self.column = message, line, row, column
        super().__init__(f"{self.location}: {message}" if self.location else message)

    @property
    def location(self) -> str:
        if self.row is not None:
            return self.field
        parts = [f"line {self.line}" if self.line is not None else "", self.column or ""]
        if self.column is not None:
            parts[1] = f"column {self.column}"
        return ", ".join(part for part in parts if part)

    @property
    def field(self) -> str:
        """The JSON field to blame, as the API names fields: ``rows.3.baseline``."""
        if self.row is None:
            return "rows"
        return f"rows.{self.row}" + (f".{self.column}" if self.column else "")


@dataclass(frozen=True)
class Comparison:
    """One comparison's pairs, in the order the table gives them."""

    name: str
    seeds: tuple[str, ...]
    baseline: tuple[float, ...]
    treatment: tuple[float, ...]


@dataclass(frozen=True)
class Judged:
    name: str
    test: PairedTest


# --- reading --------------------------------------------------------------------------------


def read_csv(text: str) -> list[Comparison]:
    """The comparisons of a CSV table (see the module docstring), in first-seen order."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header: list[str] | None = None
    cells: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            _check_header(header, line)
            continue
        if len(row) > len(COLUMNS):
            raise TableError(
                f"{len(row)} cells, but the header has {len(COLUMNS)} columns ({HEADER})",
                line=line,
                column=str(len(COLUMNS) + 1),
            )
        values = dict(zip(COLUMNS, row, strict=False))
        where = {column: {"line": line, "column": column} for column in COLUMNS}
        cells.append((values, where))
    if header is None:
        raise TableError(f"the file is empty: it needs the header {HEADER} and a row per seed")
    if not cells:
        raise TableError("no rows after the header: one row per seed of each comparison", line=1)
    return _comparisons(cells)


def read_rows(rows: Sequence[Mapping[str, Any]]) -> list[Comparison]:
    """The comparisons of JSON-like rows, each a mapping with the four columns' keys (a
    missing key or a null is a missing cell), in first-seen order."""
    if not rows:
        raise TableError("no rows: one row per seed of each comparison")
    cells = [
        (dict(row), {column: {"row": index, "column": column} for column in COLUMNS})
        for index, row in enumerate(rows)
    ]
    return _comparisons(cells)


def _check_header(header: list[str], line: int) -> None:
    if tuple(header) == COLUMNS:
        return
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise TableError(
            f"no column {missing[0]!r}: the header must be {HEADER}", line=line, column=missing[0]
        )
    unexpected = [cell for cell in header if cell not in COLUMNS]
    repeated = [cell for cell in COLUMNS if header.count(cell) > 1]
    if unexpected or repeated:
        column = (unexpected or repeated)[0]
        word = "unexpected" if unexpected else "repeated"
        raise TableError(
            f"{word} column {column!r}: the header must be {HEADER}", line=line, column=column
        )
    raise TableError(f"the columns must be in the order {HEADER}", line=line)


def _comparisons(cells: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[Comparison]:
    pairs: dict[str, dict[str, tuple[float, float]]] = {}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for values, where in cells:
        name = _text(values.get("comparison"), where["comparison"], "a comparison name")
        seed = _text(values.get("seed"), where["seed"], "a seed")
        baseline = _number(values.get("baseline"), where["baseline"])
        treatment = _number(values.get("treatment"), where["treatment"])
        first = seen.setdefault((name, seed), where["seed"])
        if first is not where["seed"]:
            raise TableError(
                f"seed {seed} of comparison {name!r} appears twice (first at {_place(first)}): "
                "each seed is one pair",
                **where["seed"],
            )
        pairs.setdefault(name, {})[seed] = (baseline, treatment)
    return [
        Comparison(
            name,
            tuple(by_seed),
            tuple(b for b, _ in by_seed.values()),
            tuple(t for _, t in by_seed.values()),
        )
        for name, by_seed in pairs.items()
    ]


def _place(where: Mapping[str, Any]) -> str:
    return f"line {where['line']}" if "line" in where else f"row {where['row']}"


def _text(value: Any, where: dict[str, Any], what: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise TableError(f"missing: every row needs {what}", **where)
    text = str(value).strip()
    if not text:
        raise TableError(f"missing: every row needs {what}", **where)
    return text


def _number(value: Any, where: dict[str, Any]) -> float:
    """A cell's objective: a number, or a diverged run (non-finite)."""
    if isinstance(value, (bool, list, dict)):
        raise TableError(f"{value!r} is not a number", **where)
    if isinstance(value, (int, float)):
        return float(value)
    text = "" if value is None else str(value).strip()
    if not text:
        raise TableError(
            "missing: each seed needs both arms' values (a diverged run is inf, nan or "
            "diverged; a seed one arm did not run belongs out of the table)",
            **where,
        )
    if text.lower() in DIVERGED:
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise TableError(
            f"{text!r} is not a number (a diverged run is inf, nan or diverged)", **where
        ) from None


# --- judging and showing ----------------------------------------------------------------------


def judge(
    comparisons: Sequence[Comparison],
    mode: Mode,
    *,
    margin: float | None = None,
    effect: float | None = None,
    adjust: bool = False,
) -> list[Judged]:
    """Each comparison's paired test (``adjust``: Holm across all of them), in order."""
    check_mode(mode)
    tests = paired_tests(
        [(c.baseline, c.treatment) for c in comparisons], mode, margin=margin, effect=effect
    )
    if adjust:
        tests = holm(tests)
    return [Judged(c.name, test) for c, test in zip(comparisons, tests, strict=True)]


def result_object(judged: Judged) -> dict[str, Any]:
    """The JSON object of one comparison: ``RESULT_KEYS``. change, low and high are
    fractions (-0.018 for 1.8% lower); p_value is the difference test's two-sided p,
    Holm-adjusted when the verdicts were; seeds_needed is {effect, estimate, upper} or
    null. A value JSON cannot hold (an overflowing change) is null."""
    test = judged.test
    needed = test.seeds_needed
    p = test.p_adjusted if test.p_adjusted is not None else test.p_value
    return {
        "comparison": judged.name,
        "n": test.n,
        "method": test.method.value,
        "change": _finite(test.change),
        "low": _finite(test.low),
        "high": _finite(test.high),
        "verdict": test.verdict.value,
        "seeds_needed": None
        if needed is None
        else {"effect": needed.effect, "estimate": needed.estimate, "upper": needed.upper},
        "p_value": _finite(p),
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:+.2%}"


def seeds_text(judged: Judged) -> str:
    """``12-40``: the seeds needed from the observed SD to its upper bound; ``-``: none."""
    needed = judged.test.seeds_needed
    if needed is None or needed.estimate is None:
        return "-"
    if needed.estimate == needed.upper:
        return str(needed.estimate)
    return f"{needed.estimate}-{needed.upper}"


def table_lines(
    judged: Sequence[Judged],
    *,
    margin: float | None = None,
    effect: float | None = None,
    adjusted: bool = False,
) -> list[str]:
    """A readable table, one row per comparison, then what its columns mean."""
    header = ("COMPARISON", "N", "METHOD", "CHANGE", "LOW", "HIGH", "VERDICT", "SEEDS_NEEDED")
    rows = [
        (
            j.name,
            str(j.test.n),
            j.test.method.value,
            percent(j.test.change),
            percent(j.test.low),
            percent(j.test.high),
            j.test.verdict.value,
            seeds_text(j),
        )
        for j in judged
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    size = effect if effect is not None else margin if margin is not None else DEFAULT_EFFECT
    lines.append("")
    lines.append(
        f"change: treatment vs baseline, with its {1 - ALPHA:.0%} interval (low, high); "
        f"verdict at alpha {ALPHA:g}"
        + (", Holm-adjusted across the comparisons" if adjusted else "")
        + (f"; equivalent: within +-{margin:.2%} by TOST" if margin is not None else "")
        + "."
    )
    lines.append(
        f"seeds_needed: pairs for {POWER:.0%} power against a {size:.2%} change, from the "
        f"observed SD to its {1 - ALPHA:.0%} upper bound."
    )
    for j in judged:
        if j.test.reason:
            lines.append(f"{j.name}: no test, {j.test.reason}.")
    return lines
