"""The ``magma-bench`` command line.

``serve`` runs the API, ``driver`` the study runner, ``up`` both (with a local Ray) for
a laptop; ``submit``, ``status``, ``list``, ``presets``, ``claims``, ``export`` and
``cancel`` talk to the API over HTTP (``MAGMA_URL``, ``MAGMA_API_KEY``); ``compare``
judges a CSV file of paired results locally (``studies.compare``). Every command
reads its settings through ``worker.settings``, and ``up`` hands its environment to both
children unchanged, so the API and the driver always agree (on the database above all).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from tqdm import tqdm

from service.client import APIClientError, Client
from studies.cli import driver_command
from worker.cli import train_command
from worker.contract import FINISHED_TRIAL_STATUSES, Names, StudyStatus
from worker.settings import get_settings

app = typer.Typer(
    help="Magma benchmark: train trials, run studies, serve the API, judge paired results.",
    no_args_is_help=True,
)
Command = TypeVar("Command", bound=Callable[..., Any])


def terminal_help(docstring: str | None) -> str:
    """A docstring as the terminal should show it: each paragraph on one line, for the
    terminal to wrap. Typer (rich mode) keeps a docstring's single line breaks in the
    command list and in every paragraph after the first, which breaks sentences mid-line."""
    paragraphs = inspect.cleandoc(docstring or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def command(name: str) -> Callable[[Command], Command]:
    """``app.command(name)``, with the function's docstring as ``terminal_help`` words it.
    The first paragraph is the line the command list shows: keep it short."""

    def register(function: Command) -> Command:
        app.command(name, help=terminal_help(function.__doc__))(function)
        return function

    return register


command("train")(train_command)
command("driver")(driver_command)


def _fail(exc: APIClientError | Exception) -> typer.Exit:
    typer.secho(str(exc), fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="default: MAGMA_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: MAGMA_PORT or 8000")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the REST API (and dashboards) with uvicorn."""
    import uvicorn

    from service.main import create_app

    settings = get_settings()
    host, port = host or settings.host, port if port is not None else settings.port
    if warning := settings.bind_warning(host):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    elif not settings.auth_enabled:
        typer.echo(f"MAGMA_API_KEY is unset: no authentication, listening on {host} only")
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    else:  # each worker process builds its own app (and database engines)
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
        )


@command("up")
def up_command(
    host: Annotated[
        str | None, typer.Option(help="API address (0.0.0.0 in a container); default: MAGMA_HOST")
    ] = None,
    port: Annotated[int | None, typer.Option(help="API port; default: MAGMA_PORT")] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for the API")] = 120.0,
) -> None:
    """Run the API and the driver together, with a local Ray: a laptop setup.

    Both use the settings' database (by default SQLite under ./var/). Runs until
    interrupted; if either process exits, the other is stopped too."""
    settings = get_settings()  # fails here, once, on a bad setting
    host, port = host or settings.host, port if port is not None else settings.port
    env = {**os.environ}
    exe = [sys.executable, "-m", "service.cli"]
    children = {
        "serve": subprocess.Popen([*exe, "serve", "--host", host, "--port", str(port)], env=env),
        "driver": subprocess.Popen([*exe, "driver"], env=env),
    }

    def stop() -> None:
        # SIGTERM, not SIGINT: started from a script in the background, these processes
        # inherit an ignored SIGINT (POSIX shells do that to background jobs).
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    url = f"http://127.0.0.1:{port}"
    try:
        client = Client(url)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                client.health()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or children["serve"].poll() is not None:
                    raise _fail(RuntimeError(f"the API did not come up at {url}")) from None
                time.sleep(0.5)
        typer.echo(f"magma-bench is up: API {url}/api/v1, dashboards {url}/  (Ctrl-C stops)")
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        exited = [name for name, child in children.items() if child.poll() is not None]
        raise _fail(RuntimeError(f"{', '.join(exited)} exited; stopping"))
    except KeyboardInterrupt:
        pass
    finally:
        stop()


@command("submit")
def submit_command(
    spec: Annotated[Path | None, typer.Argument(help="a study spec, YAML or JSON")] = None,
    preset: Annotated[str | None, typer.Option(help="submit a bundled preset instead")] = None,
    overrides: Annotated[
        str | None, typer.Option(help="JSON merged into the preset, e.g. '{\"seeds\": 3}'")
    ] = None,
    wait: Annotated[bool, typer.Option(help="follow the study until it finishes")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="retry-safe submission")] = None,
) -> None:
    """Submit a study from a spec file or a bundled preset.

    With --wait, follow it: live progress, then the best configuration."""
    if (spec is None) == (preset is None):
        raise _fail(ValueError("give either a spec file or --preset NAME"))
    client = Client()
    try:
        if spec is not None:
            study = client.submit_file(spec, idempotency_key)
        else:
            extra = json.loads(overrides) if overrides else None
            study = client.submit_preset(str(preset), extra, idempotency_key)
    except (APIClientError, ValueError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"study {study['id']} ({study['name']}): {study['status']}, {study['runs']} runs")
    if wait:
        status = follow(client, study["id"], study["runs"])
        if status != StudyStatus.complete:
            raise typer.Exit(1)


