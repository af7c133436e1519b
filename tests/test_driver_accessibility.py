"""Accessibility of the driver pages, checked by axe-core (vendored from npm under tests/vendor, tests only) in
headless Chromium at desktop and phone size: labels, contrast, roles, names; plus keyboard use of the map.
Also takes the desktop screenshots of the main screens, and checks the browser's formatter says what the
server's does (one formatter: mobilityplus/display.py and static/js/format.js)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from mobilityplus import display
from roaming.models import RoamingAgreement
from stations.selectors import bump_map_cache_version
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    RoamingAgreementFactory,
    SessionFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
AXE = (ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text()
OUTPUT = ROOT / "docs" / "screenshots"
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture
def world():
    bump_map_cache_version()
    allego = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    PartnerConnectionFactory(
        party=allego, endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/commands"}]
    )
    location = MapLocationFactory(
        party=allego, name="Gent Sint-Pieters", city="Gent", postal_code="9000", latitude=51.036, longitude=3.710,
        evse_count=2, available_evse_count=1, limited_access=True, limited_access_reasons=["parking_customers"],
    )  # fmt: skip
    for uid, status in (("G-1", "AVAILABLE"), ("G-2", "OUTOFORDER")):
        evse = EVSEFactory(location=location, uid=uid, status=status, capabilities=["REMOTE_START_STOP_CAPABLE"])
        ConnectorFactory(evse=evse)
    MapLocationFactory(party=allego, name="Korenmarkt", latitude=51.054, longitude=3.721, map_status="in_use")
    user = UserFactory(username="dana")
    user.set_password("secret-password")
    user.save()
    card = CardFactory(driver=DriverFactory(user=user), visual_number="MBP-0001")
    SessionFactory(party=allego, card=card, location=location, status="ACTIVE", kwh=4.5)
    return location


def violations(page) -> list[dict]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now."""
    page.evaluate(AXE)
    found = page.evaluate(
        "async (tags) => (await axe.run(document, {runOnly: {type: 'tag', values: tags}})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))",
        WCAG,
    )
    return found


def open_page(browser, url: str, **options):
    # axe is evaluated through the DevTools protocol, which the page's CSP does not govern.
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    page.goto(url, wait_until="domcontentloaded")
    return page


def log_in(page, base: str) -> None:
    page.goto(f"{base}/accounts/login/", wait_until="domcontentloaded")
    page.fill("#id_username", "dana")
    page.fill("#id_password", "secret-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_the_driver_pages_pass_axe_at_desktop_and_phone_size(live_server, world, browser):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    base = live_server.url
    page = open_page(browser, f"{base}/accounts/login/", viewport={"width": 1280, "height": 800})
    assert violations(page) == []
    page.screenshot(path=str(OUTPUT / "login.png"))
    page.goto(f"{base}/accounts/password_reset/", wait_until="domcontentloaded")
    assert violations(page) == []
    log_in(page, base)

    # The map with a station open, by keyboard: focus the marker, Enter opens the panel, Escape closes it.
    page.goto(f"{base}/?lat=51.04&lon=3.715&z=14", wait_until="domcontentloaded")
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    marker = page.locator(f'.station-icon[data-station-id="{world.pk}"]')
    marker.focus()
    page.keyboard.press("Enter")
    panel = page.locator("#station-panel")
    expect(panel).to_contain_text("Gent Sint-Pieters")
    expect(panel).to_be_focused()
    favourite = panel.get_by_test_id("favourite")
    expect(favourite).to_have_attribute("aria-pressed", "false")
    favourite.click()  # a star for this station (PUT /api/v1/favourites/{id}, CSRF from the page)
    expect(favourite).to_have_attribute("aria-pressed", "true")
    assert violations(page) == []
    page.screenshot(path=str(OUTPUT / "map-station-panel-desktop.png"))
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    page.click("#view-toggle")
    # The favourites first, then the stations in view.
    expect(page.locator(".station-row.favourite-row")).to_have_count(1)
    expect(page.locator(".station-row.favourite-row")).to_contain_text("Gent Sint-Pieters")
    expect(page.locator(".station-row")).to_have_count(3)
    assert violations(page) == []
    page.screenshot(path=str(OUTPUT / "map-list.png"))

    for path, shot in (
        (f"/charging/start/{world.pk}/G-1/", "start-page.png"),
        ("/charging/", "charging-page.png"),
        ("/cards/", "cards-page.png"),
    ):
        page.goto(base + path, wait_until="domcontentloaded")
        assert violations(page) == [], path
        page.screenshot(path=str(OUTPUT / shot), full_page=True)

    # Phone size: the menu open, the sheet open.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/?lat=51.04&lon=3.715&z=14&station={world.pk}", wait_until="domcontentloaded")
    expect(page.locator("#station-panel")).to_be_visible()
    assert violations(page) == []
    page.click("#menu-button")
    expect(page.locator("#main-menu")).to_be_visible()
    assert violations(page) == []


def test_the_browser_formatter_says_what_the_server_says(live_server, browser):
    page = open_page(browser, f"{live_server.url}/")
    page.wait_for_function("() => window.MP && window.MP.format")
    words = page.evaluate("() => window.MP.format.STATUS_TEXT")
    assert words == {kind: dict(table) for kind, table in display.STATUS_TEXT.items()}
    for seconds in (0, 59, 60, 3599, 3600, 3 * 3600 + 5 * 60, 50 * 3600):
        assert page.evaluate(f"() => MP.format.duration({seconds})") == display.duration_text(seconds)
    import datetime as dt

    moment = dt.datetime(2026, 10, 3, 10, 0, tzinfo=dt.UTC)
    assert page.evaluate("() => MP.format.time('2026-10-03T10:00:00Z', 'Europe/Brussels', false)") == display.time_text(
        moment, "Europe/Brussels", date=False
    )
    assert page.evaluate("() => MP.format.status('evse', 'OUTOFORDER')") == "Out of order"
