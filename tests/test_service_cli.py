"""``magma-bench list`` and ``magma-bench presets`` as a user runs them, against a real
``magma-bench serve`` on each backend. Trials are written with the engine's repository
functions (what the driver does), so no Ray is needed."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx

from studies.spec import StudySpec
from studies.storage.models import Study
from studies.storage.repository import trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import Server, cli
from worker.contract import StudyStatus

#: what a table is cut to off a terminal (``shutil.get_terminal_size``'s fallback)
PIPE_COLUMNS = 80


def submit(server: Server, name: str, lrs: list[float]) -> dict:
    spec = quadratic_spec(name=name, search={"lr": lrs}).model_dump(mode="json")
    response = httpx.post(f"{server.api}/studies", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header's words and each row's words (names in these tests have no spaces)."""
    header, *rows = stdout.splitlines()
    return header.split(), [row.split() for row in rows]


def created(study: dict) -> list[str]:
    """A study's ``created_at`` as the table prints it: UTC date and minute."""
    moment = datetime.fromisoformat(study["created_at"].replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M").split()


def test_list_shows_studies_newest_first_with_progress(server: Server) -> None:
    first = submit(server, "list-a", [0.1, 0.01, 0.001])
    second = submit(server, "list-b", [0.1])
    third = submit(server, "list-c", [0.1, 0.01])
    # The first runs: one configuration complete, one running, one not started.
    db = Database(server.database_url)
    try:
        spec = StudySpec.model_validate(first["spec"])
        with db.transaction() as session:
            session.get(Study, first["id"]).status = "running"  # as a driver's claim leaves it
            for number, (lr, status) in enumerate([(0.1, "complete"), (0.01, "running")]):
                config = spec.complete_trial_config({"lr": lr}, 0)
                (trial,) = trial_lifecycle.create_configuration(
                    session, first["id"], number, {"lr": lr}, [config]
                )
                trial_lifecycle.mark_trial_running(session, trial.id)
                if status == "complete":
                    trial_lifecycle.finish_trial(session, trial.id, status, 1.0, 20)
    finally:
        db.dispose()
    cancelled = cli(server, "cancel", str(third["id"]))
    assert cancelled.returncode == 0, cancelled.stderr

    listed = cli(server, "list")
    assert listed.returncode == 0, listed.stderr
    header, rows = table(listed.stdout)
    assert header == ["ID", "NAME", "STATUS", "PROGRESS", "CREATED", "(UTC)"]
    assert rows == [
        [str(third["id"]), "list-c", "cancelled", "0/2", *created(third)],
        [str(second["id"]), "list-b", "queued", "0/1", *created(second)],
        [str(first["id"]), "list-a", "running", "1/3", *created(first)],
    ]

    running = cli(server, "list", "--status", "running")
    assert running.returncode == 0, running.stderr
    assert [row[:4] for row in table(running.stdout)[1]] == [
        [str(first["id"]), "list-a", "running", "1/3"]
    ]
    limited = cli(server, "list", "--limit", "2")
    assert limited.returncode == 0, limited.stderr
    *lines, footer = limited.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [str(third["id"]), str(second["id"])]
    assert footer == "2 of 3 studies; --limit shows more"
    none = cli(server, "list", "--status", "failed")
    assert (none.returncode, none.stdout) == (0, "no failed studies\n")


def test_list_rejects_a_bad_status_or_limit_naming_the_allowed_values(server: Server) -> None:
    bad = cli(server, "list", "--status", "sleeping")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "--status" in bad.stderr and "'sleeping'" in bad.stderr
    for status in StudyStatus.values():
        assert f"'{status}'" in bad.stderr, bad.stderr
    for limit in ("0", "201"):
        bad = cli(server, "list", "--limit", limit)
        assert bad.returncode == 2 and "--limit" in bad.stderr, bad.stderr


def test_presets_lists_every_bundled_preset(server: Server) -> None:
    result = cli(server, "presets")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["NAME", "RUNS", "DESCRIPTION"]
    presets = httpx.get(f"{server.api}/presets").json()
    assert {"paper-table1", "demo", "lr-window"} <= {p["name"] for p in presets}
    assert len(lines) == len(presets)
    for line, preset in zip(lines, presets, strict=True):
        name, runs, description = line.split(maxsplit=2)
        assert (name, int(runs)) == (preset["name"], preset["runs"])
        assert len(line) <= PIPE_COLUMNS, line  # one line per preset, cut to the width
        shown = description.removesuffix("...").rstrip()
        assert len(shown) > 20 and preset["description"].startswith(shown), line
