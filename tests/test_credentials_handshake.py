"""The OCPI 2.2.1 credentials handshake over real HTTP, both ways, between our live server and a second party.

Incoming: a partner registers at our /ocpi/versions with the token A staff gave it, rotates with PUT,
unregisters with DELETE. Outgoing: the "Connect" task registers us at the partner with its token A,
then rotates and unregisters. Every failure leaves the connection as it was, with the error recorded.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from roaming import services
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url
from roaming.ocpi.credentials import authorization_header, decrypt_token, encrypt_token, hash_token
from roaming.serializers import CredentialsSerializer
from roaming.tasks import connect_partner, rotate_partner_tokens, unregister_partner
from tests.conftest import make_ocpi_partner
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory
from tests.ocpi_peer import PeerResponse, ok

pytestmark = pytest.mark.django_db(transaction=True)


class PeerParty:
    """The second OCPI party (NL*PEE, a CPO) on the ocpi_peer server, following the 2.2.1 handshake rules."""

    def __init__(self, peer, *, country_code: str = "NL", party_id: str = "PEE", role: str = "CPO"):
        self.peer = peer
        self.country_code, self.party_id, self.role = country_code, party_id, role
        self.accepted: set[str] = set()  # tokens it accepts (its token A, then the token C it issued us)
        self.token_for_us: str | None = None  # token B/C we gave it: what it calls us with
        self.our_versions_url: str | None = None
        self.callbacks: list[int] = []  # HTTP status of each call back to us
        self.issued = 0
        self.raw = False  # expects unencoded tokens (the pre-2.2.1 habit)
        peer.route("GET", r"/ocpi/versions", self._versions)
        peer.route("GET", r"/ocpi/2\.2\.1", self._details)
        peer.route("POST", r"/ocpi/2\.2\.1/credentials", self._register)
        peer.route("PUT", r"/ocpi/2\.2\.1/credentials", self._register)
        peer.route("DELETE", r"/ocpi/2\.2\.1/credentials", self._unregister)
        peer.route("GET", r"/ocpi/cpo/2\.2\.1/locations", self._locations)

    @property
    def versions_url(self) -> str:
        return self.peer.url("/ocpi/versions")

    def credentials(self, token: str) -> dict:
        return {
            "token": token,
            "url": self.versions_url,
            "roles": [
                {
                    "role": self.role,
                    "party_id": self.party_id,
                    "country_code": self.country_code,
                    "business_details": {"name": "Peer Charging", "website": "https://peer.example"},
                }
            ],
        }

    def _authorized(self, request) -> bool:
        return any(
            request.header("Authorization") == authorization_header(token, raw=self.raw) for token in self.accepted
        )

    def _unauthorized(self) -> PeerResponse:
        return PeerResponse({"status_code": 2000, "status_message": "unknown token", "timestamp": "x"}, status=401)

    def _versions(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        return ok(
            [
                {"version": "2.1.1", "url": self.peer.url("/ocpi/2.1.1")},
                {"version": "2.2.1", "url": self.peer.url("/ocpi/2.2.1")},
            ]
        )

    def _details(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        return ok(
            {
                "version": "2.2.1",
                "endpoints": [
                    {"identifier": "credentials", "role": "SENDER", "url": self.peer.url("/ocpi/2.2.1/credentials")},
                    {"identifier": "locations", "role": "SENDER", "url": self.peer.url("/ocpi/cpo/2.2.1/locations")},
                ],
            }
        )

    def _register(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        body = request.json()
        # Before answering, call them back with their new token, as the Receiver must.
        client = OcpiClient(body["token"], retries=0, timeout=5)
        try:
            versions = client.get(body["url"])
            self.callbacks.append(versions.http_status)
            details = client.get(versions.data[0]["url"])
            self.callbacks.append(details.http_status)
        except OcpiClientError as error:
            self.callbacks.append(error.http_status or 0)
            return ok_status(3001, "Unable to use the client's API")
        self.token_for_us, self.our_versions_url = body["token"], body["url"]
        self.issued += 1
        token_c = f"peer-token-C{self.issued}"
        self.accepted = {token_c}
        return ok(self.credentials(token_c))

    def _locations(self, request):
        return ok([]) if self._authorized(request) else self._unauthorized()

    def _unregister(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        self.accepted = set()
        return ok()


def ok_status(code: int, message: str) -> PeerResponse:
    return PeerResponse({"status_code": code, "status_message": message, "timestamp": "2026-01-01T00:00:00Z"})


@pytest.fixture
def ours(live_server, settings):
    """Our server's OCPI base, as partners see it."""
    settings.OCPI_BASE_URL = live_server.url
    return live_server.url


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ocpi/versions"


