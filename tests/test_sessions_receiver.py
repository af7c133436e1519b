"""OCPI Sessions receiver (we are the eMSP): CPOs PUT, PATCH and GET their sessions of our drivers.

Bad input and what happens to it:
- a field missing or of the wrong type -> OCPI 2001 naming the field, nothing stored or changed;
- a PATCH without last_updated -> 2001 "last_updated"; a PATCH of a session never PUT -> HTTP 404;
- another party's session (URL or body) -> HTTP 403 + 2000 (roaming.ocpi.ownership), nothing stored;
- URL and body disagreeing on the id -> 2001;
- reopening a COMPLETED session -> 2001, it stays COMPLETED;
- an older PUT/PATCH than what we hold, or the same push twice -> accepted and ignored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from charging.models import Session
from roaming.models import Party
from roaming.selectors import own_party
from tests.conftest import make_ocpi_partner
from tests.factories import (
    CardFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

pytestmark = pytest.mark.django_db

EXAMPLES = Path("/work/shared/ocpi/examples")
OCPI_TOKEN = "cpo-token-sessions"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture
def cpo():
    return make_ocpi_partner(country_code="NL", party_id="STK", name="Stekker", token=OCPI_TOKEN).party


@pytest.fixture
def card():
    return CardFactory(uid="123ABC")


def our_session(card, **changes) -> dict:
    """The spec's first session example, for one of our cards."""
    body = example("session_example_1_simple_start.json")
    body["cdr_token"].update(
        country_code=own_party().country_code, party_id=own_party().party_id, uid="123abc", contract_id=card.contract_id
    )
    body.update(changes)
    return body


URL = "/ocpi/emsp/2.2.1/sessions/NL/STK/101"


def test_put_creates_then_replaces_and_get_returns_it(ocpi, cpo, card):
    location = LocationFactory(party=cpo, ocpi_id="LOC1")
    evse = EVSEFactory(location=location, uid="3256")

    created = ocpi("PUT", URL, our_session(card))
    assert created.status_code == 201 and created.json()["status_code"] == 1000
    session = Session.objects.get()
    # Tied to our card (case-insensitive uid), the CPO's location and EVSE; the payload kept as sent.
    assert (session.card, session.location, session.evse) == (card, location, evse)
    assert session.status == "PENDING" and session.raw["id"] == "101"

    again = ocpi("PUT", URL, our_session(card, status="ACTIVE", kwh=3.5, last_updated="2020-03-09T10:20:00Z"))
    assert again.status_code == 200
    session.refresh_from_db()
    assert session.status == "ACTIVE" and float(session.kwh) == 3.5
    # PUT replaces everything: total_cost, left out this time, is gone.
    body = our_session(card, status="ACTIVE", last_updated="2020-03-09T10:21:00Z")
    del body["total_cost"]
    ocpi("PUT", URL, body)
    session.refresh_from_db()
    assert session.total_cost_excl_vat is None

    got = ocpi("GET", URL)
    assert got.status_code == 200
    assert got.json()["data"]["id"] == "101" and got.json()["data"]["status"] == "ACTIVE"
    assert got.json()["data"]["last_updated"] == "2020-03-09T10:21:00Z"
    assert Session.objects.count() == 1


def test_duplicate_and_stale_pushes_are_harmless(ocpi, cpo, card):
    body = our_session(card, status="ACTIVE", kwh=4.0, last_updated="2020-03-09T10:30:00Z")
    assert ocpi("PUT", URL, body).status_code == 201
    assert ocpi("PUT", URL, body).json()["status_code"] == 1000
    older = our_session(card, status="PENDING", kwh=0.0, last_updated="2020-03-09T10:17:09Z")
    assert ocpi("PUT", URL, older).json()["status_code"] == 1000
    session = Session.objects.get()
    assert session.status == "ACTIVE" and float(session.kwh) == 4.0

    patch = example("session_patch_example_charging_period.json")
    patch["last_updated"] = "2020-03-09T10:40:00Z"
    ocpi("PATCH", URL, patch)
    ocpi("PATCH", URL, patch)  # the same PATCH twice: its period is appended once
    session.refresh_from_db()
    assert len(session.charging_periods) == 1 and float(session.kwh) == 15.0


def test_patch_appends_charging_periods_and_updates_cost(ocpi, cpo, card):
    ocpi("PUT", URL, our_session(card, status="ACTIVE", charging_periods=[], last_updated="2019-06-23T08:00:00Z"))
    first = example("session_patch_example_charging_period.json")
    response = ocpi("PATCH", URL, first)
    assert response.status_code == 200 and response.json()["status_code"] == 1000
    second = copy.deepcopy(first)
    second["charging_periods"][0]["start_date_time"] = "2019-06-23T08:20:00Z"
    second["kwh"], second["last_updated"] = 21.5, "2019-06-23T08:20:00Z"
    ocpi("PATCH", URL, second)
    cost = example("session_patch_example_total_cost.json")
    cost["last_updated"] = "2019-06-23T08:21:00Z"
    ocpi("PATCH", URL, cost)

    session = Session.objects.get()
    assert [p["start_date_time"] for p in session.charging_periods] == ["2019-06-23T08:16:02Z", "2019-06-23T08:20:00Z"]
    assert float(session.kwh) == 21.5
    assert (float(session.total_cost_excl_vat), float(session.total_cost_incl_vat)) == (0.6, 0.66)
    assert session.status == "ACTIVE"  # not in the PATCH, so unchanged
    assert len(ocpi("GET", URL).json()["data"]["charging_periods"]) == 2


