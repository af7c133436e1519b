"""OCPI 2.2.1 tokens module: our tokens for CPOs (SENDER + real-time authorize) and the CPO-side RECEIVER."""

from __future__ import annotations

from typing import Any

from cards import selectors, services
from cards.authorization import CannotCheckNow, authorize_token
from cards.identifiers import foreign_uid_lookups
from cards.models import ForeignToken
from cards.serializers import TOKEN_TYPES, TokenSerializer
from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from roaming.ocpi.envelope import (
    INVALID_PARAMETERS,
    SERVER_ERROR,
    UNKNOWN_TOKEN,
    OcpiError,
    ocpi_response,
    validated,
)
from roaming.ocpi.input import match_identity
from roaming.ocpi.ownership import check_owner
from roaming.ocpi.pagination import paginated_response


def _token_type(ctx: PartnerContext) -> str:
    value = ctx.request.GET.get("type") or "RFID"
    if value not in TOKEN_TYPES:
        raise OcpiError(INVALID_PARAMETERS, f"type: {value!r} is not one of {', '.join(TOKEN_TYPES)}")
    return value


def location_references(body: Any) -> dict | None:
    """The optional LocationReferences of an authorize request; malformed is 2001 naming the field."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "body: LocationReferences must be a JSON object")
    location_id = body.get("location_id")
    if not isinstance(location_id, str) or not location_id.strip():
        raise OcpiError(INVALID_PARAMETERS, "location_id: required, a string of 1 to 36 characters")
    if len(location_id) > 36:
        raise OcpiError(INVALID_PARAMETERS, "location_id: longer than 36 characters")
    evse_uids = body.get("evse_uids")
    if evse_uids is None:
        evse_uids = []
    if not isinstance(evse_uids, list):
        raise OcpiError(INVALID_PARAMETERS, "evse_uids: must be a list of strings")
    for index, uid in enumerate(evse_uids):
        if not isinstance(uid, str) or not uid or len(uid) > 36:
            raise OcpiError(INVALID_PARAMETERS, f"evse_uids[{index}]: must be a string of 1 to 36 characters")
    return {"location_id": location_id, "evse_uids": evse_uids}


@ocpi_endpoint("tokens", methods=("POST",))
def authorize(ctx: PartnerContext, token_uid: str):
    """POST /ocpi/emsp/2.2.1/tokens/{token_uid}/authorize[?type=RFID]: AuthorizationInfo."""
    token_type = _token_type(ctx)
    location = location_references(ctx.json(required=False))
    try:
        info, reason = authorize_token(ctx.party, token_uid, token_type, location)
    except CannotCheckNow as error:
        # Our database is stalled or down and this card is not in the warm cache: a clear "try again", so the
        # CPO applies its own rules for an unreachable eMSP (its cached token), never a 500.
        unavailable = OcpiError(SERVER_ERROR, f"{error} Our card database is unavailable.", http_status=503)
        unavailable.headers = {"Retry-After": "30"}
        raise unavailable from error
    if info is None:
        raise OcpiError(UNKNOWN_TOKEN, "Unknown token", http_status=404)
    return info


@ocpi_endpoint("tokens", methods=("GET",))
def tokens_list(ctx: PartnerContext):
    """GET /ocpi/emsp/2.2.1/tokens: our tokens the calling CPO's agreement lets it cache, paginated."""
    cards = selectors.tokens_visible_to(ctx.party)
    return paginated_response(ctx.request, cards, lambda page: [selectors.token_payload(c) for c in page])


# -- CPO side: tokens other eMSPs push to us --------------------------------------------------------------


def _match_url(data: dict, country_code: str, party_id: str, token_uid: str, token_type: str) -> None:
    match_identity(data, {"country_code": country_code, "party_id": party_id, "uid": token_uid})
    if "type" in data and data["type"] != token_type:
        raise OcpiError(INVALID_PARAMETERS, f"type: {data['type']!r} differs from the URL's type ({token_type!r})")


@ocpi_endpoint("tokens", methods=("GET", "PUT", "PATCH"))
def token_receiver(ctx: PartnerContext, country_code: str, party_id: str, token_uid: str):
    """GET/PUT/PATCH /ocpi/cpo/2.2.1/tokens/{country_code}/{party_id}/{token_uid}[?type=]."""
    owner = check_owner(ctx, country_code, party_id)
    token_type = _token_type(ctx)
    existing = ForeignToken.objects.filter(
        party=owner, uid__in=foreign_uid_lookups(token_uid, token_type), type=token_type
    ).first()
    method = ctx.request.method
    if method == "GET":
        if existing is None:
            raise OcpiError(UNKNOWN_TOKEN, "Unknown token", http_status=404)
        return existing.data
    body = ctx.json()
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "body: a Token object is required")
    if method == "PUT":
        data = validated(TokenSerializer, body)
        _match_url(data, country_code, party_id, token_uid, token_type)
        data["data"] = body
        _, created = services.store_foreign_token(owner, data)
        return ocpi_response(None, http_status=201 if created else 200)
    if "last_updated" not in body:
        raise OcpiError(INVALID_PARAMETERS, "last_updated: required in a PATCH")
    if existing is None:
        raise OcpiError(UNKNOWN_TOKEN, "Unknown token: PUT it first", http_status=404)
    data = validated(TokenSerializer, body, partial=True)
    _match_url(data, country_code, party_id, token_uid, token_type)
    data["data"] = body
    services.patch_foreign_token(existing, data)
    return None
