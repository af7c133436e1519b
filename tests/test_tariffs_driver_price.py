"""Drivers see the price before they charge: per connector in the station API the map panel reads (in words, the
operator's own text in the driver's language, or why there is none), a typical session's estimated cost on the
start page, and on the live page a cost so far computed from the tariff when the CPO sends none ("estimated")."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from charging.selectors import session_card
from roaming.models import RoamingAgreement
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from stations.selectors import bump_map_cache_version
from tariffs import services
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    MapLocationFactory,
    RoamingAgreementFactory,
    SessionFactory,
    UserFactory,
)

# €1 start + €0.30/kWh, VAT 21 %: 20 kWh = €7.00 excl. VAT, €8.47 incl.; parking after 2 h €6/h.
ELEMENTS = [
    {"price_components": [{"type": "FLAT", "price": 1, "vat": 21, "step_size": 1}]},
    {"price_components": [{"type": "ENERGY", "price": 0.30, "vat": 21, "step_size": 1}]},
    {"price_components": [{"type": "PARKING_TIME", "price": 6, "vat": 21, "step_size": 60}],
     "restrictions": {"min_duration": 7200}},
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
IN_WORDS = "€1.21 start · €0.363/kWh · €7.26/h parking after 2 h"


def store_tariff(party, tariff_id: str, elements=None, **extra):
    document = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "id": tariff_id,
        "currency": "EUR",
        "elements": elements or ELEMENTS,
        "last_updated": format_datetime(timezone.now() - dt.timedelta(days=1)),
        **extra,
    }
    return services.store_partner_tariff(party, tariff_id, document, source=None).tariff


@pytest.fixture
def station(db):
    """A partner's station our cards charge at: one EVSE priced, one naming an unknown tariff, one naming none."""
    bump_map_cache_version()
    own_party()  # exists on any running platform
    partner = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    store_tariff(
        partner,
        "AC1",
        tariff_alt_text=[
            {"language": "nl", "text": "€0,36/kWh en €1,21 per sessie"},
            {"language": "en", "text": "€0.36/kWh and €1.21 per session"},
        ],
    )
    location = MapLocationFactory(party=partner, name="Gent Zuid", time_zone="Europe/Brussels")
    capabilities = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]
    priced = EVSEFactory(location=location, uid="E1", evse_id="NL*ALL*E1", capabilities=capabilities)
    ConnectorFactory(evse=priced, tariff_ids=["AC1"], max_electric_power=22000)
    unknown = EVSEFactory(location=location, uid="E2", capabilities=capabilities)
    ConnectorFactory(evse=unknown, tariff_ids=["NEVER-SENT"])
    silent = EVSEFactory(location=location, uid="E3", capabilities=capabilities)
    ConnectorFactory(evse=silent, tariff_ids=[])
    return location


def prices(body: dict) -> dict[str, dict]:
    return {evse["uid"]: evse["connectors"][0]["price"] for evse in body["properties"]["evses"]}


def test_the_station_api_gives_each_connector_its_price_or_why_there_is_none(
    client, station, django_assert_max_num_queries
):
    # agreement rule (2) + location, EVSEs, connectors, their tariffs + the operator's commands endpoint (app start)
    with django_assert_max_num_queries(7):
        body = client.get(f"/api/v1/stations/{station.pk}", HTTP_ACCEPT_LANGUAGE="nl-BE,nl;q=0.9").json()
    by_evse = prices(body)
    assert by_evse["E1"] == {
        "status": "priced",
        "text": IN_WORDS,
        "tariff_id": "AC1",
        "alt_text": "€0,36/kWh en €1,21 per sessie",  # the operator's words in the driver's language
        "alt_url": None,
        "estimate": None,
    }
    assert by_evse["E2"]["status"] == "unknown" and by_evse["E2"]["text"].startswith("Price not known")
    assert by_evse["E3"] == {**by_evse["E3"], "status": "not_shared", "text": "Price not shared by the operator"}
    french = prices(client.get(f"/api/v1/stations/{station.pk}", HTTP_ACCEPT_LANGUAGE="fr").json())
    assert french["E1"]["alt_text"] == "€0.36/kWh and €1.21 per session"  # no French text: the English one


def test_a_tariff_out_of_its_validity_or_ad_hoc_only_is_not_the_price_shown(client, station):
    partner = station.party
    store_tariff(partner, "AC1", end_date_time=format_datetime(timezone.now() - dt.timedelta(hours=1)),
                 start_date_time="2020-01-01T00:00:00Z")  # fmt: skip
    assert prices(client.get(f"/api/v1/stations/{station.pk}").json())["E1"]["status"] == "unknown"


@pytest.fixture
def driver(db):
    driver = DriverFactory()
    CardFactory(driver=driver)
    return driver


def test_the_start_page_shows_the_price_and_a_typical_sessions_estimated_cost(client, station, driver):
    client.force_login(driver.user)
    page = client.get(f"/charging/start/{station.pk}/E1/").content.decode()
    text = re.sub(r"\s+", " ", page)
    assert IN_WORDS in text and "€0.36/kWh and €1.21 per session" in text
    # 20 kWh at 22 kW, 55 minutes: no parking (2 h not reached): €1 + 20 x €0.30 = €7.00 + 21 % = €8.47.
    assert "Estimated: <strong>€8.47</strong> for a typical session of 20 kWh (about 55 min at 22 kW" in text
    assert "Price not shared by the operator" in client.get(f"/charging/start/{station.pk}/E3/").content.decode()
    assert "Price not known" in client.get(f"/charging/start/{station.pk}/E2/").content.decode()