# --- Incoming: a partner registers with us ---------------------------------------------------------------------


def test_partner_registers_rotates_and_unregisters(ours, ocpi_live, ocpi_peer):
    peer = PeerParty(ocpi_peer)
    party = PartyFactory(country_code="NL", party_id="PEE", name="Peer (planned)")
    token_a = services.issue_registration_token(party)
    connection = PartnerConnection.objects.get(party=party)
    assert connection.status == PartnerConnection.Status.PLANNED
    assert connection.registration_token_hash == hash_token(token_a) and token_a not in str(connection.__dict__)

    # The Sender discovers us with token A.
    client = OcpiClient(token_a, retries=0, timeout=15)
    versions = client.get(ours + "/ocpi/versions").data
    assert versions == [{"version": "2.2.1", "url": ours + "/ocpi/2.2.1"}]
    details = client.get(versions[0]["url"]).data
    endpoints = {(e["identifier"], e["role"]): e["url"] for e in details["endpoints"]}
    assert endpoints[("credentials", "SENDER")] == ours + "/ocpi/2.2.1/credentials"
    assert endpoints[("tokens", "SENDER")] == ours + "/ocpi/emsp/2.2.1/tokens"
    assert endpoints[("locations", "RECEIVER")] == ours + "/ocpi/emsp/2.2.1/locations"
    assert endpoints[("locations", "SENDER")] == ours + "/ocpi/cpo/2.2.1/locations"
    assert endpoints[("tokens", "RECEIVER")] == ours + "/ocpi/cpo/2.2.1/tokens"
    assert endpoints[("commands", "RECEIVER")] == ours + "/ocpi/cpo/2.2.1/commands"
    assert endpoints[("hubclientinfo", "RECEIVER")] == ours + "/ocpi/2.2.1/hubclientinfo"
    assert endpoints[("sessions", "SENDER")] == ours + "/ocpi/cpo/2.2.1/sessions"
    assert endpoints[("cdrs", "SENDER")] == ours + "/ocpi/cpo/2.2.1/cdrs"
    assert endpoints[("tariffs", "RECEIVER")] == ours + "/ocpi/emsp/2.2.1/tariffs"
    assert endpoints[("tariffs", "SENDER")] == ours + "/ocpi/cpo/2.2.1/tariffs"
    assert len(details["endpoints"]) == 14

    # POST its credentials with token B: we call it back with B before answering with token C.
    peer.accepted = {"peer-token-B"}
    reply = client.post(endpoints[("credentials", "SENDER")], peer.credentials("peer-token-B"))
    token_c = reply.data["token"]
    assert reply.data["url"] == ours + "/ocpi/versions"
    assert {(r["role"], r["country_code"], r["party_id"]) for r in reply.data["roles"]} == {
        ("CPO", "BE", "MBP"),
        ("EMSP", "BE", "MBP"),
    }
    callbacks = [r for r in ocpi_peer.requests if r.method == "GET"]
    assert [r.path for r in callbacks] == ["/ocpi/versions", "/ocpi/2.2.1"]
    assert all(r.header("Authorization") == authorization_header("peer-token-B") for r in callbacks)

    connection.refresh_from_db()
    party.refresh_from_db()
    assert connection.status == PartnerConnection.Status.CONNECTED
    assert connection.versions_url == peer.versions_url and connection.version == "2.2.1"
    assert connection.endpoint_url("locations", "SENDER") == ocpi_peer.url("/ocpi/cpo/2.2.1/locations")
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-B"
    assert connection.token_from_them_hash == hash_token(token_c)
    assert connection.registration_token_hash == "" and connection.last_error == ""
    assert [step["step"] for step in connection.handshake_log] == [
        "credentials_received",
        "versions",
        "version_details",
        "stored",
    ]
    assert party.name == "Peer Charging" and party.website == "https://peer.example"

    # Token A is now invalid; token C works, and GET credentials returns it.
    assert ocpi_live("GET", "/ocpi/versions", token=token_a).status_code == 401
    response = ocpi_live("GET", "/ocpi/2.2.1/credentials", token=token_c)
    assert response.status_code == 200 and response.data["token"] == token_c
    # Registering again with token C: HTTP 405, as 2.2.1 says.
    response = ocpi_live("POST", "/ocpi/2.2.1/credentials", peer.credentials("peer-token-B"), token=token_c)
    assert response.status_code == 405 and response.envelope["status_code"] == 2000

    # PUT rotates: new token B2 for us to call it, new token C2 for it; C is invalid afterwards.
    peer.accepted = {"peer-token-B2"}
    response = ocpi_live("PUT", "/ocpi/2.2.1/credentials", peer.credentials("peer-token-B2"), token=token_c)
    assert response.status_code == 200 and response.envelope["status_code"] == 1000
    token_c2 = response.data["token"]
    assert token_c2 != token_c
    assert ocpi_live("GET", "/ocpi/versions", token=token_c).status_code == 401
    assert ocpi_live("GET", "/ocpi/versions", token=token_c2).status_code == 200
    connection.refresh_from_db()
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-B2"

    # DELETE unregisters: neither token works any more.
    response = ocpi_live("DELETE", "/ocpi/2.2.1/credentials", token=token_c2)
    assert response.status_code == 200 and response.envelope["status_code"] == 1000
    assert ocpi_live("GET", "/ocpi/versions", token=token_c2).status_code == 401
    connection.refresh_from_db()
    assert connection.status == PartnerConnection.Status.DISCONNECTED
    assert connection.token_to_them_encrypted == "" and connection.token_from_them_hash == ""


