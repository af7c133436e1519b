"""The driver map page in headless Chromium: markers, clusters, filters, the lock, search, near me, phone size."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from roaming.models import RoamingAgreement
from roaming.selectors import own_party
from stations.map_cells import refresh_map_cells
from stations.selectors import bump_map_cache_version
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# The main screens, shown in the README.
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


@pytest.fixture
def demo_map(settings):
    """Demo-like stations: Brussels and Amsterdam, one limited-access site, one operator without agreement."""
    settings.MAP_MAX_STATIONS = 8
    bump_map_cache_version()
    now = timezone.now()
    partner = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    # Allego takes our commands: its remotely startable charge points can be started from the app.
    PartnerConnectionFactory(
        party=partner, endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/commands"}]
    )
    me = own_party()
    stations = {}
    statuses = ["available", "in_use", "faulty", "unknown"]
    for n in range(6):
        stations[f"brussels{n}"] = MapLocationFactory(
            party=me if n % 2 else partner,
            name=f"Brussel {n}",
            city="Brussel",
            postal_code="1000",
            latitude=50.840 + 0.004 * n,
            longitude=4.340 + 0.004 * n,
            map_status=statuses[n % 4],
            status_updated_at=now - dt.timedelta(minutes=90 if n == 3 else 3),
        )
    for n in range(5):
        stations[f"amsterdam{n}"] = MapLocationFactory(
            party=partner, name=f"Amsterdam {n}", city="Amsterdam", postal_code="1082",
            latitude=52.35 + 0.003 * n, longitude=4.87 + 0.003 * n,
        )  # fmt: skip
    limited = MapLocationFactory(
        party=partner,
        name="Hotel Metropole garage",
        city="Brussel",
        latitude=50.850,
        longitude=4.355,
        limited_access=True,
        limited_access_reasons=["parking_customers"],
        operator={"name": "Allego"},
    )
    evse = EVSEFactory(
        location=limited, uid="HM-1", evse_id="NL*ALL*EHM1", status="AVAILABLE", status_changed_at=now,
        capabilities=["RFID_READER", "REMOTE_START_STOP_CAPABLE"],
    )  # fmt: skip
    ConnectorFactory(evse=evse)
    stations["limited"] = limited
    stations["stranger"] = MapLocationFactory(
        party=PartyFactory(), name="No agreement", latitude=50.846, longitude=4.35
    )
    refresh_map_cells()
    return stations


def open_map(browser, url: str, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    # No tile server here: tiles fail fast, as offline, and the map must still work on its plain background.
    page.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    return page


def marker_ids(page) -> set[int]:
    return {int(v) for v in page.eval_on_selector_all(".station-icon", "els => els.map(e => e.dataset.stationId)")}


def reload_done(page, action) -> None:
    before = page.evaluate("document.body.dataset.mapLoaded")
    action()
    page.wait_for_function(f"() => document.body.dataset.mapLoaded !== '{before}'")


def test_map_shows_clusters_then_stations_filters_and_the_lock(live_server, demo_map, browser):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page = open_map(browser, f"{live_server.url}/?lat=51.5&lon=4.6&z=6")

    # Europe-ish view: server-side clusters with counts; the operator without agreement is never counted.
    clusters = page.locator(".cluster-icon")
    expect(clusters).to_have_count(2)
    counts = sorted(int(c) for c in page.eval_on_selector_all(".cluster-icon", "els => els.map(e => e.dataset.count)"))
    assert counts == [5, 7]
    expect(page.locator("#map-status")).to_contain_text("12 stations here, grouped")
    page.screenshot(path=str(OUTPUT / "map-clusters.png"))

    # Selecting a cluster zooms in; at street level the stations themselves appear.
    reload_done(page, lambda: page.goto(f"{live_server.url}/?lat=50.85&lon=4.35&z=14"))
    brussels = {s.pk for k, s in demo_map.items() if k.startswith("brussels")} | {demo_map["limited"].pk}
    expect(page.locator(".station-icon")).to_have_count(7)
    assert marker_ids(page) == brussels
    assert demo_map["stranger"].pk not in marker_ids(page)

    # Status shown by shape and letter as well as colour; an old status is stale, not current.
    by_id = {s.pk: s for s in demo_map.values()}
    for element in page.locator(".station-icon").all():
        station = by_id[int(element.get_attribute("data-station-id"))]
        letter = {"available": "A", "in_use": "U", "faulty": "F", "unknown": "?"}[station.map_status]
        assert element.inner_text().strip().startswith(letter)
        assert element.locator(f".status-{station.map_status}").count() == 1
    stale = page.locator(f'.station-icon[data-station-id="{demo_map["brussels3"].pk}"]')
    expect(stale).to_have_attribute("data-stale", "true")
    expect(stale.locator(".marker-shape.is-stale")).to_have_count(1)
    expect(stale.locator(".stale-badge")).to_have_count(1)  # a clock, not only a fainter colour
    assert page.locator(".station-icon .stale-badge").count() == 1

    # The limited-access station carries the lock; its panel says why and how to start.
    locked = page.locator(f'.station-icon[data-station-id="{demo_map["limited"].pk}"]')
    expect(locked.locator(".lock-badge")).to_have_count(1)
    assert page.locator(".station-icon .lock-badge").count() == 1
    locked.click()
    panel = page.locator("#station-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Hotel Metropole garage")
    expect(panel).to_contain_text("Limited access")
    expect(panel).to_contain_text("Only for customers of the site")
    expect(panel).to_contain_text("Operator: Allego")
    expect(panel).to_contain_text("Type 2 · 22 kW")
    expect(panel.locator("a.start-link")).to_have_attribute("href", f"/charging/start/{demo_map['limited'].pk}/HM-1/")
    expect(panel.get_by_test_id("card-only")).to_have_count(0)  # the app start works here: no "card only"
    expect(panel.get_by_test_id("card-help")).to_contain_text("start from the app")
    expect(panel.get_by_test_id("free-total")).to_have_text("1 of 1 free")
    expect(panel.get_by_test_id("directions")).to_have_attribute("href", re.compile(r"destination=50\.85"))
    expect(panel.get_by_test_id("evse-status")).to_have_text("Available")
    expect(locked).to_have_attribute("data-free", "1/1")
    assert f"station={demo_map['limited'].pk}" in page.url
    page.screenshot(path=str(OUTPUT / "map-station-panel.png"))
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()

    # A filter changes what is shown, and goes into the URL.
    reload_done(page, lambda: page.check("#filter-available"))
    available = {pk for pk in brussels if by_id[pk].map_status == "available"}
    assert len(available) == 3  # two in Brussels and the limited-access site
    expect(page.locator(".station-icon")).to_have_count(3)
    assert marker_ids(page) == available
    assert "available=true" in page.url
    reload_done(page, lambda: page.check("#filter-hide-limited"))
    assert demo_map["limited"].pk not in marker_ids(page)
    assert "hide_limited=true" in page.url

    # The shared link restores filters and position.
    shared = browser.new_page()
    shared.goto(page.url)
    shared.wait_for_function("() => document.body.dataset.mapLoaded")
    expect(shared.locator("#filter-available")).to_be_checked()
    assert marker_ids(shared) == marker_ids(page)
    page.screenshot(path=str(OUTPUT / "map-filtered.png"))


def test_search_near_me_keyboard_and_phone(live_server, demo_map, browser):
    page = open_map(
        browser,
        f"{live_server.url}/?lat=50.85&lon=4.35&z=13",
        viewport={"width": 390, "height": 844},
        geolocation={"latitude": 52.351, "longitude": 4.871},
        permissions=["geolocation"],
    )
    expect(page.locator("#map")).to_be_visible()
    assert page.locator("#map").bounding_box()["height"] > 250

    # Search a town (the gazetteer), then jump there; the result says what it is and how many stations it has.
    page.fill("#search-input", "Amster")
    page.press("#search-input", "Enter")
    result = page.locator("#search-results button[data-kind=place]", has_text="Amsterdam").first
    expect(result).to_be_visible()
    expect(result).to_contain_text("City in")
    expect(result).to_contain_text("5 stations")
    reload_done(page, result.click)
    amsterdam = {s.pk for k, s in demo_map.items() if k.startswith("amsterdam")}
    assert marker_ids(page) == amsterdam

    # Near me: the browser's position, then the nearest stations listed with their distance.
    page.goto(f"{live_server.url}/?lat=50.85&lon=4.35&z=13")
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    page.click("#near-me")
    expect(page.locator("#search-results button").first).to_contain_text("Amsterdam 0 · 0.1 km")
    assert page.locator("#search-results button").count() == 5

    # Keyboard: a marker takes focus and Enter opens its details.
    page.goto(f"{live_server.url}/?lat=50.85&lon=4.355&z=15")
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    marker = page.locator(f'.station-icon[data-station-id="{demo_map["limited"].pk}"]')
    marker.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#station-panel")).to_contain_text("Limited access")
    page.screenshot(path=str(OUTPUT / "map-phone.png"))


def test_the_map_refreshes_what_is_on_screen_and_the_open_panel_by_itself(live_server, demo_map, browser, settings):
    """A driver who keeps the map open sees a charger go from available to in use within 5 s (no reload)."""
    from stations.services import refresh_location_summaries

    settings.MAP_REFRESH_SECONDS = 1
    station = demo_map["limited"]
    page = open_map(browser, f"{live_server.url}/?lat=50.85&lon=4.355&z=15&station={station.pk}")
    # No tile server here: the offline basemap (Natural Earth borders) is drawn under the markers.
    page.wait_for_function("() => document.body.dataset.basemap === 'offline'")
    panel = page.locator("#station-panel")
    expect(panel.get_by_test_id("evse-status")).to_have_text("Available")
    marker = page.locator(f'.station-icon[data-station-id="{station.pk}"]')
    expect(marker).to_have_attribute("data-status", "available")
    page.evaluate("window.stillTheSamePage = true")

    # The charger is taken: a writer stores the status and drops the cached map answers, as every writer does.
    station.evses.update(status="CHARGING", status_changed_at=timezone.now())
    refresh_location_summaries([station.pk])
    bump_map_cache_version()
    expect(marker).to_have_attribute("data-status", "in_use", timeout=5000)
    expect(marker).to_have_attribute("data-free", "0/1")
    expect(panel.get_by_test_id("evse-status")).to_have_text("In use", timeout=5000)
    expect(panel.get_by_test_id("free-total")).to_have_text("0 of 1 free")
    assert page.evaluate("window.stillTheSamePage") is True

    # A hidden tab asks nothing.
    page.evaluate("() => Object.defineProperty(document, 'hidden', {value: true, configurable: true})")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/stations" in r.url else None)
    page.wait_for_timeout(2500)
    assert requests == []
