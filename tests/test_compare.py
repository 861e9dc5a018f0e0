"""``magma-bench compare`` on real CSV files and ``POST /api/v1/compare`` through the app:
the table, ``--json``, ``--holm``, ``--margin``, the diverged cells, every malformed input
named by line (or row) and column, and 5,000 comparisons in seconds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer.main
from fastapi.testclient import TestClient
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from service.cli import app
from service.main import create_app
from studies.compare import DIVERGED, HEADER, RESULT_KEYS, TableError, read_csv, read_rows
from worker.settings import Settings

runner = CliRunner()

GOOD = """comparison,seed,baseline,treatment
faster,0,3.10,3.02
faster,1,3.12,3.05
faster,2,3.08,3.01
faster,3,3.11,3.03
same,0,1.0,1.001
same,1,1.1,1.099
same,2,1.2,1.2005
same,3,1.0,1.0
same,4,1.3,1.3001
faster,4,3.09,3.00
unstable,0,3.0,inf
unstable,1,3.1,Diverged
unstable,2,2.9,NaN
unstable,3,3.05,-inf
unstable,4,2.95,diverged
unstable,5,3.02,inf
unstable,6,3.07,INF
single,0,1,2
"""


def write(tmp_path: Path, text: str, name: str = "results.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def compare(*args: str) -> object:
    return runner.invoke(app, ["compare", *map(str, args)])


def rows_of(stdout: str) -> dict[str, list[str]]:
    """The table's rows by comparison: the words of each line up to the blank line."""
    lines = stdout.split("\n\n")[0].splitlines()
    assert lines[0].split() == [
        "COMPARISON", "N", "METHOD", "CHANGE", "LOW", "HIGH", "VERDICT", "SEEDS_NEEDED",
    ]  # fmt: skip
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


# --- the CLI on good files ------------------------------------------------------------------


def test_the_table_shows_each_comparison_in_first_seen_order(tmp_path: Path) -> None:
    result = compare(write(tmp_path, GOOD), "--margin", "0.01")
    assert result.exit_code == 0, result.output
    table = rows_of(result.stdout)
    assert list(table) == ["faster", "same", "unstable", "single"]
    n, method, change, low, high, verdict, needed = table["faster"]
    assert (n, method, verdict) == ("5", "log-t", "better")
    assert change.startswith("-") and change.endswith("%") and float(change[:-1]) < -2
    assert float(low[:-1]) < float(change[:-1]) < float(high[:-1]) < 0
    assert "-" in needed  # a range, from the observed SD to its upper bound
    assert table["same"][5] == "equivalent"
    assert table["unstable"][5] == "worse"  # the treatment diverged on every seed
    assert table["single"] == ["1", "log-t", "+100.00%", "-", "-", "no_detectable_difference", "-"]
    assert "equivalent: within +-1.00% by TOST" in result.stdout
    assert "against a 1.00% change" in result.stdout  # the margin is the default effect


def test_json_has_exactly_the_documented_keys(tmp_path: Path) -> None:
    result = compare(write(tmp_path, GOOD), "--json", "--effect", "0.05")
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)
    assert [o["comparison"] for o in objects] == ["faster", "same", "unstable", "single"]
    for found in objects:
        assert tuple(found) == RESULT_KEYS
    faster = objects[0]
    assert faster["n"] == 5 and faster["method"] == "log-t" and faster["verdict"] == "better"
    assert faster["low"] < faster["change"] < faster["high"] < 0
    assert 0 < faster["p_value"] < 0.05
    assert set(faster["seeds_needed"]) == {"effect", "estimate", "upper"}
    assert faster["seeds_needed"]["effect"] == 0.05
    assert faster["seeds_needed"]["estimate"] <= faster["seeds_needed"]["upper"]
    single = objects[-1]
    assert (single["low"], single["p_value"], single["seeds_needed"]) == (None, None, None)
    assert objects[1]["verdict"] == "no_detectable_difference"  # no margin: no equivalence


