"""The dashboards in a real headless Chromium, against a real ``magma-bench serve``, on a
study the real driver ran: a grid over adamw x {dense, skipupdate, magma} x lr {0.1,
0.03, 0.01} on the quadratic (40 steps, an evaluation every 10), two seeds each, on a
local Ray, so that every page has data (SQLite; the pages' PostgreSQL coverage is in
``test_dashboards_pages.py``).

The browser is driven over the Chrome DevTools Protocol by Playwright, on the system's
Chromium (``MAGMA_TEST_CHROMIUM``, else ``chromium`` on the PATH); Playwright's own
browser download is not used. Every page must load with no console error and no
uncaught exception, draw each of its figures, and request nothing from another host.
Screenshots go to ``artifacts/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api  # a dev dependency; drives the system Chromium

from dashboards.views import PAGES
from studies import results
from studies.analysis.claims import CLAIMS
from studies.analysis.lr_window import lr_windows
from studies.storage.repository import lease, metric_ingest, trial_lifecycle
from tests.claims_fixtures import write_quadratic
from tests.db_fixtures import Database, fresh_database, quadratic_spec
from tests.service_fixtures import Server, running_server

# Fails, not skips, without a browser: CI installs Debian's chromium (.ci/run).
CHROMIUM = os.environ.get("MAGMA_TEST_CHROMIUM") or shutil.which("chromium") or ""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
LRS = [0.1, 0.03, 0.01]
VARIANTS = ["dense", "skipupdate", "magma"]


@dataclass
class Site:
    server: Server
    db: Database
    study_id: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ray_local: None) -> Iterator[Site]:
    from studies.engine.driver import Driver

    directory = tmp_path_factory.mktemp("browser")
    with fresh_database("sqlite", directory) as url:
        db = Database(url)
        spec = quadratic_spec(
            name="browser",
            search={"base": ["adamw"], "variant": VARIANTS, "lr": LRS},
            seeds=2,
        )
        study_id = db.create_study(spec)
        driver = Driver(url=url, storage_path=directory / "ray", poll_seconds=0.5)
        try:
            driver.run(once=True)
        finally:
            driver.sessions.kw["bind"].dispose()
        study = db.study(study_id)
        assert study.status == "complete", study.error
        assert len(db.trials(study_id)) == len(LRS) * len(VARIANTS) * 2
        try:
            with running_server(url, directory / "server.log") as server:
                yield Site(server, db, study_id)
        finally:
            db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert Path(CHROMIUM).is_file(), (
        "no Chromium: apt-get install -y chromium, or set MAGMA_TEST_CHROMIUM"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


#: every figure section holds a drawn Plotly plot
DRAWN = (
    "Array.from(document.querySelectorAll('section.figure'))"
    ".every(s => s.querySelector('.js-plotly-plot .main-svg'))"
)


@dataclass
class Tab:
    """A page with everything it logged, threw and requested."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def failed(self, request: Any) -> None:
        # the live view closing its event stream aborts the request: not a failure
        if "/events?" in request.url and request.failure == "net::ERR_ABORTED":
            return
        self.errors.append(f"failed: {request.url} ({request.failure})")

    def goto(self, url: str) -> None:
        """Loads the page and waits until every figure section has drawn (or 30 s)."""
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, (url, response and response.status)
        self.page.wait_for_function(DRAWN)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    opened = Tab(page)
    page.on(
        "console",
        lambda message: (
            opened.errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: opened.errors.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: opened.failed(request))
    page.on("request", lambda request: opened.requests.append(request.url))
    yield opened
    context.close()


def figures_drawn(page: Any) -> dict[str, int]:
    """Per figure section of the page, how many Plotly SVG roots it drew."""
    names = page.eval_on_selector_all("section.figure", "els => els.map(e => e.dataset.figure)")
    return {
        name: page.locator(f"#figure-{name} .js-plotly-plot .main-svg").count() for name in names
    }


@pytest.mark.parametrize("name", ["index", *PAGES])
def test_page_loads_and_draws(site: Site, tab: Tab, name: str) -> None:
    path = "/" if name == "index" else f"/studies/{site.study_id}/dashboard/{name}"
    tab.goto(site.server.url + path)
    drawn = figures_drawn(tab.page)
    if name not in ("index", "table"):
        assert drawn, "the page shows no figure"
    assert all(count >= 1 for count in drawn.values()), drawn
    if name == "overview":  # every trial's curve
        traces = tab.page.evaluate("document.getElementById('fig-curves').data.length")
        assert traces == len(LRS) * len(VARIANTS) * 2
        # each arm with a best: its two seeds, the band's two edges and the median
        best = tab.page.evaluate("document.getElementById('fig-best-curves').data.length")
        assert best > 0 and best % (2 + 3) == 0
    if name == "mechanism":
        assert tab.page.locator("#mechanism tbody tr").count() > 0
    if name == "table":
        assert tab.page.locator("#comparison a[href^='/api/v1/trials/']").count() >= 6
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert tab.errors == []
    elsewhere = [url for url in tab.requests if not url.startswith(site.server.url + "/")]
    assert elsewhere == []


def window_widths(page: Any) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#windows tbody tr",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.arm, r.querySelector('td.width')"
        ".textContent.trim()]))",
    )


