"""The REST API over real HTTP against a real uvicorn, on SQLite and PostgreSQL.

Studies are submitted through the API; trials and metric rows are written with the
engine's own repository functions (what the driver does), so these tests need no Ray.
The driver-backed end-to-end run is in ``test_service_e2e.py``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml

import magma
from studies.spec import StudySpec
from studies.storage.models import Study
from studies.storage.repository import lease, metric_ingest, trial_lifecycle
from tests.db_fixtures import Database, quadratic_spec
from tests.service_fixtures import Server, running_server
from worker.data.corpus import SAMPLE_FILES


def spec_data(**overrides: Any) -> dict[str, Any]:
    return quadratic_spec(**overrides).model_dump(mode="json")


def submit(server: Server, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.api}/studies", json=body, **kwargs)


def error_fields(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"status", "code", "message", "details"}, body
    assert body["error"]["status"] == response.status_code
    return {d["field"]: d["message"] for d in body["error"]["details"]}


@pytest.fixture
def db(server: Server) -> Any:
    database = Database(server.database_url)
    yield database
    database.dispose()


def finish_configurations(
    db: Database,
    study_id: int,
    results: list[tuple[dict[str, Any], list[float | None], str]],
    first: int = 0,
) -> list[int]:
    """What the driver would leave: per configuration (params, objective per seed,
    status), trials with metric rows. Returns the trial ids."""
    spec = StudySpec.model_validate(db.study(study_id).spec)
    ids = []
    with db.transaction() as session:
        for number, (params, objectives, status) in enumerate(results, start=first):
            configs = [spec.complete_trial_config(params, s) for s in range(len(objectives))]
            trials = trial_lifecycle.create_configuration(
                session, study_id, number, params, configs
            )
            for trial, objective in zip(trials, objectives, strict=True):
                trial_lifecycle.mark_trial_running(session, trial.id)
                rows = [
                    (trial.id, {"step": s, "objective": objective, "val_loss": 1.0 / s})
                    for s in (10, 20)
                ]
                metric_ingest.add_metrics(session, rows)
                trial_lifecycle.finish_trial(session, trial.id, status, objective, 20)
                ids.append(trial.id)
    return ids


# --- submission -------------------------------------------------------------------------


def test_submit_json_yaml_and_preset(server: Server) -> None:
    created = submit(server, spec_data(name="as-json"))
    assert created.status_code == 201, created.text
    study = created.json()
    assert (study["name"], study["status"], study["runs"]) == ("as-json", "queued", 1)
    assert created.headers["location"].endswith(f"/studies/{study['id']}")

    as_yaml = yaml.safe_dump(spec_data(name="as-yaml", search={"lr": [0.1, 0.01]}))
    created = httpx.post(
        f"{server.api}/studies",
        content=as_yaml,
        headers={"Content-Type": "application/yaml"},
    )
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["runs"]) == ("as-yaml", 2)

    created = submit(server, {"preset": "demo", "overrides": {"seeds": 2}})
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["seeds"] == 2
    assert created.json()["runs"] == 8  # 2 variants x 2 lrs x 2 seeds

    fetched = httpx.get(f"{server.api}/studies/{created.json()['id']}").json()
    assert fetched["spec"] == created.json()["spec"]


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"search": {"p": [0.5, 1.5]}}, "search.p", "less than or equal to 1"),
        ({"search": {"base": ["adamw", "lion"]}}, "search.base", "'adamw'"),
        ({"sampler": "annealing"}, "sampler", "'tpe'"),
        ({"seeds": 0}, "seeds", "greater than or equal to 1"),
        ({"seed_batch": 0}, "seed_batch", "greater than or equal to 1"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"workload": {"steps": 10**7}}, "workload.steps", "server cap"),
        ({"fixed": {"seed": 3}}, "fixed", "base_seed"),
    ],
)
def test_a_bad_spec_is_rejected_naming_the_field(
    server: Server, body: dict[str, Any], field: str, fragment: str
) -> None:
    data = spec_data(name="bad")
    for key, value in body.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    response = submit(server, data)
    assert response.status_code == 422, response.text
    fields = error_fields(response)
    assert field in fields, fields
    assert fragment in fields[field], fields
    assert response.json()["error"]["code"] == "invalid_spec"


def test_bad_bodies_get_clear_errors(server: Server) -> None:
    response = submit(server, {"preset": "no-such-preset"})
    assert response.status_code == 422
    assert "paper-table1" in error_fields(response)["preset"]

    response = submit(server, {"preset": "demo", "overrides": {"workload": {"steps": -1}}})
    assert response.status_code == 422
    assert "workload.steps" in error_fields(response)

    response = httpx.post(
        f"{server.api}/studies", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]["message"]

    response = httpx.post(
        f"{server.api}/studies", content=b"a: [", headers={"Content-Type": "application/yaml"}
    )
    assert response.status_code == 422 and "not valid YAML" in response.json()["error"]["message"]

    response = httpx.post(
        f"{server.api}/studies", content=b"x", headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 415
    assert "application/yaml" in response.json()["error"]["message"]

    response = submit(server, ["a", "list"])
    assert response.status_code == 422


def test_idempotent_retry_returns_the_same_study(server: Server) -> None:
    data = spec_data(name="idempotent")
    headers = {"Idempotency-Key": "retry-me-1"}
    first = submit(server, data, headers=headers)
    again = submit(server, data, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"

    clash = submit(server, spec_data(name="something else"), headers=headers)
    assert clash.status_code == 409
    assert str(first.json()["id"]) in clash.json()["error"]["message"]

    # Concurrent retries of one new key: one study, every answer names it.
    concurrent_headers = {"Idempotency-Key": "retry-me-2"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: submit(server, data, headers=concurrent_headers), range(8))
        )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = httpx.get(f"{server.api}/studies", params={"limit": 200}).json()["items"]
    assert sum(s["name"] == "idempotent" for s in listed) == 2  # retry-me-1 and -2


# --- reading --------------------------------------------------------------------------


def test_studies_are_paginated_and_filtered(server: Server) -> None:
    ids = [submit(server, spec_data(name=f"page-{i}")).json()["id"] for i in range(5)]
    cancelled = httpx.post(f"{server.api}/studies/{ids[0]}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"

    seen: list[int] = []
    offset = 0
    while True:
        page = httpx.get(f"{server.api}/studies", params={"limit": 2, "offset": offset}).json()
        assert len(page["items"]) <= 2
        seen += [s["id"] for s in page["items"]]
        offset += 2
        if offset >= page["total"]:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert set(ids) <= set(seen)

    queued = httpx.get(f"{server.api}/studies", params={"status": "queued", "limit": 200}).json()
    assert ids[0] not in {s["id"] for s in queued["items"]}
    assert set(ids[1:]) <= {s["id"] for s in queued["items"]}
    assert all(s["status"] == "queued" for s in queued["items"])

    bad = httpx.get(f"{server.api}/studies", params={"status": "sleeping"})
    assert bad.status_code == 422 and "'queued'" in error_fields(bad)["query.status"]


def test_trials_cursor_pagination_and_sorting(server: Server, db: Database) -> None:
    study_id = submit(
        server, spec_data(name="trials", search={"lr": [0.1, 0.05, 0.03, 0.01, 0.005]})
    ).json()["id"]
    objectives = [3.0, None, 1.0, 2.0, 1.0]
    results = [
        ({"lr": lr}, [obj], "complete" if obj is not None else "diverged")
        for lr, obj in zip([0.1, 0.05, 0.03, 0.01, 0.005], objectives, strict=True)
    ]
    trial_ids = finish_configurations(db, study_id, results)
    url = f"{server.api}/studies/{study_id}/trials"

    def pages(**params: Any) -> list[int]:
        """A live study's pages end in an empty one (caught up), never in a null cursor."""
        seen, more, cursor = [], [], None
        for _ in range(10):
            query = {"limit": 2, **params, **({"after": cursor} if cursor else {})}
            page = httpx.get(url, params=query).json()
            assert page["next_cursor"] is not None  # live: no end yet
            if not page["items"]:
                assert page["next_cursor"] == cursor  # a live view keeps its place
                assert page["has_more"] is False
                assert more == [True] * (len(more) - 1) + [False]  # only the last is short
                return seen
            seen += [t["id"] for t in page["items"]]
            more.append(page["has_more"])
            cursor = page["next_cursor"]
        pytest.fail("pagination did not end")

    assert pages() == trial_ids
    assert pages(order="desc") == trial_ids[::-1]
    by_objective = [trial_ids[i] for i in (2, 4, 3, 0, 1)]  # 1.0, 1.0 (by id), 2.0, 3.0, None
    assert pages(sort="objective") == by_objective
    assert pages(sort="objective", order="desc") == [trial_ids[i] for i in (0, 3, 2, 4, 1)]
    assert pages(status="diverged") == [trial_ids[1]]

    # A live view: after its last cursor it sees only trials created since.
    page = httpx.get(url, params={"limit": 100}).json()
    assert len(page["items"]) == 5 and page["has_more"] is False
    cursor = page["next_cursor"]
    assert cursor is not None  # a short page of a live study is not the end
    caught_up = httpx.get(url, params={"after": cursor}).json()
    assert caught_up == {"items": [], "next_cursor": cursor, "has_more": False}
    more = finish_configurations(db, study_id, [({"lr": 0.002}, [0.5], "complete")], first=5)
    fresh = httpx.get(url, params={"after": cursor}).json()["items"]
    assert [t["id"] for t in fresh] == more

    assert httpx.get(url, params={"after": "garbage"}).status_code == 422
    assert httpx.get(url, params={"sort": "colour"}).status_code == 422


