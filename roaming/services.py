"""Writes about parties, connections and agreements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from roaming.models import PartnerConnection, Party, credentials_endpoint
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
# Modules a partner's version details must offer, per role it registers with (else OCPI 3003). Credentials
# too, in any role: 2.2.1 says the role of another platform's credentials endpoint must be disregarded
# (its own example lists it as RECEIVER).
EXPECTED_MODULES = {
    "CPO": [("locations", "SENDER")],
    "EMSP": [("tokens", "SENDER")],
}
OCPI_ROLE_TO_PARTY_ROLE = {
    "CPO": Party.Role.CPO,
    "EMSP": Party.Role.EMSP,
    "HUB": Party.Role.HUB,
    "NSP": Party.Role.NSP,
}


class HandshakeError(Exception):
    """A handshake step that failed: `status_code` is the OCPI code we answer or record (3001, 3002, 3003).

    `answer_lost`: the request went out but no answer we could read came back (timeout, dropped
    connection, not JSON, 5xx), so the partner may have acted on it.
    """

    def __init__(self, step: str, status_code: int, message: str, *, answer_lost: bool = False):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.status_code = status_code
        self.message = f"{step}: {message}"
        self.answer_lost = answer_lost
        self.token_b: str | None = None  # the token we had just sent them, when the step was our POST/PUT


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
    def credentials_url(self) -> str | None:
        return credentials_endpoint(self.endpoints)

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


# Failures that happen before a request is written: the partner cannot have acted on it.
NOT_SENT = (NewConnectionError, ConnectTimeoutError, NameResolutionError, requests.ConnectTimeout)


def _answer_lost(error: OcpiClientError) -> bool:
    """Whether our request may have reached them without an answer we could read (timeout, dropped, garbage, 5xx)."""
    if error.refused or not error.retryable:
        return False
    seen, pending = set(), [error.__cause__]
    while pending:  # requests wraps urllib3's reason in MaxRetryError inside ConnectionError
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, NOT_SENT):
            return False
        pending.extend([cause.__cause__, cause.__context__, getattr(cause, "reason", None)])
        pending.extend(arg for arg in getattr(cause, "args", ()) if isinstance(arg, BaseException))
    return True


def _call(step: str, log: HandshakeLog, call) -> Any:
    """Run one remote step; any failure to get a usable answer is OCPI 3001 (unable to use the client's API)."""
    try:
        reply = call()
    except OcpiClientError as error:
        log.record(step, False, str(error))
        raise HandshakeError(step, UNABLE_TO_USE_CLIENT_API, str(error), answer_lost=_answer_lost(error)) from error
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
    if roles and platform.credentials_url is None:
        missing.append("credentials")
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


def _record_platform_parties(connection: PartnerConnection, roles: list[dict]) -> list[str]:
    """The other parties in their Credentials: one platform hosting several CPOs or eMSPs speaks for each.

    A party new to us is recorded as reached through this connection (it needs its own agreement in
    force before the connection may speak for it). A party we already reach another way (its own
    connection, a hub, another platform) or MobilityPlus itself is left as it is: their word does not
    re-attach it. Parties this connection no longer lists stop being reached through it. Returns notes
    for the handshake log.
    """
    if connection.party.role == Party.Role.HUB:
        return []  # a hub's clients come from hubclientinfo and need staff's confirmation (hub rules)
    own = (connection.party.country_code, connection.party.party_id)
    listed: dict[tuple[str, str], list[dict]] = {}
    for role in roles:
        key = (role["country_code"].upper(), role["party_id"].upper())
        if key != own:
            listed.setdefault(key, []).append(role)
    notes = []
    for (country_code, party_id), party_roles in listed.items():
        if is_our_party(country_code, party_id):
            notes.append(f"{country_code}*{party_id} is us: ignored")
            continue
        party, created = Party.objects.get_or_create(
            country_code=country_code,
            party_id=party_id,
            defaults={"role": Party.Role.OTHER, "name": f"{country_code}*{party_id}", "reached_through": connection},
        )
        own_connection = PartnerConnection.objects.filter(party=party).exists()
        if party.is_self or own_connection or (not created and party.reached_through_id != connection.pk):
            notes.append(f"{party.ocpi_id} is already reached another way: not attached")
            continue
        _update_party_from_roles(party, party_roles)
        notes.append(f"{party.ocpi_id} reached through this connection")
    gone = connection.platform_parties.all()
    for country_code, party_id in listed:
        gone = gone.exclude(country_code=country_code, party_id=party_id)
    for party in gone:
        party.reached_through = None
        party.save(update_fields=["reached_through"])
        notes.append(f"{party.ocpi_id} no longer listed: detached")
    return notes


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
    all_roles: list[dict] | None = None,
    attention: str = "",
) -> PartnerConnection:
    """Save the outcome of a handshake at once: tokens, endpoints, status, party details, the platform's parties.

    `attention` is set when the partner registered us but part of its answer was unusable (staff finish it).
    """
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
        connection.previous_token_from_them_hash = ""
        connection.registration_token_hash = ""
        if raw_token is not None:
            connection.accepts_raw_token = raw_token
        connection.status = PartnerConnection.Status.CONNECTED
        connection.last_contact_at = timezone.now()
        connection.needs_attention = attention
        connection.last_error = attention
        connection.last_error_at = timezone.now() if attention else None
        if roles:
            _update_party_from_roles(connection.party, roles)
        # None when their roles are unknown (an unusable answer): the parties recorded before stay.
        for note in _record_platform_parties(connection, all_roles) if all_roles is not None else []:
            log.record("parties", True, note)
        connection.handshake_log = log.steps
        connection.save()
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
        all_roles=data["roles"],
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


