"""Connecting with real partners: every partner that follows OCPI 2.2.1, over real HTTP.

The partner is the ocpi_peer server on 127.0.0.1 (tests/test_credentials_handshake.py's PeerParty), here
serving the spec's own examples: version details that list `credentials` as RECEIVER
(version_details_example2.json) and Credentials of one platform hosting three CPOs (credentials_example4.json).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection

from roaming import services
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient
from roaming.ocpi.credentials import authorization_header, decrypt_token, hash_token
from tests.conftest import ocpi_call
from tests.factories import (
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    UserFactory,
)
from tests.ocpi_peer import dropped, ok
from tests.test_credentials_handshake import PeerParty

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path("/work/shared/ocpi/examples")
ROOT = Path(__file__).resolve().parent.parent


def call(ours: str, token: str, method: str = "GET", path: str = "/ocpi/versions", body=None) -> tuple[int, dict]:
    """A partner's call to us through the test kit; returns (HTTP status, envelope)."""
    response = ocpi_call(ours, method, path, body, token=token)
    return response.status_code, response.envelope


def spec_details(peer) -> dict:
    """version_details_example2.json, its URLs moved to the peer: credentials is listed as RECEIVER."""
    details = json.loads((EXAMPLES / "version_details_example2.json").read_text())
    details["version"] = "2.2.1"
    for endpoint in details["endpoints"]:
        endpoint["url"] = peer.peer.url(endpoint["url"].removeprefix("https://example.com").replace("/2.2/", "/2.2.1/"))
    return details


class SpecPeer(PeerParty):
    """A partner whose version details are the spec's example 2 (credentials RECEIVER) and whose
    Credentials can be the spec's example 4 (one platform, three CPOs)."""

    def __init__(self, peer, *, platform: bool = False, **party):
        super().__init__(peer, **party)
        self.platform = platform
        peer.route("GET", r"/ocpi/2\.2\.1", self._spec_details)
        for method in ("POST", "PUT"):
            peer.route(method, r"/ocpi/2\.2\.1/credentials", self._register)
        peer.route("DELETE", r"/ocpi/2\.2\.1/credentials", self._unregister)

    def _spec_details(self, request):
        return ok(spec_details(self)) if self._authorized(request) else self._unauthorized()

    def credentials(self, token: str) -> dict:
        if not self.platform:
            return super().credentials(token)
        body = json.loads((EXAMPLES / "credentials_example4.json").read_text())
        return {**body, "token": token, "url": self.versions_url}


@pytest.fixture
def ours(live_server, settings):
    settings.OCPI_BASE_URL = live_server.url
    return live_server.url


def connect(peer, **party) -> PartnerConnection:
    peer.accepted = {"their-token-A"}
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code=peer.country_code, party_id=peer.party_id, role=peer.role, **party),
        status=PartnerConnection.Status.PLANNED,
    )
    return services.connect_to_partner(connection.pk, peer.versions_url, "their-token-A")


# --- Credentials role: any ---------------------------------------------------------------------------------------


def test_connect_rotate_and_unregister_with_credentials_listed_as_receiver(ours, ocpi_peer):
    peer = SpecPeer(ocpi_peer)

    connection = connect(peer)

    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    assert connection.last_error == "" and peer.callbacks == [200, 200]
    assert connection.endpoint_url("credentials", "RECEIVER") == ocpi_peer.url("/ocpi/2.2.1/credentials")
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C1"

    connection = services.rotate_tokens_at_partner(connection.pk)
    assert connection.last_error == "", connection.last_error
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C2"
    assert ("PUT", "/ocpi/2.2.1/credentials") in [(r.method, r.path) for r in ocpi_peer.requests]

    connection = services.unregister_at_partner(connection.pk)
    assert connection.status == PartnerConnection.Status.DISCONNECTED, connection.last_error
    assert ocpi_peer.requests[-1].method == "DELETE" and peer.accepted == set()


def test_partner_with_credentials_receiver_registers_with_us(ours, ocpi_peer):
    peer = SpecPeer(ocpi_peer)
    peer.accepted = {"peer-token-B"}
    party = PartyFactory(country_code="NL", party_id="PEE")
    token_a = services.issue_registration_token(party)

    status, body = call(ours, token_a, "POST", "/ocpi/2.2.1/credentials", peer.credentials("peer-token-B"))

    assert (status, body["status_code"]) == (200, 1000), body
    connection = PartnerConnection.objects.get(party=party)
    assert connection.status == PartnerConnection.Status.CONNECTED
    assert connection.credentials_url == ocpi_peer.url("/ocpi/2.2.1/credentials")
    assert call(ours, body["data"]["token"])[0] == 200


