"""Issue 11, replayed against a production-like server: gunicorn from `mobilityplus/gunicorn.conf.py` with three
workers, DEBUG off, SECRET_KEY and OCPI_TOKEN_ENCRYPTION_KEY set, private-network URLs not allowed, on the
test PostgreSQL database and a real Redis.

Each test plays the attack that opened the hole, over real HTTP, and checks what the attacker and everyone
else see afterwards. The finer rules are tested on pytest's live server in the matching test_security_* module.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone

from cards.models import ForeignToken
from charging.models import CDR, Session
from roaming import services
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi import throttle
from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from stations import feeds
from stations.models import EVSE, Location
from stations.selectors import bump_map_cache_version
from tests.conftest import TEST_REDIS_URL
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    UserFactory,
)
from tests.feeds_fixtures import LocationFeed, cpo_connection, example, location, stamp
from tests.ocpi_input_world import PARTNER_TOKEN, World, build_world, snapshot
from tests.served_platform import PRODUCTION_KEYS, free_port
from tests.test_ocpi_bad_input import CDRS_URL, LOCATION_URL, SESSION_URL, cdr, refused, session
from tests.test_ocpi_bad_input import location as partner_location
from tests.test_security_hub import assert_refused, client_info, forged_station, routed
from tests.test_security_outgoing_urls import MetadataTrap
from tests.test_security_throttling import session_from

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
BACKEND_TOKEN = "backend-token-for-the-gunicorn-attacks"  # noqa: S105
ATTACKER = "127.0.0.3"  # the flood comes from its own address, so the rest of the test keeps 127.0.0.1


@dataclass
class Server:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def production(transactional_db, tmp_path) -> Iterator[Server]:
    """gunicorn as `make serve` runs it, with the environment a production host gives it (and nothing else)."""
    database = db_connection.settings_dict
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        **PRODUCTION_KEYS,
        "DATABASE_URL": f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": TEST_REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on 127.0.0.1, as behind the TLS proxy
        "CARDS_BACKEND_API_TOKEN": BACKEND_TOKEN,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "3",
        "LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"gunicorn exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"gunicorn did not start: {log_path.read_text()[-3000:]}"
            try:
                requests.get(url + "/healthz", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.2)
        yield Server(url, log_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
        for address in ("127.0.0.1", ATTACKER):
            throttle.reset(address)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def send(server: Server, method: str, path: str, body=None, *, token: str = PARTNER_TOKEN) -> requests.Response:
    """A partner's OCPI call with a JSON body (the bad-input world's partner)."""
    data = json.dumps(body) if body is not None else None
    return requests.request(method, server.url + path, data=data, headers=World.headers(token), timeout=60)


def call(server: Server, method: str, path: str, body=None, token: str = "hub-token", **headers: str):
    return requests.request(
        method,
        server.url + path,
        json=body,
        headers={"Authorization": authorization_header(token), **headers},
        timeout=20,
    )


@pytest.fixture
def hub():
    """DE*HBJ, a hub with one client staff confirmed (FR*TOT, agreement through the hub)."""
    hub = PartnerConnectionFactory(
        party=PartyFactory(country_code="DE", party_id="HBJ", role=Party.Role.HUB, name="Hubject"),
        tokens__from_them="hub-token",
    )
    client = PartyFactory(country_code="FR", party_id="TOT", role=Party.Role.CPO)
    PartnerConnectionFactory(party=client, via_hub=hub)
    RoamingAgreementFactory(partner=client, hub=hub.party)
    return hub


@pytest.fixture
def our_station() -> Location:
    station = MapLocationFactory(party=own_party(), ocpi_id="BE-BRU-1", city="Brussel", name="Grand-Place")
    evse = EVSEFactory(location=station, uid="BE*MBP*E0001", status="AVAILABLE")
    ConnectorFactory(evse=evse)
    return station


def map_stations(server: Server) -> list[str]:
    """The names of the stations the public map API shows anyone (the map's cache made fresh first)."""
    bump_map_cache_version()
    answer = requests.get(server.url + "/api/v1/stations", params={"bbox": "-179,-80,179,80", "zoom": 17}, timeout=20)
    assert answer.status_code == 200, answer.text[:300]
    features = answer.json()["features"]
    assert not any(feature["properties"].get("cluster") for feature in features)
    return sorted(feature["properties"]["name"] for feature in features)


# --- 1. Hub takeover -------------------------------------------------------------------------------------------


def test_a_hub_cannot_take_over_our_party_nor_rewrite_our_station(production, hub, our_station):
    viewer = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="ALL"), tokens__from_them="p")
    RoamingAgreementFactory(partner=viewer.party)

    for country, party in (("BE", "MBP"), ("be", "mbp")):
        assert_refused(
            call(production, "PUT", f"/ocpi/2.2.1/hubclientinfo/{country}/{party}", client_info(country, party))
        )
    assert not PartnerConnection.objects.filter(party=own_party()).exists()

    url = "/ocpi/emsp/2.2.1/locations/BE/MBP/BE-BRU-1"
    assert_refused(call(production, "PUT", url, forged_station(), **routed("BE", "MBP")))
    assert_refused(call(production, "PUT", url, forged_station(), **routed("bE", "mbp ")))
    assert_refused(call(production, "PUT", url, forged_station()))  # the hub as itself
    removed = {"status": "REMOVED", "last_updated": stamp()}
    assert_refused(call(production, "PATCH", url + "/BE*MBP*E0001", removed, **routed("BE", "MBP")))

    our_station.refresh_from_db()
    assert our_station.city == "Brussel"
    assert list(EVSE.objects.filter(location=our_station).values_list("uid", "status")) == [
        ("BE*MBP*E0001", "AVAILABLE")
    ]
    feed = call(production, "GET", "/ocpi/cpo/2.2.1/locations", token="p").json()["data"]
    assert [(item["city"], [(e["uid"], e["status"]) for e in item["evses"]]) for item in feed] == [
        ("Brussel", [("BE*MBP*E0001", "AVAILABLE")])
    ]
    assert map_stations(production) == ["Grand-Place"]


