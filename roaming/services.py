"""Writes about parties, connections and agreements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from roaming.models import PartnerConnection, Party
from roaming.ocpi import credentials
from roaming.ocpi.client import OcpiClient, OcpiClientError
from roaming.ocpi.destinations import RefusedDestination, check_url, url_host
from roaming.ocpi.envelope import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    NO_MATCHING_ENDPOINTS,
    UNABLE_TO_USE_CLIENT_API,
    UNSUPPORTED_VERSION,
    OcpiError,
    format_datetime,
    validated,
    validation_message,
)
from roaming.selectors import agreement_in_force_through_hub, is_our_party, own_party
from roaming.serializers import CredentialsSerializer


def store_partner_tokens(
    connection: PartnerConnection, *, from_them: str | None = None, to_them: str | None = None
) -> PartnerConnection:
    """Keep the token they call us with (hashed) and the token we call them with (encrypted)."""
    fields = []
    if from_them is not None:
        connection.token_from_them_hash = credentials.hash_token(from_them) if from_them else ""
        fields.append("token_from_them_hash")
    if to_them is not None:
        connection.token_to_them_encrypted = credentials.encrypt_token(to_them) if to_them else ""
        fields.append("token_to_them_encrypted")
    if fields:
        connection.save(update_fields=[*fields, "updated_at"])
    return connection


# --- Credentials handshake (OCPI 2.2.1, credentials module) ---------------------------------------------------------

SUPPORTED_VERSIONS = ("2.2.1",)
# During a handshake the other side waits on us: one quick retry, never a long backoff.
HANDSHAKE_RETRIES = 1
HANDSHAKE_BACKOFF_S = 0.2
# Modules a partner's version details must offer, per role it registers with (else OCPI 3003).
EXPECTED_MODULES = {
    "CPO": [("credentials", "SENDER"), ("locations", "SENDER")],
    "EMSP": [("credentials", "SENDER"), ("tokens", "SENDER")],
}
OCPI_ROLE_TO_PARTY_ROLE = {
    "CPO": Party.Role.CPO,
    "EMSP": Party.Role.EMSP,
    "HUB": Party.Role.HUB,
    "NSP": Party.Role.NSP,
}


class HandshakeError(Exception):
    """A handshake step that failed: `status_code` is the OCPI code we answer or record (3001, 3002, 3003)."""

    def __init__(self, step: str, status_code: int, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.status_code = status_code
        self.message = f"{step}: {message}"


@dataclass
class PartnerPlatform:
    """What we learnt from a partner's versions and version details."""

    versions_url: str
    version: str
    endpoints: list[dict[str, str]]

    def endpoint_url(self, module: str, role: str) -> str | None:
        for endpoint in self.endpoints:
            if endpoint["identifier"] == module and endpoint["role"] == role:
                return endpoint["url"]
        return None

    @property
    def hosts(self) -> frozenset[str]:
        """The hosts their token may go to once stored: see roaming.ocpi.destinations.registered_hosts."""
        return frozenset({url_host(self.versions_url), *(url_host(e["url"]) for e in self.endpoints)})