def test_holm_adjusts_across_the_file(tmp_path: Path) -> None:
    """Two comparisons at p ~ 0.04 each: both better alone, neither after Holm."""
    rows = ["comparison,seed,baseline,treatment"]
    for name, shifts in (
        ("a", (-0.01, -0.02, -0.015, 0.0, -0.03)),
        ("b", (-0.01, -0.02, -0.015, 0.002, -0.025)),
    ):
        rows += [f"{name},{seed},1.0,{1 + shift}" for seed, shift in enumerate(shifts)]
    path = write(tmp_path, "\n".join(rows) + "\n")
    alone = json.loads(compare(path, "--json").stdout)
    adjusted = json.loads(compare(path, "--json", "--holm").stdout)
    assert all(0.01 < o["p_value"] < 0.05 and o["verdict"] == "better" for o in alone)
    expected = multipletests([o["p_value"] for o in alone], method="holm")[1]
    assert [o["p_value"] for o in adjusted] == pytest.approx(list(expected))
    for before, after in zip(alone, adjusted, strict=True):
        assert after["verdict"] == "no_detectable_difference"
        # the intervals stay unadjusted
        assert [after[k] for k in ("change", "low", "high")] == [
            before[k] for k in ("change", "low", "high")
        ]
    assert "Holm-adjusted across the comparisons" in compare(path, "--holm").stdout


def test_mode_max_turns_the_verdict(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert rows_of(compare(path, "--mode", "max").stdout)["faster"][5] == "worse"
    # a diverged run is still the worse outcome when higher is better
    assert rows_of(compare(path, "--mode", "max").stdout)["unstable"][5] == "worse"


def test_blank_lines_and_a_byte_order_mark_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("\ufeff" + GOOD.replace("\n", "\r\n").replace("same,2", "\r\nsame,2"))
    result = compare(path, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4


# --- the CLI on bad input -------------------------------------------------------------------

BAD = [
    pytest.param("", None, None, "the file is empty", id="empty-file"),
    pytest.param("\n\n", None, None, "the file is empty", id="blank-file"),
    pytest.param(HEADER + "\n", 1, None, "no rows after the header", id="header-only"),
    pytest.param(
        "comparison,seed,baseline\na,0,1\n", 1, "treatment", "no column 'treatment'", id="no-column"
    ),
    pytest.param(
        "name,seed,baseline,treatment\na,0,1,1\n", 1, "comparison", "no column", id="renamed"
    ),
    pytest.param(
        HEADER + ",note\na,0,1,1,x\n", 1, "note", "unexpected column 'note'", id="extra-column"
    ),
    pytest.param(
        "seed,comparison,baseline,treatment\n0,a,1,1\n", 1, None, "in the order", id="order"
    ),
    pytest.param(
        HEADER + "\na,0,1.0,0.9\na,1,abc,0.9\n", 3, "baseline", "'abc' is not a number",
        id="non-numeric",
    ),
    pytest.param(
        HEADER + "\na,0,1.0,0.9\n\na,1,1.1,0.9\na,0,1.2,0.9\n", 5, "seed",
        "seed 0 of comparison 'a' appears twice (first at line 2)", id="duplicate-seed",
    ),
    pytest.param(
        HEADER + "\na,0,1.0,0.9\na,1,1.1,\n", 3, "treatment", "missing", id="empty-treatment"
    ),
    pytest.param(HEADER + "\na,0,1.0,0.9\na,1,1.1\n", 3, "treatment", "missing", id="short-row"),
    pytest.param(HEADER + "\na,0,1.0,0.9\n,1,1.1,1\n", 3, "comparison", "missing", id="no-name"),
    pytest.param(HEADER + "\na,0,1.0,0.9\na, ,1.1,1\n", 3, "seed", "missing", id="no-seed"),
    pytest.param(HEADER + "\na,0,1.0,0.9,7\n", 2, "5", "5 cells", id="long-row"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "column", "message"), BAD)
def test_bad_files_name_the_line_and_column(
    tmp_path: Path, text: str, line: int | None, column: str | None, message: str
) -> None:
    path = write(tmp_path, text)
    result = compare(path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    error = result.stderr.strip()
    assert error.startswith(f"error: {path}: ")
    where = [f"line {line}"] if line else []
    where += [f"column {column}"] if column else []
    assert f"{path}: {', '.join(where)}: " in error if where else True, error
    assert message in error, error
    # the pure reader says the same
    with pytest.raises(TableError) as info:
        read_csv(text)
    assert (info.value.line, info.value.column) == (line, column)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--mode", "median"], "'min', 'max'"),
        (["--margin", "0"], "not a fraction in (0, 1)"),
        (["--margin", "1"], "not a fraction in (0, 1)"),
        (["--margin", "1.5"], "not a fraction in (0, 1)"),
        (["--effect", "-0.1"], "not a fraction in (0, 1)"),
        (["--margin", "two"], "unable to parse string as a number"),
    ],
)
def test_bad_options_are_rejected(tmp_path: Path, args: list[str], expected: str) -> None:
    result = compare(write(tmp_path, GOOD), *args)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.replace("│", " ").split())


