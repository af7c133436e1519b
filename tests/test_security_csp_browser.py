"""Content-Security-Policy: every page works in headless Chromium under it, and the browser reports no violation.

An init script records each `securitypolicyviolation` event (into `window.cspViolations` and out to the test),
and every console error and uncaught page error is kept. Map tiles cannot load here (no network): the test
aborts requests that leave 127.0.0.1, which the console reports as a failed load of that outside URL. Such a
network failure is told apart from a CSP block: a blocked request never reaches the network (so the test sees no
request to the tile server at all) and fires a violation event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
import requests
from django.db import connections
from playwright.sync_api import expect

from roaming.models import Party, RoamingAgreement
from roaming.selectors import own_party
from stations.map_cells import refresh_map_cells
from stations.selectors import bump_map_cache_version
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    LocationFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SessionFactory,
    UserFactory,
)

# Remotely startable (OCPI capability): the app start is offered only there (charging.startability).
REMOTE = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  var violation = {directive: event.violatedDirective, blocked: event.blockedURI, sample: event.sample,
                   source: event.sourceFile, line: event.lineNumber, page: location.href};
  window.cspViolations.push(violation);
  window.reportCspViolation(violation);
});
"""


@dataclass
class Watched:
    """What the browser said while the test drove it."""

    origin: str
    violations: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    offline_failures: list[str] = field(default_factory=list)  # outside URLs that failed: no network here
    outside_requests: list[str] = field(default_factory=list)

    def on_console(self, message) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource: net::ERR_FAILED") and not url.startswith(self.origin):
            self.offline_failures.append(url)
        else:
            self.console_errors.append(f"{message.text} ({url})")

    def assert_clean(self) -> None:
        assert self.violations == []
        assert self.console_errors == []
        assert self.page_errors == []


@pytest.fixture(autouse=True)
def _live_server_closes_its_connections(monkeypatch):
    # The live server answers in short-lived threads: each closes its database connection after its request,
    # so none is left open when the test database is dropped.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


@pytest.fixture
def watched_page(browser, live_server):
    context = browser.new_context()
    watched = Watched(origin=live_server.url)
    context.expose_function("reportCspViolation", lambda violation: watched.violations.append(violation))
    context.add_init_script(RECORD_VIOLATIONS)

    def offline(route) -> None:
        watched.outside_requests.append(route.request.url)
        route.abort()

    context.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), offline)
    page = context.new_page()
    page.on("console", watched.on_console)
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))
    yield page, watched
    context.close()


def log_in(page, live_server, username: str, next_url: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", "secret-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}{next_url}")


def test_every_page_sends_a_strict_policy(live_server, settings):
    UserFactory(username="stella", is_staff=True, is_superuser=True)
    for path in ("/", "/charging/", "/cards/", "/accounts/login/", "/admin/login/", "/api/docs/"):
        policy = requests.get(f"{live_server.url}{path}", timeout=10).headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert "unsafe-inline" not in directives["script-src"] and "unsafe-eval" not in policy
        assert "unsafe-inline" not in directives["style-src"]
        assert directives["connect-src"] == "'self'"
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert directives["img-src"].startswith("'self' data: https://tile.openstreetmap.org")


def test_the_map_works_under_the_policy_and_asks_for_tiles(live_server, watched_page, settings):
    page, watched = watched_page
    settings.MAP_MAX_STATIONS = 50
    bump_map_cache_version()
    partner = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
    for n in range(3):
        MapLocationFactory(
            party=partner if n else own_party(), name=f"Brussel {n}", latitude=50.84 + 0.004 * n, longitude=4.34
        )
    refresh_map_cells()

    page.goto(f"{live_server.url}/?lat=50.845&lon=4.34&z=14")
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    expect(page.locator(".station-icon")).to_have_count(3)
    page.locator(".station-icon").first.click()  # the station panel: a fetch and HTML drawn by map.js
    expect(page.locator("#station-panel")).to_be_visible()
    page.fill("#search-input", "Brussel")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-results li").first).to_be_visible()

    # The tile server was asked (img-src admits it); its loads failed only for want of a network.
    tile_host = urlsplit(settings.MAP_TILES_URL).netloc
    assert any(urlsplit(url).netloc == tile_host for url in watched.outside_requests)
    assert watched.offline_failures and all(urlsplit(u).netloc == tile_host for u in watched.offline_failures)
    watched.assert_clean()


