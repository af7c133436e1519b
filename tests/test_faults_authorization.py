"""Faults that must not spread, at our stations' authorization (`POST /api/v1/authorizations`) and at partner
CPOs' authorization of our cards over OCPI (`POST /ocpi/emsp/2.2.1/tokens/{uid}/authorize`).

- one eMSP stalling: our own cards are not delayed and another eMSP is still asked (per-partner bulkhead),
  and once it has failed a few times it is not asked at all until a trial call finds it healthy (circuit);
- the database stalled (a table locked) or down (nothing listening): our own cards are still decided from the
  warm cache within 2 s, the decision is logged once the database is back, unknown cards get a clear refusal.
All against real servers: live_server over HTTP, eMSPs on 127.0.0.1, PostgreSQL.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.db import connection

from cards.authorization import card_directory
from cards.decision_log import decision_log
from cards.models import AuthorizationDecision, Card, ForeignToken
from cards.realtime_circuit import PartnerCircuits, Refused, circuit_key, partner_circuits
from roaming.models import Party, RoamingAgreement
from roaming.ocpi import endpoint
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from tests.factories import CardFactory, EVSEFactory, PartnerConnectionFactory, RoamingAgreementFactory
from tests.ocpi_peer import OcpiPeer, PeerResponse, ok

SERVICE_TOKEN = "backend-secret-for-fault-tests"
HEADERS = {"Authorization": f"Bearer {SERVICE_TOKEN}"}


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_REALTIME_DEADLINE_S = 1.0
    settings.CARDS_DECISION_LOG_FLUSH_S = 0.05
    card_directory.clear()
    partner_circuits.reset()
    yield
    # Nothing buffered outlives this test's database (a row written late would land in a later test's tables).
    deadline = time.monotonic() + 10
    while decision_log.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    decision_log.discard()
    card_directory.clear()
    partner_circuits.reset()


@pytest.fixture
def peers():
    started = []

    def start() -> OcpiPeer:
        peer = OcpiPeer().start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def evse(transactional_db):
    return EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GENT-01", uid="BE*MBP*E0042")


def emsp(peer: OcpiPeer | StallingEmsp, uid: str, party_id: str) -> Party:
    """A foreign eMSP with an agreement, whose token `uid` (ALLOWED_OFFLINE, valid) we have cached."""
    connection = PartnerConnectionFactory(
        party__role=Party.Role.EMSP,
        party__party_id=party_id,
        endpoints=[{"identifier": "tokens", "role": "SENDER", "url": peer.url("/emsp/tokens")}],
        tokens__to_them=f"to-{party_id}",
    )
    RoamingAgreementFactory(partner=connection.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    ForeignToken.objects.create(
        party=connection.party,
        uid=uid,
        type="RFID",
        contract_id=f"NL-{party_id}-C00000001-X",
        issuer=party_id,
        valid=True,
        whitelist="ALLOWED_OFFLINE",
        data={"uid": uid, "type": "RFID", "valid": True, "whitelist": "ALLOWED_OFFLINE"},
        last_updated="2024-01-01T00:00:00Z",
    )
    return connection.party


def ask(base_url: str, evse, uid: str, timeout: float = 15) -> tuple[dict, float]:
    started = time.monotonic()
    reply = requests.post(
        f"{base_url}/api/v1/authorizations",
        json={"uid": uid, "location_id": evse.location.ocpi_id, "evse_uid": evse.uid},
        headers=HEADERS,
        timeout=timeout,
    )
    assert reply.status_code == 200, reply.text
    return reply.json(), time.monotonic() - started


class StallingEmsp:
    """An eMSP on 127.0.0.1 that takes 10 s to answer and trickles a byte every 0.2 s meanwhile, so no read
    timeout fires and each call holds its thread for the whole stall (cut short by `release`)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data.split(b" ", 2)[1].decode())
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                deadline = time.monotonic() + 10
                while not self.release.is_set() and time.monotonic() < deadline:
                    conn.sendall(b" ")
                    self.release.wait(0.2)
            except OSError:
                pass  # we gave up on it

    def stop(self) -> None:
        self.release.set()
        self.server.close()


