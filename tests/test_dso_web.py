"""The operator's transformer page in a real headless Chromium, against the real DSO server.

The DSO's SQLite file holds a grid and a week of telemetry that went in through the store's ingestion path (what
the VTN does with every decoded report), as if the DSO had been running; then the real ``DsoServer`` starts on
it (VTN, operator API, planning jobs) and one household's HEMS, a real openleadr VEN, reports over loopback.
The test reads what a user sees: the SVG plot (checked point by point against the JSON the page received and
against the telemetry sent), the household table, the violations of a household, error messages, a screenshot.

Debian's Chromium (/usr/bin/chromium) is driven by Playwright's async API, in the event loop the server runs in.
Without Chromium the test is skipped, unless ``HEMS_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes it fail.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_auth import bearer
from PIL import Image
from playwright.async_api import Browser, Page, async_playwright, expect
from support.security import PLAIN_HTTP, plain_settings  # plain HTTP on loopback: this module is not about security

from dso_server.api.app import create_app
from dso_server.capacity.grid import load_grid
from dso_server.security.tokens import Role
from dso_server.service import DsoServer
from dso_server.store.grid_store import GridStore
from dso_server.store.sqlite import DsoStore
from hems_client.app import HemsApp
from hems_client.devices.household import make_household
from hems_client.devices.weather import Weather
from protocol import (
    INTERVAL,
    CapacityNeed,
    NeedInterval,
    PerformanceTerms,
    Telemetry,
    TelemetryInterval,
    make_ean18,
)
from protocol.clock import AcceleratedClock, ManualClock

CHROMIUM = Path(os.environ.get("HEMS_CHROMIUM", "/usr/bin/chromium"))
# Headless comes from Playwright, and so does a fresh --user-data-dir per launch. Without the background
# networking flags Chromium keeps dialling Google's hosts, which this closed network refuses, and can hang.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
# Monday 2030-01-07, 11:56 in Amsterdam (UTC+1); the local day began at 23:00 UTC the day before.
START = datetime(2030, 1, 7, 10, 56, tzinfo=UTC)
DAY_START = datetime(2030, 1, 6, 23, 0, tzinfo=UTC)
SPEED = 120.0  # a quarter-hour every 7.5 s of wall time, so the VEN's first reports arrive within seconds
A, B, C, D, E = (make_ean18(f"8712345000000{index:04d}") for index in range(1, 6))
A_MAX_IMPORT_KW = 9.0
SPIKES = (datetime(2030, 1, 7, 5, 0, tzinfo=UTC), datetime(2030, 1, 7, 5, 30, tzinfo=UTC))
"""A draws 11 kW in these two quarter-hours, 2 kW over its contract: two violations of 0.5 kWh each."""
A_B_LAST = datetime(2030, 1, 7, 6, 45, tzinfo=UTC)
"""A and B stopped reporting after this interval (offline since); C reports on through its VEN; D never did."""
B_NEED = tuple(datetime(2030, 1, 7, 16, 0, tzinfo=UTC) + k * INTERVAL for k in range(4))
"""B has a performance contract and reported a need of 20 kW for 17:00-18:00 local, above its 17 kW contract:
the firm run gives it 17 kW, and the page shows the need not honoured there."""

GRID = f"""
[[transformer]]
id = "T1"
rating_kva = 40.0
[[transformer]]
id = "T2"
rating_kva = 100.0
[[feeder]]
id = "T1-F1"
transformer_id = "T1"
[[feeder]]
id = "T1-F2"
transformer_id = "T1"
[[feeder]]
id = "T2-F1"
transformer_id = "T2"
[[connection_point]]
ean = "{A}"
feeder_id = "T1-F1"
contracted_max_import_kw = {A_MAX_IMPORT_KW}
contracted_max_export_kw = 5.0
[[connection_point]]
ean = "{B}"
feeder_id = "T1-F1"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
controllable_devices = 1
[[connection_point]]
ean = "{C}"
feeder_id = "T1-F2"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
[[connection_point]]
ean = "{D}"
feeder_id = "T1-F2"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
[[connection_point]]
ean = "{E}"
feeder_id = "T2-F1"
contracted_max_import_kw = 17.0
contracted_max_export_kw = 10.0
"""


def household_kw(index: int, start: datetime) -> float:
    """A deterministic household day: night trough, morning bump, evening peak; some days colder than others
    (the same for every household, so the transformer's history has a spread for the forecast band)."""
    local = start.astimezone(AMSTERDAM)
    hour = local.hour + local.minute / 60 + 0.125
    shape = 0.35 + 0.5 * math.exp(-(((hour - 8) / 1.5) ** 2)) + 1.6 * math.exp(-(((hour - 18.5) / 2) ** 2))
    day_factor = 0.7 + 0.15 * ((local.toordinal() * 2) % 5)
    return round(shape * day_factor * (1 + 0.2 * index), 3)


def recorded_telemetry() -> dict[str, list[TelemetryInterval]]:
    """Eight local days of history and today's morning, per household (D never reported)."""
    first = DAY_START - timedelta(days=8)
    last = {A: A_B_LAST, B: A_B_LAST, C: START.replace(minute=30), E: START.replace(minute=30)}
    out = {}
    for index, (ean, until) in enumerate(last.items()):
        rows, moment = [], first
        while moment <= until:
            import_kw = 11.0 if ean == A and moment in SPIKES else household_kw(index, moment)
            rows.append(TelemetryInterval(start=moment, import_kw=import_kw, export_kw=0.0))
            moment += INTERVAL
        out[ean] = rows
    return out


def prepare_store(db_path: Path, grid_path: Path) -> dict[str, list[TelemetryInterval]]:
    """The DSO's file as after `dso-server grid load` and a week of reports, each day's batch at its end."""
    telemetry = recorded_telemetry()
    with DsoStore(db_path) as store:
        GridStore(store).save_grid(load_grid(grid_path), now=DAY_START - timedelta(days=9), source=str(grid_path))
        store.put_household(store.household(B).contract.model_copy(update={"performance": PerformanceTerms()}),
                            group="T1-F1", now=DAY_START - timedelta(days=9))
        store.store_reports(B, [CapacityNeed(created_at=DAY_START - timedelta(hours=10), intervals=tuple(
            NeedInterval(start=start, import_kw=20.0) for start in B_NEED))], now=DAY_START - timedelta(hours=10))
        for ean, rows in telemetry.items():
            for first in range(0, len(rows), 96):
                batch = rows[first:first + 96]
                store.store_reports(ean, [Telemetry(intervals=tuple(batch))], now=batch[-1].end)
    return telemetry


async def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Site:
    dso: DsoServer
    hems: HemsApp
    telemetry: dict[str, list[TelemetryInterval]]
    base_url: str
    read_token: str


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    grid_path = tmp_path / "grid.toml"
    grid_path.write_text(GRID)
    db_path = tmp_path / "dso.sqlite"
    telemetry = prepare_store(db_path, grid_path)
    clock = AcceleratedClock(start=START, speed=SPEED)
    settings = plain_settings(db_path=str(db_path), vtn_port=0, api_port=0, poll_interval_s=1.0)
    async with DsoServer(settings, clock) as dso:
        contract = dso.store.household(C).contract
        weather = Weather.synthetic(start=START - timedelta(hours=1), days=2, seed=3, mean_temp_c=2.0)
        hems = HemsApp(contract, make_household(contract, weather=weather, seed=1, heat_pump=False, ev=False),
                       clock, dso.vtn_url, poll_interval_s=0.1, store=tmp_path / "hems.sqlite", security=PLAIN_HTTP)
        await hems.start()
        try:
            # C's reports now come over OpenADR from its VEN, not from the prepared file.
            await wait_for(lambda: any(row.received_at >= START for row in dso.store.telemetry(C)), timeout_s=60,
                           what="telemetry from C's VEN in the DSO store")
            yield Site(dso=dso, hems=hems, telemetry=telemetry, base_url=dso.api_url,
                       read_token=dso.create_token("web-reader", Role.READ))
        finally:
            await hems.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.is_file():
        reason = f"no Chromium at {CHROMIUM}; install Debian's: apt-get install -y chromium"
        if os.environ.get("HEMS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (HEMS_REQUIRE_BROWSER=1: the browser test must run, not skip)")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


# --------------------------------------------------------------------------------------- reading the page

READ_PLOT = """() => {
  const attr = (node, name) => parseFloat(node.getAttribute(name));
  const points = (node) => node.getAttribute("points").trim().split(/\\s+/).map((p) => p.split(",").map(Number));
  const all = (selector) => [...document.querySelectorAll(selector)];
  const domain = document.querySelector("#x-axis line.domain");
  return {
    yTicks: all("#y-axis .y-tick").map((g) => [parseFloat(g.querySelector("text").textContent),
                                                attr(g.querySelector("line"), "y1")]),
    xTicks: all("#x-axis text.x-tick").map((t) => [t.textContent, attr(t, "x")]),
    xRange: [attr(domain, "x1"), attr(domain, "x2")],
    load: all("#series-load circle").map((c) => [attr(c, "cx"), attr(c, "cy"), c.querySelector("title").textContent]),
    band: all("#series-band polygon").map(points),
    p50: all("#series-p50 polyline").map(points),
    firm: all("#series-firm polyline").map(points),
    total: all("#series-total polyline").map(points),
    need: all("#series-need polyline").map(points),
    notHonoured: all("#series-not-honoured rect").map((r) => r.getAttribute("data-start")),
    capacity: [attr(document.querySelector("#line-capacity line"), "y1"),
               document.querySelector("#line-capacity text").textContent],
    limit: [attr(document.querySelector("#line-limit line"), "y1"),
            document.querySelector("#line-limit text").textContent],
    legend: all("#legend text").map((t) => t.textContent),
  };
}"""

READ_TABLE = """(selector) => [...document.querySelectorAll(selector + " tbody tr")]
  .map((tr) => [...tr.cells].map((td) => td.textContent))"""


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Scales:
    """The plot's axes as a user reads them: kW from the y tick labels, time from the plotted span."""

    def __init__(self, plot: dict[str, Any], intervals: list[dict[str, Any]]) -> None:
        (kw_lo, y_lo), (kw_hi, y_hi) = plot["yTicks"][0], plot["yTicks"][-1]
        self._kw = (kw_lo, y_lo, (y_hi - y_lo) / (kw_hi - kw_lo))
        self.t0 = parse_instant(intervals[0]["start"])
        self.t1 = parse_instant(intervals[-1]["start"]) + INTERVAL
        self._x = plot["xRange"]

    def y(self, kw: float) -> float:
        kw_lo, y_lo, per_kw = self._kw
        return y_lo + (kw - kw_lo) * per_kw

    def x(self, moment: datetime) -> float:
        x0, x1 = self._x
        return x0 + (moment - self.t0) / (self.t1 - self.t0) * (x1 - x0)


async def open_page(page: Page, url: str, api_path: str) -> dict[str, Any]:
    """Open a page and return the JSON it drew, as the real API sent it to the browser."""
    async with page.expect_response(lambda response: api_path in response.url and response.frame.url == url) as answer:
        await page.goto(url)
    return await (await answer.value).json()


def assert_close(drawn: float, expected: float, what: str) -> None:
    assert abs(drawn - expected) < 0.6, f"{what}: drawn at {drawn}, expected {expected:.2f}"


# -------------------------------------------------------------------------------------------------- test


async def test_pages_are_served_by_the_operator_api() -> None:
    """Without a browser: the pages come from the API's own app, as HTML, whatever transformer id is asked for;
    without a credential they send the browser to the login page and the API answers 401."""
    store = DsoStore()
    async with TestClient(TestServer(create_app(store, ManualClock(START)))) as client:
        for path, back in (("/", "/"), ("/transformers/T9?day=2030-01-07&refresh=0",
                                         "/transformers/T9?day%3D2030-01-07%26refresh%3D0")):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 303 and response.headers["Location"] == f"/login?next={back}"
        login = await client.get("/login")
        assert login.status == 200 and 'id="token"' in await login.text()
        assert (await client.get("/api/transformers/T9")).status == 401
        headers = bearer(store, Role.READ)
        for path, marker in (("/", 'id="transformers"'), ("/transformers/T9", 'id="plot"')):
            response = await client.get(path, headers=headers)
            assert response.status == 200 and response.content_type == "text/html"
            assert marker in await response.text()
        assert (await client.get("/api/transformers/T9", headers=headers)).status == 404


# The browser fixture comes first: without Chromium the test skips before the server starts.
@pytest.mark.slow
async def test_transformer_page_in_a_real_browser(browser: Browser, site: Site, tmp_path: Path) -> None:
    page = await browser.new_page(viewport={"width": 1200, "height": 900}, locale="en-GB")
    page.set_default_timeout(20_000)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))

    # Before logging in: no page and no data, only the login form (the API answers 401, nothing else).
    answers: list[tuple[str, int]] = []
    page.on("response", lambda response: answers.append((response.url, response.status)))
    await page.goto(f"{site.base_url}/transformers/T1")
    await page.wait_for_url(f"{site.base_url}/login?next=/transformers/T1")
    assert await page.evaluate("fetch('/api/transformers/T1').then((r) => r.status)") == 401
    assert not [url for url, status in answers if "/api/" in url and status < 400]
    assert await page.locator("#plot").count() == 0
    # A wrong token is refused with a sentence; the right one returns to the page asked for.
    await page.fill("#token", "dso_" + "x" * 43)
    await page.click("#submit")
    # Waits through the page's own DOM, not a predicate string: the page's CSP forbids eval, which that would need.
    await expect(page.locator("#error")).to_contain_text("not a valid token", timeout=20_000)
    await page.fill("#token", site.read_token)
    await page.click("#submit")
    await page.wait_for_url(f"{site.base_url}/transformers/T1")
    await page.wait_for_selector("#series-load circle")
    # The session: an HttpOnly, SameSite=Strict cookie that no script reads, and that only reads.
    [cookie] = await page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("dso_session", True, "Strict")
    assert site.read_token not in cookie["value"] and "dso_session" not in await page.evaluate("document.cookie")
    status = await page.evaluate("""fetch('/api/bandwidths', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({group: 'T1-F1'})}).then((r) => r.status)""")
    assert status == 403

    # The list of transformers links to each transformer's page.
    await page.goto(f"{site.base_url}/")
    await page.wait_for_selector("#transformers tbody tr")
    assert await page.evaluate(READ_TABLE, "#transformers") == [
        ["T1", "40", "38.0", "34.2", "4"], ["T2", "100", "95.0", "85.5", "1"]]
    await page.get_by_role("link", name="T1", exact=True).click()
    await page.wait_for_url(f"{site.base_url}/transformers/T1")
    await page.wait_for_selector("#series-load circle")

    # The transformer page with auto-refresh off, so what is drawn stays the answer captured here.
    data = await open_page(page, f"{site.base_url}/transformers/T1?refresh=0", "/api/transformers/T1")
    await page.wait_for_selector("#series-load circle")
    assert (data["day"], data["timezone"], len(data["intervals"])) == ("2030-01-07", "Europe/Amsterdam", 96)
    assert await page.inner_text("#title") == "Transformer T1"
    assert await page.input_value("#day") == "2030-01-07"
    intervals = data["intervals"]

    # What the server measured is the telemetry sent: the transformer's load is the sum over its households.
    sent = {ean: {row.start: row.import_kw - row.export_kw for row in rows} for ean, rows in site.telemetry.items()}
    morning = DAY_START + 16 * INTERVAL  # 03:00 local: A, B and C reported from the prepared file
    by_start = {parse_instant(row["start"]): row for row in intervals}
    assert by_start[morning]["load_kw"] == pytest.approx(sum(sent[ean][morning] for ean in (A, B, C)), abs=1e-3)
    assert by_start[SPIKES[0]]["load_kw"] == pytest.approx(11.0 + sent[B][SPIKES[0]] + sent[C][SPIKES[0]], abs=1e-3)

    plot = await page.evaluate(READ_PLOT)
    scale = Scales(plot, intervals)

    # Measured load: one point per measured interval, at the interval's middle and at its kW on the y axis.
    measured = [row for row in intervals if row["load_kw"] is not None]
    assert len(measured) >= 40 and len(plot["load"]) == len(measured)
    for (cx, cy, title), row in zip(plot["load"], measured, strict=True):
        start = parse_instant(row["start"])
        assert_close(cx, scale.x(start + INTERVAL / 2), f"load x at {row['start']}")
        assert_close(cy, scale.y(row["load_kw"]), f"load y at {row['start']}")
        assert title.endswith(f"measured load {row['load_kw']:.1f} kW")

    # The forecast band p10-p90 covers the whole day (learned from the week of history): p90 forwards, p10 back.
    [band] = plot["band"]
    assert len(band) == 2 * len(intervals)
    for index, row in enumerate(intervals):
        upper, lower = band[index], band[-1 - index]
        assert_close(upper[0], scale.x(parse_instant(row["start"]) + INTERVAL / 2), "band x")
        assert_close(upper[1], scale.y(row["forecast_p90_kw"]), f"p90 at {row['start']}")
        assert_close(lower[1], scale.y(row["forecast_p10_kw"]), f"p10 at {row['start']}")
    assert sum(len(line) for line in plot["p50"]) == len(intervals)
    assert max(row["forecast_p90_kw"] - row["forecast_p10_kw"] for row in intervals) > 1.0

    # Firm allocation (released at start-up for the rest of the day) and firm + non-firm: steps over each interval.
    firm = [row for row in intervals if row["firm_kw"] is not None]
    assert firm, "the day-ahead run published no firm allocation"
    steps = [point for line in plot["firm"] for point in line]
    assert len(steps) == 2 * len(firm)
    totals = [point for line in plot["total"] for point in line]
    for index, row in enumerate(firm):
        start = parse_instant(row["start"])
        assert_close(steps[2 * index][0], scale.x(start), "firm step start")
        assert_close(steps[2 * index + 1][0], scale.x(start + INTERVAL), "firm step end")
        assert_close(steps[2 * index][1], scale.y(row["firm_kw"]), f"firm at {row['start']}")
        assert_close(totals[2 * index][1], scale.y(row["firm_kw"] + (row["non_firm_kw"] or 0.0)),
                     f"firm + non-firm at {row['start']}")
    assert any(row["non_firm_kw"] for row in intervals), "the near-real-time run released no non-firm capacity"

    # Rating: capacity (40 kVA x 0.95) and the limit below it (10 % margin), labelled in kW.
    assert (data["capacity_kw"], data["limit_kw"]) == (pytest.approx(38.0), pytest.approx(34.2))
    assert_close(plot["capacity"][0], scale.y(38.0), "capacity line")
    assert_close(plot["limit"][0], scale.y(34.2), "limit line")
    assert (plot["capacity"][1], plot["limit"][1]) == ("capacity 38.0 kW", "limit 34.2 kW")

    # Axes in local time: the tick labelled 12:00 sits where 11:00 UTC is; the y axis is in kW; a legend.
    labels = [label for label, _ in plot["xTicks"]]
    assert labels == ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00", "00:00"]
    ticks = dict(plot["xTicks"])
    assert_close(ticks["12:00"], scale.x(datetime(2030, 1, 7, 11, 0, tzinfo=UTC)), "12:00 tick")
    axis_labels = await page.locator("#plot text").all_text_contents()
    assert "power (kW)" in axis_labels
    assert any(label.startswith("time (Europe/Amsterdam)") for label in axis_labels)
    assert plot["legend"] == ["measured load", "forecast p10–p90", "forecast p50", "firm allocation",
                              "firm + non-firm", "capacity / limit", "summed needs"]

    # B's need, drawn as a step, and marked not honoured where its contract (17 kW) cannot carry its 20 kW.
    needs = [row for row in intervals if row["need_kw"] is not None]
    assert [parse_instant(row["start"]) for row in needs] == list(B_NEED)
    [need_line] = plot["need"]
    assert len(need_line) == 2 * len(B_NEED)
    assert all(abs(point[1] - scale.y(20.0)) < 0.6 for point in need_line)
    assert [parse_instant(start) for start in plot["notHonoured"]] == list(B_NEED)

    # The household table: T1's households in grid order, A with its two violations, C online through its VEN.
    rows = await page.evaluate(READ_TABLE, "#households")
    assert [row[0] for row in rows] == [A, B, C, D]
    table = {row[0]: row for row in rows}
    assert [table[ean][4] for ean in (A, B, C, D)] == ["2", "0", "0", "0"]
    assert table[A][5] == "1.00" and table[B][5] == "0.00"
    assert [table[ean][2] for ean in (A, B, C, D)] == ["○ offline", "○ offline", "● online", "○ offline"]
    assert table[A][3].startswith("2030-01-07 07:45") and table[D][3] == "never"
    assert [table[ean][1] for ean in (A, B, C, D)] == ["T1-F1", "T1-F1", "T1-F2", "T1-F2"]
    assert [(h["connection_point_id"], h["violations"], h["online"]) for h in data["households"]] == [
        (A, 2, False), (B, 0, False), (C, 0, True), (D, 0, False)]
    assert table[B][6:] == ["yes (4 intervals with a need)", "4 / 3.00"] and table[A][6:] == ["no", "–"]

    # Filters: by feeder, and only households with violations.
    await page.fill("#filter", "T1-F2")
    assert [row[0] for row in await page.evaluate(READ_TABLE, "#households")] == [C, D]
    await page.fill("#filter", "")
    await page.check("#only-violations")
    assert [row[0] for row in await page.evaluate(READ_TABLE, "#households")] == [A]

    # A click on a household lists its violations of the day, in local time.
    await page.click(f"#households tr[data-ean='{A}']")
    await page.wait_for_selector("#violations-table")
    assert await page.evaluate(READ_TABLE, "#violations-table") == [
        ["2030-01-07 06:00", "06:15", "1", "2.00", "0.50"], ["2030-01-07 06:30", "06:45", "1", "2.00", "0.50"]]

    # The screenshots (the whole page, and the plot alone) are pictures of the plot, not blank.
    await page.screenshot(path=str(tmp_path / "transformer-T1.png"), full_page=True)
    await page.locator("#plot").screenshot(path=str(tmp_path / "plot-T1.png"))
    check_not_blank(tmp_path / "plot-T1.png")

    # Hovering over the plot reads out the interval under the pointer.
    box = await page.locator("#plot").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    readout = await page.locator("#hover .readout").text_content()
    assert readout is not None and "load" in readout and "firm" in readout and "kW" in readout

    # An unknown transformer: a sentence on the page, no empty plot.
    await open_page(page, f"{site.base_url}/transformers/T9?refresh=0", "/api/transformers/T9")
    error = page.locator("#error")
    await error.wait_for()
    message = await error.inner_text()
    assert 'Transformer "T9" is not known to the DSO' in message and "No transformer has id 'T9'" in message
    assert await page.locator("#content").is_hidden()

    # The API gone: the page says so and keeps the last data it drew.
    await open_page(page, f"{site.base_url}/transformers/T1?refresh=0", "/api/transformers/T1")
    await page.wait_for_selector("#series-load circle")
    await site.dso.stop()
    await page.click("#next")
    await expect(error).to_contain_text("did not answer", timeout=20_000)
    message = await error.inner_text()
    assert 'Could not load transformer "T1"' in message and "Showing the last data received" in message
    assert await page.locator("#series-load circle").count() == len(measured)
    assert script_errors == []


def check_not_blank(path: Path) -> None:
    """The plot's screenshot has many colours, much ink, the load's dark line and the band's blue."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32).reshape(-1, 3)
    r, g, b = pixels.T
    colours = len(np.unique(pixels, axis=0))
    ink = float(np.mean(pixels.sum(axis=1) < 3 * 245))
    load_line = int(np.sum((abs(r - 31) < 25) & (abs(g - 42) < 25) & (abs(b - 68) < 25)))  # #1f2a44
    band = int(np.sum((b > 200) & (b - r > 25) & (g > 180)))  # #9ec5ea at 55 % on white
    assert colours > 50, f"{path}: only {colours} colours in the plot"
    assert ink > 0.05, f"{path}: only {ink:.1%} of the plot is not white"
    assert load_line > 100, f"{path}: the load line is missing ({load_line} pixels of its colour)"
    assert band > 1000, f"{path}: the forecast band is missing ({band} pixels of its colour)"
