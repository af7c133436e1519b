"""The driver pages on a 390x844 phone in headless Chromium: a compact header with a menu button, a collapsible
search and filter bar, a bottom sheet that leaves its marker visible with its main action in reach, a list of the
stations in view nearest first, and cards instead of tables on /charging/ and /cards/."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from roaming.models import RoamingAgreement
from stations.selectors import bump_map_cache_version
from tests.factories import (
    CardFactory,
    CdrFactory,
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
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
REMOTE = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]


@pytest.fixture
def world():
    bump_map_cache_version()
    allego = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    PartnerConnectionFactory(
        party=allego, endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/commands"}]
    )
    stations = []
    for n, (lat, lon) in enumerate([(50.8466, 4.3528), (50.8500, 4.3600), (50.8420, 4.3450)]):
        location = MapLocationFactory(
            party=allego, name=f"Brussel {n}", city="Brussel", postal_code="1000", latitude=lat, longitude=lon,
            evse_count=2, available_evse_count=1,
        )  # fmt: skip
        for uid, status in ((f"B{n}-1", "AVAILABLE"), (f"B{n}-2", "CHARGING")):
            evse = EVSEFactory(location=location, uid=uid, status=status, capabilities=REMOTE)
            ConnectorFactory(evse=evse)
        stations.append(location)
    user = UserFactory(username="dana")
    user.set_password("secret-password")
    user.save()
    card = CardFactory(driver=DriverFactory(user=user), visual_number="MBP-0001-LONG-NUMBER")
    for day in (2, 9):
        session = SessionFactory(
            party=allego, card=card, location=stations[0], status="COMPLETED",
            start_date_time=timezone.now() - dt.timedelta(days=day),
            end_date_time=timezone.now() - dt.timedelta(days=day, hours=-1),
        )  # fmt: skip
        CdrFactory(party=allego, session=session, card=card, total_energy=21.5, total_cost_incl_vat=9.4)
    return stations


def phone_page(browser, url: str):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    page.goto(url, wait_until="domcontentloaded")
    return page


def no_sideways_scroll(page) -> None:
    assert page.evaluate("() => document.scrollingElement.scrollWidth") <= PHONE["width"]


def test_map_on_a_phone_header_search_sheet_and_list(live_server, world, browser):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page = phone_page(browser, f"{live_server.url}/?lat=50.8466&lon=4.3528&z=15")
    page.wait_for_function("() => document.body.dataset.mapLoaded")

    # A compact header: one line, the menu behind a button.
    header = page.locator("#topbar").bounding_box()
    assert header["height"] <= 64
    menu = page.locator("#main-menu")
    expect(menu).to_be_hidden()
    button = page.locator("#menu-button")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(menu).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(menu.get_by_role("link", name="Log in")).to_be_visible()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()

    # Search and filters: a small card over the map; the filters fold out on demand.
    controls = page.locator("#map-controls").bounding_box()
    assert controls["height"] < 0.2 * PHONE["height"], controls
    expect(page.locator("#filters-box")).to_be_hidden()
    page.click("#filters-toggle")
    expect(page.locator("#filter-available")).to_be_visible()
    page.click("#filters-toggle")
    expect(page.locator("#filters-box")).to_be_hidden()
    no_sideways_scroll(page)

    # Free/total on each marker.
    marker = page.locator(f'.station-icon[data-station-id="{world[1].pk}"]')
    expect(marker).to_contain_text("1/2")

    # The bottom sheet: the marker stays visible above it, the main action is on screen.
    marker.click()
    sheet = page.locator("#station-panel")
    expect(sheet).to_be_visible()
    expect(sheet).to_contain_text("Brussel 1")
    page.wait_for_timeout(300)  # the map moves the station above the sheet
    sheet_box = sheet.bounding_box()
    assert sheet_box["height"] <= 0.56 * PHONE["height"]
    marker_box = page.locator(f'.station-icon[data-station-id="{world[1].pk}"]').bounding_box()
    assert marker_box["y"] + marker_box["height"] <= sheet_box["y"], (marker_box, sheet_box)
    assert marker_box["y"] >= header["height"]
    # ... and in the middle of what the sheet leaves (the tapped marker sat at the right edge).
    assert abs(marker_box["x"] + 15 - PHONE["width"] / 2) < 40, marker_box
    assert abs(marker_box["y"] + 15 - (header["height"] + sheet_box["y"]) / 2) < 60, (marker_box, sheet_box)
    start = sheet.locator("a.start-link")
    expect(start).to_have_attribute("href", f"/charging/start/{world[1].pk}/B1-1/")
    start_box = start.bounding_box()
    assert start_box["y"] + start_box["height"] <= PHONE["height"] and start_box["height"] >= 44
    expect(sheet.get_by_test_id("directions")).to_be_visible()
    page.screenshot(path=str(OUTPUT / "map-phone-sheet.png"))
    page.click("#panel-close")
    expect(sheet).to_be_hidden()

    # The list view: the stations in view, nearest first (from the centre of the map), each opening its sheet.
    page.goto(f"{live_server.url}/?lat=50.8466&lon=4.3528&z=14", wait_until="domcontentloaded")
    page.wait_for_function("() => document.body.dataset.mapLoaded")
    page.click("#view-toggle")
    rows = page.locator(".station-row")
    expect(rows).to_have_count(3)
    assert rows.first.get_attribute("data-station-id") == str(world[0].pk)  # the centre of the map
    distances = [float(t.split()[0]) for t in page.locator(".row-distance").all_inner_texts()]
    assert distances == sorted(distances)
    expect(rows.first).to_contain_text("1/2 free")
    assert "view=list" in page.url
    page.screenshot(path=str(OUTPUT / "map-phone-list.png"))
    names = {str(location.pk): location.name for location in world}
    second = rows.nth(1).get_attribute("data-station-id")
    rows.nth(1).click()
    expect(sheet).to_contain_text(names[second])


def test_charging_cards_and_start_pages_fit_a_phone_as_cards(live_server, world, browser):
    page = phone_page(browser, f"{live_server.url}/accounts/login/?next=/charging/")
    no_sideways_scroll(page)
    page.screenshot(path=str(OUTPUT / "login-phone.png"))
    page.fill("#id_username", "dana")
    page.fill("#id_password", "secret-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/charging/")
    history = page.get_by_test_id("history")
    expect(history.locator("tbody tr")).to_have_count(2)
    # Cards, not a table: the header row is out of sight, each row a box with its labels.
    assert page.eval_on_selector("[data-testid=history] thead", "e => getComputedStyle(e).position") == "absolute"
    assert page.eval_on_selector("[data-testid=history] tbody tr", "e => getComputedStyle(e).display") == "block"
    expect(history.locator("tbody tr").first.locator("td[data-label=Energy]")).to_contain_text("21.50 kWh")
    no_sideways_scroll(page)
    page.screenshot(path=str(OUTPUT / "charging-history-phone.png"), full_page=True)

    page.goto(f"{live_server.url}/cards/")
    expect(page.get_by_role("button", name="Block this card")).to_be_visible()
    no_sideways_scroll(page)
    page.screenshot(path=str(OUTPUT / "cards-phone.png"), full_page=True)

    page.goto(f"{live_server.url}/charging/start/{world[0].pk}/B0-1/")
    start = page.get_by_test_id("start")
    expect(start).to_be_visible()
    box = start.bounding_box()
    assert box["y"] + box["height"] <= PHONE["height"]  # the button without scrolling
    expect(page.get_by_test_id("card-help")).to_contain_text("Card not accepted at once?")
    no_sideways_scroll(page)
    page.screenshot(path=str(OUTPUT / "start-phone.png"), full_page=True)