def test_a_stalling_emsp_delays_neither_our_own_cards_nor_a_healthy_emsp(live_server, evse, peers):
    slow_peer, healthy_peer = StallingEmsp(), peers()
    healthy_peer.route(
        "POST", r"/emsp/tokens/.*/authorize", lambda r: ok({"allowed": "ALLOWED", "authorization_reference": "h1"})
    )
    emsp(slow_peer, "5L0W0001", "SLO")
    emsp(healthy_peer, "0K0K0001", "HEA")
    own = CardFactory(uid="04AA0001")
    card_directory.warm()
    try:
        with ThreadPoolExecutor(max_workers=20) as burst:
            stalled = [burst.submit(ask, live_server.url, evse, "5L0W0001") for _ in range(20)]
            time.sleep(0.3)  # the burst is in: its calls to the slow eMSP hang now
            own_answer, own_elapsed = ask(live_server.url, evse, own.uid)
            healthy_answer, healthy_elapsed = ask(live_server.url, evse, "0K0K0001")
            stalled_answers = [future.result() for future in stalled]
        # Our own card: decided locally, not stuck behind the slow eMSP.
        assert own_answer["allowed"] == "ALLOWED" and own_answer["path"] == "local"
        assert own_elapsed < 1.0
        # The healthy eMSP was asked and answered (its server saw the request), not "no answer in time".
        assert healthy_answer["path"] == "realtime" and healthy_answer["authorization_reference"] == "h1"
        assert [r.path for r in healthy_peer.requests] == ["/emsp/tokens/0K0K0001/authorize"]
        assert healthy_answer["elapsed_ms"] < 800
        # The slow eMSP's drivers still charge on its cached token; it held at most its own few slots,
        # and the rest of the burst was answered from the cache at once instead of queuing.
        assert {answer["path"] for answer, _ in stalled_answers} == {"fallback"}
        assert {answer["allowed"] for answer, _ in stalled_answers} == {"ALLOWED"}
        assert len(slow_peer.requests) <= 4
        # (the server's own time: the test server's short listen queue makes some clients reconnect after 1 s)
        quick = [answer for answer, _ in stalled_answers if answer["elapsed_ms"] < 800]
        assert len(quick) >= 16
        assert any("concurrency limit" in answer["reason"] for answer, _ in stalled_answers)
        # Its calls have failed: the circuit is open, so the next driver is answered without asking it.
        asked_before = len(slow_peer.requests)
        after, after_elapsed = ask(live_server.url, evse, "5L0W0001")
        assert after["path"] == "fallback" and "circuit open" in after["reason"] and after_elapsed < 1.0
        assert len(slow_peer.requests) == asked_before
    finally:
        slow_peer.stop()


def test_the_circuit_tries_a_failing_emsp_again_after_the_cool_down_and_closes_when_it_answers(
    live_server, evse, peers, settings
):
    settings.CARDS_CIRCUIT_FAILURES = 2
    settings.CARDS_CIRCUIT_COOLDOWN_S = 1.0
    peer = peers()
    peer.route("POST", r"/emsp/tokens/.*/authorize", lambda r: PeerResponse(raw=b"<html>busy</html>", status=503))
    party = emsp(peer, "F41L0001", "FAI")
    key = circuit_key(party.pk, peer.url("/emsp/tokens"))
    for _ in range(2):
        answer, _ = ask(live_server.url, evse, "F41L0001")
        assert answer["path"] == "fallback" and answer["allowed"] == "ALLOWED"
    assert len(peer.requests) == 2 and partner_circuits.state(key) == "open"
    # Another process (a fresh circuit table) sees it open too, through the shared cache.
    with pytest.raises(Refused):
        PartnerCircuits().admit(key)
    answer, elapsed = ask(live_server.url, evse, "F41L0001")
    assert "circuit open" in answer["reason"] and elapsed < 0.5 and len(peer.requests) == 2

    # After the cool-down one trial call goes out in the background; it fails: open again.
    time.sleep(1.1)
    answer, elapsed = ask(live_server.url, evse, "F41L0001")
    assert answer["path"] == "fallback" and "half-open" in answer["reason"] and elapsed < 0.5
    wait_for(lambda: len(peer.requests) == 3 and partner_circuits.state(key) == "open")

    # The eMSP recovers: the next trial succeeds, the circuit closes and drivers get its real answer again.
    peer.route("POST", r"/emsp/tokens/.*/authorize", lambda r: ok({"allowed": "BLOCKED", "info": {"text": "blocked"}}))
    time.sleep(1.1)
    ask(live_server.url, evse, "F41L0001")
    wait_for(lambda: partner_circuits.state(key) == "closed")
    answer, _ = ask(live_server.url, evse, "F41L0001")
    assert answer["path"] == "realtime" and answer["allowed"] == "BLOCKED" and len(peer.requests) == 5


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def conninfo() -> str:
    s = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"]
    )


