"""Where a partner's token may go: only http(s) URLs on that partner's registered hosts, never private addresses.

A "metadata trap" (a real HTTP server on 127.0.0.1 that answers like any OCPI party) stands for an internal
service; with `OCPI_ALLOW_PRIVATE_NETWORK_URLS` off (production), nothing reaches it and every refusal is
recorded where that call's failures are: the OCPI answer (2001 naming the field), the command, the feed's
SyncRun, the handshake's last_error. With the setting on (tests, demo) the same flows reach it, which
shows each negative test would have caught a leak. See docs/security-outgoing-calls.md.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from charging import services as charging_services
from charging.models import Command
from roaming import services
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi.client import OcpiClient, OcpiClientError
from roaming.ocpi.credentials import authorization_header, hash_token
from roaming.ocpi.destinations import RefusedDestination, check_url, forbidden_reason, registered_hosts
from roaming.ocpi.envelope import envelope
from roaming.selectors import own_party
from stations import feeds
from stations.models import Location, SyncRun
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
from tests.feeds_fixtures import cpo_connection, location
from tests.ocpi_peer import PeerResponse, ok

pytestmark = pytest.mark.django_db

EMSP_TOKEN = "emsp-calls-us"
OUR_TOKEN = "secret-token-we-send-the-emsp"


class MetadataTrap:
    """An HTTP server standing for an internal service: it answers every request with an OCPI 1000 envelope
    (so a client that reached it would think the call worked) and remembers what it received."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None):
        self.requests: list[dict] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                trap.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                payload = json.dumps(envelope({"result": "ACCEPTED", "timeout": 30, "body": body.decode()})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str, host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.server.server_address[0]}:{self.port}{path}"

    @property
    def leaked(self) -> bool:
        """Did any request reach it (with or without our token)?"""
        return bool(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def trap():
    server = MetadataTrap()
    yield server
    server.stop()


@pytest.fixture
def production(settings):
    """The production rule: no private addresses (the test settings allow them, see tests/conftest.py)."""
    settings.OCPI_ALLOW_PRIVATE_NETWORK_URLS = False


# --- The URL check itself ------------------------------------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/ocpi",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://10.255.255.254/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254, written in hex
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://2130706433/",  # 127.0.0.1 as a decimal number
    "http://0x7f000001/",  # ... in hex
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",  # ... in octal
    "http://127.1/",
    "http://2852039166/",  # 169.254.169.254
    "http://100.64.0.1/",  # shared address space (carrier NAT)
    "http://224.0.0.1/",
    "https://127.0.0.1./",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_loopback_and_link_local_addresses_are_refused(production, url):
    with pytest.raises(RefusedDestination, match="address"):
        check_url(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://2130706433/", "http://[::1]/", "http://10.1.2.3/"])
def test_the_setting_allows_private_addresses_for_tests_and_the_demo(settings, url):
    settings.OCPI_ALLOW_PRIVATE_NETWORK_URLS = True
    check_url(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://partner.example@127.0.0.1/", "user information"),
        ("http://partner.example:pw@127.0.0.1/", "user information"),
        ("https://user@partner.example/ocpi", "user information"),
        ("http://127.0.0.1%2f@partner.example/", "user information"),
        ("http://partner.example\\@127.0.0.1/", "backslash"),
        ("http://partner.example /x", "whitespace"),
        ("http://partner.example\n.evil/x", "control"),
        ("ftp://partner.example/ocpi", "http"),
        ("file:///etc/passwd", "http"),
        ("gopher://127.0.0.1:6379/_INFO", "http"),
        ("javascript:alert(1)", "http"),
        ("partner.example/ocpi/versions", "http"),
        ("//partner.example/ocpi/versions", "http"),
        ("http:///ocpi/versions", "host"),
        ("", "no URL"),
    ],
)
def test_urls_that_are_not_plain_http_urls_are_refused_even_when_private_networks_are_allowed(settings, url, why):
    settings.OCPI_ALLOW_PRIVATE_NETWORK_URLS = True
    with pytest.raises(RefusedDestination, match=why):
        check_url(url, {"partner.example"})


@pytest.mark.parametrize(
    "url",
    [
        "https://partner.example/ocpi/versions",
        "HTTPS://Partner.Example./ocpi/versions",
        "https://partner.example:8443/ocpi/cpo/2.2.1/locations?offset=10&limit=10",
        "http://partner.example/ocpi/emsp/2.2.1/commands/START_SESSION/1",
    ],
)
def test_public_urls_on_a_registered_host_are_accepted(production, url):
    assert check_url(url, {"partner.example"}) == "partner.example"


def test_public_addresses_are_accepted_and_only_on_registered_hosts(production):
    assert forbidden_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert forbidden_reason(ipaddress.ip_address("2606:4700:4700::1111")) is None
    check_url("http://8.8.8.8/")
    check_url("https://[2606:4700:4700::1111]/")
    assert check_url("http://134744072/", {"8.8.8.8"}) == "8.8.8.8"  # the same address, another spelling
    with pytest.raises(RefusedDestination, match="not one of the partner's registered hosts"):
        check_url("https://elsewhere.example/ocpi", {"partner.example"})
    with pytest.raises(RefusedDestination, match=r"registered hosts \(none\)"):
        check_url("https://partner.example/ocpi", frozenset())
    with pytest.raises(RefusedDestination, match="not one of the partner's registered hosts"):
        check_url("https://partner.example.evil.example/ocpi", {"partner.example"})


def test_registered_hosts_are_the_versions_url_and_endpoint_hosts_of_the_carrying_connection():
    hub = PartnerConnectionFactory(
        party=PartyFactory(role=Party.Role.HUB),
        versions_url="https://ocpi.Hub.example/versions",
        endpoints=[
            {"identifier": "locations", "role": "SENDER", "url": "https://locations.hub.example:8443/ocpi/locations"},
            {"identifier": "commands", "role": "RECEIVER", "url": "https://ocpi.hub.example/ocpi/commands"},
            {"identifier": "tokens", "role": "RECEIVER", "url": "not a url"},
        ],
    )
    client_of_hub = PartnerConnectionFactory(via_hub=hub, versions_url="https://ignored.example/versions")
    assert registered_hosts(hub) == {"ocpi.hub.example", "locations.hub.example"}
    assert OcpiClient.for_connection(client_of_hub).hosts == registered_hosts(hub)


# --- The connection goes to the checked address ----------------------------------------------------------------


def test_a_host_name_resolving_to_a_private_address_is_refused_when_connecting(production, trap):
    client = OcpiClient(OUR_TOKEN, retries=3, backoff=1, timeout=2, hosts={"localhost"})
    started = time.monotonic()
    with pytest.raises(OcpiClientError) as error:
        client.get(trap.url("/latest/meta-data/", host="localhost"))
    assert error.value.kind == "refused" and not error.value.retryable
    assert "localhost resolves to 127.0.0.1" in str(error.value) and "loopback" in str(error.value)
    assert time.monotonic() - started < 1  # not retried (backoff is 1 s)
    assert not trap.leaked


@pytest.fixture
def resolver(monkeypatch):
    """The system resolver, with names we choose: `names[name]` is the list of answers, one per lookup
    (the last repeats), as a DNS server that rebinds a name between two lookups would give them."""
    real = socket.getaddrinfo
    names: dict[str, list[str]] = {}
    lookups: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host in names:
            lookups.append(host)
            answers = names[host]
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            return real(address, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names, lookups


def test_the_socket_connects_to_the_address_that_was_checked_not_to_a_second_dns_answer(resolver, ocpi_peer):
    """A name is resolved once per connection, and that (checked) answer is the address connected to: a check
    on one lookup and a connection on another would reach the second answer here."""
    names, lookups = resolver
    ocpi_peer.route("GET", "/ocpi/versions", lambda r: ok([]))
    port = ocpi_peer.server.server_address[1]
    second = MetadataTrap("127.0.0.2", port)  # where a rebound answer would lead
    try:
        names["partner.test"] = ["127.0.0.1", "127.0.0.2"]
        client = OcpiClient(OUR_TOKEN, retries=0, timeout=5, hosts={"partner.test"})
        client.get(f"http://partner.test:{port}/ocpi/versions")
        assert lookups == ["partner.test"]  # resolved once: that answer was checked and connected to
        assert [r.path for r in ocpi_peer.requests] == ["/ocpi/versions"]
        assert not second.leaked
    finally:
        second.stop()


def _certificate_for(name: str, tmp_path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_https_still_checks_the_certificate_against_the_host_name(resolver, tmp_path):
    """Connecting to the checked address must not weaken TLS: SNI and the certificate check use the name."""
    names, lookups = resolver
    cert, key = _certificate_for("partner.test", tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = MetadataTrap(tls=context)
    try:
        names["partner.test"] = ["127.0.0.1"]
        names["other.test"] = ["127.0.0.1"]
        session = requests.Session()
        session.verify = cert
        client = OcpiClient(OUR_TOKEN, retries=0, timeout=5, session=session, hosts={"partner.test", "other.test"})
        assert client.get(f"https://partner.test:{server.port}/ocpi/versions").http_status == 200
        with pytest.raises(OcpiClientError) as error:  # same address, a name the certificate is not for
            client.get(f"https://other.test:{server.port}/ocpi/versions")
        assert error.value.kind == "transport" and "certificate" in str(error.value).lower()
        assert len(server.requests) == 1
    finally:
        server.stop()


def test_redirects_are_not_followed(ocpi_peer, trap):
    redirect = PeerResponse(None, status=302, headers={"Location": trap.url("/")})
    ocpi_peer.route("GET", "/ocpi/versions", lambda r: redirect)
    client = OcpiClient(OUR_TOKEN, retries=2, backoff=0.01, timeout=5, hosts={"127.0.0.1"})
    with pytest.raises(OcpiClientError) as error:
        client.get(ocpi_peer.url("/ocpi/versions"))
    assert error.value.http_status == 302 and "not followed" in str(error.value)
    assert len(ocpi_peer.requests) == 1 and not trap.leaked


# --- Commands partners send to our stations: their response_url ------------------------------------------------


@pytest.fixture
def emsp():
    party = PartyFactory(country_code="NL", party_id="SHL", role=Party.Role.EMSP, name="Shell Recharge")
    connection = PartnerConnectionFactory(
        party=party,
        versions_url="https://ocpi.shell.example/versions",
        endpoints=[{"identifier": "commands", "role": "SENDER", "url": "https://cmd.shell.example/ocpi/commands"}],
        tokens__from_them=EMSP_TOKEN,
        tokens__to_them=OUR_TOKEN,
    )
    RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    return connection


@pytest.fixture
def station():
    return EVSEFactory(location=LocationFactory(party=own_party(), ocpi_id="MBP-GENT"), uid="MBP-GENT-1")


def start_session(client, response_url: str) -> dict:
    body = {
        "response_url": response_url,
        "token": {
            "country_code": "NL",
            "party_id": "SHL",
            "uid": "0102030405",
            "type": "APP_USER",
            "contract_id": "NL-SHL-C00000001",
            "issuer": "Shell Recharge",
            "valid": True,
            "whitelist": "ALLOWED",
            "last_updated": "2026-01-01T00:00:00Z",
        },
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
    }
    response = ocpi_call(client, "POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", body, token=EMSP_TOKEN)
    answer = response.envelope
    # An OCPI answer: HTTP 200 with the CommandResponse, or a client error (2001) with HTTP 400.
    assert response.status_code == (400 if answer["status_code"] == 2001 else 200)
    return answer


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{port}/latest/meta-data/", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a link-local address"),
        ("http://2130706433:{port}/anything", "Enter a valid URL"),  # the field's own validation
        ("http://[::ffff:127.0.0.1]:{port}/anything", "loopback"),
        ("http://ocpi.shell.example@127.0.0.1:{port}/anything", "user information"),
        ("https://elsewhere.example/ocpi/commands/1", "elsewhere.example is not one of the partner's registered"),
        ("ftp://ocpi.shell.example/ocpi/commands/1", "not an http(s) URL"),
    ],
)
def test_start_session_with_a_response_url_we_will_not_call_is_refused_upfront(
    production, client, emsp, station, trap, django_capture_on_commit_callbacks, url, why
):
    with django_capture_on_commit_callbacks(execute=True):
        answer = start_session(client, url.format(port=trap.port))
    assert answer["status_code"] == 2001
    assert answer["status_message"].startswith("response_url: ") and why in answer["status_message"]
    assert answer.get("data") is None  # no CommandResponse: nothing was accepted
    assert not Command.objects.exists()
    assert not trap.leaked


def test_a_response_url_whose_registered_name_resolves_to_a_private_address_gets_nothing(
    production, client, emsp, station, trap, django_capture_on_commit_callbacks
):
    """Not visible upfront (a name, registered): the command is answered per OCPI, the result is not posted."""
    emsp.versions_url = trap.url("/ocpi/versions", host="localhost")
    emsp.save()
    with django_capture_on_commit_callbacks(execute=True):
        answer = start_session(client, trap.url("/ocpi/emsp/2.2.1/commands/START_SESSION/1", host="localhost"))
    assert answer["status_code"] == 1000 and answer["data"]["result"] == "ACCEPTED"
    command = Command.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        charging_services.report_charge_point_result(command, "ACCEPTED")
    command.refresh_from_db()
    assert command.result_reported_at is None
    assert command.error.startswith("Reporting the result failed: refused:")
    assert "localhost resolves to 127.0.0.1" in command.error
    assert not trap.leaked


def test_with_the_setting_on_and_the_host_registered_the_result_reaches_the_partner(
    client, emsp, station, trap, django_capture_on_commit_callbacks
):
    """The control for the tests above: the same trap, registered and allowed, does receive the result."""
    emsp.versions_url = trap.url("/ocpi/versions")
    emsp.save()
    with django_capture_on_commit_callbacks(execute=True):
        answer = start_session(client, trap.url("/ocpi/emsp/2.2.1/commands/START_SESSION/1"))
    assert answer["data"]["result"] == "ACCEPTED"
    with django_capture_on_commit_callbacks(execute=True):
        charging_services.report_charge_point_result(Command.objects.get(), "ACCEPTED")
    assert [r["path"] for r in trap.requests] == ["/ocpi/emsp/2.2.1/commands/START_SESSION/1"]
    assert trap.requests[0]["headers"]["Authorization"] == authorization_header(OUR_TOKEN)
    assert Command.objects.get().result_reported_at is not None


# --- Our commands to a CPO -----------------------------------------------------------------------------------


def test_our_command_to_a_cpo_whose_endpoint_resolves_to_a_private_address_is_not_sent(
    production, trap, django_capture_on_commit_callbacks
):
    cpo = PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO)
    commands = trap.url("/ocpi/cpo/2.2.1/commands", host="localhost")
    PartnerConnectionFactory(
        party=cpo,
        endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": commands}],
        tokens__to_them=OUR_TOKEN,
    )
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    evse = EVSEFactory(location=LocationFactory(party=cpo, ocpi_id="LOC1"), uid="3256")
    ConnectorFactory(evse=evse)
    driver = DriverFactory()
    card = CardFactory(driver=driver)
    with django_capture_on_commit_callbacks(execute=True):
        command, _ = charging_services.request_start(driver, card, evse.location, evse, idempotency_key="press-1")
    command.refresh_from_db()
    assert command.status == Command.Status.FAILED
    assert not command.maybe_delivered  # nothing was sent: the driver is not told it may still start
    assert command.attempts == 1 and "refused" in command.error and "loopback" in command.error
    assert not trap.leaked