def follow(client: Client, study_id: int, runs: int) -> str:
    """Progress over finished trials, from the event stream; returns the status.

    On a terminal, a bar redrawn in place. In a pipe or a log file every redraw would be
    a line of its own, so there each finished trial prints one plain line instead."""
    status: str = StudyStatus.running
    terminal = sys.stderr.isatty()
    finished = 0
    with tqdm(
        total=runs,
        unit="trial",
        desc=f"study {study_id}",
        dynamic_ncols=True,
        disable=not terminal,
    ) as bar:
        for event in client.events(study_id):
            payload = event.data["payload"]
            if event.event == "metric":
                bar.set_postfix(
                    trial=event.data["trial_id"],
                    step=payload.get("step"),
                    objective=f"{payload.get('objective') or float('nan'):.4g}",
                )
            elif event.event == "trial" and payload.get("status") in FINISHED_TRIAL_STATUSES:
                finished += 1
                bar.update(1)
                if not terminal:
                    line = _trial_line(event.data["trial_id"], payload, finished, runs)
                    typer.echo(line, err=True)
            elif event.event == "study":
                status = payload.get("status", status)
    study = client.study(study_id)
    typer.echo(f"study {study_id}: {study['status']}  {study['progress']}")
    if study["best"]:
        best = study["best"]
        typer.echo(f"best: {best['params']}  objective {best['objective']:.6g}")
    return study["status"]


def _trial_line(trial_id: int, payload: dict[str, Any], finished: int, runs: int) -> str:
    """One finished trial, for ``follow`` off a terminal."""
    objective = payload.get("objective")
    score = f"  objective {objective:.6g}" if objective is not None else ""
    return f"trial {trial_id}: {payload['status']}{score}  ({finished}/{runs})"


@command("status")
def status_command(study: Annotated[int, typer.Argument(help="study id")]) -> None:
    """A study's status, progress and best configuration, and each arm's verdict.

    Shows the status, the trials per status, the best configuration so far, and each
    masked arm against its dense base: the decision, each stage's test (the deciding one
    marked), and the warnings."""
    client = Client()
    try:
        detail = client.study(study)
        verdict = client.verdict(study)
    except APIClientError as exc:
        raise _fail(exc) from None
    typer.echo(f"study {detail['id']} ({detail['name']}): {detail['status']}")
    typer.echo(f"runs: {detail['runs']}  progress: {detail['progress']}")
    if detail["best"]:
        typer.echo(f"best: {detail['best']['params']}  objective {detail['best']['objective']:.6g}")
    if detail["error"]:
        typer.echo(f"error: {detail['error'].splitlines()[-1]}")
    for comparison in verdict["comparisons"]:
        typer.echo(comparison["summary"])
        for warning in comparison["warnings"]:
            typer.echo(f"  warning: {warning['message']}")


@command("list")
def list_command(
    status: Annotated[
        StudyStatus | None, typer.Option(help="only studies with this status")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="at most this many")] = 20,
) -> None:
    """Studies, newest first: id, name, status, finished trials of its runs, created."""
    try:
        page = Client().studies(status.value if status else None, limit)
    except APIClientError as exc:
        raise _fail(exc) from None
    if not page["items"]:
        typer.echo(f"no {status} studies" if status else "no studies")
        return
    rows = [
        (
            str(study["id"]),
            study["name"],
            study["status"],
            f"{_finished(study['progress'])}/{study['runs']}",
            _timestamp(study["created_at"]),
        )
        for study in page["items"]
    ]
    _table(("ID", "NAME", "STATUS", "PROGRESS", "CREATED (UTC)"), rows)
    if page["total"] > len(rows):
        typer.echo(f"{len(rows)} of {page['total']} studies; --limit shows more")


@command("presets")
def presets_command() -> None:
    """The bundled study presets: name, trials they run, and what they rerun."""
    try:
        presets = Client().presets()
    except APIClientError as exc:
        raise _fail(exc) from None
    rows = [(p["name"], str(p["runs"]), p["description"]) for p in presets]
    _table(("NAME", "RUNS", "DESCRIPTION"), rows)


@command("claims")
def claims_command(
    definitions: Annotated[bool, typer.Option(help="print each claim's test definition")] = False,
) -> None:
    """Each claim of the paper, tested on the newest complete study of its preset.

    For each claim: the verdict (supported, contradicted or inconclusive), the study and
    the scale it ran at, then the numbers and the warnings."""
    try:
        report = Client().claims()
    except APIClientError as exc:
        raise _fail(exc) from None
    typer.echo(f"claims registry version {report['registry_version']}")
    if definitions:
        typer.echo(f"every claim: {report['shared_rule']}")
    for claim in report["claims"]:
        typer.echo(f"{claim['reference']}: {claim['support']}  {claim['statement']}")
        for study in claim["studies"]:
            found = (
                f"study {study['study_id']}, {study['scale']}"
                if study["study_id"] is not None
                else "no complete study"
            )
            typer.echo(f"  {study['role']} ({study['preset']}): {found}")
        for line in claim["numbers"]:
            typer.echo(f"  {line}")
        for warning in claim["warnings"]:
            typer.echo(f"  warning: {warning}")
        if definitions:
            typer.echo(f"  test: {claim['definition']}")