def widening_delta(site: Site) -> tuple[str, dict[str, str]]:
    """The smallest delta (to 3 decimals) at which some arm's window takes in a second
    LR, a little above it, and the widths the page must then show: the outcome of a
    real study decides which delta that is."""
    with site.db.sessions() as session:
        data = results.load_study(session, site.study_id)
    assert data is not None
    needed = []
    for window in lr_windows(data.trials, data.mode, 0.0).values():
        if window.best is None:
            continue
        best = window.points.index(window.best)
        for neighbour in (best - 1, best + 1):
            if 0 <= neighbour < len(window.points) and not window.points[neighbour].diverged:
                mean = window.points[neighbour].mean
                needed.append((mean - window.best.mean) / abs(window.best.mean))
    assert needed, "no arm has two stable LRs"
    delta = f"{math.ceil(min(needed) * 1.05 * 1000 + 1) / 1000:g}"
    widths = {
        arm.label: "-" if window.width is None else f"{window.width:.2f}"
        for arm, window in lr_windows(data.trials, data.mode, float(delta)).items()
    }
    return delta, widths


def test_window_width_control(site: Site, tab: Tab) -> None:
    base = f"{site.server.url}/studies/{site.study_id}/dashboard/lr-window"
    tab.goto(f"{base}?delta=0")
    narrow = window_widths(tab.page)
    assert set(narrow) == {"adamw", "adamw+skipupdate", "adamw+magma"}
    assert set(narrow.values()) <= {"0.00", "-"}
    delta, expected = widening_delta(site)
    tab.page.fill("#delta", delta)
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.click("#delta-form button[type=submit]")
    tab.page.wait_for_function(DRAWN)
    assert tab.page.url.endswith(f"?delta={delta}")
    assert tab.page.input_value("#delta") == delta
    wide = window_widths(tab.page)
    assert wide == expected
    assert wide != narrow
    assert tab.errors == []


def test_figure_export(site: Site, tab: Tab) -> None:
    tab.goto(f"{site.server.url}/studies/{site.study_id}/dashboard/lr-window")
    links = tab.page.eval_on_selector_all(
        "#figure-lr-window p.export a", "links => links.map(a => a.getAttribute('href'))"
    )
    assert [link.rsplit(".", 1)[-1] for link in links] == ["html", "png", "svg"]
    html, png = (tab.page.request.get(site.server.url + link) for link in links[:2])
    assert png.status == 200, png.text()
    assert png.headers["content-type"] == "image/png"
    assert png.body()[:8] == b"\x89PNG\r\n\x1a\n" and len(png.body()) > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "export-lr-window.png").write_bytes(png.body())
    assert html.status == 200 and html.text().startswith("<!doctype html>")
    # the standalone HTML draws offline: open it from a file, with the network cut off
    exported = SCREENSHOTS.parent / "export-lr-window.html"
    exported.write_text(html.text())
    tab.page.context.set_offline(True)
    tab.page.goto(exported.as_uri(), wait_until="load")
    assert tab.page.locator(".js-plotly-plot .main-svg").count() >= 1
    tab.page.context.set_offline(False)
    assert tab.errors == []


def test_overview_updates_live(site: Site, tab: Tab) -> None:
    """A study still running: metric rows written after the page loaded are drawn from the
    event stream, onto a trial's curve the server drew and as a new trial's curve, and the
    stream is closed once the study finishes."""
    spec = quadratic_spec(name="live", search={"variant": ["magma"], "lr": [0.01]}, seeds=2)
    study_id = site.db.create_study(spec)
    params = {"variant": "magma", "lr": 0.01}
    with site.db.transaction() as session:
        trials = trial_lifecycle.create_configuration(
            session, study_id, 0, params, [spec.complete_trial_config(params, s) for s in (0, 1)]
        )
        first, second = (trial.id for trial in trials)
        trial_lifecycle.mark_trial_running(session, first)
    with site.db.transaction() as session:
        metric_ingest.add_metrics(session, [(first, {"step": 10, "val_loss": 0.4})])
    tab.goto(f"{site.server.url}/studies/{study_id}/dashboard/overview")
    curves = "document.getElementById('fig-curves').data"
    assert tab.page.evaluate(f"{curves}.map(t => t.x.length)") == [1]
    assert tab.page.evaluate("window.magmaLive.source.readyState") in (0, 1)
    with site.db.transaction() as session:
        trial_lifecycle.mark_trial_running(session, second)
        metric_ingest.add_metrics(
            session,
            [(first, {"step": 20, "val_loss": 0.2})]
            + [(second, {"step": s, "val_loss": 1.0 / s}) for s in (10, 20)],
        )
    tab.page.wait_for_function(f"{curves}.length === 2 && {curves}[1].x.length === 2")
    tab.page.wait_for_function(f"{curves}[0].x.length === 2")
    drawn = tab.page.evaluate(
        f"{curves}.map(t => [t.customdata[0], t.name, t.line.color, Array.from(t.y)])"
    )
    assert [row[0] for row in drawn] == [first, second]
    assert {row[1] for row in drawn} == {"adamw+magma"}
    assert drawn[0][2] == drawn[1][2]  # the arm's colour
    assert drawn[0][3] == [0.4, 0.2] and drawn[1][3] == [0.1, 0.05]
    with site.db.transaction() as session:
        for trial_id in (first, second):
            trial_lifecycle.finish_trial(session, trial_id, "complete", 0.1, 20)
        lease.finish_study(session, study_id, "complete")
    tab.page.wait_for_function(
        "document.getElementById('study-status').textContent === 'complete'"
        " && window.magmaLive.source.readyState === 2"
    )
    bars = "document.getElementById('fig-status').data[0]"
    tab.page.wait_for_function(f"{bars}.y[{bars}.x.indexOf('complete')] === 2")
    assert tab.page.inner_text("#study-progress") == "2 / 2"
    assert any(f"/api/v1/studies/{study_id}/events?after=" in url for url in tab.requests)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOTS / "overview-live.png"), full_page=True)
    assert tab.errors == []


