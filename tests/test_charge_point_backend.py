"""Our charge-point backend (our OCPP central system) and the platform: `/api/v1/charge-point/...` in, commands out.

In: session started / meter values / session ended / EVSE status, each idempotent (the backend retries), ordered
by its timestamps, answered from the database alone (what partners must learn waits in the outbox until commit).
Out: `send_to_charge_point` posts START_SESSION / STOP_SESSION to a loopback fake central system, never twice.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from charging import selectors, services
from charging.models import CDR, Command, MeterSample, Session
from roaming.outbox_models import OutboxMessage
from roaming.selectors import own_party
from stations.models import EVSE, EvseStatusChange
from tests.cpo_world import (
    BACKEND_TOKEN,
    EmspReceivers,
    at,
    call_backend,
    foreign_emsp,
    foreign_token,
    moment,
    our_station,
    start_body,
)
from tests.factories import CardFactory, PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory
from tests.ocpi_peer import ok

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _backend(settings):
    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN
    settings.CPO_SESSION_PATCH_INTERVAL_S = 60


@pytest.fixture
def station():
    return our_station()


def test_our_drivers_session_from_start_to_cdr_on_the_live_page(client, station):
    card = CardFactory(uid="04A1B2C3")
    started = call_backend(client, "/sessions", start_body(token_uid="04:a1:b2:c3", authorization_reference="r1"))
    assert started.status_code == 201, started.content
    assert started.json()["status"] == "ACTIVE" and started.json()["emsp"] == own_party().ocpi_id
    for minute, kwh in [(10, "3.5"), (20, "7.25")]:
        answer = call_backend(client, "/sessions/TX-1/meter-values", {"at": at(minute), "kwh": kwh, "power_kw": 21})
        assert answer.status_code == 200, answer.content
    live = selectors.live_view(card.driver)["session"]
    assert live["kwh"] == "7.25" and live["status"] == "ACTIVE" and live["can_stop"]
    assert live["station"] == "Gent Sint-Pieters" and live["evse"] == "BE*MBP*E1"

    ended = call_backend(client, "/sessions/TX-1/end", {"ended_at": at(30), "kwh": "10.5"})
    assert ended.status_code == 200 and ended.json()["status"] == "COMPLETED" and ended.json()["cdr_id"]
    session = Session.objects.get()
    assert (session.card, session.emsp, session.auth_method) == (card, own_party(), "AUTH_REQUEST")
    cdr = CDR.objects.get()
    assert (cdr.party, cdr.card, cdr.total_energy, cdr.session) == (own_party(), card, Decimal("10.5"), session)
    assert cdr.total_time == Decimal("0.5")
    live = selectors.live_view(card.driver)["session"]
    assert live["ended"] and live["cdr"]["total_energy"] == "10.50"
    assert [row.billed for row in selectors.history(card.driver)] == [True]
    assert not OutboxMessage.objects.exists()  # our own driver: no partner to tell


def test_every_call_is_idempotent(client, station):
    CardFactory(uid="04A1B2C3")
    first = call_backend(client, "/sessions", start_body(token_uid="04A1B2C3"))
    again = call_backend(client, "/sessions", start_body(token_uid="04A1B2C3", started_at=at(5)))
    assert (first.status_code, again.status_code) == (201, 200) and first.json() == again.json()
    for _ in range(2):
        assert call_backend(client, "/sessions/TX-1/meter-values", {"at": at(10), "kwh": "4"}).status_code == 200
    assert MeterSample.objects.count() == 1
    for _ in range(2):
        assert call_backend(client, "/sessions/TX-1/end", {"ended_at": at(20), "kwh": "8"}).status_code == 200
    assert Session.objects.count() == 1 and CDR.objects.count() == 1


def test_an_older_meter_value_after_a_newer_one_does_not_go_back(client, station):
    CardFactory(uid="04A1B2C3")
    call_backend(client, "/sessions", start_body(token_uid="04A1B2C3"))
    call_backend(client, "/sessions/TX-1/meter-values", {"at": at(20), "kwh": "9"})
    late = call_backend(client, "/sessions/TX-1/meter-values", {"at": at(10), "kwh": "4"})
    assert late.status_code == 200 and late.json()["kwh"] == 9.0
    session = Session.objects.get()
    assert session.kwh == Decimal("9") and session.metered_at == moment(20)
    assert MeterSample.objects.count() == 2  # kept for pricing, but it moved nothing
    call_backend(client, "/sessions/TX-1/end", {"ended_at": at(30), "kwh": "12"})
    after_end = call_backend(client, "/sessions/TX-1/meter-values", {"at": at(40), "kwh": "15"})
    assert after_end.json()["kwh"] == 12.0 and after_end.json()["status"] == "COMPLETED"


def test_evse_status_follows_the_newest_report_only(client, station):
    body = {"location_id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "status": "CHARGING", "at": at(10)}
    answer = call_backend(client, "/evse-status", body)
    assert answer.status_code == 200 and answer.json()["applied"] is True
    older = call_backend(client, "/evse-status", {**body, "status": "AVAILABLE", "at": at(5)})
    assert older.json() == {**older.json(), "status": "CHARGING", "applied": False}
    assert EVSE.objects.get(pk=station.pk).status == "CHARGING"
    assert list(EvseStatusChange.objects.filter(evse=station).values_list("status", flat=True)) == ["CHARGING"]


def test_a_foreign_drivers_session_is_answered_at_once_and_its_push_waits_in_the_outbox(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    began = time.perf_counter()
    answer = call_backend(client, "/sessions", start_body(token_uid="0102AABB"))
    elapsed = time.perf_counter() - began
    assert answer.status_code == 201 and answer.json()["emsp"] == "NL*TNM"
    # Nothing left on the request path: the PUT is in the outbox (sent after commit), the eMSP has heard nothing.
    assert receivers.calls == [] and ocpi_peer.requests == []
    message = OutboxMessage.objects.get()
    assert (message.partner, message.module, message.method, message.path) == (
        emsp,
        "sessions",
        "PUT",
        "/BE/MBP/TX-1",
    )
    assert elapsed < 1.0, f"answered in {elapsed:.3f} s"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/sessions", start_body(location_id="NOWHERE", token_uid="04A1B2C3"), "location_id"),
        ("/sessions", start_body(evse_uid="NONE", token_uid="04A1B2C3"), "evse_uid"),
        ("/sessions", start_body(token_uid="DEADBEEF"), "token_uid"),
        ("/sessions", start_body(), "token_uid"),
        ("/sessions", start_body(token_uid="04A1B2C3", started_at="yesterday"), "started_at"),
        ("/sessions", start_body(token_uid="04A1B2C3", session_id=""), "session_id"),
        ("/sessions", start_body(token_uid="04A1B2C3", token_type="BADGE"), "token_type"),
        ("/evse-status", {"location_id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "status": "ON", "at": at(1)}, "status"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(client, station, path, body, field):
    CardFactory(uid="04A1B2C3")
    answer = call_backend(client, path, body)
    assert answer.status_code == 400 and list(answer.json()) == [field], answer.content
    assert not Session.objects.exists() and EVSE.objects.get().status == "AVAILABLE"


def test_unknown_session_is_404_and_no_bearer_is_401(client, station):
    assert call_backend(client, "/sessions/NOPE/meter-values", {"at": at(1), "kwh": "1"}).status_code == 404
    assert call_backend(client, "/sessions/NOPE/end", {"ended_at": at(1), "kwh": "1"}).status_code == 404
    refused = call_backend(client, "/sessions", start_body(token_uid="04A1B2C3"), token="wrong")
    assert refused.status_code == 401 and not Session.objects.exists()
    anonymous = client.post("/api/v1/charge-point/sessions", start_body(), content_type="application/json")
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"] == "Bearer"


# --- Commands to the central system --------------------------------------------------------------------------


@pytest.fixture
def partner_emsp(ocpi_peer):
    """An eMSP that sends START_SESSION to our stations; its response_url is on the peer."""
    party = PartyFactory(country_code="NL", party_id="SHL", role="EMSP", name="Shell Recharge")
    PartnerConnectionFactory(
        party=party,
        versions_url=ocpi_peer.url("/ocpi/versions"),
        tokens__from_them="emsp-calls-us",
        tokens__to_them="we-call-emsp",
    )
    RoamingAgreementFactory(partner=party, direction="their_cards")
    return party


def remote_start(ocpi, ocpi_peer) -> dict:
    body = {
        "response_url": ocpi_peer.url("/ocpi/emsp/2.2.1/commands/START_SESSION/abc-1"),
        "token": {
            "country_code": "NL",
            "party_id": "SHL",
            "uid": "APP-77",
            "type": "APP_USER",
            "contract_id": "NL-SHL-C00000077",
            "issuer": "Shell Recharge",
            "valid": True,
            "whitelist": "ALLOWED",
            "last_updated": "2026-01-01T00:00:00Z",
        },
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
    }
    return ocpi("POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", body, token="emsp-calls-us").envelope


def test_remote_start_goes_to_the_central_system_and_ends_in_a_real_session(
    client, ocpi, station, partner_emsp, ocpi_peer, settings, django_capture_on_commit_callbacks
):
    settings.CHARGE_POINT_BACKEND_URL = ocpi_peer.url("/central")
    settings.CHARGE_POINT_BACKEND_TOKEN = "platform-at-central"
    asked: list[dict] = []

    def central_system(request):
        asked.append(request.json())
        return {"result": "ACCEPTED"}

    ocpi_peer.route("POST", r"/central/commands", central_system)
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/abc-1", lambda r: ok())
    with django_capture_on_commit_callbacks(execute=True):
        answer = remote_start(ocpi, ocpi_peer)
    assert answer["data"]["result"] == "ACCEPTED"
    command = Command.objects.get()
    assert command.status == Command.Status.ACCEPTED and command.result_reported_at is not None
    central_call = next(r for r in ocpi_peer.requests if r.path == "/central/commands")
    assert central_call.header("Authorization") == "Bearer platform-at-central"
    assert central_call.header("Idempotency-Key") == str(command.uid)
    assert len(asked) == 1 and asked[0].pop("token")["uid"] == "APP-77"
    assert asked[0] == {
        "command_id": str(command.uid),
        "type": "START_SESSION",
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
        "authorization_reference": command.uid.hex,
    }
    # The charge point started: the central system tells us with the reference it was given.
    started = call_backend(
        client, "/sessions", start_body(session_id="TX-9", authorization_reference=asked[0]["authorization_reference"])
    )
    assert started.status_code == 201 and started.json()["emsp"] == "NL*SHL"
    session = Session.objects.get()
    assert session.auth_method == "COMMAND" and session.cdr_token["uid"] == "APP-77"
    assert session.cdr_token["contract_id"] == "NL-SHL-C00000077"
    assert Command.objects.get().session == session


def test_central_system_not_listening_fails_the_command_after_connection_retries(
    ocpi, station, partner_emsp, ocpi_peer, settings, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CHARGE_POINT_BACKEND_URL = f"http://127.0.0.1:{port}"
    settings.CHARGING_COMMAND_RETRY_BACKOFF_S = 0
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/abc-1", lambda r: ok())
    with django_capture_on_commit_callbacks(execute=True):
        remote_start(ocpi, ocpi_peer)
    command = Command.objects.get()
    assert command.status == Command.Status.FAILED and "unreachable" in command.error
    assert [r.json() for r in ocpi_peer.requests] == [
        {"result": "FAILED", "message": [{"language": "en", "text": "Our charge point could not be reached."}]}
    ]


def test_a_command_that_may_have_reached_the_central_system_is_never_sent_twice(
    ocpi, station, partner_emsp, ocpi_peer, settings, django_capture_on_commit_callbacks
):
    settings.CHARGE_POINT_BACKEND_URL = ocpi_peer.url("/central")
    settings.CHARGE_POINT_BACKEND_TIMEOUT_S = 0.3

    def slow(request):
        time.sleep(1)
        return {"result": "ACCEPTED"}

    ocpi_peer.route("POST", r"/central/commands", slow)
    with django_capture_on_commit_callbacks(execute=True):
        remote_start(ocpi, ocpi_peer)
    command = Command.objects.get()
    assert command.status == Command.Status.SENT and command.maybe_delivered  # waits: a session or TIMEOUT decides
    services.deliver_to_charge_point(command.pk)  # a redelivered task
    assert [r.path for r in ocpi_peer.requests] == ["/central/commands"]


def test_a_refusing_central_system_is_the_partners_rejected_result(
    ocpi, station, partner_emsp, ocpi_peer, settings, django_capture_on_commit_callbacks
):
    settings.CHARGE_POINT_BACKEND_URL = ocpi_peer.url("/central")
    ocpi_peer.route("POST", r"/central/commands", lambda r: {"result": "EVSE_OCCUPIED", "message": "in use"})
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/abc-1", lambda r: ok())
    with django_capture_on_commit_callbacks(execute=True):
        remote_start(ocpi, ocpi_peer)
    assert Command.objects.get().result == "EVSE_OCCUPIED"
    assert ocpi_peer.requests[-1].json()["result"] == "EVSE_OCCUPIED"
    assert Session.objects.count() == 0


def test_the_simulator_plays_our_driver_and_a_foreign_driver_through_the_api(station, settings):
    from django.core.management import call_command

    from roaming.models import RoamingAgreement

    CardFactory(uid="04A1B2C3")
    emsp = PartyFactory(country_code="NL", party_id="SHL", role="EMSP")
    RoamingAgreementFactory(partner=emsp, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    foreign_token(emsp, uid="12345678905880")
    settings.CARDS_BACKEND_API_TOKEN = ""  # in-process it brings its own one-off token
    call_command("simulate_charge_points", "--prefix", "T")
    call_command("simulate_charge_points", "--prefix", "T")  # again: nothing new
    sessions = {s.ocpi_id: s for s in Session.objects.all()}
    assert set(sessions) == {"T-OURS-1", "T-SHL-1"}
    assert sessions["T-SHL-1"].emsp == emsp and sessions["T-OURS-1"].card is not None
    assert {s.status for s in sessions.values()} == {"COMPLETED"} and CDR.objects.count() == 2
    assert MeterSample.objects.count() == 8


def test_a_status_from_the_backend_is_queued_for_every_emsp_served_by_our_stations(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer)
    body = {"location_id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "status": "CHARGING", "at": at(10)}
    assert call_backend(client, "/evse-status", body).json()["applied"] is True
    call_backend(client, "/evse-status", body)  # a retry: nothing more
    message = OutboxMessage.objects.get()
    assert (message.partner, message.module, message.method) == (emsp, "locations", "PATCH")
    assert message.path == "/BE/MBP/MBP-GENT/MBP-GENT-1" and message.body["status"] == "CHARGING"
    assert ocpi_peer.requests == []  # sent after commit, never on the backend's request path


def test_our_driver_pressing_start_at_our_station_gets_a_real_session(
    client, station, ocpi_peer, settings, django_capture_on_commit_callbacks
):
    from tests.factories import DriverFactory

    settings.CHARGE_POINT_BACKEND_URL = ocpi_peer.url("/central")
    ocpi_peer.route("POST", r"/central/commands", lambda r: {"result": "ACCEPTED"})
    driver = DriverFactory()
    card = CardFactory(driver=driver, uid="04A1B2C3")
    client.force_login(driver.user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/charging/start/{station.location_id}/{station.uid}/", {"card": card.pk, "idempotency_key": "k"})
    command = Command.objects.get()
    assert command.status == Command.Status.ACCEPTED
    asked = ocpi_peer.requests[0].json()
    assert asked["token"]["uid"] == card.uid and asked["authorization_reference"] == command.uid.hex
    started = call_backend(client, "/sessions", start_body(authorization_reference=asked["authorization_reference"]))
    assert started.status_code == 201 and started.json()["emsp"] == "BE*MBP"
    live = client.get("/charging/live.json").json()
    assert live["session"]["status"] == "ACTIVE" and live["session"]["operator"] == "MobilityPlus"
    session = Session.objects.get()
    assert (session.card, session.auth_method, Command.objects.get().session) == (card, "COMMAND", session)