def test_a_stalled_database_does_not_hold_our_own_cards(live_server, evse, settings):
    settings.CARDS_CACHE_POLL_S = 0  # every request would look for changed cards: the stalled part
    own = CardFactory(uid="04BB0002")
    card_directory.warm()
    locker = psycopg.connect(conninfo(), autocommit=False)
    try:
        with locker.cursor() as cursor:  # the database stalls: the tables authorization reads are locked
            cursor.execute("LOCK TABLE cards_card, stations_evse, cards_foreigntoken IN ACCESS EXCLUSIVE MODE")
        answer, elapsed = ask(live_server.url, evse, own.uid, timeout=10)
        assert answer["allowed"] == "ALLOWED" and answer["path"] == "local" and elapsed < 2.0
        unknown, elapsed = ask(live_server.url, evse, "0DDC0003", timeout=10)
        assert unknown["allowed"] == "NOT_ALLOWED" and "cannot be checked right now" in unknown["reason"]
        assert elapsed < 2.0
    finally:
        locker.rollback()  # the database comes back
        locker.close()
    wait_for(lambda: AuthorizationDecision.objects.filter(token_uid=own.uid, path="local").exists())


def test_a_database_that_is_down_still_decides_our_own_cards_and_logs_them_once_back(evse, client, settings):
    own = CardFactory(uid="04CC0004")
    blocked = CardFactory(uid="04CC0005", status=Card.Status.BLOCKED)
    card_directory.warm()
    for uid in (own.uid, blocked.uid):  # the cache is warm (and the backend's EVSE known) before the outage
        reply = client.post(
            "/api/v1/authorizations",
            {"uid": uid, "location_id": evse.location.ocpi_id, "evse_uid": evse.uid},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {SERVICE_TOKEN}",
        )
        assert reply.status_code == 200
    settings.CARDS_CACHE_POLL_S = 0
    wait_for(lambda: decision_log.pending == 0)
    time.sleep(0.2)  # the log's writer closes its idle connection: it will have to reconnect, and cannot
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port()  # nothing listens there: the database is down
    try:
        answers = []
        for uid in (own.uid, blocked.uid, "0DDC0006"):
            started = time.monotonic()
            reply = client.post(
                "/api/v1/authorizations",
                {"uid": uid, "location_id": evse.location.ocpi_id, "evse_uid": evse.uid},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {SERVICE_TOKEN}",
            )
            assert reply.status_code == 200, reply.content
            answers.append((reply.json(), time.monotonic() - started))
        time.sleep(0.2)
        assert decision_log.pending >= 3  # kept for later: the database cannot take them now
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    (mine, mine_s), (refused, refused_s), (unknown, unknown_s) = answers
    assert mine["allowed"] == "ALLOWED" and mine["path"] == "local" and mine_s < 1.0
    assert refused["allowed"] == "BLOCKED" and refused["path"] == "local" and refused_s < 1.0
    assert unknown["allowed"] == "NOT_ALLOWED" and "cannot be checked right now" in unknown["reason"]
    wait_for(lambda: AuthorizationDecision.objects.filter(token_uid__in=[own.uid, blocked.uid]).count() == 4)
    assert AuthorizationDecision.objects.filter(token_uid="0DDC0006", result="NOT_ALLOWED").count() == 1


# -- partner CPOs authorizing our cards over OCPI while our database stalls or is down ----------------------------

OCPI_AUTHORIZE = "/ocpi/emsp/2.2.1/tokens/{uid}/authorize?type=RFID"
EMSP = AuthorizationDecision.Direction.EMSP


