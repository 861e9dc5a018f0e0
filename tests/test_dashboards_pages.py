"""The dashboard pages served by the API app, on SQLite and PostgreSQL: the loader's
queries, every page and figure export through the real app (a ``TestClient`` on
``create_app``), options, 404s, the API key (header and login cookie), and that pages
load nothing from other hosts.

Studies are synthetic (``dashboards.sample``): rows written straight into the database,
no training. The browser test (``test_dashboards_browser.py``) runs a real study.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from dashboards.export import PLOTLY_JS
from dashboards.sample import sample_spec, write_study
from dashboards.views import PAGES
from service.main import create_app
from studies import results
from studies.storage.models import Metric
from studies.storage.repository import event_log, reads, submissions
from tests.db_fixtures import BACKENDS, Database, fresh_database
from worker.settings import Settings

HTML = {"Accept": "text/html"}
KEY = "s3cret-key"
#: figures each page shows for a study that searched variant, lr, p and tau
FIGURES = {
    "overview": {"status", "curves", "best-curves"},
    "sensitivity": {
        "heatmap-adamw",
        "heatmap-adamw-skipupdate",
        "heatmap-adamw-magma",
        "importance",
        "slices",
    },
    "lr-window": {"lr-window"},
    "robustness": {"intervals", "divergence", "paired"},
    "table": set(),  # an HTML table; its figure is export-only
    "mechanism": {"mechanism"},
}


def figure_ids(html: str) -> set[str]:
    return set(re.findall(r'<div id="fig-([\w-]+)" class="plotly-graph-div"', html))


# --- the loader's queries, on each backend --------------------------------------------------


def test_study_metric_rows(db: Database) -> None:
    first = write_study(db.sessions, trials=12, metrics_per_trial=4, seed=1)
    other = write_study(db.sessions, trials=6, metrics_per_trial=3, seed=2)
    trials = {t.id: t for t in db.trials(first)}
    # a resumed trial reports a step again: both rows stay, in the order written
    again = next(t.id for t in trials.values() if t.status == "complete")
    with db.transaction() as session:
        session.execute(
            insert(Metric),
            [{"trial_id": again, "step": 10, "objective": 1.0, "values": {"val_ppl": 1.0}}],
        )
    with db.sessions() as session:
        rows = reads.study_metric_rows(session, first)
        curves = reads.study_metric_rows(session, first, ["val_ppl", "tokens", "missing"])
    assert {row.trial_id for row in rows} <= set(trials)
    assert {t.id for t in db.trials(other)}.isdisjoint(row.trial_id for row in rows)
    assert [(r.trial_id, r.step) for r in rows] == sorted((r.trial_id, r.step) for r in rows)
    assert sum(len(db.metrics(t)) for t in trials) == len(rows)
    twice = [r.values for r in rows if r.trial_id == again and r.step == 10]
    assert len(twice) == 2 and twice[-1] == {"val_ppl": 1.0}
    assert len(curves) == len(rows)
    for full, (trial_id, step, ppl, tokens, missing) in zip(rows, curves, strict=True):
        assert (trial_id, step) == (full.trial_id, full.step)
        expected = full.values.get("val_ppl")
        assert ppl == (None if expected is None else pytest.approx(expected))
        assert missing is None
        if "tokens" in full.values:
            assert tokens == full.values["tokens"]


def test_load_study(db: Database) -> None:
    study_id = write_study(db.sessions, trials=10, metrics_per_trial=3, workload="quadratic")
    with db.sessions() as session:
        none = results.load_study(session, study_id)
        curves = results.load_study(session, study_id, metrics="curves")
        full = results.load_study(session, study_id, metrics="all")
        assert results.load_study(session, study_id + 100) is None
        assert event_log.last_event_id(session, study_id + 100) == 0
    assert none is not None and curves is not None and full is not None
    assert none.workload == "quadratic" and none.mode == "min"
    assert none.runs == 10 and len(none.trials) == 10 and none.metrics == []
    assert none.last_event_id > 0
    assert [t.number for t in none.trials] == list(range(10))
    assert {t.id for t in none.trials} == {t.id for t in db.trials(study_id)}
    assert none.trials[0].config["workload"] == "quadratic"
    # learning curves of a synthetic workload: val_loss against the step, nothing else
    assert len(curves.metrics) == len(full.metrics) > 0
    assert all(set(p.values) == {"val_loss"} for p in curves.metrics)
    assert any("alignment/attention" in p.values for p in full.metrics)
    for short, long in zip(curves.metrics, full.metrics, strict=True):
        assert (short.trial_id, short.step) == (long.trial_id, long.step)
        assert short.values["val_loss"] == pytest.approx(long.values["val_loss"])


# --- pages through the app, one database per backend --------------------------------------------


@dataclass
class Site:
    client: TestClient
    language: int  # llama-c4, finished
    synthetic: int  # quadratic, still running
    empty: int  # queued, no trials yet


def _site(url: str, api_key: str | None = None) -> Iterator[TestClient]:
    settings = Settings(DATABASE_URL=url, api_key=api_key)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module", params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp(f"pages-{request.param}")
    with fresh_database(request.param, directory) as url:
        db = Database(url)
        try:
            language = write_study(db.sessions, trials=60, metrics_per_trial=6, name="lang")
            synthetic = write_study(
                db.sessions,
                trials=24,
                metrics_per_trial=5,
                workload="quadratic",
                status="running",
                name="synthetic",
            )
            with db.transaction() as session:
                empty = submissions.create_study(
                    session, sample_spec(4, 1, "quadratic", "empty")
                ).id
        finally:
            db.dispose()
        for client in _site(url):
            yield Site(client, language, synthetic, empty)


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders(site: Site, page: str) -> None:
    titles = ((site.language, "validation perplexity"), (site.synthetic, "validation loss"))
    for study_id, objective in titles:
        response = site.client.get(f"/studies/{study_id}/dashboard/{page}")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert figure_ids(html) == FIGURES[page]
        assert '<script src="/static/plotly.min.js?v=' in html
        assert f"({objective}, minimised)" in html
        assert f'href="/api/v1/studies/{study_id}/trials.csv"' in html
        for name in FIGURES[page]:
            assert f'href="/studies/{study_id}/dashboard/{page}/figures/{name}.png"' in html
    # a study with no trials yet: every page still renders, with notes instead of data
    response = site.client.get(f"/studies/{site.empty}/dashboard/{page}")
    assert response.status_code == 200, response.text


def test_page_content(site: Site) -> None:
    base = f"/studies/{site.language}/dashboard"
    overview = site.client.get(f"{base}/overview").text
    assert "Best configurations" in overview and '"finished": true' in overview
    assert re.search(r'<a href="/api/v1/trials/\d+">', overview)
    assert '"name": "lang"' in unescape(overview)  # the spec
    running = site.client.get(f"/studies/{site.synthetic}/dashboard/overview").text
    assert '"finished": false' in running
    assert '"x": "step"' in running and '"y": "val_loss"' in running
    table = site.client.get(f"{base}/table").text
    assert "<th>+skipupdate</th>" in table and "<th>+magma</th>" in table
    # a masked cell's one difference from dense is its paired comparison, the decision as
    # data-verdict and the deciding stage marked; no unpaired one
    verdict = re.search(
        r'<div class="verdict" data-verdict="(\w+)" data-deciding-stage="(\w+)">'
        r"adamw\+magma vs adamw: (\w+)[;( ].*?(\w+) \(decides\): ",
        table,
    )
    assert verdict is not None
    decision, stage, head, marked = verdict.groups()
    assert decision == head and stage == marked
    assert decision in ("better", "worse", "equivalent", "no_detectable_difference", "inconclusive")
    assert not re.search(r"\((\+|-)\d+\.\d%\)", table)
    # each cell's mean [the charts' interval], never a symmetric mean +- t
    assert re.search(r'<strong class="value">[\d.e+-]+</strong> <span class="interval">\[', table)
    assert "±" not in table and "±" not in overview
    assert f'href="/api/v1/studies/{site.language}/verdict"' in table
    assert re.search(r'trials <a href="/api/v1/trials/\d+">', table)
    mechanism = site.client.get(f"{base}/mechanism").text
    assert "<td>alignment</td><td>attention</td>" in mechanism
    dense_only = site.client.get(f"/studies/{site.empty}/dashboard/mechanism").text
    assert "No telemetry" in dense_only
    robustness = site.client.get(f"{base}/robustness?a=adamw%2Bmagma&b=adamw").text
    assert "adamw − adamw+magma, each arm at its best configuration" in robustness
    # one pair per seed that both arms' best configurations ran, whatever else they ran:
    # the bests by the rule, worked out here from the API's trials
    items = site.client.get(f"/api/v1/studies/{site.language}/trials?limit=1000").json()
    seeds = []
    for variant in ("magma", "dense"):
        groups: dict[int, list[dict]] = {}
        for trial in items["items"]:
            if trial["params"]["variant"] == variant:
                groups.setdefault(trial["configuration"], []).append(trial)
        means = {
            number: sum(t["objective"] for t in group) / len(group)
            for number, group in groups.items()
            if all(t["status"] == "complete" and t["objective"] is not None for t in group)
        }
        best = min(means, key=lambda number: (means[number], number))
        seeds.append({t["seed_index"] for t in groups[best]})
    pairs = len(seeds[0] & seeds[1])
    assert 1 <= pairs <= 2  # 2 seeds a configuration: never a pair per shared LR
    assert f'data-pairs="{pairs}"' in robustness
    sensitivity = site.client.get(f"{base}/sensitivity?x=lr&y=variant").text
    assert figure_ids(sensitivity) == {"heatmap-adamw", "importance", "slices"}


def widths(html: str) -> dict[str, float]:
    """Each arm's window width in decades as the page shows it (0 for no window)."""
    found = re.findall(r'<tr data-arm="([^"]+)">.*?data-width="([^"]*)"', html, re.S)
    return {arm: float(width or 0) for arm, width in found}