@dataclass
class PartnerAnswer:
    """Their answer to our credentials POST/PUT. `unusable` says what we could not use in it ("" when all is well):
    they accepted us (a token C came back), so `credentials` then holds that token and nothing else."""

    credentials: dict[str, Any]
    token_b: str
    unusable: str = ""


def _usable_token(data: Any) -> str | None:
    """Token C out of an otherwise invalid Credentials answer, if it is one we can send (OCPI: string(64))."""
    token = data.get("token") if isinstance(data, dict) else None
    if isinstance(token, str) and 0 < len(token) <= 64 and token.isprintable() and token.isascii():
        return token
    return None


def _register_at_partner(
    connection: PartnerConnection, *, method: str, url: str, client: OcpiClient, log: HandshakeLog
) -> PartnerAnswer:
    """POST or PUT our credentials at theirs with a fresh token B; they call us back with B before answering.

    While the call runs, B is accepted on versions/credentials only (as the registration token); the
    caller stores or withdraws it. An answer with a usable token C but something else unusable is
    returned with `unusable` set: the partner has already switched to B and C, so dropping them would
    leave us half-registered (their token A consumed, our retry refused).
    """
    token_b = credentials.new_token()
    # A queryset update: no history row for a token that may be withdrawn a second later.
    PartnerConnection.objects.filter(pk=connection.pk).update(registration_token_hash=credentials.hash_token(token_b))
    try:
        reply = _call("register", log, lambda: client.request(method, url, body=our_credentials(token_b)))
    except HandshakeError as error:
        error.token_b = token_b
        raise
    serializer = CredentialsSerializer(data=reply.data)
    if serializer.is_valid():
        return PartnerAnswer(serializer.validated_data, token_b)
    message = f"their credentials are invalid: {validation_message(serializer.errors)}"
    token_c = _usable_token(reply.data)
    log.record("register", False, message + ("; their token kept" if token_c else ""))
    if token_c is None:
        error = HandshakeError("register", UNABLE_TO_USE_CLIENT_API, message, answer_lost=True)
        error.token_b = token_b
        raise error
    return PartnerAnswer({"token": token_c, "roles": []}, token_b, unusable=message)


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
        all_roles=theirs["roles"],
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
        credentials_url = platform.credentials_url
        if not credentials_url:
            log.record("version_details", False, "no credentials endpoint")
            raise HandshakeError("version_details", NO_MATCHING_ENDPOINTS, "they offer no credentials endpoint")
        client = _handshake_client(token_a, raw_token=connection.accepts_raw_token, hosts=platform.hosts)
        answer = _register_at_partner(connection, method="POST", url=credentials_url, client=client, log=log)
    except HandshakeError as error:
        return _abandon_registration(connection, previous_registration_hash, error, log)
    if answer.unusable:
        attention = (
            f"Registered at the partner, but {answer.unusable}. Their token and the endpoints read with token A "
            'are kept; run "Re-read their endpoints" or "Rotate tokens" to finish.'
        )
        log.record("stored", True, "their token kept, connection needs attention")
        return _store_registration(
            connection.pk,
            platform=platform,
            token_to_them=answer.credentials["token"],
            token_from_them=answer.token_b,
            roles=[],
            log=log,
            attention=attention,
        )
    return _finish_registration(
        connection, platform, answer.credentials, answer.token_b, log, "their token and endpoints stored"
    )


