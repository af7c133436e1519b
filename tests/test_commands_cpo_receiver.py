"""Commands partners send to our own stations (we are the CPO): `POST /ocpi/cpo/2.2.1/commands/{command}`.

The command goes to our charge-point backend through `charging.services.send_to_charge_point`; the backend
reports through `report_charge_point_result`, which posts the CommandResult to the partner's response_url
(a real OCPI server on 127.0.0.1 here).

Bad input and what happens to it:
- malformed StartSession/StopSession -> OCPI 2001 naming the field, no command created;
- unknown location or EVSE -> OCPI 2003; unknown/foreign session on STOP -> CommandResponse UNKNOWN_SESSION;
- a token of another party, or no agreement for their cards -> CommandResponse REJECTED;
- RESERVE_NOW and friends -> NOT_SUPPORTED; an unknown command name -> 2001;
- the same command (same response_url) twice -> the same answer, handed to the charge point once.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from charging import services
from charging.models import Command
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from tests.factories import (
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SessionFactory,
)
from tests.ocpi_peer import ok

pytestmark = pytest.mark.django_db

EMSP_TOKEN = OCPI_TOKEN = "emsp-calls-us"
OUR_TOKEN = "we-call-emsp"


@pytest.fixture
def emsp(ocpi_peer):
    party = PartyFactory(country_code="NL", party_id="SHL", role=Party.Role.EMSP, name="Shell Recharge")
    # Registered at the peer: response_urls must be on the partner's registered hosts.
    PartnerConnectionFactory(
        party=party,
        versions_url=ocpi_peer.url("/ocpi/versions"),
        tokens__from_them=EMSP_TOKEN,
        tokens__to_them=OUR_TOKEN,
    )
    RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    return party


@pytest.fixture
def station():
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT")
    return EVSEFactory(location=location, uid="MBP-GENT-1")


def token(party_id: str = "SHL") -> dict:
    return {
        "country_code": "NL",
        "party_id": party_id,
        "uid": "0102030405",
        "type": "APP_USER",
        "contract_id": "NL-SHL-C00000001",
        "issuer": "Shell Recharge",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": "2026-01-01T00:00:00Z",
    }


def start_body(ocpi_peer, **changes) -> dict:
    body = {
        "response_url": ocpi_peer.url("/ocpi/emsp/2.2.1/commands/START_SESSION/abc-1"),
        "token": token(),
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
    }
    body.update(changes)
    return body


def send(ocpi, command: str, body) -> dict:
    """POST a command to our CPO side as the eMSP (the shared `ocpi` call); the envelope."""
    response = ocpi("POST", f"/ocpi/cpo/2.2.1/commands/{command}", body)
    assert response.status_code in (200, 400, 404)
    return response.envelope


def test_start_is_accepted_handed_to_the_charge_point_and_the_result_posted_back(
    ocpi, emsp, station, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/abc-1", lambda r: ok())
    answer = send(ocpi, "START_SESSION", start_body(ocpi_peer))
    assert answer["status_code"] == 1000
    assert answer["data"] == {"result": "ACCEPTED", "timeout": services.charge_point_timeout()}
    again = send(ocpi, "START_SESSION", start_body(ocpi_peer))  # the same command twice
    assert again["data"]["result"] == "ACCEPTED"
    command = Command.objects.get()
    assert (command.direction, command.partner, command.evse) == ("incoming", emsp, station)
    assert command.status == Command.Status.SENT

    with django_capture_on_commit_callbacks(execute=True):
        services.report_charge_point_result(command, "ACCEPTED")
    assert len(ocpi_peer.requests) == 1
    posted = ocpi_peer.requests[0]
    assert posted.json() == {"result": "ACCEPTED"}
    assert posted.header("Authorization") == authorization_header(OUR_TOKEN)
    command.refresh_from_db()
    assert command.status == Command.Status.ACCEPTED and command.result_reported_at is not None


def test_charge_point_that_never_answers_reports_timeout(
    ocpi, emsp, station, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/abc-1", lambda r: ok())
    send(ocpi, "START_SESSION", start_body(ocpi_peer))
    Command.objects.update(deadline_at=timezone.now() - timezone.timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.expire_overdue_commands() == 1
    assert ocpi_peer.requests[0].json() == {"result": "TIMEOUT"}
    assert Command.objects.get().status == Command.Status.TIMED_OUT


def test_unusable_evse_is_rejected_by_the_charge_point_hand_over(ocpi, emsp, station, ocpi_peer):
    station.status = "OUTOFORDER"
    station.save()
    answer = send(ocpi, "START_SESSION", start_body(ocpi_peer))
    assert answer["data"]["result"] == "REJECTED"
    assert Command.objects.get().status == Command.Status.REJECTED


def test_refusals(ocpi, emsp, station, ocpi_peer):
    foreign = send(ocpi, "START_SESSION", start_body(ocpi_peer, token=token("TOT")))
    assert foreign["data"]["result"] == "REJECTED" and "own tokens" in foreign["data"]["message"][0]["text"]
    unknown_location = send(ocpi, "START_SESSION", start_body(ocpi_peer, location_id="NOWHERE"))
    assert unknown_location["status_code"] == 2003
    unknown_evse = send(ocpi, "START_SESSION", start_body(ocpi_peer, evse_uid="NOPE"))
    assert unknown_evse["status_code"] == 2003
    # Someone else's location is not ours to start.
    LocationFactory(ocpi_id="THEIRS")
    assert send(ocpi, "START_SESSION", start_body(ocpi_peer, location_id="THEIRS"))["status_code"] == 2003
    bad = send(ocpi, "START_SESSION", start_body(ocpi_peer, response_url="not a url"))
    assert bad["status_code"] == 2001 and "response_url" in bad["status_message"]
    missing_token = send(ocpi, "START_SESSION", {"response_url": "https://x.example/r", "location_id": "MBP-GENT"})
    assert missing_token["status_code"] == 2001 and "token" in missing_token["status_message"]
    assert send(ocpi, "RESERVE_NOW", {})["data"]["result"] == "NOT_SUPPORTED"
    assert send(ocpi, "DANCE", {})["status_code"] == 2001
    assert not Command.objects.exists()

    # An agreement for our cards at their stations only does not let their cards start ours.
    RoamingAgreement.objects.update(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    no_agreement = send(ocpi, "START_SESSION", start_body(ocpi_peer))
    assert no_agreement["data"]["result"] == "REJECTED"


def test_stop_only_their_own_live_session(ocpi, emsp, station, ocpi_peer):
    theirs = SessionFactory(
        party=own_party(),
        ocpi_id="MBP-S1",
        card=None,
        cdr_token={"country_code": "NL", "party_id": "SHL", "uid": "0102030405", "type": "APP_USER"},
    )
    SessionFactory(party=own_party(), ocpi_id="MBP-S2", card=None, cdr_token={"country_code": "FR", "party_id": "TOT"})
    url = ocpi_peer.url("/ocpi/emsp/2.2.1/commands/STOP_SESSION/s1")
    stop = send(ocpi, "STOP_SESSION", {"response_url": url, "session_id": "MBP-S1"})
    assert stop["data"]["result"] == "ACCEPTED"
    assert Command.objects.get().session == theirs
    other = send(ocpi, "STOP_SESSION", {"response_url": url + "x", "session_id": "MBP-S2"})
    assert other["data"]["result"] == "UNKNOWN_SESSION"
    unknown = send(ocpi, "STOP_SESSION", {"response_url": url + "y", "session_id": "NOPE"})
    assert unknown["data"]["result"] == "UNKNOWN_SESSION"
    assert Command.objects.count() == 1