def test_an_estimate_without_vat_says_so(client, driver, station):
    no_vat = [{"price_components": [{"type": "ENERGY", "price": 0.5, "step_size": 1}]}]
    store_tariff(station.party, "AC1", elements=no_vat)
    client.force_login(driver.user)
    text = re.sub(r"\s+", " ", client.get(f"/charging/start/{station.pk}/E1/").content.decode())
    assert "Estimated: <strong>€10.00 excl. VAT</strong>" in text


def live_session(station, driver, **fields):
    card = driver.cards.get()
    evse = station.evses.get(uid="E1")
    defaults = {
        "party": station.party,
        "card": card,
        "location": station,
        "evse": evse,
        "evse_uid": "E1",
        "connector_id": "1",
        "kwh": Decimal(10),
        "start_date_time": timezone.now() - dt.timedelta(minutes=30),
    }
    return SessionFactory(**{**defaults, **fields})  # fmt: skip


def test_the_live_cost_is_computed_from_the_tariff_when_the_cpo_sends_none(client, driver, station):
    session = live_session(station, driver)
    client.force_login(driver.user)
    live = client.get("/charging/live.json").json()["session"]
    # 10 kWh so far: €1 + €3 = €4.00 excl. VAT, €4.84 incl.
    assert (live["cost"], live["cost_estimated"]) == ("€4.84", True)
    page = client.get("/charging/").content.decode()
    assert "(estimated from the tariff)" in page and "€4.84" in page

    session.total_cost_excl_vat, session.total_cost_incl_vat = Decimal(4), Decimal("4.50")
    session.save()
    sent = client.get("/charging/live.json").json()["session"]
    assert (sent["cost"], sent["cost_estimated"]) == ("€4.50", False)  # the CPO's own figure wins


def test_the_tariff_a_session_names_in_its_charging_periods_wins(driver, station):
    store_tariff(station.party, "TIME2", elements=[
        {"price_components": [{"type": "TIME", "price": 2, "vat": 21, "step_size": 1}]}])  # fmt: skip
    session = live_session(
        station, driver, charging_periods=[{"start_date_time": "2026-01-01T00:00:00Z", "dimensions": [],
                                            "tariff_id": "TIME2"}],
    )  # fmt: skip
    card = session_card(session, now=session.start_date_time + dt.timedelta(minutes=30))
    assert (card["cost"], card["cost_estimated"]) == ("€1.21", True)  # 30 min at €2/h + 21 %


def test_no_tariff_no_estimate(driver, station):
    session = live_session(station, driver, evse=station.evses.get(uid="E3"), evse_uid="E3")
    card = session_card(session)
    assert card["cost"] is None and card["cost_estimated"] is False


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_drivers_read_the_price_in_the_map_panel_and_the_estimate_on_the_live_page(live_server, browser):
    bump_map_cache_version()
    partner = RoamingAgreementFactory(
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, partner__name="Allego"
    ).partner
    store_tariff(partner, "AC1")
    location = MapLocationFactory(party=partner, name="Gent Zuid", latitude=50.85, longitude=4.35)
    evse = EVSEFactory(location=location, uid="E1", evse_id="NL*ALL*E1")
    ConnectorFactory(evse=evse, tariff_ids=["AC1"])
    ConnectorFactory(evse=evse, connector_id="2", standard="CHADEMO", tariff_ids=[])
    driver = DriverFactory(user=UserFactory(username="dana"))
    SessionFactory(party=partner, card=CardFactory(driver=driver), location=location, evse=evse, evse_uid="E1",
                   connector_id="1", kwh=Decimal(10))  # fmt: skip

    context = browser.new_context()
    page = context.new_page()
    page.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    page.goto(f"{live_server.url}/?lat=50.85&lon=4.35&z=15&station={location.pk}")
    panel = page.locator("#station-panel")
    expect(panel.locator("[data-testid=price]").first).to_have_text(IN_WORDS)
    expect(panel.locator(".price-not_shared")).to_have_text("Price not shared by the operator")
    page.screenshot(path=str(SCREENSHOTS / "tariffs-map-panel-price.png"))

    page.goto(f"{live_server.url}/accounts/login/?next=/charging/")
    page.fill("input[name=username]", "dana")
    page.fill("input[name=password]", "secret-password")
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url("**/charging/")
    page.goto(f"{live_server.url}/charging/start/{location.pk}/E1/")
    expect(page.locator("[data-testid=estimate]").first).to_contain_text("Estimated: €8.47")
    page.screenshot(path=str(SCREENSHOTS / "tariffs-start-estimate.png"))
    page.goto(f"{live_server.url}/charging/")
    # The panel is redrawn by live.js from live.json: its label and figure come from the same data.
    page.wait_for_function("() => document.querySelector('#live') && document.querySelector('#live').dataset.updated")
    expect(page.locator("[data-testid=cost-estimated]")).to_have_text("(estimated from the tariff)")
    expect(page.locator("[data-testid=cost]")).to_have_text("€4.84")
    page.screenshot(path=str(SCREENSHOTS / "tariffs-live-estimated.png"))
    context.close()