# --- Feed pulls and their Link headers ------------------------------------------------------------------------


def test_a_link_to_another_host_is_not_followed_and_the_run_says_why(settings, ocpi_peer):
    settings.FEEDS_PAGE_RETRIES = 3
    settings.FEEDS_RETRY_BACKOFF_S = 1
    port = ocpi_peer.server.server_address[1]
    other_host = MetadataTrap("127.0.0.2", port)  # same port, another host: only the host differs
    try:
        connection = cpo_connection(ocpi_peer)
        next_page = other_host.url("/ocpi/cpo/2.2.1/locations?offset=1")
        ocpi_peer.route(
            "GET",
            "/ocpi/cpo/2.2.1/locations",
            lambda r: ok([location("A1")], Link=f'<{next_page}>; rel="next"', X_Total_Count="2"),
        )
        started = time.monotonic()
        run = feeds.pull_locations(connection.pk)
        assert run.status == SyncRun.Status.FAILED
        assert "refused" in run.error and "127.0.0.2 is not one of the partner's registered hosts" in run.error
        assert time.monotonic() - started < 1  # refused at once, not retried
        assert run.created == 1 and Location.objects.filter(ocpi_id="A1").exists()  # the first page is kept
        assert not other_host.leaked
    finally:
        other_host.stop()