def test_lr_window_delta(site: Site) -> None:
    base = f"/studies/{site.language}/dashboard/lr-window"
    default = site.client.get(base).text
    assert 'name="delta" id="delta" value="0.05"' in default
    # measured on the interpolated curve, a 5% window is not 0 decades wide
    assert any(width > 0 for width in widths(default).values())
    # the stability frontier: the sample's arms diverge above an LR of their own
    assert re.search(r'<td class="num diverged-lr">\d', default)
    assert re.search(r'<td class="num stable-lr">\d', default)
    zero = widths(site.client.get(f"{base}?delta=0").text)
    wide = widths(site.client.get(f"{base}?delta=10").text)
    assert set(zero) == {"adamw", "adamw+skipupdate", "adamw+magma"}
    assert all(width == 0 for width in zero.values())
    assert any(width > 0 for width in wide.values())
    # the figure exported from the page is the page's: its options travel with the link
    half = site.client.get(f"{base}?delta=0.5").text
    assert f'href="{base}/figures/lr-window.html?delta=0.5"' in half
    for bad in ("-1", "nan", "x"):
        response = site.client.get(f"{base}?delta={bad}")
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == "delta"


@pytest.mark.parametrize(
    ("page", "query", "field"),
    [
        ("sensitivity", "x=bogus", "x"),
        ("sensitivity", "x=lr&y=lr", "y"),
        ("robustness", "a=sgd", "a"),
        ("robustness", "a=adamw&b=adamw", "b"),
    ],
)
def test_bad_options(site: Site, page: str, query: str, field: str) -> None:
    response = site.client.get(f"/studies/{site.language}/dashboard/{page}?{query}")
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