def test_claims_page_and_the_verdict_it_rests_on(site: Site, tab: Tab) -> None:
    """The claims page, reached from the index, shows each claim's verdict, its study and
    its test's definition; the table page of the study a claim rests on shows the same
    paired verdict, with the same warnings, under the masked cell."""
    heterogeneous = write_quadratic(site.db, "heterogeneous", 0.8, "complete")  # -20%
    homogeneous = write_quadratic(site.db, "homogeneous", 1.01, "complete")  # +1%: neutral
    tab.goto(site.server.url + "/")
    with tab.page.expect_navigation(wait_until="load"):
        tab.page.click("#claims-link")
    assert tab.page.url == f"{site.server.url}/claims"
    supports = tab.page.eval_on_selector_all(
        "#claims tbody tr",
        "rows => Object.fromEntries(rows.map(r => [r.dataset.claim,"
        " r.querySelector('td.support').textContent.trim()]))",
    )
    # only Figure 4 has its studies (the site's own study is no preset's)
    assert supports == {
        claim.id: "supported" if claim.id == "fig-4" else "inconclusive" for claim in CLAIMS
    }
    row = tab.page.locator('#claims tr[data-claim="fig-4"]')
    studies = row.locator(".study a").evaluate_all("links => links.map(a => a.pathname)")
    assert studies == [f"/studies/{i}/dashboard/overview" for i in (heterogeneous, homogeneous)]
    numbers = row.locator(".number").all_inner_texts()
    assert numbers[0].startswith(
        "heterogeneous: magma vs dense (better): -20.0% [-22.0%, -18.0%] better (3 seeds; "
    )
    warnings = row.locator(".warning").all_inner_texts()
    assert any("only lr 0.1 was tested" in warning for warning in warnings)
    definitions = tab.page.locator("#claims .definition").all_inner_texts()
    assert definitions == [f"Test: {claim.definition}" for claim in CLAIMS]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOTS / "claims.png"), full_page=True)

    with tab.page.expect_navigation(wait_until="load"):
        tab.page.click(f'#claims a[href="/studies/{heterogeneous}/dashboard/overview"]')
    tab.page.wait_for_function(DRAWN)
    tab.goto(f"{site.server.url}/studies/{heterogeneous}/dashboard/table")
    # the study's own comparison (its raw objective, no confirmation stage: the selection
    # stage decides), as GET /verdict gives it, with the same warnings as the claim
    cell = tab.page.locator('#comparison tr[data-base="adamw"] .verdict')
    assert cell.count() == 1 and cell.get_attribute("data-verdict") == "better"
    assert cell.get_attribute("data-deciding-stage") == "selection"
    verdict = httpx.get(f"{site.server.api}/studies/{heterogeneous}/verdict").json()
    [comparison] = verdict["comparisons"]
    assert cell.inner_text() == comparison["summary"]
    assert cell.inner_text().startswith("adamw+magma vs adamw: better; selection (decides): ")
    # each arm's mean [the charts' interval]: no symmetric +-
    intervals = tab.page.locator('#comparison tr[data-base="adamw"] .interval').all_inner_texts()
    assert len(intervals) == 2 and all(text.startswith("[") for text in intervals)
    assert "±" not in tab.page.inner_text("#comparison")
    shown = tab.page.locator('#comparison tr[data-base="adamw"] .warning').all_inner_texts()
    prefix = "warning: heterogeneous: adamw+magma vs adamw: "
    assert [prefix + text.removeprefix("warning: ") for text in shown] == [
        warning for warning in warnings if warning.startswith("warning: heterogeneous: ")
    ]
    tab.page.screenshot(path=str(SCREENSHOTS / "table-verdict.png"), full_page=True)
    assert tab.errors == []
    elsewhere = [url for url in tab.requests if not url.startswith(site.server.url + "/")]
    assert elsewhere == []
