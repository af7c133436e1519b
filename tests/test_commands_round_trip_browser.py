"""The whole story in a real browser: a driver starts charging from the app at a partner's station.

A small OCPI CPO runs on 127.0.0.1 (`ocpi_peer`) and accepts our START_SESSION/STOP_SESSION; the test, playing
that CPO, posts the CommandResult to our response_url on the live server, PUTs the session, PATCHes it with
growing energy, stops it and POSTs the CDR. Headless Chromium checks that the driver's page follows on its own.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import requests
from django.db import connections
from django.utils import timezone
from playwright.sync_api import expect

from cards.selectors import token_payload
from charging.models import Command, Session
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.envelope import format_datetime
from tests.conftest import ocpi_call
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    UserFactory,
)
from tests.ocpi_peer import ok

# Remotely startable (OCPI capability): the app start is offered only there (charging.startability).
REMOTE = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

# The main screens, shown in the README.
OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CPO_TOKEN = "allego-calls-us"
WAIT_MS = 15000


def at(minute: int) -> str:
    """A time in the last hour (the driver's page shows a session that ended in the last 12 hours)."""
    start = (timezone.now() - dt.timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return format_datetime(start + dt.timedelta(minutes=minute))


def as_cpo(method: str, url: str, body: dict) -> requests.Response:
    """The CPO's call to one of our URLs (absolute), through the shared kit; it must succeed."""
    response = ocpi_call("", method, url, body, token=CPO_TOKEN)
    assert response.status_code in (200, 201), response.text
    assert response.json()["status_code"] == 1000, response.text
    return response


def test_start_follow_stop_and_bill_in_the_browser(live_server, ocpi_peer, settings, browser, monkeypatch):
    # The live server answers in short-lived threads: each closes its database connection when its request
    # is done, so none is left open when the test database is dropped.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    settings.OCPI_BASE_URL = live_server.url
    settings.CHARGING_LIVE_POLL_MS = 500
    cpo = PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO, name="Allego")
    PartnerConnectionFactory(
        party=cpo,
        endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": ocpi_peer.url("/ocpi/cpo/2.2.1/commands")}],
        tokens__from_them=CPO_TOKEN,
        tokens__to_them="we-call-allego",
    )
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    location = LocationFactory(party=cpo, ocpi_id="LOC1", name="Gent Sint-Pieters")
    evse = EVSEFactory(location=location, uid="3256", evse_id="NL*ALL*E3256", capabilities=REMOTE)
    ConnectorFactory(evse=evse)
    user = UserFactory(username="dana")
    driver = DriverFactory(user=user)
    card = CardFactory(driver=driver, visual_number="MBP-0001")
    ocpi_peer.route(
        "POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", lambda r: ok({"result": "ACCEPTED", "timeout": 60})
    )
    ocpi_peer.route(
        "POST", r"/ocpi/cpo/2\.2\.1/commands/STOP_SESSION", lambda r: ok({"result": "ACCEPTED", "timeout": 60})
    )

    page = browser.new_page()
    page.goto(f"{live_server.url}/accounts/login/?next=/charging/start/{location.pk}/3256/")
    page.fill("#id_username", "dana")
    page.fill("#id_password", "secret-password")
    page.click("button[type=submit]")
    expect(page.get_by_test_id("evse")).to_have_text("NL*ALL*E3256")
    page.get_by_test_id("start").click()

    # The CPO got exactly one START_SESSION for our card; the driver sees it pending.
    page.wait_for_url(f"{live_server.url}/charging/")
    expect(page.get_by_test_id("command-status")).to_have_text(re.compile("Sending|Waiting for the charge point"))
    page.evaluate("window.stillTheSamePage = true")  # a reload would lose it
    starts = [r for r in ocpi_peer.requests if r.path.endswith("START_SESSION")]
    assert len(starts) == 1
    start = starts[0].json()
    assert start["token"] == token_payload(card) and start["location_id"] == "LOC1"

    # As the CPO: the charge point accepted.
    as_cpo("POST", start["response_url"], {"result": "ACCEPTED"})
    expect(page.get_by_test_id("command-status")).to_have_text("Accepted", timeout=WAIT_MS)

    # As the CPO: the session starts and its energy grows.
    session_url = f"{live_server.url}/ocpi/emsp/2.2.1/sessions/NL/ALL/SESS-42"
    cdr_token = {k: start["token"][k] for k in ("country_code", "party_id", "uid", "type", "contract_id")}
    session = {
        "country_code": "NL",
        "party_id": "ALL",
        "id": "SESS-42",
        "start_date_time": at(0),
        "kwh": 0.0,
        "cdr_token": cdr_token,
        "auth_method": "COMMAND",
        "authorization_reference": start["authorization_reference"],
        "location_id": "LOC1",
        "evse_uid": "3256",
        "connector_id": "1",
        "currency": "EUR",
        "status": "ACTIVE",
        "last_updated": at(0),
    }
    assert as_cpo("PUT", session_url, session).status_code == 201
    expect(page.get_by_test_id("session-status")).to_have_text("Charging", timeout=WAIT_MS)
    expect(page.get_by_test_id("kwh")).to_have_text("0.00 kWh")
    for minute, kwh, cost in ((5, 2.5, 1.25), (10, 5.75, 2.88)):
        as_cpo(
            "PATCH",
            session_url,
            {
                "kwh": kwh,
                "charging_periods": [
                    {
                        "start_date_time": at(minute),
                        "dimensions": [{"type": "ENERGY", "volume": kwh}],
                    }
                ],
                "total_cost": {"excl_vat": cost, "incl_vat": round(cost * 1.21, 2)},
                "last_updated": at(minute),
            },
        )
        expect(page.get_by_test_id("kwh")).to_have_text(f"{kwh:.2f} kWh", timeout=WAIT_MS)
    expect(page.get_by_test_id("cost")).to_have_text("€3.48")
    assert page.evaluate("window.stillTheSamePage") is True  # it all came in without a reload
    expect(page.locator("[data-field=station]")).to_contain_text("Gent Sint-Pieters")
    assert Command.objects.get(type="START_SESSION").session == Session.objects.get()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "charging-live-session.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(OUTPUT / "charging-live-session-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 720})

    # The driver stops from the app; the CPO answers and ends the session.
    with page.expect_navigation():  # the stop is a form post, answered with a redirect back here
        page.get_by_test_id("stop").click()
    expect(page.get_by_test_id("command-status")).to_have_text(re.compile("Sending|Waiting for the charge point"))
    page.evaluate("window.stillTheSamePage = true")
    stops = [r for r in ocpi_peer.requests if r.path.endswith("STOP_SESSION")]
    assert len(stops) == 1 and stops[0].json()["session_id"] == "SESS-42"
    as_cpo("POST", stops[0].json()["response_url"], {"result": "ACCEPTED"})
    as_cpo(
        "PATCH",
        session_url,
        {
            "status": "COMPLETED",
            "end_date_time": at(40),
            "kwh": 6.1,
            "last_updated": at(40),
        },
    )
    expect(page.get_by_test_id("session-status")).to_have_text("Ended", timeout=WAIT_MS)
    expect(page.get_by_test_id("cdr-waiting")).to_be_visible()
    # The history below takes the ended session at once, without a reload.
    expect(page.get_by_test_id("history")).to_contain_text("Gent", timeout=WAIT_MS)
    expect(page.get_by_test_id("history")).to_contain_text("Ended")
    assert page.evaluate("window.stillTheSamePage") is True

    # The CDR arrives: the page shows the final energy and cost.
    cdr = {
        "country_code": "NL",
        "party_id": "ALL",
        "id": "CDR-42",
        "start_date_time": at(0),
        "end_date_time": at(40),
        "session_id": "SESS-42",
        "cdr_token": cdr_token,
        "auth_method": "COMMAND",
        "cdr_location": {
            "id": "LOC1",
            "address": "Koningin Maria Hendrikaplein 1",
            "city": "Gent",
            "country": "BEL",
            "coordinates": {"latitude": "51.03563", "longitude": "3.71036"},
            "evse_uid": "3256",
            "evse_id": "NL*ALL*E3256",
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2",
            "connector_format": "SOCKET",
            "connector_power_type": "AC_3_PHASE",
        },
        "currency": "EUR",
        "charging_periods": [{"start_date_time": at(0), "dimensions": [{"type": "ENERGY", "volume": 6.1}]}],
        "total_cost": {"excl_vat": 3.05, "incl_vat": 3.69},
        "total_energy": 6.1,
        "total_time": 0.667,
        "last_updated": at(41),
    }
    created = as_cpo("POST", f"{live_server.url}/ocpi/emsp/2.2.1/cdrs", cdr)
    assert created.headers["Location"].startswith(live_server.url)
    expect(page.get_by_test_id("cdr-energy")).to_have_text("6.10 kWh", timeout=WAIT_MS)
    expect(page.get_by_test_id("cdr-cost")).to_have_text("€3.69")
    assert page.evaluate("window.stillTheSamePage") is True
    expect(page.get_by_test_id("again")).to_have_attribute("href", f"/charging/start/{location.pk}/3256/")
    page.screenshot(path=str(OUTPUT / "charging-ended-with-cdr.png"), full_page=True)

    # The history (after a reload) lists it with the CDR's totals.
    page.reload()
    expect(page.get_by_test_id("history")).to_contain_text("6.10 kWh")
    expect(page.get_by_test_id("history")).to_contain_text("€3.69")