def _finished(progress: dict[str, int]) -> int:
    return sum(n for s, n in progress.items() if s in FINISHED_TRIAL_STATUSES)


def _timestamp(value: str) -> str:
    """An API timestamp (ISO 8601, UTC) to the minute, as a table shows it."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns; the last one is cut to the terminal width (80 in a pipe),
    so each row stays one line."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    indent = sum(widths) + 2 * len(widths)
    room = max(20, shutil.get_terminal_size().columns - indent)
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        last = textwrap.shorten(row[-1], width=room, placeholder="...")
        typer.echo("  ".join([*cells, last]).rstrip())


@command("export")
def export_command(
    study: Annotated[int, typer.Argument(help="study id")],
    format: Annotated[str, typer.Option(help="json, yaml, python or optuna (with --to)")] = "yaml",
    output: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
    to: Annotated[
        str | None,
        typer.Option(help="--format optuna: a storage URL (sqlite:///x.db) or a journal file"),
    ] = None,
) -> None:
    """A study's best configuration with provenance, or every configuration for Optuna.

    --format json or yaml writes the best configuration with its provenance, python a
    snippet that builds its optimizer; --format optuna with --to writes every
    configuration as an Optuna study (for optuna-dashboard)."""
    if format == "optuna":
        _export_optuna(study, to)
        return
    try:
        text = Client().best(study, format)
    except APIClientError as exc:
        raise _fail(exc) from None
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def _export_optuna(study: int, to: str | None) -> None:
    if not to:
        raise _fail(ValueError("--format optuna needs --to (sqlite:///x.db or a journal file)"))
    from studies.optuna_export import export_study  # Optuna: only when it is asked for

    client = Client()
    try:
        exported = export_study(client.study(study), client.trials(study), to)
    except APIClientError as exc:
        raise _fail(exc) from None
    typer.echo(f"study {study}: {len(exported.trials)} configurations, {exported.study_name!r}")


class Direction(Names):
    """Which way is better, as ``--mode`` takes it."""

    min = "min"
    max = "max"


def _in_unit_interval(value: float | None) -> float | None:
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value:g} is not a fraction in (0, 1); 0.02 is 2%")
    return value


def _fraction(help_text: str) -> Any:
    return typer.Option(callback=_in_unit_interval, help=help_text)


@command("compare")
def compare_command(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="CSV with the header comparison,seed,baseline,treatment",
        ),
    ],
    mode: Annotated[
        Direction, typer.Option(help="min: lower is better (a loss); max: higher is better")
    ] = Direction.min,
    margin: Annotated[
        float | None,
        _fraction("equivalence margin, a fraction (0.02 is 2%): enables the verdict equivalent"),
    ] = None,
    effect: Annotated[
        float | None,
        _fraction("the change seeds_needed is sized for; default: the margin, else 0.01"),
    ] = None,
    holm: Annotated[
        bool, typer.Option("--holm", help="decide at Holm-adjusted p-values across the file")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="print a JSON list instead of the table")
    ] = False,
) -> None:
    """Verdicts on paired results from a CSV file, computed locally.

    Each row is one seed of one comparison: the objective of the baseline and of the
    treatment on that seed. A diverged run is written inf, nan or diverged; it scores the
    worst finite value of its comparison, so it counts against its arm.

    Each comparison gets a paired Student t test at alpha 0.05, on log ratios when every
    value is positive, else on differences scaled by the baseline mean. The verdict is
    better or worse when the test finds a difference, equivalent when it finds none and
    TOST puts the change within --margin, else no_detectable_difference.

    The table shows the change with its 95% interval, in percent, and seeds_needed: the
    pairs a test needs for 80% power against --effect, from the observed spread to its
    95% upper bound. --json prints the same as objects, in fractions, plus p_value. A
    malformed file exits with status 2, naming the line and the column."""
    from studies.compare import TableError, judge, read_csv, result_object, table_lines

    try:
        text = path.read_text(encoding="utf-8")
        judged = judge(read_csv(text), mode.value, margin=margin, effect=effect, adjust=holm)
    except (OSError, UnicodeDecodeError, TableError) as exc:
        typer.secho(f"error: {path}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if json_output:
        typer.echo(json.dumps([result_object(j) for j in judged], indent=2))
        return
    for line in table_lines(judged, margin=margin, effect=effect, adjusted=holm):
        typer.echo(line)


@command("cancel")
def cancel_command(study: Annotated[int, typer.Argument(help="study id")]) -> None:
    """Stop a study's running trials and mark it cancelled."""
    try:
        detail = Client().cancel(study)
    except APIClientError as exc:
        raise _fail(exc) from None
    typer.echo(f"study {detail['id']}: {detail['status']}")


if __name__ == "__main__":
    app()
