"""OCPI CDRs receiver (we are the eMSP): CPOs POST final CDRs, we answer with the stored CDR's URL.

Bad input and what happens to it:
- a required field missing or malformed -> OCPI 2001 naming the field, nothing stored;
- a CDR of another party -> HTTP 403 + 2000 (roaming.ocpi.ownership), nothing stored; reading one we
  stored for another party -> 404, as an unknown one;
- the same CDR posted twice -> the first one stays, the answer points at it;
- a CDR for a session or token we do not know -> stored and flagged for staff, never dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from charging.models import CDR, Session
from roaming.models import Party
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from tests.conftest import make_ocpi_partner
from tests.factories import (
    CardFactory,
    CdrFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SessionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

EXAMPLE = json.loads((Path("/work/shared/ocpi/examples") / "cdr_example.json").read_text())
OCPI_TOKEN = "cpo-token-cdrs"
URL = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def cpo():
    return make_ocpi_partner(country_code="BE", party_id="BEC", name="Becharged", token=OCPI_TOKEN).party


def cdr(**changes) -> dict:
    body = json.loads(json.dumps(EXAMPLE))
    body.update(changes)
    return body


def cdr_token_of(card, **changes) -> dict:
    """The CdrToken a CPO sends for one of our cards."""
    token = {
        "country_code": own_party().country_code,
        "party_id": own_party().party_id,
        "uid": card.uid,
        "type": "RFID",
        "contract_id": card.contract_id,
    }
    return {**token, **changes}


@override_settings(OCPI_BASE_URL="https://roaming.example")
def test_spec_example_is_stored_flagged_and_readable_at_its_location(ocpi, cpo):
    response = ocpi("POST", URL, cdr())
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    stored = CDR.objects.get()
    assert response["Location"] == f"https://roaming.example/ocpi/emsp/2.2.1/cdrs/{stored.pk}"
    # Its token is DE*TNM and it names no session: kept, and flagged for staff.
    assert stored.unknown_token and stored.unknown_session and stored.flagged
    assert float(stored.total_energy) == 15.342 and float(stored.total_cost_incl_vat) == 4.4
    got = ocpi("GET", response["Location"].replace("https://roaming.example", ""))
    assert got.status_code == 200 and got.json()["data"] == EXAMPLE


def test_the_same_cdr_twice_keeps_the_first(ocpi, cpo):
    first = ocpi("POST", URL, cdr())
    second = ocpi("POST", URL, cdr(total_cost={"excl_vat": 99}))
    assert second.status_code == 200 and second.json()["status_code"] == 1000
    assert second["Location"] == first["Location"]
    assert CDR.objects.count() == 1 and float(CDR.objects.get().total_cost_excl_vat) == 4.0


def test_cdr_of_our_drivers_session_is_matched(ocpi, cpo):
    card = CardFactory()
    location = LocationFactory(party=cpo, ocpi_id="LOC1")
    evse = EVSEFactory(location=location, uid="3256")
    session = SessionFactory(party=cpo, ocpi_id="SES-9", card=card, status="COMPLETED")
    token = cdr_token_of(card, uid=card.uid.lower())  # matched case-insensitively
    assert ocpi("POST", URL, cdr(session_id="ses-9", cdr_token=token)).status_code == 201
    stored = CDR.objects.get()
    assert (stored.session, stored.card, stored.location, stored.evse) == (session, card, location, evse)
    assert not stored.flagged


def test_credit_cdr_refers_to_the_original(ocpi, cpo):
    ocpi("POST", URL, cdr())
    credit = cdr(
        id="12345-C", credit=True, credit_reference_id="12345", total_cost={"excl_vat": -4.0, "incl_vat": -4.4}
    )
    assert ocpi("POST", URL, credit).status_code == 201
    credit_cdr = CDR.objects.get(ocpi_id="12345-C")
    assert credit_cdr.credit and credit_cdr.credited_cdr == CDR.objects.get(ocpi_id="12345")
    no_reference = ocpi("POST", URL, cdr(id="12345-D", credit=True))
    assert no_reference.json()["status_code"] == 2001 and "credit_reference_id" in no_reference.json()["status_message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"total_energy": None}, "total_energy"),
        ({"total_cost": {"incl_vat": 3}}, "total_cost.excl_vat"),
        ({"charging_periods": []}, "charging_periods"),
        ({"cdr_location": {"id": "LOC1"}}, "cdr_location.address"),
        ({"end_date_time": "2015-06-29T20:00:00Z"}, "end_date_time"),
        ({"auth_method": "CARD"}, "auth_method"),
    ],
)
def test_bad_cdr_is_2001_naming_the_field_and_not_stored(ocpi, cpo, change, field):
    response = ocpi("POST", URL, cdr(**change))
    assert response.status_code == 400
    assert response.json()["status_code"] == 2001 and field in response.json()["status_message"]
    assert not CDR.objects.exists()


def test_partners_write_and_read_only_their_own_cdrs(ocpi, cpo):
    other = PartyFactory(country_code="NL", party_id="OTH", role=Party.Role.CPO)
    PartnerConnectionFactory(party=other, tokens__from_them="other-token")
    RoamingAgreementFactory(partner=other)
    refused = ocpi("POST", URL, cdr(), token="other-token")  # the body says BE*BEC
    assert refused.status_code == 403 and refused.json()["status_code"] == 2000
    assert not CDR.objects.exists()

    location = ocpi("POST", URL, cdr())["Location"]
    path = location[location.index("/ocpi/") :]
    assert ocpi("GET", path, token="other-token").status_code == 404
    assert ocpi("GET", "/ocpi/emsp/2.2.1/cdrs/999999").status_code == 404
    assert ocpi("POST", URL, "{broken").status_code == 400


def test_staff_filter_cdrs_without_a_matching_session(client, cpo):
    matched_session = SessionFactory(party=cpo)
    CdrFactory(party=cpo, ocpi_id="MATCHED", session=matched_session, card=matched_session.card)
    CdrFactory(party=cpo, ocpi_id="ORPHAN", unknown_session=True, session_ocpi_id="LOST-1")
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get("/admin/charging/cdr/?match=no_session")
    assert page.status_code == 200
    text = page.content.decode()
    assert "ORPHAN" in text and "MATCHED" not in text
    by_partner = client.get(f"/admin/charging/cdr/?party__id__exact={cpo.pk}")
    assert "ORPHAN" in by_partner.content.decode() and "MATCHED" in by_partner.content.decode()
    sessions = client.get("/admin/charging/session/?status__exact=ACTIVE")
    assert matched_session.ocpi_id in sessions.content.decode()
    driver_user = UserFactory()
    client.force_login(driver_user)
    assert client.get("/admin/charging/cdr/").status_code == 302  # staff only


def test_cdr_before_its_session_is_matched_when_the_session_arrives_and_ends_a_live_one(ocpi, cpo):
    card = CardFactory()
    token = cdr_token_of(card)
    ocpi("POST", URL, cdr(session_id="LATE-1", cdr_token=token))
    assert CDR.objects.get().unknown_session
    session = {
        "country_code": "BE",
        "party_id": "BEC",
        "id": "LATE-1",
        "start_date_time": "2015-06-29T21:39:09Z",
        "kwh": 15.0,
        "cdr_token": token,
        "auth_method": "WHITELIST",
        "location_id": "LOC1",
        "evse_uid": "3256",
        "connector_id": "1",
        "currency": "EUR",
        "status": "COMPLETED",
        "last_updated": "2015-06-29T23:40:00Z",
    }
    ocpi("PUT", "/ocpi/emsp/2.2.1/sessions/BE/BEC/LATE-1", session)
    stored = CDR.objects.get()
    assert stored.session.ocpi_id == "LATE-1" and not stored.unknown_session

    # A CDR for a session still shown as charging ends it: the driver is not left watching a finished charge.
    live = SessionFactory(party=cpo, ocpi_id="LIVE-1", card=card, status="ACTIVE")
    ocpi("POST", URL, cdr(id="C-LIVE-1", session_id="LIVE-1", cdr_token=token))
    live.refresh_from_db()
    assert live.status == "COMPLETED" and live.end_date_time.isoformat().startswith("2015-06-29T23:37:32")


@pytest.mark.parametrize("pushed_status", ["ACTIVE", "PENDING"])
def test_cdr_before_its_session_ends_it_even_when_the_session_is_then_pushed_as_live(ocpi, client, cpo, pushed_status):
    card = CardFactory()
    token = cdr_token_of(card)
    end = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=10)
    start = end - dt.timedelta(hours=1)
    bill = cdr(
        id="C-EARLY-1",
        session_id="EARLY-1",
        cdr_token=token,
        start_date_time=format_datetime(start),
        end_date_time=format_datetime(end),
        last_updated=format_datetime(end),
    )
    assert ocpi("POST", URL, bill).status_code == 201
    # The CPO's queued "still charging" push arrives after its final bill.
    session = {
        "country_code": "BE",
        "party_id": "BEC",
        "id": "EARLY-1",
        "start_date_time": format_datetime(start),
        "kwh": 15.0,
        "cdr_token": token,
        "auth_method": "WHITELIST",
        "location_id": "LOC1",
        "evse_uid": "3256",
        "connector_id": "1",
        "currency": "EUR",
        "status": pushed_status,
        "last_updated": format_datetime(timezone.now()),
    }
    response = ocpi("PUT", "/ocpi/emsp/2.2.1/sessions/BE/BEC/EARLY-1", session)
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    stored = Session.objects.get(ocpi_id="EARLY-1")
    assert stored.status == Session.Status.COMPLETED and stored.end_date_time == end
    assert CDR.objects.get().session == stored

    # The driver sees an ended session with its bill, and no Stop button.
    client.force_login(card.driver.user)
    shown = client.get("/charging/live.json").json()["session"]
    assert shown["status_label"] == "Ended" and shown["ended"] and not shown["can_stop"]
    assert shown["cdr"] == {"total_energy": "15.34", "total_cost": "€4.40", "credited": False}