def _store_rotated_tokens(
    connection_pk: int,
    *,
    token_to_them: str,
    token_from_them: str,
    registration_hash: str,
    roles: list[dict],
    log: HandshakeLog,
    all_roles: list[dict] | None,
    attention: str,
) -> PartnerConnection:
    """Save both new tokens in one go: the partner switched to them the moment it answered our PUT."""
    with transaction.atomic():
        connection = PartnerConnection.objects.select_for_update().select_related("party").get(pk=connection_pk)
        connection.token_to_them_encrypted = credentials.encrypt_token(token_to_them)
        connection.token_from_them_hash = credentials.hash_token(token_from_them)
        connection.previous_token_from_them_hash = ""
        connection.needs_attention = attention
        # Token B is no longer a registration token but their token; a token A staff handed out stays valid.
        connection.registration_token_hash = registration_hash
        connection.last_contact_at = timezone.now()
        if roles:
            _update_party_from_roles(connection.party, roles)
        for note in _record_platform_parties(connection, all_roles) if all_roles is not None else []:
            log.record("parties", True, note)
        connection.handshake_log = log.steps
        connection.save(
            update_fields=[
                "token_to_them_encrypted",
                "token_from_them_hash",
                "previous_token_from_them_hash",
                "needs_attention",
                "registration_token_hash",
                "last_contact_at",
                "handshake_log",
                "updated_at",
            ]
        )
    return connection


def _keep_both_tokens(
    connection_pk: int, error: HandshakeError, registration_hash: str, log: HandshakeLog
) -> PartnerConnection:
    """Our PUT went out but its answer was lost: the partner may have switched to the new token B, or not.

    Both the token they called us with until now and B stay valid; the first authenticated call with one
    of them retires the other (`settle_rotation`). The token they meant to give us is unknown, so our
    token for them stays as it was.
    """
    with transaction.atomic():
        connection = PartnerConnection.objects.select_for_update().select_related("party").get(pk=connection_pk)
        connection.previous_token_from_them_hash = connection.token_from_them_hash
        connection.token_from_them_hash = credentials.hash_token(error.token_b)
        connection.registration_token_hash = registration_hash
        connection.needs_attention = (
            "Token rotation pending: our PUT got no usable answer, so we accept both their previous token and "
            "the new one until they call us with either. If they switched, the token they gave us was in the "
            "lost answer and our calls to them may be refused: Test connection, and Rotate tokens again."
        )
        connection.last_error = f"Token rotation answer lost (OCPI {error.status_code}) at {error.message}"
        connection.last_error_at = timezone.now()
        log.record("stored", True, "both tokens accepted until they call us")
        connection.handshake_log = log.steps
        connection.save()
    return connection


def settle_rotation(connection_id: int, used_token: str) -> None:
    """The first authenticated call after a rotation whose answer was lost: keep the token used, retire the other."""
    used = credentials.hash_token(used_token)
    with transaction.atomic():
        connection = PartnerConnection.objects.select_for_update().get(pk=connection_id)
        previous = connection.previous_token_from_them_hash
        if not previous or used not in (previous, connection.token_from_them_hash):
            return
        if used == previous:
            # They never switched: the rotation did not happen on their side, our token for them still works.
            connection.token_from_them_hash = previous
            connection.needs_attention = ""
            note = "they still call with their previous token: the new one is retired"
        else:
            connection.needs_attention = (
                "They switched to our new token after a rotation whose answer was lost; the token they gave us "
                "in it is unknown, so our calls to them may be refused: Test connection, and Rotate tokens again."
            )
            note = "they call with the new token: the previous one is retired"
        connection.previous_token_from_them_hash = ""
        connection.handshake_log = [
            *connection.handshake_log,
            {"step": "settled", "ok": True, "detail": note, "at": format_datetime(timezone.now())},
        ]
        connection.save(
            update_fields=[
                "token_from_them_hash",
                "previous_token_from_them_hash",
                "needs_attention",
                "handshake_log",
                "updated_at",
            ]
        )