def test_a_hub_cannot_push_a_token_for_an_emsp_it_does_not_serve(production, hub, our_station):
    emsp = PartyFactory(country_code="NL", party_id="EMS", role=Party.Role.EMSP)
    RoamingAgreementFactory(partner=emsp, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    token = example("token_example_2_full_rfid.json") | {"country_code": "NL", "party_id": "EMS", "whitelist": "ALWAYS"}
    url = f"/ocpi/cpo/2.2.1/tokens/NL/EMS/{token['uid']}"

    # No connection row: a ClientInfo records the party but gives the hub no rights for it.
    assert (
        call(production, "PUT", "/ocpi/2.2.1/hubclientinfo/NL/EMS", client_info("NL", "EMS", "EMSP")).status_code == 201
    )
    assert_refused(call(production, "PUT", url, token, **routed("NL", "EMS")))
    assert_refused(call(production, "PUT", url, token))  # as itself, under another party's URL
    # Its confirmed client FR*TOT is a CPO: it may not push a token under NL*EMS either.
    assert_refused(call(production, "PUT", url, token, **routed("FR", "TOT")))
    assert not ForeignToken.objects.exists()

    body = {"uid": token["uid"], "location_id": "BE-BRU-1", "evse_uid": "BE*MBP*E0001"}
    answer = requests.post(
        production.url + "/api/v1/authorizations",
        json=body,
        headers={"Authorization": f"Bearer {BACKEND_TOKEN}"},
        timeout=20,
    )
    assert answer.status_code == 200 and answer.json()["allowed"] == "NOT_ALLOWED", answer.text


def test_sessions_cdrs_and_commands_under_our_party_are_refused(production, hub, our_station):
    card = CardFactory()
    for headers in ({}, routed("BE", "MBP"), routed("FR", "TOT")):
        body = example("session_example_1_simple_start.json") | {"country_code": "BE", "party_id": "MBP"}
        assert_refused(call(production, "PUT", "/ocpi/emsp/2.2.1/sessions/BE/MBP/101", body, **headers))
        body = example("cdr_example.json") | {"country_code": "BE", "party_id": "MBP"}
        assert_refused(call(production, "POST", "/ocpi/emsp/2.2.1/cdrs", body, **headers))
    start = {
        "response_url": "https://hub.example/commands/1",
        "token": example("token_example_2_full_rfid.json") | {"country_code": "BE", "party_id": "MBP"},
        "location_id": "BE-BRU-1",
        "evse_uid": "BE*MBP*E0001",
    }
    assert_refused(call(production, "POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", start, **routed("BE", "MBP")))
    assert_refused(call(production, "POST", f"/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize", **routed("BE", "MBP")))
    assert not Session.objects.exists() and not CDR.objects.exists()


ODD_VALUES = [b"\xff\xfe", "\u00e9".encode(), b"B E", b" ", b"BE\tX", b"A" * 4000, b"%00", b"\\x00", b"MBP\xc0\x80"]


def raw_get(server: Server, path: str, headers: dict[str, bytes]) -> tuple[int, bytes]:
    """A GET with header bytes sent as given (http.client, which `requests` would refuse or re-encode)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    connection.putrequest("GET", path, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, body


def test_odd_routing_and_token_headers_are_a_clean_4xx(production, hub):
    """Authentication reads OCPI-from-* and the token before any input check: whatever they hold, never a 500.

    (The fixture also fails the test on any traceback in the server's log.)
    """
    token = authorization_header("hub-token").encode()
    for value in ODD_VALUES:
        routing = {"Authorization": token, "OCPI-from-country-code": value, "OCPI-from-party-id": value}
        for path in ("/ocpi/emsp/2.2.1/locations/FR/TOT/X1", "/ocpi/cpo/2.2.1/locations"):
            status, body = raw_get(production, path, routing)
            if value.strip() == b"":  # a blank header is no header: the hub speaks as itself
                assert status in (200, 403, 404), (value, status, body[:300])
                continue
            assert 400 <= status < 500, (value, status, body[:300])
            if body.startswith(b"{"):  # gunicorn's own 400 for a malformed header is HTML
                assert 2000 <= json.loads(body)["status_code"] < 3000
        # The same bytes as a token, raw and Base64-encoded with a NUL inside: an unknown token, 401.
        for authorization in (b"Token " + value, b"Token " + base64.b64encode(b"hub-token\x00" + value)):
            status, body = raw_get(production, "/ocpi/cpo/2.2.1/locations", {"Authorization": authorization})
            assert status in (400, 401, 431), (value, status, body[:300])
            if body.startswith(b"{"):
                assert json.loads(body)["status_code"] == 2000
    # Odd ids in the URL, with a valid token: 4xx in the envelope.
    for path in (
        "/ocpi/2.2.1/hubclientinfo/%C3%A9/%FF",
        "/ocpi/emsp/2.2.1/locations/FR/TOT/%00",
        "/ocpi/emsp/2.2.1/locations/%E9/TOT/X1",
        "/ocpi/cpo/2.2.1/tokens/FR/TOT/%C0%80",
    ):
        status, body = raw_get(production, path, {"Authorization": token, **routed_bytes("FR", "TOT")})
        assert 400 <= status < 500 and 2000 <= json.loads(body)["status_code"] < 3000, (path, status, body[:300])
    # A NUL byte in a header is refused by gunicorn before Django sees it.
    raw = socket_request(
        production,
        b"GET /ocpi/cpo/2.2.1/locations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Token aHViLXRva2Vu\r\nOCPI-from-party-id: M\x00BP\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]


def routed_bytes(country_code: str, party_id: str) -> dict[str, bytes]:
    return {name: value.encode() for name, value in routed(country_code, party_id).items()}


def socket_request(server: Server, request: bytes) -> bytes:
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def test_a_hub_feed_carries_only_its_confirmed_clients_stations(production, ocpi_peer):
    """A hub's location feed may not bring stations of a party we reach directly, nor ours, nor unconfirmed ones."""
    hub = cpo_connection(ocpi_peer, country_code="DE", party_id="HBJ", role="HUB")
    direct = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO))
    RoamingAgreementFactory(partner=direct.party)
    genuine = LocationFactory(party=direct.party, ocpi_id="ALL-1", name="Real Allego", city="Arnhem", source=direct)
    EVSEFactory(location=genuine, uid="NL*ALL*E1", status="AVAILABLE")
    confirmed = PartyFactory(country_code="FR", party_id="TOT", role=Party.Role.CPO)
    PartnerConnectionFactory(party=confirmed, via_hub=hub)
    RoamingAgreementFactory(partner=confirmed, hub=hub.party)
    unconfirmed = PartyFactory(country_code="DE", party_id="ION", role=Party.Role.CPO)
    PartnerConnectionFactory(party=unconfirmed, via_hub=hub)
    RoamingAgreementFactory(partner=unconfirmed)  # a direct agreement: no confirmation of the hub's claim
    me = own_party()
    LocationFactory(party=me, ocpi_id="BE-BRU-1", name="Grand-Place", city="Brussel")

    forged = location("ALL-1", country_code="NL", party_id="ALL", statuses=("OUTOFORDER",), updated=stamp())
    forged["name"], forged["city"] = "Forged", "Nowhere"
    ours = location("BE-BRU-1", country_code="BE", party_id="MBP", updated=stamp())
    ours["name"] = "Forged"
    injected = location("ION-1", country_code="DE", party_id="ION", updated=stamp())
    injected["name"] = "Injected"
    served = location("TOT-1", country_code="FR", party_id="TOT", updated=stamp())
    served["name"] = "Total Paris"
    LocationFeed(ocpi_peer, [forged, ours, injected, served])

    run = feeds.pull_locations(hub.pk, full=True)

    assert (run.status, run.created, run.skipped) == ("succeeded", 1, 3), run.error
    genuine.refresh_from_db()
    assert (genuine.name, genuine.city, genuine.source_id) == ("Real Allego", "Arnhem", direct.pk)
    assert not Location.objects.filter(party=unconfirmed).exists()
    assert Location.objects.get(party=me).name == "Grand-Place"
    names = map_stations(production)
    assert "Forged" not in names and "Injected" not in names and "Total Paris" in names