def test_a_link_to_the_metadata_address_is_not_followed(ocpi_peer):
    connection = cpo_connection(ocpi_peer)
    link = '<http://169.254.169.254/latest/meta-data/?offset=1>; rel="next"'
    ocpi_peer.route("GET", "/ocpi/cpo/2.2.1/locations", lambda r: ok([], Link=link))
    run = feeds.pull_locations(connection.pk)
    assert run.status == SyncRun.Status.FAILED and "169.254.169.254 is not one of the partner's" in run.error


def test_a_feed_on_a_private_address_is_not_pulled_in_production(production, trap):
    connection = cpo_connection(trap)
    run = feeds.pull_locations(connection.pk)
    assert run.status == SyncRun.Status.FAILED and "127.0.0.1 is a loopback address" in run.error
    assert not trap.leaked


# --- The credentials handshake -------------------------------------------------------------------------------


@pytest.fixture
def registering():
    """A partner that staff gave token A to register with us."""
    party = PartyFactory(country_code="NL", party_id="PEE", role=Party.Role.CPO)
    return party, services.issue_registration_token(party)


def credentials(url: str) -> dict:
    return {
        "token": "their-token-B",
        "url": url,
        "roles": [
            {"role": "CPO", "party_id": "PEE", "country_code": "NL", "business_details": {"name": "Peer"}},
        ],
    }