def test_wrong_token_is_401_everywhere(ours, ocpi_live):
    make_ocpi_partner(token="right-token", agreement=False)
    for path in ("/ocpi/versions", "/ocpi/2.2.1", "/ocpi/2.2.1/credentials"):
        response = ocpi_live("GET", path, token="wrong-token")
        assert response.status_code == 401 and response.envelope["status_code"] == 2000
    assert ocpi_live("GET", "/ocpi/versions").status_code == 401  # no Authorization at all


def registered_state(connection: PartnerConnection) -> tuple:
    connection.refresh_from_db()
    return (
        connection.status,
        connection.token_to_them_encrypted,
        connection.token_from_them_hash,
        connection.registration_token_hash,
        connection.versions_url,
        connection.endpoints,
    )


@pytest.mark.parametrize(
    ("breakage", "status_code", "step"),
    [
        ("unreachable", 3001, "versions"),
        ("garbage", 3001, "versions"),
        ("old_version_only", 3002, "versions"),
        ("no_locations_module", 3003, "version_details"),
        ("garbage_details", 3001, "version_details"),
    ],
)
def test_failed_callback_keeps_connection_unregistered(ours, ocpi_live, ocpi_peer, breakage, status_code, step):
    peer = PeerParty(ocpi_peer)
    peer.accepted = {"peer-token-B"}
    versions_url = peer.versions_url
    if breakage == "unreachable":
        versions_url = closed_port_url()
    elif breakage == "garbage":
        ocpi_peer.route("GET", r"/ocpi/versions", lambda r: PeerResponse(raw=b"<html>maintenance</html>"))
    elif breakage == "old_version_only":
        ocpi_peer.route("GET", r"/ocpi/versions", lambda r: ok([{"version": "2.1.1", "url": "http://x/2.1.1"}]))
    elif breakage == "no_locations_module":
        ocpi_peer.route("GET", r"/ocpi/2\.2\.1", lambda r: ok({"version": "2.2.1", "endpoints": []}))
    elif breakage == "garbage_details":
        ocpi_peer.route("GET", r"/ocpi/2\.2\.1", lambda r: ok("these are not endpoints"))
    party = PartyFactory(country_code="NL", party_id="PEE")
    token_a = services.issue_registration_token(party)
    connection = PartnerConnection.objects.get(party=party)
    before = registered_state(connection)

    body = {**peer.credentials("peer-token-B"), "url": versions_url}
    response = ocpi_live("POST", "/ocpi/2.2.1/credentials", body, token=token_a)

    assert response.status_code == 200 and response.envelope["status_code"] == status_code
    assert step in response.envelope["status_message"]
    assert registered_state(connection) == before  # nothing stored: still planned, token A still the only one
    assert connection.last_error.startswith(f"Handshake failed (OCPI {status_code}) at {step}")
    assert connection.handshake_log[-1]["step"] == step and connection.handshake_log[-1]["ok"] is False
    # Token A still works, so the partner can try again once it is fixed.
    assert ocpi_live("GET", "/ocpi/versions", token=token_a).status_code == 200