def test_patch_needs_last_updated_and_an_existing_session(ocpi, cpo, card):
    missing = ocpi("PATCH", URL, {"kwh": 3, "last_updated": "2020-03-09T10:17:09Z"})
    assert missing.status_code == 404
    ocpi("PUT", URL, our_session(card, status="ACTIVE"))
    no_date = ocpi("PATCH", URL, {"kwh": 3})
    assert no_date.json()["status_code"] == 2001 and "last_updated" in no_date.json()["status_message"]
    assert float(Session.objects.get().kwh) == 0.0


def test_completed_is_final(ocpi, cpo, card):
    ocpi(
        "PUT",
        URL,
        our_session(
            card, status="COMPLETED", end_date_time="2020-03-09T11:00:00Z", last_updated="2020-03-09T11:00:00Z"
        ),
    )
    reopen = ocpi("PATCH", URL, {"status": "ACTIVE", "last_updated": "2020-03-09T11:05:00Z"})
    assert reopen.json()["status_code"] == 2001 and "COMPLETED" in reopen.json()["status_message"]
    reput = ocpi("PUT", URL, our_session(card, status="ACTIVE", last_updated="2020-03-09T11:06:00Z"))
    assert reput.json()["status_code"] == 2001
    session = Session.objects.get()
    assert session.status == "COMPLETED" and session.end_date_time is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kwh": "lots"}, "kwh"),
        ({"status": "CHARGING"}, "status"),
        ({"start_date_time": "yesterday"}, "start_date_time"),
        ({"cdr_token": {"uid": "x"}}, "cdr_token.country_code"),
        ({"currency": None}, "currency"),
    ],
)
def test_bad_input_is_2001_naming_the_field_and_changes_nothing(ocpi, cpo, card, change, field):
    ocpi("PUT", URL, our_session(card, status="ACTIVE", kwh=2.0))
    response = ocpi("PUT", URL, our_session(card, **change, last_updated="2020-03-09T12:00:00Z"))
    assert response.status_code == 400
    assert response.json()["status_code"] == 2001 and field in response.json()["status_message"]
    session = Session.objects.get()
    assert session.status == "ACTIVE" and float(session.kwh) == 2.0


def test_invalid_json_and_mismatched_ids(ocpi, cpo, card):
    assert ocpi("PUT", URL, "{not json").status_code == 400
    other_id = ocpi("PUT", "/ocpi/emsp/2.2.1/sessions/NL/STK/999", our_session(card))
    assert other_id.json()["status_code"] == 2001 and "id" in other_id.json()["status_message"]
    assert not Session.objects.exists()


def test_a_partner_cannot_push_or_read_another_partys_session(ocpi, cpo, card):
    other = PartyFactory(country_code="BE", party_id="BEC", role=Party.Role.CPO)
    PartnerConnectionFactory(party=other, tokens__from_them="other-token")
    RoamingAgreementFactory(partner=other)  # a partner in good standing, still not the owner
    ocpi("PUT", URL, our_session(card, status="ACTIVE"))

    # BEC writing under STK's URL, or under its own URL with STK's body: refused, nothing changes.
    hijack = ocpi(
        "PUT",
        URL,
        our_session(card, status="INVALID", last_updated="2030-01-01T00:00:00Z"),
        token="other-token",
    )
    assert hijack.status_code == 403 and hijack.json()["status_code"] == 2000
    mismatch = ocpi("PUT", "/ocpi/emsp/2.2.1/sessions/BE/BEC/101", our_session(card), token="other-token")
    assert mismatch.json()["status_code"] == 2001
    assert ocpi("GET", URL, token="other-token").status_code == 403
    assert (
        ocpi("PATCH", URL, {"kwh": 9, "last_updated": "2030-01-01T00:00:00Z"}, token="other-token").status_code == 403
    )
    assert Session.objects.get().status == "ACTIVE" and Session.objects.count() == 1
    assert ocpi("GET", URL, token="wrong").status_code == 401


def test_a_hub_pushes_for_its_client_cpo(ocpi, cpo, card):
    hub = PartyFactory(country_code="DE", party_id="HBJ", role=Party.Role.HUB)
    hub_connection = PartnerConnectionFactory(party=hub, tokens__from_them="hub-token")
    client_party = PartyFactory(country_code="FR", party_id="TOT", role=Party.Role.CPO)
    PartnerConnectionFactory(party=client_party, via_hub=hub_connection)
    RoamingAgreementFactory(partner=client_party, hub=hub)
    body = our_session(card, country_code="FR", party_id="TOT")
    url = "/ocpi/emsp/2.2.1/sessions/FR/TOT/101"
    response = ocpi(
        "PUT", url, body, token="hub-token", HTTP_OCPI_FROM_COUNTRY_CODE="FR", HTTP_OCPI_FROM_PARTY_ID="TOT"
    )
    assert response.status_code == 201
    assert Session.objects.get().party == client_party
    # ...but not for a party that is not its client.
    refused = ocpi("PUT", URL, our_session(card), token="hub-token")
    assert refused.status_code == 403


def test_foreign_token_session_is_stored_without_a_card(ocpi, cpo, card):
    body = example("session_example_1_simple_start.json")  # token NL*TST: not ours
    assert ocpi("PUT", URL, body).status_code == 201
    assert Session.objects.get().card is None
