"""OCPI configuration modules we serve: versions, version details, credentials, hubclientinfo."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from roaming import selectors, services
from roaming.models import Party
from roaming.ocpi import credentials
from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from roaming.ocpi.envelope import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    OCPI_VERSION,
    OcpiError,
    format_datetime,
    ocpi_response,
    validated,
)
from roaming.serializers import ClientInfoSerializer

# Every OCPI endpoint we serve (the agreed URL map), with its interface role, for our CPO and eMSP roles.
OUR_ENDPOINTS = (
    ("credentials", "SENDER", "/ocpi/2.2.1/credentials"),
    ("hubclientinfo", "RECEIVER", "/ocpi/2.2.1/hubclientinfo"),
    # As eMSP: we own tokens, receive partners' locations, sessions and CDRs, and send commands.
    ("tokens", "SENDER", "/ocpi/emsp/2.2.1/tokens"),
    ("locations", "RECEIVER", "/ocpi/emsp/2.2.1/locations"),
    ("sessions", "RECEIVER", "/ocpi/emsp/2.2.1/sessions"),
    ("cdrs", "RECEIVER", "/ocpi/emsp/2.2.1/cdrs"),
    ("commands", "SENDER", "/ocpi/emsp/2.2.1/commands"),
    ("tariffs", "RECEIVER", "/ocpi/emsp/2.2.1/tariffs"),
    # As CPO: we own our locations, receive partners' tokens and commands for our stations.
    ("locations", "SENDER", "/ocpi/cpo/2.2.1/locations"),
    ("tokens", "RECEIVER", "/ocpi/cpo/2.2.1/tokens"),
    ("commands", "RECEIVER", "/ocpi/cpo/2.2.1/commands"),
    # As CPO: sessions and CDRs at our stations, for the drivers' eMSPs to pull (also pushed to their receivers).
    ("sessions", "SENDER", "/ocpi/cpo/2.2.1/sessions"),
    ("cdrs", "SENDER", "/ocpi/cpo/2.2.1/cdrs"),
    ("tariffs", "SENDER", "/ocpi/cpo/2.2.1/tariffs"),
)


@ocpi_endpoint("versions")
def versions(ctx: PartnerContext) -> list[dict[str, str]]:
    return [{"version": OCPI_VERSION, "url": f"{settings.OCPI_BASE_URL}/ocpi/{OCPI_VERSION}"}]


@ocpi_endpoint("versions")
def version_details(ctx: PartnerContext) -> dict[str, Any]:
    base = settings.OCPI_BASE_URL
    return {
        "version": OCPI_VERSION,
        "endpoints": [
            {"identifier": module, "role": role, "url": f"{base}{path}"} for module, role, path in OUR_ENDPOINTS
        ],
    }


def _presented_token(ctx: PartnerContext) -> tuple[str, bool]:
    """The token the caller authenticated with (what it must keep using to call us), and whether it came raw."""
    connection = ctx.connection
    if ctx.with_registration_token:
        expected = {connection.registration_token_hash}
    else:  # during a rotation whose answer was lost, either of their tokens
        expected = {connection.token_from_them_hash, connection.previous_token_from_them_hash} - {""}
    header = ctx.request.headers.get("Authorization", "")
    raw_value = header.strip().partition(" ")[2].strip()
    for candidate in credentials.tokens_in_header(header):
        if credentials.hash_token(candidate) in expected:
            return candidate, candidate == raw_value
    raise OcpiError(CLIENT_ERROR, "Unknown or missing credentials token", http_status=401)


@ocpi_endpoint("credentials", methods=("GET", "POST", "PUT", "DELETE"))
def credentials_module(ctx: PartnerContext):
    """The 2.2.1 credentials module: POST registers with token A, PUT rotates, DELETE unregisters."""
    method = ctx.request.method
    if method == "GET":
        return services.our_credentials(_presented_token(ctx)[0])
    if method == "POST":
        if not ctx.with_registration_token:
            raise OcpiError(CLIENT_ERROR, "Already registered: use PUT to update or DELETE first", http_status=405)
        raw = _presented_token(ctx)[1]
        return services.accept_registration(ctx.connection, ctx.json(), update=False, raw_token=raw)
    if ctx.with_registration_token:
        raise OcpiError(CLIENT_ERROR, "Not registered: register with POST first", http_status=405)
    if method == "PUT":
        raw = _presented_token(ctx)[1]
        return services.accept_registration(ctx.connection, ctx.json(), update=True, raw_token=raw)
    services.unregister(ctx.connection)
    return None


def _client_info(connection) -> dict[str, Any]:
    party = connection.party
    role = {Party.Role.CPO_EMSP: "CPO"}.get(party.role, party.role)
    return {
        "party_id": party.party_id,
        "country_code": party.country_code,
        "role": role,
        "status": connection.hub_client_status or "PLANNED",
        "last_updated": format_datetime(connection.hub_client_updated_at or connection.updated_at),
    }


@ocpi_endpoint("hubclientinfo", methods=("GET", "PUT"))
def hub_client_info(ctx: PartnerContext, country_code: str, party_id: str):
    """Receiver of the hub's ClientInfo: which of its clients are connected, offline, planned or suspended."""
    hub = ctx.connection
    if hub.party.role != Party.Role.HUB:
        raise OcpiError(CLIENT_ERROR, "Only a hub sends ClientInfo", http_status=403)
    if ctx.request.method == "GET":
        client = selectors.hub_client(hub, country_code, party_id)
        if client is None:
            raise OcpiError(CLIENT_ERROR, f"Unknown client {country_code.upper()}*{party_id.upper()}", http_status=404)
        return _client_info(client)
    info = validated(ClientInfoSerializer, ctx.json())
    if (info["country_code"].upper(), info["party_id"].upper()) != (country_code.upper(), party_id.upper()):
        raise OcpiError(INVALID_PARAMETERS, "country_code/party_id: differ from the URL")
    connection, created = services.record_hub_client_info(hub, info)
    if connection is None:
        return ocpi_response(None, message="Party is not connected through this hub; status not recorded")
    return ocpi_response(None, http_status=201 if created else 200)