def test_invalid_credentials_body_is_2001_naming_the_field(ours, ocpi_live):
    party = PartyFactory(country_code="NL", party_id="PEE")
    token_a = services.issue_registration_token(party)
    response = ocpi_live("POST", "/ocpi/2.2.1/credentials", {"url": "not a url", "roles": []}, token=token_a)
    assert response.status_code == 400 and response.envelope["status_code"] == 2001
    message = response.envelope["status_message"]
    assert "token" in message and "url" in message and "roles" in message
    other = {
        "token": "t",
        "url": "http://127.0.0.1:1/v",
        "roles": [{"role": "CPO", "party_id": "XXX", "country_code": "DE", "business_details": {"name": "X"}}],
    }
    response = ocpi_live("POST", "/ocpi/2.2.1/credentials", other, token=token_a)
    assert response.envelope["status_code"] == 2001 and "NL*PEE" in response.envelope["status_message"]
    assert PartnerConnection.objects.get(party=party).status == PartnerConnection.Status.PLANNED


def test_failed_rotation_keeps_old_tokens(ours, ocpi_live, ocpi_peer):
    peer = PeerParty(ocpi_peer)
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="PEE"),
        versions_url=peer.versions_url,
        tokens__from_them="token-C",
        tokens__to_them="token-B",
    )
    before = registered_state(connection)
    peer.accepted = {"someone-else"}  # it will refuse our call back with the new token
    response = ocpi_live("PUT", "/ocpi/2.2.1/credentials", peer.credentials("token-B2"), token="token-C")
    assert response.envelope["status_code"] == 3001
    assert registered_state(connection) == before
    assert ocpi_live("GET", "/ocpi/versions", token="token-C").status_code == 200


def test_put_or_delete_before_registering_is_405(ours, ocpi_live):
    token_a = services.issue_registration_token(PartyFactory())
    assert ocpi_live("PUT", "/ocpi/2.2.1/credentials", {}, token=token_a).status_code == 405
    assert ocpi_live("DELETE", "/ocpi/2.2.1/credentials", token=token_a).status_code == 405


# --- Outgoing: we register at a partner ("Connect") -------------------------------------------------------------


def test_connect_registers_us_through_a_real_worker_then_rotates_and_unregisters(
    ours, ocpi_live, ocpi_peer, redis_celery_worker
):
    peer = PeerParty(ocpi_peer)
    peer.accepted = {"their-token-A"}
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="PEE", name="Peer (planned)"),
        status=PartnerConnection.Status.PLANNED,
    )

    result = connect_partner.delay(connection.pk, peer.versions_url, encrypt_token("their-token-A")).get(timeout=60)

    assert result["status"] == "connected" and result["last_error"] == ""
    # It called our versions and details back with token B, and we answered.
    assert peer.callbacks == [200, 200]
    connection.refresh_from_db()
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C1"
    assert connection.token_from_them_hash == hash_token(peer.token_for_us)
    assert connection.registration_token_hash == ""
    assert connection.endpoint_url("credentials", "SENDER") == ocpi_peer.url("/ocpi/2.2.1/credentials")
    assert [s["step"] for s in connection.handshake_log] == ["versions", "version_details", "register", "stored"]
    assert connection.party.name == "Peer Charging"
    register = next(r for r in ocpi_peer.requests if r.method == "POST")
    assert register.header("Authorization") == authorization_header("their-token-A")
    assert register.json()["url"] == ours + "/ocpi/versions"
    # Token B is now its credentials at our platform.
    token_b = peer.token_for_us
    assert ocpi_live("GET", "/ocpi/versions", token=token_b).status_code == 200

    # Rotation: PUT with a new B2, receive C2.
    assert rotate_partner_tokens.delay(connection.pk).get(timeout=60)["status"] == "connected"
    connection.refresh_from_db()
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C2"
    assert peer.token_for_us != token_b
    assert ocpi_live("GET", "/ocpi/versions", token=token_b).status_code == 401
    assert ocpi_live("GET", "/ocpi/versions", token=peer.token_for_us).status_code == 200

    # Unregister: DELETE at theirs, then both tokens are gone here.
    token_b2 = peer.token_for_us
    assert unregister_partner.delay(connection.pk).get(timeout=60)["status"] == "disconnected"
    assert ocpi_peer.requests[-1].method == "DELETE"
    assert peer.accepted == set()
    assert ocpi_live("GET", "/ocpi/versions", token=token_b2).status_code == 401