def test_a_partner_without_any_credentials_endpoint_is_still_3003(ours, ocpi_peer):
    peer = SpecPeer(ocpi_peer)
    details = spec_details(peer)
    details["endpoints"] = [e for e in details["endpoints"] if e["identifier"] != "credentials"]
    ocpi_peer.route("GET", r"/ocpi/2\.2\.1", lambda r: ok(details))

    connection = connect(peer)

    assert connection.status == PartnerConnection.Status.PLANNED
    assert connection.last_error == (
        "Handshake failed (OCPI 3003) at version_details: missing expected endpoints: credentials"
    )


# --- Never half-registered ---------------------------------------------------------------------------------------


def test_an_unusable_answer_with_their_token_keeps_it_and_staff_finish_with_re_read(ours, ocpi_peer, client):
    peer = SpecPeer(ocpi_peer)
    answer_post = peer._register

    def register_then_answer_without_roles(request):
        reply = answer_post(request)  # they registered us, consumed token A and issued C1
        return ok({"token": reply.body["data"]["token"], "url": "not a url", "roles": []})

    ocpi_peer.route("POST", r"/ocpi/2\.2\.1/credentials", register_then_answer_without_roles)

    connection = connect(peer)

    # Their token and the endpoints read with token A are kept; the connection says what is left to do.
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C1"
    assert connection.token_from_them_hash == hash_token(peer.token_for_us)
    assert connection.credentials_url == ocpi_peer.url("/ocpi/2.2.1/credentials")
    assert connection.needs_attention.startswith("Registered at the partner, but their credentials are invalid: ")
    assert "url" in connection.needs_attention and "Re-read their endpoints" in connection.needs_attention
    assert connection.last_error == connection.needs_attention
    # Both ways work: they call us with token B, we call them with token C1 (a retry would get 401).
    assert call(ours, peer.token_for_us)[0] == 200
    assert services.check_connection(connection).ok

    # Staff run "Re-read their endpoints" from the partners list: no token changes, attention cleared.
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.post(
        "/admin/roaming/party/",
        {"action": "reread_endpoints", "_selected_action": [connection.party_id]},
        follow=True,
    )
    expected = "re-reading their versions and endpoints with the token we hold; tokens stay as they are"
    assert expected in page.content.decode()
    connection.refresh_from_db()
    assert connection.needs_attention == "" and connection.last_error == ""
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C1"
    assert connection.handshake_log[-1]["step"] == "endpoints"


def test_re_read_that_fails_keeps_the_attention_and_rotate_finishes_it(ours, ocpi_peer):
    peer = SpecPeer(ocpi_peer)
    answer_post = peer._register
    ocpi_peer.route(
        "POST",
        r"/ocpi/2\.2\.1/credentials",
        lambda r: ok({"token": answer_post(r).body["data"]["token"], "roles": "none"}),
    )
    connection = connect(peer)
    assert connection.needs_attention
    ocpi_peer.route("GET", r"/ocpi/versions", lambda r: dropped())

    connection = services.reread_partner_endpoints(connection.pk)

    assert connection.needs_attention.startswith("Re-reading their endpoints failed")
    assert connection.last_error.startswith("Re-reading their endpoints failed (OCPI 3001) at versions")
    ocpi_peer.route("GET", r"/ocpi/versions", peer._versions)
    connection = services.rotate_tokens_at_partner(connection.pk)
    assert connection.needs_attention == "" and connection.last_error == ""
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C2"


# --- A platform with several parties -----------------------------------------------------------------------------