# --- 2. SSRF -----------------------------------------------------------------------------------------------------


def test_a_registration_pointing_at_an_internal_address_reaches_nothing(production):
    trap = MetadataTrap()
    try:
        party = PartyFactory(country_code="NL", party_id="PEE", role=Party.Role.CPO)
        token_a = services.issue_registration_token(party)
        for url in (
            trap.url("/ocpi/versions"),
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/ocpi/versions",
        ):
            body = {
                "token": "their-token-B",
                "url": url,
                "roles": [{"role": "CPO", "party_id": "PEE", "country_code": "NL", "business_details": {"name": "P"}}],
            }
            answer = call(production, "POST", "/ocpi/2.2.1/credentials", body, token=token_a)
            assert answer.status_code == 400 and answer.json()["status_code"] == 2001, answer.text
            assert answer.json()["status_message"].startswith("url: ")
        assert trap.requests == []
        assert PartnerConnection.objects.get(party=party).status == PartnerConnection.Status.PLANNED
    finally:
        trap.server.shutdown()


# --- 4. Throttling -----------------------------------------------------------------------------------------------


def test_1500_random_tokens_across_three_workers_get_429_and_a_partner_elsewhere_is_served(production):
    partner = PartnerConnectionFactory(tokens__from_them="partner-token")
    RoamingAgreementFactory(partner=partner.party)
    card = CardFactory()
    statuses: Counter = Counter()
    refused_answers = []
    with session_from(ATTACKER) as attacker:
        for _ in range(1500):
            answer = attacker.post(
                f"{production.url}/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize",
                headers={"Authorization": authorization_header(secrets.token_urlsafe(24))},
                timeout=20,
            )
            statuses[answer.status_code] += 1
            if answer.status_code == 429 and len(refused_answers) < 3:
                refused_answers.append(answer)
    # Each worker may let its first failures through before it reads the shared block: a handful, not 1,500.
    assert statuses[429] >= 1500 - 3 * 20 and set(statuses) == {401, 429}, statuses
    for answer in refused_answers:
        assert 0 < int(answer.headers["Retry-After"]) <= 60
        assert (
            answer.json()["status_code"] == 2000
            and "Too many failed authentications" in answer.json()["status_message"]
        )
    # The right token from the blocked address is refused too (no oracle); from elsewhere it is served.
    with session_from(ATTACKER) as attacker:
        blocked = attacker.post(
            f"{production.url}/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize",
            headers={"Authorization": authorization_header("partner-token")},
            timeout=20,
        )
    assert blocked.status_code == 429
    served = call(production, "POST", f"/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize", token="partner-token")
    assert served.status_code == 200 and served.json()["data"]["allowed"] == "ALLOWED"

    with session_from(ATTACKER) as attacker:
        bearers = [
            attacker.post(
                production.url + "/api/v1/authorizations",
                json={"uid": card.uid, "location_id": "X", "evse_uid": "Y"},
                headers={"Authorization": f"Bearer {secrets.token_urlsafe(16)}"},
                timeout=20,
            )
            for _ in range(60)
        ]
    assert Counter(answer.status_code for answer in bearers)[429] >= 60 - 3 * 20
    assert int(bearers[-1].headers["Retry-After"]) > 0