def register(client, token_a: str, url: str) -> dict:
    return ocpi_call(client, "POST", "/ocpi/2.2.1/credentials", credentials(url), token=token_a).envelope


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/ocpi/versions", "link-local"),
        ("http://127.0.0.1:{port}/ocpi/versions", "loopback"),
        ("http://peer.example@127.0.0.1:{port}/ocpi/versions", "user information"),
        ("file:///etc/passwd", "Enter a valid URL"),  # the field's own validation
        ("ftp://peer.example/ocpi/versions", "not an http(s) URL"),
    ],
)
def test_a_partner_registering_with_a_versions_url_we_will_not_call_gets_2001(
    production, client, registering, trap, url, why
):
    party, token_a = registering
    answer = register(client, token_a, url.format(port=trap.port))
    assert answer["status_code"] == 2001
    assert answer["status_message"].startswith("url: ") and why in answer["status_message"]
    connection = PartnerConnection.objects.get(party=party)
    assert connection.registration_token_hash == hash_token(token_a)  # still valid: nothing changed
    assert connection.status == PartnerConnection.Status.PLANNED and connection.token_to_them_encrypted == ""
    assert not trap.leaked


def test_version_details_on_another_host_are_refused(client, registering, ocpi_peer):
    party, token_a = registering
    port = ocpi_peer.server.server_address[1]
    other_host = MetadataTrap("127.0.0.2", port)
    try:
        details_url = other_host.url("/ocpi/2.2.1")
        ocpi_peer.route("GET", "/ocpi/versions", lambda r: ok([{"version": "2.2.1", "url": details_url}]))
        answer = register(client, token_a, ocpi_peer.url("/ocpi/versions"))
        assert answer["status_code"] == 3001
        assert "127.0.0.2 is not one of the partner's registered hosts (127.0.0.1)" in answer["status_message"]
        connection = PartnerConnection.objects.get(party=party)
        assert "refused" in connection.last_error and connection.status == PartnerConnection.Status.PLANNED
        assert [r.path for r in ocpi_peer.requests] == ["/ocpi/versions"] and not other_host.leaked
    finally:
        other_host.stop()