@pytest.mark.parametrize("breakage", ["unreachable", "wrong_token", "garbage_credentials", "refused_callback"])
def test_failed_connect_keeps_the_old_connection(ours, ocpi_live, ocpi_peer, breakage):
    peer = PeerParty(ocpi_peer)
    peer.accepted = {"their-token-A"}
    versions_url, token_a = peer.versions_url, "their-token-A"
    if breakage == "unreachable":
        versions_url = closed_port_url()
    elif breakage == "wrong_token":
        token_a = "not-their-token"
    elif breakage == "garbage_credentials":
        ocpi_peer.route("POST", r"/ocpi/2\.2\.1/credentials", lambda r: ok({"token": 42}))
    elif breakage == "refused_callback":
        ocpi_peer.route("POST", r"/ocpi/2\.2\.1/credentials", lambda r: ok_status(3001, "could not call you back"))
    # Already connected with older tokens: a failed re-connect must not lose them.
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="PEE"),
        versions_url="https://old.example/ocpi/versions",
        endpoints=[{"identifier": "credentials", "role": "SENDER", "url": "https://old.example/cred"}],
        tokens__from_them="old-token-B",
        tokens__to_them="old-token-C",
    )
    before = registered_state(connection)

    result = connect_partner.delay(connection.pk, versions_url, encrypt_token(token_a)).get(timeout=60)

    assert result["status"] == "connected"  # the old, working registration stays
    assert registered_state(connection) == before
    step = "versions" if breakage in ("unreachable", "wrong_token") else "register"
    assert connection.last_error.startswith("Handshake failed (OCPI 3001) at " + step)
    assert connection.last_error_at is not None
    assert connection.handshake_log[-1] == {**connection.handshake_log[-1], "step": step, "ok": False}
    assert ocpi_live("GET", "/ocpi/versions", token="old-token-B").status_code == 200
    if peer.token_for_us:  # the token B we offered was withdrawn
        assert ocpi_live("GET", "/ocpi/versions", token=peer.token_for_us).status_code == 401


def test_connect_to_an_unreachable_partner_leaves_a_planned_connection_with_the_error(ours):
    connection = PartnerConnectionFactory(status=PartnerConnection.Status.PLANNED)
    url = closed_port_url()
    connect_partner.delay(connection.pk, url, encrypt_token("token-a"))
    connection.refresh_from_db()
    assert connection.status == PartnerConnection.Status.PLANNED
    assert connection.versions_url == "" and connection.token_to_them_encrypted == ""
    assert "versions" in connection.last_error and "transport" in connection.last_error
    assert join_url(url) in connection.handshake_log[0]["detail"]


def test_partner_sending_raw_tokens_is_answered_in_kind(ours, ocpi_live, ocpi_peer):
    peer = PeerParty(ocpi_peer)
    peer.raw = True
    peer.accepted = {"peer-token-B"}
    party = PartyFactory(country_code="NL", party_id="PEE")
    token_a = services.issue_registration_token(party)

    response = ocpi_live(
        "POST",
        "/ocpi/2.2.1/credentials",
        peer.credentials("peer-token-B"),
        headers={"Authorization": authorization_header(token_a, raw=True)},
    )

    assert response.status_code == 200 and response.envelope["status_code"] == 1000, response.envelope
    assert ocpi_peer.requests[0].header("Authorization") == "Token peer-token-B"
    connection = PartnerConnection.objects.get(party=party)
    assert connection.accepts_raw_token is True
    raw_token_c = {"Authorization": authorization_header(response.data["token"], raw=True)}
    assert ocpi_live("GET", "/ocpi/versions", headers=raw_token_c).status_code == 200


