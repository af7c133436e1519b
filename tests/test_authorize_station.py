"""Our charge-point backend asks whether a card may charge at our EVSE: local, cache, real time, or fallback."""

import socket
import time

import pytest

from cards.authorization import card_directory
from cards.models import AuthorizationDecision, Card, ForeignToken
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from tests.factories import CardFactory, EVSEFactory, PartnerConnectionFactory, RoamingAgreementFactory
from tests.ocpi_peer import PeerResponse, ok

URL = "/api/v1/authorizations"
SERVICE_TOKEN = "backend-secret-for-tests"


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    settings.CARDS_REALTIME_DEADLINE_S = 1.0
    card_directory.clear()
    yield
    card_directory.clear()


@pytest.fixture
def evse(db):
    return EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GRAND-PLACE", uid="BE*MBP*E0001")


def ask(client, evse, uid, token=SERVICE_TOKEN, **extra):
    body = {"uid": uid, "location_id": evse.location.ocpi_id, "evse_uid": evse.uid, **extra}
    return client.post(URL, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def foreign_emsp(peer=None, *, whitelist="ALLOWED_OFFLINE", valid=True, agreement=True, uid="AABBCCDD"):
    endpoints = [{"identifier": "tokens", "role": "SENDER", "url": peer.url("/emsp/tokens")}] if peer else []
    connection = PartnerConnectionFactory(party__role=Party.Role.EMSP, endpoints=endpoints, tokens__to_them="to-emsp")
    if agreement:
        RoamingAgreementFactory(
            partner=connection.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
        )
    ForeignToken.objects.create(
        party=connection.party,
        uid=uid,
        type="RFID",
        contract_id="NL-TNM-C00000001-X",
        issuer="Them",
        valid=valid,
        whitelist=whitelist,
        data={"uid": uid, "type": "RFID", "valid": valid, "whitelist": whitelist},
        last_updated="2024-01-01T00:00:00Z",
    )
    return connection


def test_our_own_card_is_decided_locally(client, evse):
    card = CardFactory(uid="04A1B2C3")
    blocked = CardFactory(status=Card.Status.BLOCKED)
    allowed = ask(client, evse, "04:a1:b2:c3")
    assert allowed.status_code == 200
    assert allowed.json()["allowed"] == "ALLOWED" and allowed.json()["may_charge"] is True
    assert allowed.json()["path"] == "local" and allowed.json()["token"]["uid"] == card.uid
    assert allowed.json()["authorization_reference"]
    refused = ask(client, evse, blocked.uid).json()
    assert refused["allowed"] == "BLOCKED" and refused["may_charge"] is False and refused["path"] == "local"
    logged = AuthorizationDecision.objects.filter(direction="cpo").order_by("decided_at")
    assert [(d.token_uid, d.result, d.path) for d in logged] == [
        ("04A1B2C3", "ALLOWED", "local"),
        (blocked.uid, "BLOCKED", "local"),
    ]
    assert logged[0].location_id == "BE-GRAND-PLACE" and logged[0].evse_uids == ["BE*MBP*E0001"]


def test_foreign_whitelist_always_is_decided_from_the_cache_without_calling(client, evse, ocpi_peer):
    foreign_emsp(ocpi_peer, whitelist="ALWAYS")
    answer = ask(client, evse, "aabbccdd").json()
    assert answer["allowed"] == "ALLOWED" and answer["path"] == "cache"
    assert ocpi_peer.requests == []


def test_foreign_card_asks_the_issuer_in_real_time(client, evse, ocpi_peer):
    foreign_emsp(ocpi_peer, whitelist="NEVER")
    ocpi_peer.route(
        "POST",
        r"/emsp/tokens/AABBCCDD/authorize",
        lambda r: ok({"allowed": "BLOCKED", "token": {}, "authorization_reference": "ref-1", "info": {"text": "no"}}),
    )
    answer = ask(client, evse, "AABBCCDD").json()
    assert answer["allowed"] == "BLOCKED" and answer["path"] == "realtime" and answer["reason"] == "no"
    asked = ocpi_peer.requests[0]
    assert asked.query == {"type": "RFID"} and asked.header("Authorization") == authorization_header("to-emsp")
    assert asked.json() == {"location_id": "BE-GRAND-PLACE", "evse_uids": ["BE*MBP*E0001"]}
    ocpi_peer.route(
        "POST",
        r"/emsp/tokens/AABBCCDD/authorize",
        lambda r: ok({"allowed": "ALLOWED", "authorization_reference": "r2"}),
    )
    allowed = ask(client, evse, "AABBCCDD").json()
    assert allowed["allowed"] == "ALLOWED" and allowed["authorization_reference"] == "r2"


def test_issuer_that_does_not_know_the_token_means_not_allowed(client, evse, ocpi_peer):
    foreign_emsp(ocpi_peer)
    ocpi_peer.route(
        "POST", r"/emsp/tokens/.*", lambda r: PeerResponse({"status_code": 2004, "status_message": "?"}, status=404)
    )
    answer = ask(client, evse, "AABBCCDD").json()
    assert answer["allowed"] == "NOT_ALLOWED" and answer["path"] == "realtime"


@pytest.mark.parametrize(
    ("whitelist", "valid", "expected"),
    [
        ("ALLOWED_OFFLINE", True, "ALLOWED"),
        ("ALLOWED", True, "ALLOWED"),
        ("NEVER", True, "NOT_ALLOWED"),
        ("ALLOWED_OFFLINE", False, "NOT_ALLOWED"),
    ],
)
def test_stalled_issuer_falls_back_on_the_cached_whitelist_within_the_deadline(
    client, evse, ocpi_peer, whitelist, valid, expected
):
    foreign_emsp(ocpi_peer, whitelist=whitelist, valid=valid)
    ocpi_peer.route("POST", r"/emsp/tokens/.*", lambda r: (time.sleep(3), ok({"allowed": "BLOCKED"}))[1])
    started = time.monotonic()
    answer = ask(client, evse, "AABBCCDD").json()
    elapsed = time.monotonic() - started
    assert answer["allowed"] == expected and answer["path"] == "fallback"
    assert "time" in answer["reason"]  # the read timeout or the deadline, whichever fires first
    assert 0.9 < elapsed < 2.0
    assert AuthorizationDecision.objects.get(direction="cpo").path == "fallback"


def test_issuer_that_trickles_bytes_still_cannot_hold_us_past_the_deadline(client, evse, ocpi_peer):
    foreign_emsp(ocpi_peer)

    def trickle(request):
        time.sleep(0.6)
        return PeerResponse(raw=b" " * 10 + b'{"status_code": 1000, "data": {"allowed": "BLOCKED"}}')

    ocpi_peer.route("POST", r"/emsp/tokens/.*", lambda r: (time.sleep(0.6), trickle(r))[1])
    started = time.monotonic()
    answer = ask(client, evse, "AABBCCDD").json()
    assert answer["path"] == "fallback" and time.monotonic() - started < 2.0


def test_issuer_that_is_down_or_answers_garbage_falls_back_at_once(client, evse, ocpi_peer):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    connection = foreign_emsp(ocpi_peer)
    connection.endpoints = [{"identifier": "tokens", "role": "SENDER", "url": f"http://127.0.0.1:{dead_port}/t"}]
    connection.save()
    started = time.monotonic()
    down = ask(client, evse, "AABBCCDD").json()
    assert down["allowed"] == "ALLOWED" and down["path"] == "fallback" and time.monotonic() - started < 1.0
    connection.endpoints = [{"identifier": "tokens", "role": "SENDER", "url": ocpi_peer.url("/emsp/tokens")}]
    connection.save()
    ocpi_peer.route("POST", r"/emsp/tokens/.*", lambda r: PeerResponse(raw=b"<html>"))
    garbage = ask(client, evse, "AABBCCDD").json()
    assert garbage["path"] == "fallback" and garbage["allowed"] == "ALLOWED"


def test_foreign_card_without_agreement_or_unknown_card_is_refused(client, evse, ocpi_peer):
    foreign_emsp(ocpi_peer, agreement=False, whitelist="ALWAYS")
    no_deal = ask(client, evse, "AABBCCDD").json()
    assert no_deal["allowed"] == "NOT_ALLOWED" and no_deal["path"] == "agreement"
    unknown = ask(client, evse, "DEADBEEF").json()
    assert unknown["allowed"] == "NOT_ALLOWED" and unknown["path"] == "unknown"
    assert ocpi_peer.requests == []


def test_bad_input_and_authentication(client, evse, admin_client, django_user_model):
    missing = client.post(
        URL, {"uid": "AA"}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {SERVICE_TOKEN}"
    )
    assert missing.status_code == 400 and set(missing.json()) == {"location_id", "evse_uid"}
    wrong_evse = ask(client, evse, "AA", evse_uid="NOPE")
    assert wrong_evse.status_code == 400 and "evse_uid" in wrong_evse.json()
    bad_type = ask(client, evse, "AA", type="BADGE")
    assert bad_type.status_code == 400 and "type" in bad_type.json()
    assert ask(client, evse, "AA", token="guess").status_code == 401
    assert client.post(URL, {}, content_type="application/json").status_code in (401, 403)
    driver = django_user_model.objects.create_user("driver", password="pw")
    client.force_login(driver)
    assert client.post(URL, {}, content_type="application/json").status_code == 403
    staff = admin_client.post(
        URL, {"uid": "AA", "location_id": evse.location.ocpi_id, "evse_uid": evse.uid}, content_type="application/json"
    )
    assert staff.status_code == 200 and staff.json()["path"] == "unknown"
    assert not AuthorizationDecision.objects.filter(token_uid="AA", result="ALLOWED").exists()