def follow_cursor(url: str, **params: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """What a client does: follow ``next_cursor`` until it is null. Returns the trial ids
    seen and the pages (without their items)."""
    seen: list[int] = []
    pages: list[dict[str, Any]] = []
    cursor = None
    while len(pages) < 20:
        query = {**params, **({"after": cursor} if cursor else {})}
        response = httpx.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [t["id"] for t in page.pop("items")]
        pages.append(page)
        if (cursor := page["next_cursor"]) is None:
            return seen, pages
    pytest.fail(f"following next_cursor did not end: {pages}")


def test_trial_pages_of_a_finished_study_end(server: Server, db: Database) -> None:
    """On a finished study, following ``next_cursor`` until null terminates and sees every
    trial exactly once, in each sort order and page size; no empty page is needed to learn
    the end (``has_more`` from a limit+1 read)."""
    lrs = [0.1, 0.05, 0.03, 0.01, 0.005]
    study_id = submit(server, spec_data(name="finished-pages", search={"lr": lrs})).json()["id"]
    objectives = [3.0, None, 1.0, 2.0, 1.0]
    results = [
        ({"lr": lr}, [obj], "complete" if obj is not None else "diverged")
        for lr, obj in zip(lrs, objectives, strict=True)
    ]
    ids = finish_configurations(db, study_id, results)
    url = f"{server.api}/studies/{study_id}/trials"
    # A page read while the study still runs ends in a cursor to poll from...
    live = httpx.get(url, params={"limit": 100}).json()
    assert live["has_more"] is False and live["next_cursor"] is not None
    with db.transaction() as session:
        lease.finish_study(session, study_id, "complete")
    # ...which, once it has finished, gives the end.
    assert httpx.get(url, params={"after": live["next_cursor"]}).json() == {
        "items": [],
        "next_cursor": None,
        "has_more": False,
    }

    orders = {
        ("number", "asc"): ids,
        ("number", "desc"): ids[::-1],
        ("objective", "asc"): [ids[i] for i in (2, 4, 3, 0, 1)],  # 1.0, 1.0, 2.0, 3.0, None
        ("objective", "desc"): [ids[i] for i in (0, 3, 2, 4, 1)],
    }
    for (sort, order), expected in orders.items():
        for limit in (1, 2, 5, 100):  # 5: a full last page; 100: one short page
            seen, pages = follow_cursor(url, sort=sort, order=order, limit=limit)
            assert seen == expected, (sort, order, limit)
            assert len(pages) == -(-len(expected) // limit), (sort, order, limit)
            assert [p["has_more"] for p in pages] == [True] * (len(pages) - 1) + [False]
            assert all(p["next_cursor"] for p in pages[:-1])
    seen, pages = follow_cursor(url, status="diverged")
    assert seen == [ids[1]] and pages == [{"next_cursor": None, "has_more": False}]

    # A study cancelled before it had any trial: one empty page, and the end.
    empty = submit(server, spec_data(name="no-trials")).json()["id"]
    trials_url = f"{server.api}/studies/{empty}/trials"
    httpx.post(f"{server.api}/studies/{empty}/cancel").raise_for_status()
    assert follow_cursor(trials_url) == ([], [{"next_cursor": None, "has_more": False}])


def test_a_live_study_with_no_trials_yet_gets_a_cursor_to_poll(
    server: Server, db: Database
) -> None:
    study_id = submit(server, spec_data(name="no-trials-yet", search={"lr": [0.1, 0.01]})).json()[
        "id"
    ]
    url = f"{server.api}/studies/{study_id}/trials"
    start = httpx.get(url).json()
    assert start["items"] == [] and start["has_more"] is False and start["next_cursor"]
    ids = finish_configurations(db, study_id, [({"lr": 0.1}, [1.0], "complete")])
    page = httpx.get(url, params={"after": start["next_cursor"]}).json()
    assert [t["id"] for t in page["items"]] == ids and page["has_more"] is False
    ids += finish_configurations(db, study_id, [({"lr": 0.01}, [2.0], "complete")], first=1)
    page = httpx.get(url, params={"after": page["next_cursor"]}).json()
    assert [t["id"] for t in page["items"]] == ids[1:]


def test_study_detail_trial_detail_and_csv(server: Server, db: Database) -> None:
    study_id = submit(server, spec_data(name="detail", search={"lr": [0.1, 0.01]}, seeds=2)).json()[
        "id"
    ]
    ids = finish_configurations(
        db,
        study_id,
        [({"lr": 0.1}, [2.0, 4.0], "complete"), ({"lr": 0.01}, [1.0, 2.0], "complete")],
    )
    detail = httpx.get(f"{server.api}/studies/{study_id}").json()
    assert detail["progress"] == {"complete": 4}
    assert detail["best"]["params"] == {"lr": 0.01}
    assert detail["best"]["objective"] == pytest.approx(1.5)
    assert detail["best"]["objective_std"] == pytest.approx(2**0.5 / 2)
    assert detail["best"]["trial_ids"] == ids[2:]
    assert detail["timings"]["queued_seconds"] is None  # never claimed by a driver

    trial = httpx.get(f"{server.api}/trials/{ids[0]}").json()
    assert trial["config"]["lr"] == 0.1 and trial["config"]["seed"] == 0
    assert [m["step"] for m in trial["metrics"]] == [10, 20]
    assert trial["metrics"][0]["values"]["val_loss"] == pytest.approx(0.1)

    response = httpx.get(f"{server.api}/studies/{study_id}/trials.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["id"]) for r in rows] == ids
    assert [float(r["objective"]) for r in rows] == [2.0, 4.0, 1.0, 2.0]
    assert [float(r["lr"]) for r in rows] == [0.1, 0.1, 0.01, 0.01]


def test_unknown_ids_are_404_with_the_error_shape(server: Server) -> None:
    for path in (
        "/studies/999999",
        "/trials/999999",
        "/studies/999999/trials",
        "/studies/999999/best",
        "/studies/999999/verdict",
        "/studies/999999/events",
        "/studies/999999/trials.csv",
    ):
        response = httpx.get(server.api + path)
        assert response.status_code == 404, (path, response.text)
        assert error_fields(response) == {}
        assert "not found" in response.json()["error"]["message"]
    assert httpx.post(f"{server.api}/studies/999999/cancel").status_code == 404
    assert httpx.delete(f"{server.api}/studies/999999").status_code == 404
    assert httpx.get(f"{server.api}/no/such/route").status_code == 404


def test_presets_and_health(server: Server) -> None:
    presets = {p["name"]: p for p in httpx.get(f"{server.api}/presets").json()}
    assert {"paper-table1", "sensitivity-p-tau", "lr-window", "demo"} <= set(presets)
    assert presets["paper-table1"]["paper_reference"]
    assert presets["demo"]["runs"] == 4
    health = httpx.get(f"{server.api}/health").json()
    assert health["status"] == "ok" and health["database"]["ok"]
    expected = "sqlite" if server.database_url.startswith("sqlite") else "postgresql"
    assert health["database"]["detail"] == expected


# --- cancel and delete ------------------------------------------------------------------


def test_cancel_and_delete_rules(server: Server, db: Database) -> None:
    queued = submit(server, spec_data(name="cancel-me")).json()["id"]
    assert httpx.delete(f"{server.api}/studies/{queued}").status_code == 409
    answer = httpx.post(f"{server.api}/studies/{queued}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "cancelled"
    assert httpx.post(f"{server.api}/studies/{queued}/cancel").status_code == 202  # idempotent

    running = submit(server, spec_data(name="running")).json()["id"]
    with db.transaction() as session:
        session.get(Study, running).status = "running"  # as a driver's claim leaves it
    answer = httpx.post(f"{server.api}/studies/{running}/cancel")
    assert answer.json()["status"] == "cancelling"  # its driver stops it within seconds
    assert httpx.delete(f"{server.api}/studies/{running}").status_code == 409

    done = submit(server, spec_data(name="done")).json()["id"]
    finish_configurations(db, done, [({"lr": 0.1}, [1.0], "complete")])
    with db.transaction() as session:
        lease.finish_study(session, done, "complete")
    assert httpx.post(f"{server.api}/studies/{done}/cancel").status_code == 409
    assert httpx.delete(f"{server.api}/studies/{queued}").status_code == 204
    assert httpx.delete(f"{server.api}/studies/{done}").status_code == 204
    assert httpx.get(f"{server.api}/studies/{done}").status_code == 404
    assert db.trials(done) == []


# --- the event stream ----------------------------------------------------------------------


def read_events(
    server: Server, study_id: int, headers: dict[str, str] | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Parse the SSE wire format by hand (id/event/data lines, blank-line separated)."""
    events: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    url = f"{server.api}/studies/{study_id}/events"
    with httpx.stream("GET", url, headers=headers or {}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields:
                events.append(
                    {
                        "id": int(fields["id"]),
                        "event": fields["event"],
                        "data": json.loads(fields["data"]),
                    }
                )
                fields = {}
                if limit is not None and len(events) >= limit:
                    break
    return events


def test_event_stream_content_resume_and_end(server: Server, db: Database) -> None:
    study_id = submit(server, spec_data(name="events")).json()["id"]
    finished: list[list[dict[str, Any]]] = []

    def listen() -> None:  # opened while the study is queued: must see it all happen
        finished.append(read_events(server, study_id))

    listener = threading.Thread(target=listen)
    listener.start()
    with db.transaction() as session:
        session.get(Study, study_id).status = "running"
    (trial_id,) = finish_configurations(db, study_id, [({"lr": 0.1}, [1.5], "complete")])
    with db.transaction() as session:
        lease.finish_study(session, study_id, "complete")
    listener.join(timeout=30)
    assert not listener.is_alive(), "the stream did not end when the study finished"

    (events,) = finished
    kinds = [(e["event"], e["data"]["payload"].get("status")) for e in events]
    assert kinds == [
        ("study", "queued"),
        ("trial", "running"),
        ("metric", None),
        ("metric", None),
        ("trial", "complete"),
        ("study", "complete"),
    ], kinds
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    metrics = [e["data"] for e in events if e["event"] == "metric"]
    assert [m["payload"]["step"] for m in metrics] == [10, 20]
    assert all(m["trial_id"] == trial_id for m in metrics)
    assert events[4]["data"]["payload"]["objective"] == 1.5

    resumed = read_events(server, study_id, headers={"Last-Event-ID": str(ids[2])})
    assert [e["id"] for e in resumed] == ids[3:]
    assert read_events(server, study_id, headers={"Last-Event-ID": str(ids[-1])}) == []
    bad = httpx.get(f"{server.api}/studies/{study_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["error"]["message"]


# --- export ----------------------------------------------------------------------------------


#: Algorithm 1's open choices, set away from their defaults for each masked variant
MAGMA_CHOICES = {"score_init": 0.5, "momentum": "previous", "decay_on_skip": True}
SKIPUPDATE_CHOICES = {"decay_on_skip": True}


@pytest.mark.parametrize(
    ("base", "variant", "choices"),
    [
        ("adamw", "magma", {}),
        ("sgd", "skipupdate", {}),
        ("muon", "magma", {}),
        ("rmsprop", "dense", {}),
        ("adamw", "magma", MAGMA_CHOICES),
        ("adamw", "skipupdate", SKIPUPDATE_CHOICES),
        ("muon", "magma", MAGMA_CHOICES),
    ],
)
def test_best_export_in_three_formats(
    server: Server, db: Database, base: str, variant: str, choices: dict[str, Any]
) -> None:
    data = spec_data(
        name=f"export-{base}-{variant}-{len(choices)}",
        seeds=2,
        search={"lr": [0.1, 0.01]},
        fixed={
            "threads": 1,
            "base": base,
            "variant": variant,
            "p": 0.25,
            "tau": 1.0,
            "weight_decay": 0.1 if choices else 0.0,
            **choices,
        },
    )
    data["workload"] = {
        "kind": "llama-c4",
        "model": "llama-nano",
        "steps": 20,
        "eval_interval": 10,
        "batch_size": 2,
        "seq_len": 16,
    }
    study_id = submit(server, data).json()["id"]
    url = f"{server.api}/studies/{study_id}/best"
    assert httpx.get(url).status_code == 404  # nothing complete yet

    ids = finish_configurations(
        db,
        study_id,
        [
            ({"lr": 0.1}, [5.0, 1.0], "complete"),  # mean 3.0
            ({"lr": 0.01}, [2.0, 2.5], "complete"),  # mean 2.25: the best
        ],
    )
    best = httpx.get(url, params={"format": "json"}).json()
    assert best["params"] == {"lr": 0.01} and best["trial_ids"] == ids[2:]
    assert best["objective"] == pytest.approx(2.25) and best["objectives"] == [2.0, 2.5]
    assert best["config"]["base"] == base and best["study"]["id"] == study_id
    defaults = {"score_init": "first", "momentum": "updated", "decay_on_skip": False}
    assert {name: best["config"][name] for name in defaults} == {**defaults, **choices}
    provenance = best["provenance"]
    assert provenance["packages"]["magma-optim"] and provenance["packages"]["torch"]
    # each bundled file's SHA-256, exactly as sha256sum prints it
    for split, path in SAMPLE_FILES.items():
        expected = hashlib.sha256(path[0].read_bytes()).hexdigest()
        assert provenance["data"][f"{split}_sha256"] == {path[0].name: expected}
    assert len(provenance["data"]["tokenizer_sha256"]) == 64

    as_yaml = httpx.get(url, params={"format": "yaml"})
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(as_yaml.text) == best

    snippet = httpx.get(url, params={"format": "python"})
    assert snippet.headers["content-type"].startswith("text/x-python")
    from worker.models import build_model

    model = build_model("llama-nano", seed=0)
    namespace: dict[str, Any] = {"model": model}
    exec(compile(snippet.text, "<best>", "exec"), namespace)  # noqa: S102 - the point
    optimizers = namespace["optimizers"]
    expected = {"magma": magma.Magma, "skipupdate": magma.SkipUpdate}.get(variant)
    if expected is None:
        assert not any(isinstance(o, magma.MaskedOptimizer) for o in optimizers)
    else:
        assert isinstance(optimizers[0], expected)
        assert optimizers[0].defaults["lr"] == pytest.approx(0.01)
        # the snippet builds the trial's optimizer: its open choices included
        ran = {**defaults, **choices} if variant == "magma" else {"decay_on_skip": False, **choices}
        assert {name: getattr(optimizers[0], name) for name in ran} == ran
    # it trains: one step moves the weights
    before = [p.detach().clone() for p in model.parameters()]
    ids_in = torch.randint(0, 100, (2, 8))
    model(input_ids=ids_in, labels=ids_in).loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))

    assert httpx.get(url, params={"format": "toml"}).status_code == 422


# --- auth ---------------------------------------------------------------------------------


def test_auth_when_a_key_is_set(server: Server, tmp_path: Path) -> None:
    with running_server(server.database_url, tmp_path / "auth.log", api_key="s3cret") as guarded:
        assert httpx.get(f"{guarded.api}/health").status_code == 200  # never guarded
        for method, path in [
            ("GET", "/studies"),
            ("GET", "/presets"),
            ("GET", "/claims"),
            ("POST", "/studies"),
            ("GET", "/studies/1/events"),
            ("GET", "/trials/1"),
        ]:
            response = httpx.request(method, guarded.api + path)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"
        wrong = httpx.get(f"{guarded.api}/studies", headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401
        right = httpx.get(f"{guarded.api}/studies", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
    # without a key the module's server answers everyone (on loopback only)
    assert httpx.get(f"{server.api}/studies").status_code == 200
    assert "no authentication" in server.tail(200)