EXAMPLES = Path("/work/shared/ocpi/examples")


@pytest.mark.parametrize(
    "name",
    ["credentials_example.json", "credentials_example2.json", "credentials_example3.json", "credentials_example4.json"],
)
def test_spec_credentials_examples_are_accepted(name):
    data = json.loads((EXAMPLES / name).read_text())
    serializer = CredentialsSerializer(data=data)
    assert serializer.is_valid(), serializer.errors


def test_registration_with_the_spec_example_takes_business_details_per_party(ours, ocpi_live, ocpi_peer):
    """credentials_example4 lists three CPOs on one platform; the token was issued to NL*PFC."""
    peer = PeerParty(ocpi_peer, party_id="PFC")
    peer.accepted = {"peer-token-B"}
    body = json.loads((EXAMPLES / "credentials_example4.json").read_text())
    body.update(token="peer-token-B", url=peer.versions_url)
    party = PartyFactory(country_code="NL", party_id="PFC", name="Planned PFC")
    token_a = services.issue_registration_token(party)

    response = ocpi_live("POST", "/ocpi/2.2.1/credentials", body, token=token_a)

    assert response.envelope["status_code"] == 1000, response.envelope
    party.refresh_from_db()
    assert party.name == "Plug Flex Charging" and party.role == "CPO"
    # The platform's other two CPOs are parties of their own, reached through this connection (docs/partners.md).
    others = Party.objects.filter(party_id__in=["EXO", "CGP"])
    assert {(p.name, p.reached_through.party_id) for p in others} == {
        ("Excellent Operator", party.pk),
        ("Charging Green Power", party.pk),
    }


# --- Outgoing rotation and unregistration when the partner misbehaves --------------------------------------------


def connected_peer(ocpi_peer, **party) -> tuple[PeerParty, PartnerConnection]:
    """A partner we registered at over real HTTP (token C1 to call it, its token B to call us)."""
    peer = PeerParty(ocpi_peer, **party)
    peer.accepted = {"their-token-A"}
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code=peer.country_code, party_id=peer.party_id, role=peer.role),
        status=PartnerConnection.Status.PLANNED,
    )
    connection = services.connect_to_partner(connection.pk, peer.versions_url, "their-token-A")
    assert connection.status == PartnerConnection.Status.CONNECTED, connection.last_error
    RoamingAgreementFactory(partner=connection.party)
    return peer, connection


def test_rotation_keeps_the_new_tokens_when_their_version_details_break_after_the_put(ours, ocpi_live, ocpi_peer):
    peer, connection = connected_peer(ocpi_peer)
    old_token_b, endpoints_before = peer.token_for_us, connection.endpoints
    answer_put = peer._register

    def put_then_break_details(request):
        # The partner switches to the new tokens when it answers, then its version details fail.
        reply = answer_put(request)
        ocpi_peer.route("GET", r"/ocpi/2\.2\.1", lambda r: PeerResponse(raw=b"<html>down</html>", status=502))
        return reply

    ocpi_peer.route("PUT", r"/ocpi/2\.2\.1/credentials", put_then_break_details)

    result = rotate_partner_tokens.delay(connection.pk).get(timeout=60)

    connection.refresh_from_db()
    assert result["status"] == "connected" and connection.status == PartnerConnection.Status.CONNECTED
    # Both new tokens are stored: theirs (C2) to call them, the new B for them to call us.
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C2"
    assert peer.token_for_us != old_token_b
    assert connection.token_from_them_hash == hash_token(peer.token_for_us)
    assert connection.registration_token_hash == ""
    assert connection.endpoints == endpoints_before  # the previous endpoints are kept
    assert connection.last_error.startswith("Tokens rotated, but refreshing their endpoints failed (OCPI 3001)")
    assert "version_details" in connection.last_error and connection.last_error_at is not None
    assert [(s["step"], s["ok"]) for s in connection.handshake_log] == [
        ("register", True),
        ("stored", True),
        ("versions", True),
        ("version_details", False),
    ]
    # The connection works both ways with the new tokens, on a functional module too.
    locations = OcpiClient.for_connection(connection, retries=0, timeout=5).get(
        connection.endpoint_url("locations", "SENDER")
    )
    assert locations.http_status == 200
    assert ocpi_peer.requests[-1].header("Authorization") == authorization_header("peer-token-C2")
    assert ocpi_live("GET", "/ocpi/cpo/2.2.1/locations", token=peer.token_for_us).status_code == 200
    assert ocpi_live("GET", "/ocpi/cpo/2.2.1/locations", token=old_token_b).status_code == 401

    # Once their details answer again, the next rotation refreshes the endpoints and clears the error.
    ocpi_peer.route("GET", r"/ocpi/2\.2\.1", peer._details)
    ocpi_peer.route("PUT", r"/ocpi/2\.2\.1/credentials", peer._register)
    connection = services.rotate_tokens_at_partner(connection.pk)
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C3"
    assert connection.last_error == "" and connection.handshake_log[-1]["step"] == "endpoints"