def test_the_start_and_live_session_pages_work_under_the_policy(live_server, watched_page, settings):
    page, watched = watched_page
    settings.CHARGING_LIVE_POLL_MS = 300
    cpo = PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO, name="Allego")
    PartnerConnectionFactory(
        party=cpo,
        endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/commands"}],
        tokens__from_them="allego-calls-us",
        tokens__to_them="we-call-allego",
    )
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    location = LocationFactory(party=cpo, ocpi_id="LOC1", name="Gent Sint-Pieters")
    ConnectorFactory(evse=EVSEFactory(location=location, uid="3256", evse_id="NL*ALL*E3256", capabilities=REMOTE))
    card = CardFactory(driver=DriverFactory(user=UserFactory(username="dana")), visual_number="MBP-0001")
    SessionFactory(party=cpo, card=card, location_ocpi_id="LOC1", evse_uid="3256", kwh=4.5)

    log_in(page, live_server, "dana", f"/charging/start/{location.pk}/3256/")
    # The start page's one-press guard (static/charging/start.js) runs: the button is disabled on the first press.
    page.evaluate("() => { document.querySelector('[data-testid=start]').form.onsubmit = e => e.preventDefault(); }")
    page.get_by_test_id("confirm-second").check()  # dana's session is still live: a second start is confirmed
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("start")).to_be_disabled()
    expect(page.get_by_test_id("start")).to_have_text("Starting…")

    page.goto(f"{live_server.url}/charging/")
    expect(page.get_by_test_id("kwh")).to_have_text("4.50 kWh")
    with page.expect_response(lambda r: r.url.endswith("/charging/live.json") and r.status == 200):
        pass  # live.js polls on its own, through connect-src 'self'
    watched.assert_clean()


def test_the_cards_page_works_under_the_policy(live_server, watched_page):
    page, watched = watched_page
    card = CardFactory(driver=DriverFactory(user=UserFactory(username="dana")), visual_number="MBP-0002")
    log_in(page, live_server, "dana", "/cards/")
    expect(page.locator(f"tr[data-card='{card.pk}'] .status")).to_have_text("Active")
    page.fill(f"#reason-{card.pk}", "lost it")
    page.click(f"tr[data-card='{card.pk}'] button[type=submit]")  # a form post: form-action 'self'
    expect(page.locator(f"tr[data-card='{card.pk}'] .status")).to_have_text("Blocked")
    watched.assert_clean()


def test_the_staff_console_works_under_the_policy(live_server, watched_page):
    page, watched = watched_page
    UserFactory(username="stella", is_staff=True, is_superuser=True)
    partner = PartyFactory(name="Allego", party_id="ALL")
    PartnerConnectionFactory(party=partner)
    RoamingAgreementFactory(partner=partner)
    LocationFactory(party=partner)

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "secret-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")

    page.goto(f"{live_server.url}/admin/roaming/party/")
    page.check(f"input[name=_selected_action][value='{partner.pk}']")  # actions.js counts the selection
    expect(page.locator(".action-counter")).to_contain_text("1 of")

    page.goto(f"{live_server.url}/admin/roaming/party/{partner.pk}/change/")
    rows_before = page.locator("tr.form-row").count()
    page.locator("tr.add-row a").click()  # inlines.js adds an empty agreement row
    expect(page.locator("tr.form-row")).to_have_count(rows_before + 1)
    expect(page.locator(".datetimeshortcuts").first).to_be_visible()  # calendar links (DateTimeShortcuts.js)

    page.goto(f"{live_server.url}/admin/roaming/party/data-quality/")
    page.wait_for_selector("svg.dq-chart")
    # The share bars are drawn, and coloured by the stylesheet (no inline styles: the policy would drop them).
    bars = page.locator(".dq-bar rect").evaluate_all(
        "bars => bars.map(b => [b.getBoundingClientRect().width, getComputedStyle(b).fill])"
    )
    assert max(width for width, _ in bars) > 0
    assert {fill for _, fill in bars} <= {"rgb(46, 125, 50)", "rgb(239, 143, 0)", "rgb(198, 40, 40)"}
    watched.assert_clean()


def test_api_docs_history_and_partners_pages_work_under_the_policy(live_server, watched_page):
    page, watched = watched_page
    UserFactory(username="stella", is_staff=True, is_superuser=True)
    partner = PartyFactory(name="Allego", party_id="ALL", logo_url="https://logos.allego.example/allego.png")
    RoamingAgreementFactory(partner=partner, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)

    # Partner logos live on the partners' hosts: this page admits them (and they fail here only for want of a network).
    page.goto(f"{live_server.url}/roaming-partners/")
    expect(page.locator("td", has_text="Allego")).to_be_visible()
    page.wait_for_load_state("load")
    assert watched.offline_failures == ["https://logos.allego.example/allego.png"]

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "secret-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")
    page.goto(f"{live_server.url}/admin/roaming/party/{partner.pk}/history/")  # simple_history's page
    expect(page.locator("#content h1")).to_contain_text("Change history")

    page.goto(f"{live_server.url}/api/docs/")  # Swagger UI: its set-up script is a URL of its own
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("MobilityPlus roaming platform API")
    watched.assert_clean()


def test_the_recorder_sees_a_violation(live_server, watched_page):
    """The check above can fail: an inline script of the kind the policy forbids is reported."""
    page, watched = watched_page
    page.goto(f"{live_server.url}/roaming-partners/")
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                              document.body.appendChild(s); }""")
    page.wait_for_function("() => window.cspViolations.length > 0")
    assert page.evaluate("window.ran") is None
    assert watched.violations[0]["directive"] == "script-src-elem"
    assert any("Content Security Policy" in error for error in watched.console_errors)