class HandshakeLog:
    """The outcome of each step, kept on the connection so staff see where a handshake stopped."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def record(self, step: str, ok: bool, detail: str = "") -> None:
        self.steps.append({"step": step, "ok": ok, "detail": detail[:500], "at": format_datetime(timezone.now())})


def our_versions_url() -> str:
    return f"{settings.OCPI_BASE_URL}/ocpi/versions"


def our_credentials(token: str) -> dict[str, Any]:
    """Our Credentials object: the token the partner must use to call us, our versions URL, our two roles."""
    me = own_party()
    details: dict[str, Any] = {"name": me.name}
    if me.website:
        details["website"] = me.website
    return {
        "token": token,
        "url": our_versions_url(),
        "roles": [
            {"role": role, "business_details": details, "party_id": me.party_id, "country_code": me.country_code}
            for role in ("CPO", "EMSP")
        ],
    }


def _handshake_client(token: str, *, hosts: frozenset[str], raw_token: bool = False) -> OcpiClient:
    return OcpiClient(token, raw_token=raw_token, retries=HANDSHAKE_RETRIES, backoff=HANDSHAKE_BACKOFF_S, hosts=hosts)


def check_versions_url(url: str) -> None:
    """A versions URL a partner or staff gives us: http(s), no user information, not a private address.

    It becomes the partner's first registered host, so any public host is accepted; a host name is
    resolved and checked on each call.
    """
    check_url(url)


def _call(step: str, log: HandshakeLog, call) -> Any:
    """Run one remote step; any failure to get a usable answer is OCPI 3001 (unable to use the client's API)."""
    try:
        reply = call()
    except OcpiClientError as error:
        log.record(step, False, str(error))
        raise HandshakeError(step, UNABLE_TO_USE_CLIENT_API, str(error)) from error
    log.record(step, True, f"HTTP {reply.http_status} in {reply.elapsed_ms:.0f} ms")
    return reply


def discover_platform(
    versions_url: str, token: str, log: HandshakeLog, *, raw_token: bool = False, roles: list[str] | None = None
) -> PartnerPlatform:
    """GET their versions, pick the highest version we share, GET its details and check the modules we need.

    Their version details must be on the versions URL's host; their endpoints may be on other hosts (which
    then become registered hosts too) but must be http(s) URLs that do not name a private address.
    """
    try:
        versions_host = url_host(versions_url)
    except RefusedDestination as error:
        log.record("versions", False, f"refused: {error}")
        raise HandshakeError("versions", UNABLE_TO_USE_CLIENT_API, f"refused: {error}") from error
    client = _handshake_client(token, raw_token=raw_token, hosts=frozenset({versions_host}))
    reply = _call("versions", log, lambda: client.get(versions_url))
    versions = reply.data
    if not isinstance(versions, list) or not all(
        isinstance(v, dict) and isinstance(v.get("version"), str) and isinstance(v.get("url"), str) for v in versions
    ):
        log.record("versions", False, "not a list of {version, url}")
        raise HandshakeError("versions", UNABLE_TO_USE_CLIENT_API, "their versions answer is not a list of Version")
    offered = {v["version"]: v["url"] for v in versions}
    mutual = [version for version in SUPPORTED_VERSIONS if version in offered]
    if not mutual:
        log.record("versions", False, f"no mutual version in {sorted(offered)}")
        raise HandshakeError(
            "versions", UNSUPPORTED_VERSION, f"no mutual version: they offer {sorted(offered)}, we {SUPPORTED_VERSIONS}"
        )
    version = max(mutual, key=lambda v: tuple(int(part) for part in v.split(".")))

    reply = _call("version_details", log, lambda: client.get(offered[version]))
    details = reply.data
    endpoints = details.get("endpoints") if isinstance(details, dict) else None
    if not isinstance(endpoints, list) or not all(
        isinstance(e, dict) and all(isinstance(e.get(key), str) for key in ("identifier", "role", "url"))
        for e in endpoints
    ):
        log.record("version_details", False, "no valid endpoints list")
        raise HandshakeError(
            "version_details", UNABLE_TO_USE_CLIENT_API, "their version details have no valid endpoints list"
        )
    for endpoint in endpoints:
        try:
            check_url(endpoint["url"])
        except RefusedDestination as error:
            message = f"endpoint {endpoint['identifier']} {endpoint['role']} refused: {error}"
            log.record("version_details", False, message)
            raise HandshakeError("version_details", UNABLE_TO_USE_CLIENT_API, message) from error
    platform = PartnerPlatform(
        versions_url=versions_url,
        version=version,
        endpoints=[{"identifier": e["identifier"], "role": e["role"].upper(), "url": e["url"]} for e in endpoints],
    )
    missing = [
        f"{module} {role}"
        for ocpi_role in roles or []
        for module, role in EXPECTED_MODULES.get(ocpi_role, [])
        if platform.endpoint_url(module, role) is None
    ]
    if missing:
        log.record("version_details", False, f"missing {', '.join(sorted(set(missing)))}")
        raise HandshakeError(
            "version_details", NO_MATCHING_ENDPOINTS, f"missing expected endpoints: {', '.join(sorted(set(missing)))}"
        )
    return platform


def _roles_of(connection: PartnerConnection, credentials_data: dict) -> list[dict]:
    """The roles in their Credentials that belong to the party this connection is for."""
    party = connection.party
    return [
        role
        for role in credentials_data["roles"]
        if (role["country_code"].upper(), role["party_id"].upper()) == (party.country_code, party.party_id)
    ]


def _update_party_from_roles(party: Party, roles: list[dict]) -> None:
    kinds = {role["role"] for role in roles}
    if {"CPO", "EMSP"} <= kinds:
        party.role = Party.Role.CPO_EMSP
    elif len(kinds) == 1:
        party.role = OCPI_ROLE_TO_PARTY_ROLE.get(next(iter(kinds)), Party.Role.OTHER)
    details = roles[0]["business_details"]
    party.name = details["name"]
    # OCPI URLs may be 255 long, our columns 200: an over-long one is left out rather than failing the handshake.
    website, logo = details.get("website", ""), (details.get("logo") or {}).get("url", "")
    if website and len(website) <= Party._meta.get_field("website").max_length:
        party.website = website
    if logo and len(logo) <= Party._meta.get_field("logo_url").max_length:
        party.logo_url = logo
    party.save()


def _record_failure(
    connection: PartnerConnection,
    error: HandshakeError,
    log: HandshakeLog,
    heading: str = "Handshake failed",
    note: str = "",
) -> None:
    """Keep what failed on the connection and touch nothing else (tokens, endpoints and status stay)."""
    connection.last_error = f"{heading} (OCPI {error.status_code}) at {error.message}{note}"
    connection.last_error_at = timezone.now()
    connection.handshake_log = log.steps
    connection.save(update_fields=["last_error", "last_error_at", "handshake_log", "updated_at"])


def _store_registration(
    connection_pk: int,
    *,
    platform: PartnerPlatform,
    token_to_them: str,
    token_from_them: str,
    roles: list[dict],
    log: HandshakeLog,
    expected_registration_hash: str | None = None,
    raw_token: bool | None = None,
) -> PartnerConnection:
    """Save the outcome of a successful handshake at once: tokens, endpoints, status, party details."""
    with transaction.atomic():
        connection = PartnerConnection.objects.select_for_update().select_related("party").get(pk=connection_pk)
        if expected_registration_hash is not None and connection.registration_token_hash != expected_registration_hash:
            # Someone else registered with the same token A while we were calling back.
            raise OcpiError(CLIENT_ERROR, "Already registered with this token", http_status=405)
        connection.versions_url = platform.versions_url
        connection.version = platform.version
        connection.endpoints = platform.endpoints
        connection.token_to_them_encrypted = credentials.encrypt_token(token_to_them)
        connection.token_from_them_hash = credentials.hash_token(token_from_them)
        connection.registration_token_hash = ""
        if raw_token is not None:
            connection.accepts_raw_token = raw_token
        connection.status = PartnerConnection.Status.CONNECTED
        connection.last_contact_at = timezone.now()
        connection.last_error = ""
        connection.last_error_at = None
        connection.handshake_log = log.steps
        connection.save()
        if roles:
            _update_party_from_roles(connection.party, roles)
    return connection


def accept_registration(
    connection: PartnerConnection, body: Any, *, update: bool, raw_token: bool = False
) -> dict[str, Any]:
    """POST (register) or PUT (update) on our credentials: call them back with their token, return our new one.

    Nothing is stored until their versions and details have been fetched; a failure leaves tokens,
    endpoints and status as they were and only records the error. A partner that authenticates with
    an unencoded token (the pre-2.2.1 habit) is called with an unencoded token too.
    """
    raw_token = raw_token or connection.accepts_raw_token
    data = validated(CredentialsSerializer, body)
    try:
        check_versions_url(data["url"])
    except RefusedDestination as error:
        raise OcpiError(INVALID_PARAMETERS, f"url: refused: {error}") from error
    roles = _roles_of(connection, data)
    if not roles:
        party = connection.party
        raise OcpiError(INVALID_PARAMETERS, f"roles: none is {party.ocpi_id}, the party this token was issued to")
    log = HandshakeLog()
    log.record("credentials_received", True, f"{'PUT' if update else 'POST'} from {connection.party.ocpi_id}")
    try:
        platform = discover_platform(
            data["url"], data["token"], log, raw_token=raw_token, roles=[r["role"] for r in roles]
        )
    except HandshakeError as error:
        _record_failure(connection, error, log)
        raise OcpiError(error.status_code, f"Handshake failed at {error.message}") from error
    token_c = credentials.new_token()
    log.record("stored", True, "token issued, endpoints stored")
    _store_registration(
        connection.pk,
        platform=platform,
        token_to_them=data["token"],
        token_from_them=token_c,
        roles=roles,
        log=log,
        expected_registration_hash=None if update else connection.registration_token_hash,
        raw_token=raw_token,
    )
    return our_credentials(token_c)


def unregister(connection: PartnerConnection) -> PartnerConnection:
    """DELETE on our credentials (or after ours at theirs): forget both tokens; the partner can no longer call us."""
    with transaction.atomic():
        locked = PartnerConnection.objects.select_for_update().get(pk=connection.pk)
        locked.token_from_them_hash = ""
        locked.token_to_them_encrypted = ""
        locked.registration_token_hash = ""
        locked.status = PartnerConnection.Status.DISCONNECTED
        locked.save()
    return locked


def issue_registration_token(party: Party) -> str:
    """Create token A for a partner to register with us; only its hash is kept, so it is shown once."""
    if party.is_self:
        raise ValueError(f"{party.name} is us: nobody registers as our own party")
    connection, _ = PartnerConnection.objects.get_or_create(party=party)
    if connection.via_hub_id:
        raise ValueError(f"{party.name} is reached through a hub; register the hub instead")
    token = credentials.new_token()
    connection.registration_token_hash = credentials.hash_token(token)
    if connection.status == PartnerConnection.Status.DISCONNECTED:
        connection.status = PartnerConnection.Status.PLANNED
    connection.save()
    return token


def _register_at_partner(
    connection: PartnerConnection, *, method: str, url: str, client: OcpiClient, log: HandshakeLog
) -> tuple[dict, str]:
    """POST or PUT our credentials at theirs with a fresh token B; they call us back with B before answering.

    Returns their Credentials and B. While the call runs, B is accepted on versions/credentials only
    (as the registration token); the caller stores or withdraws it.
    """
    token_b = credentials.new_token()
    # A queryset update: no history row for a token that may be withdrawn a second later.
    PartnerConnection.objects.filter(pk=connection.pk).update(registration_token_hash=credentials.hash_token(token_b))
    reply = _call("register", log, lambda: client.request(method, url, body=our_credentials(token_b)))
    serializer = CredentialsSerializer(data=reply.data)
    if not serializer.is_valid():
        message = validation_message(serializer.errors)
        log.record("register", False, f"their credentials are invalid: {message}")
        raise HandshakeError("register", UNABLE_TO_USE_CLIENT_API, f"their credentials are invalid: {message}")
    return serializer.validated_data, token_b


def _abandon_registration(
    connection: PartnerConnection, previous_registration_hash: str, error: HandshakeError, log: HandshakeLog
) -> PartnerConnection:
    """A failed handshake: withdraw the callback token it issued and record where it failed; nothing else changes."""
    PartnerConnection.objects.filter(pk=connection.pk).update(registration_token_hash=previous_registration_hash)
    connection.refresh_from_db()
    _record_failure(connection, error, log)
    return connection


def _finish_registration(
    connection: PartnerConnection,
    platform: PartnerPlatform,
    theirs: dict,
    token_b: str,
    log: HandshakeLog,
    note: str,
) -> PartnerConnection:
    log.record("stored", True, note)
    return _store_registration(
        connection.pk,
        platform=platform,
        token_to_them=theirs["token"],
        token_from_them=token_b,
        roles=_roles_of(connection, theirs),
        log=log,
    )


def connect_to_partner(connection_id: int, versions_url: str, token_a: str) -> PartnerConnection:
    """Register MobilityPlus at a partner: their versions with token A, then POST our credentials.

    Each step's outcome lands in `handshake_log`; on failure `last_error` says where, and the old
    tokens, endpoints and status are kept.
    """
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    previous_registration_hash = connection.registration_token_hash
    party = connection.party
    log = HandshakeLog()
    try:
        expected = ["CPO", "EMSP"] if party.role == Party.Role.CPO_EMSP else [party.role]
        platform = discover_platform(versions_url, token_a, log, raw_token=connection.accepts_raw_token, roles=expected)
        credentials_url = platform.endpoint_url("credentials", "SENDER") or platform.endpoint_url(
            "credentials", "RECEIVER"
        )
        if not credentials_url:
            log.record("version_details", False, "no credentials endpoint")
            raise HandshakeError("version_details", NO_MATCHING_ENDPOINTS, "they offer no credentials endpoint")
        client = _handshake_client(token_a, raw_token=connection.accepts_raw_token, hosts=platform.hosts)
        theirs, token_b = _register_at_partner(connection, method="POST", url=credentials_url, client=client, log=log)
    except HandshakeError as error:
        return _abandon_registration(connection, previous_registration_hash, error, log)
    return _finish_registration(connection, platform, theirs, token_b, log, "their token and endpoints stored")


def _store_rotated_tokens(
    connection_pk: int,
    *,
    token_to_them: str,
    token_from_them: str,
    registration_hash: str,
    roles: list[dict],
    log: HandshakeLog,
) -> PartnerConnection:
    """Save both new tokens in one go: the partner switched to them the moment it answered our PUT."""
    with transaction.atomic():
        connection = PartnerConnection.objects.select_for_update().select_related("party").get(pk=connection_pk)
        connection.token_to_them_encrypted = credentials.encrypt_token(token_to_them)
        connection.token_from_them_hash = credentials.hash_token(token_from_them)
        # Token B is no longer a registration token but their token; a token A staff handed out stays valid.
        connection.registration_token_hash = registration_hash
        connection.last_contact_at = timezone.now()
        connection.handshake_log = log.steps
        connection.save(
            update_fields=[
                "token_to_them_encrypted",
                "token_from_them_hash",
                "registration_token_hash",
                "last_contact_at",
                "handshake_log",
                "updated_at",
            ]
        )
        if roles:
            _update_party_from_roles(connection.party, roles)
    return connection


def _refresh_platform(
    connection: PartnerConnection, versions_url: str, token: str, log: HandshakeLog, *, raw_token: bool
) -> PartnerConnection:
    """Re-read their versions and endpoints with the new token; on failure keep the endpoints we had.

    The tokens are already rotated on both sides, so a failure here must not undo them: the connection
    keeps working on the previous endpoints and staff see the error (a later rotation refreshes again).
    """
    try:
        platform = discover_platform(versions_url, token, log, raw_token=raw_token)
    except HandshakeError as error:
        heading = "Tokens rotated, but refreshing their endpoints failed"
        _record_failure(connection, error, log, heading, note="; previous endpoints kept")
        return connection
    log.record("endpoints", True, "their endpoints refreshed")
    connection.versions_url = platform.versions_url
    connection.version = platform.version
    connection.endpoints = platform.endpoints
    connection.last_error = ""
    connection.last_error_at = None
    connection.handshake_log = log.steps
    connection.save(
        update_fields=[
            "versions_url",
            "version",
            "endpoints",
            "last_error",
            "last_error_at",
            "handshake_log",
            "updated_at",
        ]
    )
    return connection


def rotate_tokens_at_partner(connection_id: int) -> PartnerConnection:
    """PUT fresh credentials at a connected partner: new token B for them, new token C for us.

    Their valid Credentials answer means they already use B and accept only C, so both are saved at
    once before anything else; re-reading their versions and endpoints is a separate step whose
    failure is recorded without touching the tokens. A failure before that answer withdraws B and
    keeps the old tokens (the partner did not switch).
    """
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    previous_registration_hash = connection.registration_token_hash
    log = HandshakeLog()
    try:
        credentials_url = connection.endpoint_url("credentials", "SENDER")
        if connection.via_hub_id or not credentials_url or not connection.token_to_them_encrypted:
            raise HandshakeError("register", UNABLE_TO_USE_CLIENT_API, "not registered directly with this partner")
        client = OcpiClient.for_connection(
            connection, routing=False, retries=HANDSHAKE_RETRIES, backoff=HANDSHAKE_BACKOFF_S
        )
        theirs, token_b = _register_at_partner(connection, method="PUT", url=credentials_url, client=client, log=log)
    except HandshakeError as error:
        return _abandon_registration(connection, previous_registration_hash, error, log)
    log.record("stored", True, "rotated tokens stored")
    connection = _store_rotated_tokens(
        connection.pk,
        token_to_them=theirs["token"],
        token_from_them=token_b,
        registration_hash=previous_registration_hash,
        roles=_roles_of(connection, theirs),
        log=log,
    )
    return _refresh_platform(connection, theirs["url"], theirs["token"], log, raw_token=client.raw_token)


def unregister_at_partner(connection_id: int) -> PartnerConnection:
    """DELETE our credentials at the partner, then forget both tokens here.

    If the DELETE fails (unreachable, refused) nothing changes here: both tokens still work, and
    `last_error` says why.
    """
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    log = HandshakeLog()
    try:
        credentials_url = connection.endpoint_url("credentials", "SENDER")
        if connection.via_hub_id or not credentials_url or not connection.token_to_them_encrypted:
            raise HandshakeError("unregister", UNABLE_TO_USE_CLIENT_API, "not registered directly with this partner")
        client = OcpiClient.for_connection(
            connection, routing=False, retries=HANDSHAKE_RETRIES, backoff=HANDSHAKE_BACKOFF_S
        )
        _call("unregister", log, lambda: client.delete(credentials_url))
    except HandshakeError as error:
        _record_failure(connection, error, log)
        return connection
    connection = unregister(connection)
    connection.handshake_log = log.steps
    connection.save(update_fields=["handshake_log", "updated_at"])
    return connection


def record_contact(connection_id: int) -> None:
    """Note that the partner just answered us or called us successfully (`last_contact_at`).

    One UPDATE and nothing else: it leaves `updated_at` alone, so the OCPI layer's per-process
    connection caches, which watch `updated_at`, are not invalidated by every contact. Call it with
    the connection you called (a hub client's own connection when routed through its hub).
    """
    PartnerConnection.objects.filter(pk=connection_id).update(last_contact_at=timezone.now())


# --- Staff operations -------------------------------------------------------------------------------------------------


@dataclass
class ConnectionCheck:
    ok: bool
    latency_ms: float | None
    detail: str


def check_connection(connection: PartnerConnection) -> ConnectionCheck:
    """Call their versions endpoint with our token (the hub's, when routed) and time it."""
    transport = connection.transport
    if not transport.versions_url or not transport.token_to_them_encrypted:
        return ConnectionCheck(False, None, "not registered: no versions URL or token")
    # The versions module carries no routing headers: through a hub, this tests the hub link itself.
    client = OcpiClient.for_connection(
        transport, routing=False, retries=0, timeout=min(settings.OCPI_HTTP_TIMEOUT_S, 5)
    )
    try:
        reply = client.get(transport.versions_url)
    except OcpiClientError as error:
        connection.last_error = f"Test connection failed: {error}"
        connection.last_error_at = timezone.now()
        connection.save(update_fields=["last_error", "last_error_at", "updated_at"])
        return ConnectionCheck(False, None, str(error))
    versions = reply.data if isinstance(reply.data, list) else []
    offered = ", ".join(str(v.get("version")) for v in versions if isinstance(v, dict)) or "none"
    connection.last_contact_at = timezone.now()
    connection.save(update_fields=["last_contact_at", "updated_at"])
    return ConnectionCheck(True, reply.elapsed_ms, f"versions offered: {offered}")


def suspend_connection(connection: PartnerConnection) -> PartnerConnection:
    """Refuse the partner's calls everywhere (the OCPI layer answers 403) until resumed."""
    connection.status = PartnerConnection.Status.SUSPENDED
    connection.save()
    return connection


def resume_connection(connection: PartnerConnection) -> PartnerConnection:
    registered = bool(connection.transport.token_to_them_encrypted or connection.token_from_them_hash)
    connection.status = PartnerConnection.Status.CONNECTED if registered else PartnerConnection.Status.PLANNED
    connection.save()
    return connection


# --- Hub client info -------------------------------------------------------------------------------------------------


def record_hub_client_info(hub: PartnerConnection, info: dict[str, Any]) -> tuple[PartnerConnection | None, bool]:
    """Keep the ConnectionStatus a hub reports for one of its clients; new parties get a via-hub connection.

    Returns the client's connection (None when the party is reached another way: directly or through
    another hub, it is never re-attached) and whether it was created. An older report than the one we
    hold is ignored. A ClientInfo about MobilityPlus itself is refused (HTTP 403): nobody outside may
    act as our own party. Recording a client gives the hub no rights: it may act for the client only
    once staff have an agreement in force with it through this hub (`selectors.hub_client_for_writes`).
    """
    country_code, party_id = info["country_code"].upper(), info["party_id"].upper()
    if is_our_party(country_code, party_id):
        raise OcpiError(CLIENT_ERROR, f"{country_code}*{party_id} is us: no hub speaks for it", http_status=403)
    last_updated = info["last_updated"]  # an aware datetime (roaming.serializers.ClientInfoSerializer)
    role = OCPI_ROLE_TO_PARTY_ROLE.get(info["role"], Party.Role.OTHER)
    with transaction.atomic():
        party, party_created = Party.objects.get_or_create(
            country_code=country_code, party_id=party_id, defaults={"role": role, "name": f"{country_code}*{party_id}"}
        )
        if party.is_self:
            raise OcpiError(CLIENT_ERROR, f"{party.ocpi_id} is us: no hub speaks for it", http_status=403)
        # A party we knew before (maybe with an agreement of its own) is not reached through this hub on
        # the hub's word: it stays PLANNED, so no token push or command goes to the hub for it, until
        # staff confirm it (an agreement through this hub) and resume it.
        trusted = party_created or agreement_in_force_through_hub(party, hub.party)
        connection, created = PartnerConnection.objects.select_for_update().get_or_create(
            party=party,
            defaults={
                "via_hub": hub,
                "status": PartnerConnection.Status.CONNECTED
                if info["status"] == "CONNECTED" and trusted
                else PartnerConnection.Status.PLANNED,
            },
        )
        if connection.via_hub_id != hub.pk:
            return None, False
        # Only a client of this hub may have its role widened by the hub's report.
        if not party_created and {party.role, role} == {Party.Role.CPO, Party.Role.EMSP}:
            party.role = Party.Role.CPO_EMSP
            party.save(update_fields=["role"])
        if created or not connection.hub_client_updated_at or connection.hub_client_updated_at <= last_updated:
            connection.hub_client_status = info["status"]
            connection.hub_client_updated_at = last_updated
            connection.save(update_fields=["hub_client_status", "hub_client_updated_at", "updated_at"])
    return connection, created
