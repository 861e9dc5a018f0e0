"""The claims report served: ``GET /api/v1/claims``, ``magma-bench claims`` and the
``/claims`` page agree, on each backend, about studies written with the engine's
repository functions: the newest complete study of each preset and workload is the one
tested, and a claim without one is inconclusive."""

from __future__ import annotations

import re

import httpx

from tests.claims_fixtures import write_quadratic
from tests.db_fixtures import Database
from tests.service_fixtures import Server, cli

SCALE = "500 steps of batch 3, 3 seeds"


def test_the_api_the_cli_and_the_page_show_the_same_claims(server: Server) -> None:
    db = Database(server.database_url)
    try:
        write_quadratic(db, "heterogeneous", 1.2, "complete")  # older: superseded
        heterogeneous = write_quadratic(db, "heterogeneous", 0.8, "complete")  # -20%
        write_quadratic(db, "heterogeneous", 1.2, "running")  # newer, but not complete
        write_quadratic(db, "heterogeneous", 1.2, "failed")
        homogeneous = write_quadratic(db, "homogeneous", 1.01, "complete")  # +1%: neutral
    finally:
        db.dispose()

    response = httpx.get(f"{server.api}/claims")
    assert response.status_code == 200, response.text
    rows = {row["id"]: row for row in response.json()["claims"]}
    assert list(rows) == [
        "table1",
        "fig-a1",
        "fig-a3",
        "fig-3",
        "fig-4",
        "table-a1",
        "table-a2",
        "implementation-choices",
        "public-implementations",
    ]
    fig4 = rows["fig-4"]
    assert fig4["support"] == "supported"
    assert [(s["role"], s["study_id"], s["scale"]) for s in fig4["studies"]] == [
        ("heterogeneous", heterogeneous, f"quadratic (heterogeneous), {SCALE}"),
        ("homogeneous", homogeneous, f"quadratic (homogeneous), {SCALE}"),
    ]
    # the geometric-mean loss -20% and +1% on every seed, give or take each seed's own
    # deviation: better, and equivalent within the claim's +-5%
    assert fig4["numbers"][0].startswith(
        "heterogeneous: magma vs dense (better): -20.0% [-22.0%, -18.0%] better (3 seeds; "
    )
    assert fig4["numbers"][1].startswith(
        "homogeneous: magma vs dense (equivalent): +1.0% [-1.5%, +3.5%] equivalent (3 seeds; "
    )
    assert any("only lr 0.1 was tested" in w for w in fig4["warnings"])
    table1 = rows["table1"]
    assert table1["support"] == "inconclusive"
    assert table1["numbers"] == ["no complete study of paper-table1"]
    assert table1["studies"] == [
        {"role": "study", "preset": "paper-table1", "workload": {}, "study_id": None, "scale": None}
    ]

    listed = cli(server, "claims", "--definitions")
    assert listed.returncode == 0, listed.stderr
    for row in rows.values():
        assert f"{row['reference']}: {row['support']}  {row['statement']}" in listed.stdout
        assert f"  test: {row['definition']}" in listed.stdout
    assert f"  heterogeneous (quadratic): study {heterogeneous}, quadratic (heterogeneous)" in (
        listed.stdout
    )
    assert "  study (paper-table1): no complete study" in listed.stdout

    page = httpx.get(f"{server.url}/claims")
    assert page.status_code == 200
    shown = dict(re.findall(r'<tr data-claim="([^"]+)">.*?data-support="(\w+)"', page.text, re.S))
    assert shown == {claim: row["support"] for claim, row in rows.items()}
    linked = re.findall(r'href="/studies/(\d+)/dashboard/overview">study', page.text)
    assert [int(i) for i in linked] == [heterogeneous, homogeneous]
    index = httpx.get(server.url)
    assert 'href="/claims"' in index.text


def test_a_bracket_study_stopped_unbracketed_is_warned_about_in_its_claim(server: Server) -> None:
    db = Database(server.database_url)
    try:
        study = write_quadratic(db, "heterogeneous", 0.8, "complete", bracket=True)
    finally:
        db.dispose()
    rows = {row["id"]: row for row in httpx.get(f"{server.api}/claims").json()["claims"]}
    fig4 = rows["fig-4"]
    assert fig4["studies"][0]["study_id"] == study
    # magma's best is at its largest LR, 10^-0.5 = 0.316228 (the preset's half-decade grid):
    # its confirmation stage decides (better), but an unbracketed arm's verdict does not count
    unbracketed = (
        "adamw+magma: best LR 0.316228 is the largest tested; the search stopped at the run "
        "cap (the study's runs or the server's max_trials, whichever is lower) before "
        "bracketing it"
    )
    assert fig4["numbers"][0].startswith(
        "heterogeneous: magma vs dense (better): -20.0% [-22.0%, -18.0%] better (3 seeds; "
    )
    assert fig4["numbers"][0].endswith(f"; does not count: {unbracketed}")
    assert fig4["support"] == "inconclusive"
    assert any(w.startswith("heterogeneous: ") and unbracketed in w for w in fig4["warnings"])
    # the study's own verdict says the same: its confirmation stage decides, inconclusive
    [comparison] = httpx.get(f"{server.api}/studies/{study}/verdict").json()["comparisons"]
    assert (comparison["deciding_stage"], comparison["decision"]) == (
        "confirmation",
        "inconclusive",
    )
    assert comparison["confirmation"]["verdict"] == "better"
    assert comparison["limits"] == [unbracketed]