def test_a_missing_file_is_rejected(tmp_path: Path) -> None:
    result = compare(tmp_path / "nowhere.csv")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_binary_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"\xff\xfe\x00\x01 not text")
    result = compare(path)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}: ")


# --- scale ----------------------------------------------------------------------------------


def test_5000_comparisons_in_seconds(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    baseline = rng.lognormal(1.0, 0.1, (5000, 10))
    treatment = baseline * np.exp(rng.normal(0, 0.02, baseline.shape))
    lines = [HEADER] + [
        f"c{i},{seed},{b:.6f},{t:.6f}"
        for i in range(5000)
        for seed, (b, t) in enumerate(zip(baseline[i], treatment[i], strict=True))
    ]
    path = write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    result = compare(path, "--json", "--holm", "--margin", "0.02")
    elapsed = time.perf_counter() - start
    print(f"\ncompare: 5,000 comparisons x 10 seeds (CSV, --json --holm): {elapsed:.2f} s")
    assert result.exit_code == 0, result.output[-2000:]
    assert len(json.loads(result.stdout)) == 5000
    assert elapsed < 20


# --- the API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compare_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app, as ``magma-bench serve`` builds it, on a SQLite file it never uses."""
    directory = tmp_path_factory.mktemp("compare-api")
    settings = Settings(DATABASE_URL=f"sqlite:///{directory / 'unused.db'}")
    with TestClient(create_app(settings)) as client:
        yield client


def csv_rows(text: str) -> list[dict[str, object]]:
    header, *lines = text.strip().splitlines()
    keys = header.split(",")
    return [dict(zip(keys, line.split(","), strict=True)) for line in lines]


def post(client: TestClient, **body: object) -> object:
    return client.post("/api/v1/compare", json=body)


def test_the_endpoint_returns_what_the_cli_prints(compare_api: TestClient, tmp_path: Path) -> None:
    rows = csv_rows(GOOD)
    for row in rows:  # numbers as JSON numbers where JSON has them
        for key in ("baseline", "treatment"):
            if row[key].lower() not in DIVERGED:
                row[key] = float(row[key])
        row["seed"] = int(row["seed"])
    options = {"mode": "min", "margin": 0.01, "effect": 0.02, "holm": True}
    response = post(compare_api, rows=rows, **options)
    assert response.status_code == 200, response.text
    cli = compare(write(tmp_path, GOOD), "--json", "--margin", "0.01", "--effect", "0.02", "--holm")
    assert response.json() == json.loads(cli.stdout)


def error_of(response: object) -> tuple[str, dict[str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()["error"]
    assert body["status"] == 422 and body["code"] == "invalid_request"
    return body["message"], {d["field"]: d["message"] for d in body["details"]}


@pytest.mark.parametrize(
    ("rows", "field", "message"),
    [
        ([], "rows", "no rows"),
        ([{"comparison": "a", "seed": 0, "baseline": "abc", "treatment": 1}], "rows.0.baseline",
         "'abc' is not a number"),
        ([{"comparison": "a", "seed": 0, "baseline": 1, "treatment": 1},
          {"comparison": "a", "seed": 1, "baseline": 1, "treatment": None}], "rows.1.treatment",
         "missing"),
        ([{"comparison": "a", "seed": 0, "baseline": 1, "treatment": 1},
          {"comparison": "a", "seed": 0, "baseline": 2, "treatment": 1}], "rows.1.seed",
         "seed 0 of comparison 'a' appears twice (first at row 0)"),
        ([{"comparison": " ", "seed": 0, "baseline": 1, "treatment": 1}], "rows.0.comparison",
         "missing"),
        ([{"comparison": "a", "seed": 0, "baseline": 1}], "rows.0.treatment", "Field required"),
        ([{"comparison": "a", "seed": 0, "baseline": [1], "treatment": 1}], "rows.0.baseline",
         ""),
    ],
)  # fmt: skip
def test_bad_rows_are_named_by_index_and_field(
    compare_api: TestClient, rows: list[dict[str, object]], field: str, message: str
) -> None:
    text, details = error_of(post(compare_api, rows=rows))
    # pydantic names a union's branches after the field (rows.0.baseline.float)
    named = [found for found in details if found == field or found.startswith(field + ".")]
    assert named, details
    assert all(message in details[found] for found in named)
    assert text.startswith(f"{field}")


@pytest.mark.parametrize(
    ("options", "field"),
    [({"mode": "median"}, "mode"), ({"margin": 1}, "margin"), ({"effect": 0}, "effect")],
)
def test_bad_options_are_422(compare_api: TestClient, options: dict, field: str) -> None:
    rows = [{"comparison": "a", "seed": 0, "baseline": 1, "treatment": 1}]
    _, details = error_of(post(compare_api, rows=rows, **options))
    assert field in details


def test_diverged_runs_are_strings_in_json(compare_api: TestClient) -> None:
    rows = [
        {"comparison": "a", "seed": s, "baseline": 3 + s / 100, "treatment": word}
        for s, word in enumerate(["inf", "nan", "diverged", "Infinity", "-inf", "INF"])
    ]
    response = post(compare_api, rows=rows)
    assert response.status_code == 200, response.text
    (found,) = response.json()
    assert found["verdict"] == "worse" and found["n"] == 6


def test_the_endpoint_wants_the_api_key(tmp_path: Path) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path / 'unused.db'}", api_key="secret")
    rows = [{"comparison": "a", "seed": 0, "baseline": 1, "treatment": 1}]
    with TestClient(create_app(settings)) as client:
        assert client.post("/api/v1/compare", json={"rows": rows}).status_code == 401
        allowed = client.post(
            "/api/v1/compare", json={"rows": rows}, headers={"Authorization": "Bearer secret"}
        )
        assert allowed.status_code == 200, allowed.text


def test_read_rows_matches_read_csv() -> None:
    assert read_rows(csv_rows(GOOD)) == read_csv(GOOD)


# --- the CLI's help, as a terminal shows it ---------------------------------------------------


def test_every_command_help_reads_well_on_a_terminal() -> None:
    """Typer (rich mode) keeps a help text's single line breaks in the command list and in
    every paragraph after the first: each paragraph is one line, for the terminal to wrap;
    the first, the command list's, is short; no reStructuredText markup reaches it."""
    group = typer.main.get_command(app)
    assert "compare" in group.commands
    for name, command in group.commands.items():
        text = command.help or ""
        paragraphs = text.split("\n\n")
        assert all("\n" not in paragraph for paragraph in paragraphs), (name, text)
        assert len(paragraphs[0]) <= 90, (name, paragraphs[0])
        assert "``" not in text, (name, text)
        rendered = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})
        assert rendered.exit_code == 0 and "``" not in rendered.stdout, name
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).stdout
    assert "compare" in listing and "``" not in listing