def _refresh_platform(
    connection: PartnerConnection,
    versions_url: str,
    token: str,
    log: HandshakeLog,
    *,
    raw_token: bool,
    heading: str = "Tokens rotated, but refreshing their endpoints failed",
) -> PartnerConnection:
    """Re-read their versions and endpoints with the token we hold; on failure keep the endpoints we had.

    The tokens are already rotated on both sides, so a failure here must not undo them: the connection
    keeps working on the previous endpoints and staff see the error and what to do (needs_attention).
    Success settles a connection that needed attention only for its endpoints.
    """
    try:
        platform = discover_platform(versions_url, token, log, raw_token=raw_token)
    except HandshakeError as error:
        _record_failure(connection, error, log, heading, note="; previous endpoints kept")
        connection.needs_attention = f'{heading}: run "Re-read their endpoints" once they answer again.'
        connection.save(update_fields=["needs_attention", "updated_at"])
        return connection
    log.record("endpoints", True, "their endpoints refreshed")
    connection.versions_url = platform.versions_url
    connection.version = platform.version
    connection.endpoints = platform.endpoints
    if not connection.previous_token_from_them_hash:
        connection.needs_attention = ""
    connection.last_error = ""
    connection.last_error_at = None
    connection.handshake_log = log.steps
    connection.save(
        update_fields=[
            "versions_url",
            "version",
            "endpoints",
            "needs_attention",
            "last_error",
            "last_error_at",
            "handshake_log",
            "updated_at",
        ]
    )
    return connection


def reread_partner_endpoints(connection_id: int) -> PartnerConnection:
    """Staff's "Re-read their endpoints": GET their versions and details with the token we hold; no token changes."""
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    log = HandshakeLog()
    if connection.via_hub_id or not connection.versions_url or not connection.token_to_them_encrypted:
        error = HandshakeError("versions", UNABLE_TO_USE_CLIENT_API, "not registered directly with this partner")
        _record_failure(connection, error, log)
        return connection
    token = credentials.decrypt_token(connection.token_to_them_encrypted)
    return _refresh_platform(
        connection,
        connection.versions_url,
        token,
        log,
        raw_token=connection.accepts_raw_token,
        heading="Re-reading their endpoints failed",
    )


def rotate_tokens_at_partner(connection_id: int) -> PartnerConnection:
    """PUT fresh credentials at a connected partner: new token B for them, new token C for us.

    Their Credentials answer means they already use B and accept only C, so both are saved at once
    before anything else (an answer with C but something else unusable too, flagged for staff);
    re-reading their versions and endpoints is a separate step whose failure is recorded without
    touching the tokens. An explicit refusal withdraws B and keeps the old tokens (the partner did not
    switch); no readable answer at all keeps both their old token and B valid (`_keep_both_tokens`).
    """
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    previous_registration_hash = connection.registration_token_hash
    log = HandshakeLog()
    try:
        credentials_url = connection.credentials_url
        if connection.via_hub_id or not credentials_url or not connection.token_to_them_encrypted:
            raise HandshakeError("register", UNABLE_TO_USE_CLIENT_API, "not registered directly with this partner")
        # A PUT whose answer is lost is never sent again: had they switched to B, the repeat (with our old
        # token) would be refused, and that refusal would hide that they did.
        client = OcpiClient.for_connection(connection, routing=False, retries=0)
        answer = _register_at_partner(connection, method="PUT", url=credentials_url, client=client, log=log)
    except HandshakeError as error:
        if error.answer_lost and error.token_b:
            return _keep_both_tokens(connection.pk, error, previous_registration_hash, log)
        return _abandon_registration(connection, previous_registration_hash, error, log)
    theirs = answer.credentials
    log.record("stored", True, "rotated tokens stored" + (", connection needs attention" if answer.unusable else ""))
    attention = (
        f'Tokens rotated, but {answer.unusable}: their new token is kept; run "Re-read their endpoints".'
        if answer.unusable
        else ""
    )
    connection = _store_rotated_tokens(
        connection.pk,
        token_to_them=theirs["token"],
        token_from_them=answer.token_b,
        registration_hash=previous_registration_hash,
        roles=_roles_of(connection, theirs),
        log=log,
        all_roles=None if answer.unusable else theirs["roles"],
        attention=attention,
    )
    # Their answer's URL is unusable with it: the versions URL we had is re-read instead.
    versions_url = connection.versions_url if answer.unusable else theirs["url"]
    return _refresh_platform(connection, versions_url, theirs["token"], log, raw_token=client.raw_token)


def unregister_at_partner(connection_id: int) -> PartnerConnection:
    """DELETE our credentials at the partner, then forget both tokens here.

    If the DELETE fails (unreachable, refused) nothing changes here: both tokens still work, and
    `last_error` says why.
    """
    connection = PartnerConnection.objects.select_related("party").get(pk=connection_id)
    log = HandshakeLog()
    try:
        credentials_url = connection.credentials_url
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