def log_in(server: Server, username: str, password: str) -> tuple[requests.Response, dict[str, str]]:
    """The driver login form, as a browser behind our TLS proxy sends it.

    Production cookies are `Secure`, which `requests` keeps from plain HTTP: they are carried by hand.
    """
    page = requests.get(server.url + "/accounts/login/", timeout=20)
    cookies = {"csrftoken": page.cookies["csrftoken"]}
    answer = requests.post(
        server.url + "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": cookies["csrftoken"]},
        headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        allow_redirects=False,
        timeout=20,
    )
    return answer, {**cookies, **answer.cookies.get_dict()}


def test_30_wrong_driver_passwords_lock_the_account_even_for_the_right_one(production):
    UserFactory(username="driver@example.com", password="right-password-1")
    answer, cookies = log_in(production, "driver@example.com", "right-password-1")
    assert answer.status_code == 302 and "sessionid" in cookies  # the form works for the right password
    for attempt in range(30):
        answer, _ = log_in(production, "driver@example.com", f"wrong-{attempt}")
        assert answer.status_code in (200, 429)
    answer, cookies = log_in(production, "driver@example.com", "right-password-1")
    assert answer.status_code == 429 and "Account temporarily locked" in answer.text
    assert "sessionid" not in cookies


# --- 5. Content-Security-Policy -----------------------------------------------------------------------------------