def test_not_found(site: Site) -> None:
    missing = site.language + 1000
    for path in (
        f"/studies/{missing}/dashboard/overview",
        f"/studies/{site.language}/dashboard/nope",
    ):
        response = site.client.get(path)
        assert response.status_code == 404
        assert "Not found" in response.text
    for path in (
        f"/studies/{missing}/dashboard/overview/figures/curves.html",
        f"/studies/{site.language}/dashboard/nope/figures/curves.html",
        f"/studies/{site.language}/dashboard/overview/figures/nope.html",
    ):
        assert site.client.get(path).status_code == 404
    assert site.client.get("/studies/0/dashboard/overview").status_code == 422
    redirect = site.client.get(f"/studies/{site.language}/dashboard")
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"/studies/{site.language}/dashboard/overview"


def test_figure_export_html(site: Site) -> None:
    base = f"/studies/{site.language}/dashboard"
    response = site.client.get(f"{base}/overview/figures/curves.html")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert (
        f'filename="study-{site.language}-curves.html"' in response.headers["content-disposition"]
    )
    html = response.text
    assert html.startswith("<!doctype html>") and "Plotly.newPlot" in html
    assert len(html) > 3_000_000  # plotly.js inlined: opens offline
    assert not re.search(r"<script[^>]+src=", html)
    by_query = site.client.get(f"{base}/lr-window/figures/lr-window?format=html&delta=0.2")
    assert by_query.status_code == 200 and "window" in by_query.text
    assert site.client.get(f"{base}/table/figures/table.html").status_code == 200
    assert site.client.get(f"{base}/overview/figures/curves.pdf").status_code == 422