def test_endpoints_that_are_not_plain_http_urls_are_refused(client, registering, ocpi_peer):
    party, token_a = registering
    ocpi_peer.route("GET", "/ocpi/versions", lambda r: ok([{"version": "2.2.1", "url": ocpi_peer.url("/ocpi/2.2.1")}]))
    endpoints = [
        {"identifier": "credentials", "role": "SENDER", "url": ocpi_peer.url("/ocpi/2.2.1/credentials")},
        {"identifier": "locations", "role": "SENDER", "url": "http://peer.example@169.254.169.254/locations"},
    ]
    ocpi_peer.route("GET", "/ocpi/2.2.1", lambda r: ok({"version": "2.2.1", "endpoints": endpoints}))
    answer = register(client, token_a, ocpi_peer.url("/ocpi/versions"))
    assert answer["status_code"] == 3001 and "endpoint locations SENDER refused" in answer["status_message"]
    connection = PartnerConnection.objects.get(party=party)
    assert connection.endpoints == [] and "user information" in connection.last_error


def test_connect_to_a_private_versions_url_is_refused_and_recorded(production, trap):
    connection = PartnerConnectionFactory(party=PartyFactory(role=Party.Role.CPO), status="planned")
    connection = services.connect_to_partner(connection.pk, trap.url("/ocpi/versions"), "their-token-A")
    assert connection.status == PartnerConnection.Status.PLANNED
    assert "Handshake failed (OCPI 3001) at versions: refused" in connection.last_error
    assert "127.0.0.1 is a loopback address" in connection.last_error
    assert connection.handshake_log[-1]["ok"] is False
    assert not trap.leaked


def test_staff_connect_form_refuses_a_private_versions_url(production, client, trap):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    party = PartyFactory(role=Party.Role.CPO)
    response = client.post(
        "/admin/roaming/party/",
        {
            "action": "connect",
            "_selected_action": [party.pk],
            "apply": "1",
            "versions_url": "http://169.254.169.254/ocpi/versions",
            "token_a": "their-token-A",
        },
    )
    assert response.status_code == 200
    assert "We do not call this URL" in response.content.decode() and "link-local" in response.content.decode()
    assert not PartnerConnection.objects.filter(party=party).exists()