def test_every_page_carries_the_content_security_policy(production, our_station):
    UserFactory(username="d@example.com", password="pw-123456789")
    answer, cookies = log_in(production, "d@example.com", "pw-123456789")
    assert answer.status_code == 302
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    pages = ("/", "/map/", "/accounts/login/", "/admin/login/", "/roaming-partners/", "/charging/", "/nowhere")
    for path in pages:
        answer = requests.get(production.url + path, headers={"Cookie": cookie}, allow_redirects=False, timeout=20)
        assert answer.status_code < 500, (path, answer.status_code)
        policy = answer.headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy, (path, policy)
        assert "object-src 'none'" in policy and "frame-ancestors 'none'" in policy, path


# --- 6. Suspension reaches every worker within a second -----------------------------------------------------------


def test_a_staff_suspension_reaches_every_worker_within_a_second(production):
    partner = PartnerConnectionFactory(tokens__from_them="partner-token")
    RoamingAgreementFactory(partner=partner.party)
    card = CardFactory()

    def status() -> int:
        return call(
            production, "POST", f"/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize", token="partner-token"
        ).status_code

    assert [status() for _ in range(12)] == [200] * 12  # every worker cached the connection
    services.suspend_connection(partner)
    started = time.monotonic()
    last_other = 0.0
    while time.monotonic() - started < 1.5:
        if status() != 403:
            last_other = time.monotonic() - started
        time.sleep(0.02)
    assert last_other < 1.0
    PartnerConnection.objects.filter(pk=partner.pk).update(status=PartnerConnection.Status.CONNECTED)
    time.sleep(1.0)
    assert [status() for _ in range(9)] == [200] * 9


# --- 8. Valid-looking input that corrupted stored data -----------------------------------------------------------


def test_valid_looking_input_cannot_corrupt_what_is_stored(production):
    build_world()
    assert send(production, "PUT", SESSION_URL, session(status="ACTIVE")).status_code == 201
    assert send(production, "PUT", LOCATION_URL, partner_location()).status_code == 201
    before = snapshot()

    refused(
        send(production, "PATCH", SESSION_URL, {"status": "ACTIVE", "last_updated": "9999-12-31T23:59:59Z"}),
        "last_updated",
    )
    patch = {"party_id": "XYZ", "last_updated": format_datetime(timezone.now())}
    refused(send(production, "PATCH", LOCATION_URL, patch), "party_id")
    refused(send(production, "POST", CDRS_URL, cdr(total_energy=-15.342)), "total_energy")
    refused(send(production, "POST", CDRS_URL, cdr(total_cost={"excl_vat": -4.0})), "total_cost.excl_vat")
    body = cdr()
    body["cdr_location"]["coordinates"]["latitude"] = "NaN"
    refused(send(production, "POST", CDRS_URL, body), "cdr_location.coordinates.latitude")
    body = cdr()
    body["charging_periods"][0]["dimensions"][0]["volume"] = 1e300
    refused(send(production, "POST", CDRS_URL, body), "charging_periods[0].dimensions[0].volume")
    assert snapshot() == before

    # The real COMPLETED is applied, and the owner's correct PUT is accepted.
    now = timezone.now()
    completed = {"status": "COMPLETED", "end_date_time": format_datetime(now), "last_updated": format_datetime(now)}
    assert send(production, "PATCH", SESSION_URL, completed).json()["status_code"] == 1000
    assert Session.objects.get().status == "COMPLETED"
    replaced = send(production, "PUT", LOCATION_URL, partner_location(name="Gent Zuid 2"))
    assert replaced.status_code == 200 and replaced.json()["status_code"] == 1000
    assert Location.objects.get(ocpi_id="LOC1").raw["party_id"] == "BEC"