def test_plotly_js_served_locally(site: Site) -> None:
    response = site.client.get("/static/plotly.min.js?v=1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age=31536000" in response.headers["cache-control"]
    assert response.content == PLOTLY_JS.read_bytes()


EXTERNAL = re.compile(r"https?://|//fonts\.|@import|@font-face", re.I)


def test_no_external_references(site: Site) -> None:
    paths = ["/", "/login", "/claims"] + [
        f"/studies/{study}/dashboard/{page}"
        for study in (site.language, site.synthetic, site.empty)
        for page in PAGES
    ]
    for path in paths:
        html = site.client.get(path).text
        assert not EXTERNAL.search(html), (path, EXTERNAL.search(html))
        for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', html):
            assert src.startswith("/static/"), (path, src)
        assert "<link" not in html.replace('<link rel="icon" href="data:,">', "")


def test_index(site: Site) -> None:
    html = site.client.get("/").text
    for study_id in (site.language, site.synthetic, site.empty):
        assert f'<tr data-study="{study_id}">' in html
        for page in PAGES:
            assert f'href="/studies/{study_id}/dashboard/{page}"' in html
    assert '<td class="status">complete</td>' in html
    assert '<progress max="60" value="60"></progress> 60 / 60' in html
    assert '<progress max="4" value="0"></progress> 0 / 4' in html
    assert "log out" not in html  # no key, no login


# --- auth -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def guarded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp(f"guarded-{request.param}")
    with fresh_database(request.param, directory) as url:
        db = Database(url)
        try:
            study_id = write_study(db.sessions, trials=6, metrics_per_trial=2, status="running")
        finally:
            db.dispose()
        for client in _site(url, api_key=KEY):
            yield client, study_id


def test_pages_want_the_key(guarded: tuple[TestClient, int]) -> None:
    client, study_id = guarded
    client.cookies.clear()
    page = f"/studies/{study_id}/dashboard/lr-window?delta=0.1"
    figure = f"/studies/{study_id}/dashboard/overview/figures/curves.html"
    for path in ("/", "/claims", page, figure):
        browser = client.get(path, headers=HTML)
        assert browser.status_code == 303
        assert browser.headers["location"].startswith("/login?next=")
        other = client.get(path)
        assert other.status_code == 401
        assert other.json()["error"]["code"] == "unauthorized"
        assert other.headers["www-authenticate"].startswith("Bearer")
        wrong = client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert right.status_code == 200, right.text
    # plotly.js and the login form are public
    assert client.get("/static/plotly.min.js").status_code == 200
    form = client.get("/login?next=/studies/1/dashboard/table")
    assert form.status_code == 200
    assert 'name="next" value="/studies/1/dashboard/table"' in form.text
    assert 'type="password" name="api_key"' in form.text


def test_login_cookie(guarded: tuple[TestClient, int]) -> None:
    client, study_id = guarded
    client.cookies.clear()
    page = f"/studies/{study_id}/dashboard/overview"
    wrong = client.post("/login", data={"api_key": "nope", "next": page})
    assert wrong.status_code == 401 and "wrong API key" in wrong.text
    assert "magma_api_key" not in client.cookies
    login = client.post("/login", data={"api_key": KEY, "next": page})
    assert login.status_code == 303 and login.headers["location"] == page
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"magma_api_key={KEY};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get(page, headers=HTML).status_code == 200
    assert client.get("/", headers=HTML).status_code == 200
    assert "log out" in client.get("/").text
    # the page's live view reads the API with the cookie: reads only
    assert client.get(f"/api/v1/studies/{study_id}").status_code == 200
    assert client.get(f"/api/v1/studies/{study_id}/trials.csv").status_code == 200
    assert client.post(f"/api/v1/studies/{study_id}/cancel").status_code == 401
    # a header, when present, is what counts
    bad_header = client.get(page, headers={"Authorization": "Bearer nope"})
    assert bad_header.status_code == 401
    client.cookies.clear()
    client.cookies.set("magma_api_key", "stale")
    assert client.get(page, headers=HTML).status_code == 303
    logout = client.post("/logout")
    assert logout.status_code == 303 and 'magma_api_key=""' in logout.headers["set-cookie"]


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "\\\\evil", "/\t/evil.example", ""]
)
def test_login_stays_on_this_server(guarded: tuple[TestClient, int], target: str) -> None:
    client, _ = guarded
    response = client.post("/login", data={"api_key": KEY, "next": target})
    assert response.status_code == 303 and response.headers["location"] == "/"
    client.cookies.clear()