def test_rotation_with_the_partner_unreachable_changes_nothing(ours, ocpi_live, ocpi_peer):
    peer, connection = connected_peer(ocpi_peer)
    token_b = peer.token_for_us
    before = registered_state(connection)
    ocpi_peer.stop()  # the partner's platform is down

    result = rotate_partner_tokens.delay(connection.pk).get(timeout=60)

    assert result["status"] == "connected"
    assert registered_state(connection) == before  # both tokens, endpoints, status: as they were
    assert connection.last_error.startswith("Handshake failed (OCPI 3001) at register: transport")
    assert connection.last_error_at is not None
    assert [(s["step"], s["ok"]) for s in connection.handshake_log] == [("register", False)]
    assert ocpi_live("GET", "/ocpi/cpo/2.2.1/locations", token=token_b).status_code == 200
    # The token B offered in the failed PUT was withdrawn: only the stored one is known.
    assert PartnerConnection.objects.filter(registration_token_hash__gt="").count() == 0


def test_unregister_with_the_partner_unreachable_changes_nothing(ours, ocpi_live, ocpi_peer):
    peer, connection = connected_peer(ocpi_peer)
    token_b = peer.token_for_us
    before = registered_state(connection)
    ocpi_peer.stop()

    result = unregister_partner.delay(connection.pk).get(timeout=60)

    assert result["status"] == "connected"
    assert registered_state(connection) == before
    assert connection.last_error.startswith("Handshake failed (OCPI 3001) at unregister: transport")
    assert connection.last_error_at is not None
    assert [(s["step"], s["ok"]) for s in connection.handshake_log] == [("unregister", False)]
    assert ocpi_live("GET", "/ocpi/cpo/2.2.1/locations", token=token_b).status_code == 200


def test_hub_gets_routing_headers_on_functional_calls_only(ours, ocpi_peer):
    """Straight to a hub, functional calls say FROM=us, TO=the hub; versions and credentials say nothing."""
    peer, hub = connected_peer(ocpi_peer, country_code="DE", party_id="HBJ", role="HUB")
    assert hub.party.role == Party.Role.HUB

    OcpiClient.for_connection(hub, retries=0, timeout=5).get(hub.endpoint_url("locations", "SENDER"))
    get_all = ocpi_peer.requests[-1]
    assert get_all.path == "/ocpi/cpo/2.2.1/locations"
    assert (get_all.header("OCPI-from-country-code"), get_all.header("OCPI-from-party-id")) == ("BE", "MBP")
    assert (get_all.header("OCPI-to-country-code"), get_all.header("OCPI-to-party-id")) == ("DE", "HBJ")

    assert services.check_connection(hub).ok
    assert services.rotate_tokens_at_partner(hub.pk).last_error == ""
    assert services.unregister_at_partner(hub.pk).status == PartnerConnection.Status.DISCONNECTED
    configuration = [r for r in ocpi_peer.requests if r is not get_all]
    assert {(r.method, r.path) for r in configuration} >= {
        ("GET", "/ocpi/versions"),
        ("GET", "/ocpi/2.2.1"),
        ("POST", "/ocpi/2.2.1/credentials"),
        ("PUT", "/ocpi/2.2.1/credentials"),
        ("DELETE", "/ocpi/2.2.1/credentials"),
    }
    for request in configuration:
        assert not [name for name in request.headers if name.lower().startswith("ocpi-")], request.path