def test_a_platform_hosting_three_cpos_speaks_for_each_with_its_own_agreement(ours, ocpi_peer, client):
    peer = SpecPeer(ocpi_peer, platform=True, party_id="EXO")
    connection = connect(peer)
    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    exo = connection.party
    pfc, cgp = Party.objects.get(party_id="PFC"), Party.objects.get(party_id="CGP")
    assert (exo.name, pfc.name, cgp.name) == ("Excellent Operator", "Plug Flex Charging", "Charging Green Power")
    assert pfc.reached_through == connection and cgp.reached_through == connection and pfc.role == "CPO"
    token = peer.token_for_us
    RoamingAgreementFactory(partner=exo)
    RoamingAgreementFactory(partner=pfc)
    tokens = "/ocpi/emsp/2.2.1/tokens"

    def as_party(party_id: str) -> int:
        response = requests.get(
            ours + tokens,
            headers={
                "Authorization": authorization_header(token),
                "OCPI-from-country-code": "NL",
                "OCPI-from-party-id": party_id,
            },
            timeout=10,
        )
        return response.status_code

    assert as_party("EXO") == 200
    assert as_party("PFC") == 200
    assert as_party("CGP") == 403  # on the platform, but no agreement of its own
    assert as_party("ZZZ") == 403  # not on the platform
    from django.conf import settings

    ours_id = (settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID)
    response = requests.get(
        ours + tokens,
        headers={
            "Authorization": authorization_header(token),
            "OCPI-from-country-code": ours_id[0],
            "OCPI-from-party-id": ours_id[1],
        },
        timeout=10,
    )
    assert response.status_code == 403

    # Without routing headers, an object's own party in the URL names who speaks.
    station = LocationFactory(party=pfc, ocpi_id="PFC-1")
    status, body = call(ours, token, path="/ocpi/emsp/2.2.1/locations/NL/PFC/PFC-1")
    assert status == 200 and body["data"]["id"] == station.ocpi_id
    LocationFactory(party=cgp, ocpi_id="CGP-1")
    assert call(ours, token, path="/ocpi/emsp/2.2.1/locations/NL/CGP/CGP-1")[0] == 403

    # Staff see each party and how it is reached.
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    listing = client.get("/admin/roaming/party/").content.decode()
    assert listing.count("Connected through Excellent Operator&#x27;s platform") == 2
    page = client.get(f"/admin/roaming/party/{exo.pk}/change/").content.decode()
    assert "NL*CGP (Charging Green Power; no agreement in force: its calls get HTTP 403)" in page
    assert "NL*PFC (Plug Flex Charging; agreement in force)" in page


def test_a_platform_does_not_take_over_a_party_we_reach_another_way(ours, ocpi_peer):
    known = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="PFC", name="Our PFC"))
    RoamingAgreementFactory(partner=known.party)
    peer = SpecPeer(ocpi_peer, platform=True, party_id="EXO")

    connection = connect(peer)
    RoamingAgreementFactory(partner=connection.party)

    known.party.refresh_from_db()
    assert known.party.reached_through is None and known.party.name == "Our PFC"
    assert "NL*PFC is already reached another way: not attached" in [s["detail"] for s in connection.handshake_log]
    status, body = call(ours, peer.token_for_us, path="/ocpi/emsp/2.2.1/locations/NL/PFC/X")
    assert status == 403 and "You may only touch objects of NL*EXO" in body["status_message"]
    assert list(connection.platform_parties.values_list("party_id", flat=True)) == ["CGP"]


def test_a_hub_listing_other_roles_gets_no_platform_parties(ours, ocpi_peer):
    """Hub clients come from hubclientinfo and staff's confirmation, never from the hub's credentials."""
    peer = SpecPeer(ocpi_peer, country_code="DE", party_id="HBJ", role="HUB")
    hub_roles = peer.credentials

    def with_a_client(token: str) -> dict:
        body = hub_roles(token)
        client = {**body["roles"][0], "role": "CPO", "country_code": "NL", "party_id": "HCL"}
        return {**body, "roles": [*body["roles"], client]}

    peer.credentials = with_a_client

    connection = connect(peer)

    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    assert connection.party.role == Party.Role.HUB
    assert not Party.objects.filter(party_id="HCL").exists()


# --- Rotation whose answer is lost -------------------------------------------------------------------------------


def connected(ocpi_peer) -> tuple[SpecPeer, PartnerConnection]:
    peer = SpecPeer(ocpi_peer)
    connection = connect(peer)
    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    RoamingAgreementFactory(partner=connection.party)
    return peer, connection