@pytest.fixture
def partner_cpo(transactional_db):
    connection = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo-fault-token")
    RoamingAgreementFactory(partner=connection.party, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    return connection


def ocpi_authorize(post, uid: str) -> tuple[int, dict, float]:
    """POST the OCPI authorize of one of our cards as the partner CPO: (HTTP status, body, seconds)."""
    started = time.monotonic()
    reply = post(
        OCPI_AUTHORIZE.format(uid=uid),
        {"location_id": "NL-ALF-0001", "evse_uids": ["NL*ALF*E1"]},
        authorization_header("cpo-fault-token"),
    )
    return reply.status_code, reply.json(), time.monotonic() - started


def over_http(base_url: str):
    def post(path: str, body: dict, authorization: str):
        return requests.post(base_url + path, json=body, headers={"Authorization": authorization}, timeout=10)

    return post


def through_client(client):
    def post(path: str, body: dict, authorization: str):
        return client.post(path, body, content_type="application/json", HTTP_AUTHORIZATION=authorization)

    return post


def test_a_stalled_database_still_decides_our_cards_for_partner_cpos_over_ocpi(
    live_server, partner_cpo, settings, monkeypatch
):
    own = CardFactory(uid="04DD0007")
    blocked = CardFactory(uid="04DD0008", status=Card.Status.BLOCKED)
    card_directory.warm()
    post = over_http(live_server.url)
    # The partner's connection and agreement get cached, and both cards (the first look for changes evicts
    # cards changed in the last seconds, so they are read again).
    assert [ocpi_authorize(post, uid)[1]["data"]["allowed"] for uid in (own.uid, blocked.uid)] == [
        "ALLOWED",
        "BLOCKED",
    ]
    wait_for(lambda: decision_log.pending == 0)
    # Every request now wants the database: the change counter, the connection, the changed cards, the contact time.
    settings.CARDS_CACHE_POLL_S = 0
    settings.ROAMING_CHANGES_CHECK_S = 0
    monkeypatch.setattr(endpoint, "CONNECTION_CACHE_SECONDS", 0.0)
    endpoint._contacts_written.clear()
    locker = psycopg.connect(conninfo(), autocommit=False)
    try:
        with locker.cursor() as cursor:  # the database stalls: everything this path reads or writes is locked
            cursor.execute(
                "LOCK TABLE cards_card, cards_authorizationdecision, roaming_partnerdataversion, "
                "roaming_partnerconnection, roaming_party, roaming_roamingagreement IN ACCESS EXCLUSIVE MODE"
            )
        answers = [ocpi_authorize(post, uid) for uid in (own.uid, blocked.uid, "0DDC0009")]
    finally:
        locker.rollback()  # the database comes back
        locker.close()
    (mine, mine_body, mine_s), (refused, refused_body, refused_s), (unknown, unknown_body, unknown_s) = answers
    assert mine == 200 and mine_body["status_code"] == 1000 and mine_body["data"]["allowed"] == "ALLOWED", mine_body
    assert refused == 200 and refused_body["data"]["allowed"] == "BLOCKED"
    assert mine_s < 2.0 and refused_s < 2.0
    # Not in the warm cache and the database cannot say: a clear "try again", never a 500 nor a guess.
    assert unknown == 503 and unknown_body["status_code"] == 3000, unknown_body
    assert "cannot be checked right now" in unknown_body["status_message"] and unknown_s < 2.0
    wait_for(
        lambda: AuthorizationDecision.objects.filter(direction=EMSP, token_uid__in=[own.uid, blocked.uid]).count()
        == 4
    )
    assert AuthorizationDecision.objects.filter(token_uid="0DDC0009", result="NOT_ALLOWED", path="unknown").exists()


def test_a_database_that_is_down_still_decides_our_cards_for_partner_cpos_over_ocpi(
    client, partner_cpo, settings, monkeypatch
):
    own = CardFactory(uid="04EE000A")
    card_directory.warm()
    post = through_client(client)
    status, body, _ = ocpi_authorize(post, own.uid)
    assert status == 200 and body["data"]["allowed"] == "ALLOWED"
    settings.CARDS_CACHE_POLL_S = 0
    settings.ROAMING_CHANGES_CHECK_S = 0
    monkeypatch.setattr(endpoint, "CONNECTION_CACHE_SECONDS", 0.0)
    endpoint._contacts_written.clear()
    wait_for(lambda: decision_log.pending == 0)
    time.sleep(0.2)  # the log's writer closes its idle connection: it will have to reconnect, and cannot
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port()  # nothing listens there: the database is down
    try:
        answers = [ocpi_authorize(post, uid) for uid in (own.uid, "0DDC000B")]
        time.sleep(0.2)
        assert decision_log.pending >= 2  # kept for later: the database cannot take them now
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    (mine, mine_body, mine_s), (unknown, unknown_body, unknown_s) = answers
    assert mine == 200 and mine_body["data"]["allowed"] == "ALLOWED" and mine_s < 2.0, mine_body
    assert unknown == 503 and unknown_body["status_code"] == 3000 and unknown_s < 2.0, unknown_body
    wait_for(lambda: AuthorizationDecision.objects.filter(direction=EMSP, token_uid=own.uid).count() == 2)
    assert AuthorizationDecision.objects.filter(token_uid="0DDC000B", result="NOT_ALLOWED").count() == 1


def test_a_partner_push_while_the_database_is_down_is_told_to_try_again_not_handed_a_500(
    client, partner_cpo, monkeypatch
):
    """Any OCPI call the database cannot serve is a 503 with OCPI 3000 and Retry-After; nothing is stored."""
    monkeypatch.setattr(endpoint, "CONNECTION_CACHE_SECONDS", 0.0)
    status, _, _ = ocpi_authorize(through_client(client), "0DDC000C")  # the connection is cached (then expires)
    assert status == 404
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port()
    try:
        reply = client.get("/ocpi/emsp/2.2.1/tokens", HTTP_AUTHORIZATION=authorization_header("cpo-fault-token"))
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert reply.status_code == 503 and reply["Retry-After"] == "30"
    assert reply.json()["status_code"] == 3000 and "try again later" in reply.json()["status_message"]
    wait_for(lambda: AuthorizationDecision.objects.filter(token_uid="0DDC000C", path="unknown").exists())