def test_rotation_timed_out_after_they_switched_accepts_the_new_token_and_retires_the_old(ours, ocpi_peer, settings):
    peer, connection = connected(ocpi_peer)
    old_token = peer.token_for_us
    answer_put = peer._register
    settings.OCPI_HTTP_TIMEOUT_S = 1.0

    def switch_then_too_slow(request):
        reply = answer_put(request)  # they call us back with the new token and switch to it
        time.sleep(1.5)
        return reply

    ocpi_peer.route("PUT", r"/ocpi/2\.2\.1/credentials", switch_then_too_slow)

    connection = services.rotate_tokens_at_partner(connection.pk)

    new_token = peer.token_for_us
    assert new_token != old_token and peer.callbacks[-2:] == [200, 200]
    assert [r.method for r in ocpi_peer.requests].count("PUT") == 1  # never sent again
    assert connection.needs_attention.startswith("Token rotation pending")
    assert connection.last_error.startswith("Token rotation answer lost (OCPI 3001) at register: transport")
    assert connection.previous_token_from_them_hash == hash_token(old_token)
    # They call with the new token: accepted, and that retires the old one.
    assert call(ours, new_token, path="/ocpi/cpo/2.2.1/locations")[0] == 200
    assert call(ours, old_token, path="/ocpi/cpo/2.2.1/locations")[0] == 401
    assert call(ours, new_token, path="/ocpi/cpo/2.2.1/locations")[0] == 200
    connection.refresh_from_db()
    assert connection.previous_token_from_them_hash == ""
    assert connection.token_from_them_hash == hash_token(new_token)
    assert "they switched to our new token" in connection.needs_attention.lower()


def test_rotation_answer_dropped_before_they_switched_keeps_the_old_token(ours, ocpi_peer):
    peer, connection = connected(ocpi_peer)
    old_token = peer.token_for_us
    ocpi_peer.route("PUT", r"/ocpi/2\.2\.1/credentials", lambda r: dropped())

    connection = services.rotate_tokens_at_partner(connection.pk)

    assert connection.previous_token_from_them_hash == hash_token(old_token)
    new_digest = connection.token_from_them_hash
    assert new_digest != hash_token(old_token)
    # They still call with the old token: it stays, the new one is retired.
    assert call(ours, old_token, path="/ocpi/cpo/2.2.1/locations")[0] == 200
    connection.refresh_from_db()
    assert connection.token_from_them_hash == hash_token(old_token)
    assert connection.previous_token_from_them_hash == "" and connection.needs_attention == ""
    assert not PartnerConnection.objects.filter(token_from_them_hash=new_digest).exists()
    assert [s["step"] for s in connection.handshake_log][-1] == "settled"


def test_an_explicit_refusal_of_the_put_still_withdraws_the_new_token(ours, ocpi_peer):
    peer, connection = connected(ocpi_peer)
    old_token = peer.token_for_us
    ocpi_peer.route("PUT", r"/ocpi/2\.2\.1/credentials", lambda r: peer._unauthorized())

    connection = services.rotate_tokens_at_partner(connection.pk)

    assert connection.previous_token_from_them_hash == "" and connection.needs_attention == ""
    assert connection.token_from_them_hash == hash_token(old_token)
    assert connection.last_error.startswith("Handshake failed (OCPI 3001) at register: http")


# --- A token we just issued works at once in every process -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def other_processes():
    """gunicorn (2 sync workers) on the test database: processes that share no memory with this one."""
    database = db_connection.settings_dict
    port = free_port()
    user = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"postgres://{user}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "OCPI_BASE_URL": f"http://127.0.0.1:{port}",  # the URLs its versions and details answer with
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/ocpi/versions", timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_token_refused_a_moment_ago_works_at_once_once_issued(other_processes):
    connection = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="NEW"))
    RoamingAgreementFactory(partner=connection.party)
    session = requests.Session()

    def status(token: str) -> int:
        return session.get(
            other_processes + "/ocpi/versions", headers={"Authorization": authorization_header(token)}, timeout=5
        ).status_code

    # Both workers have met this token as unknown (and remember that).
    assert [status("the-new-token") for _ in range(6)] == [401] * 6

    services.store_partner_tokens(connection, from_them="the-new-token")
    started = time.monotonic()
    answers = []
    while time.monotonic() - started < 0.4:  # shorter than the change counter's refresh
        answers.append(status("the-new-token"))
    assert len(answers) >= 8 and set(answers) == {200}


def test_a_partner_calling_back_at_once_reaches_any_worker_during_connect(other_processes, ocpi_peer, settings):
    settings.OCPI_BASE_URL = other_processes
    peer = SpecPeer(ocpi_peer)
    # Warm both workers' caches with failed calls of other tokens and a working one.
    existing = PartnerConnectionFactory(tokens__from_them="someone-else")
    RoamingAgreementFactory(partner=existing.party)
    for _ in range(4):
        requests.get(other_processes + "/ocpi/versions", headers={"Authorization": "Token bm9wZQ=="}, timeout=5)

    connection = connect(peer)

    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    assert peer.callbacks == [200, 200]
    client = OcpiClient(peer.token_for_us, retries=0, timeout=5)
    assert all(client.get(other_processes + "/ocpi/versions").http_status == 200 for _ in range(8))
