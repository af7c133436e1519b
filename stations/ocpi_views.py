"""OCPI Locations endpoints: the eMSP RECEIVER (partners push their stations) and the CPO SENDER (ours).

Views stay thin: writes go through stations.services.store_locations (the same path as feed pulls),
reads through stations.ocpi_locations.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import JsonResponse

from roaming.models import Party
from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from roaming.ocpi.envelope import (
    INVALID_PARAMETERS,
    UNKNOWN_LOCATION,
    OcpiError,
    format_datetime,
    ocpi_response,
    parse_datetime,
)
from roaming.ocpi.input import match_identity
from roaming.ocpi.ownership import check_owner
from roaming.ocpi.pagination import page_request
from roaming.selectors import own_party
from stations.models import EVSE, Location
from stations.ocpi_locations import (
    InvalidObject,
    connector_to_ocpi,
    evse_to_ocpi,
    locations_to_ocpi,
    parse_location,
)
from stations.services import store_locations

# ---------------------------------------------------------------------------------------------
# Receiver: /ocpi/emsp/2.2.1/locations/{country_code}/{party_id}/{location_id}[/{evse_uid}[/{connector_id}]]


def _find_location(party, location_id: str, *, lock: bool = False) -> Location | None:
    locations = Location.objects.select_related("party")
    if lock:
        locations = locations.select_for_update(of=("self",))
    found = locations.filter(party=party, ocpi_id=location_id).first()
    if found is None:  # OCPI ids are case-insensitive; exact match first keeps the index lookup
        found = locations.filter(party=party, ocpi_id__iexact=location_id).first()
    return found


def _not_found(what: str) -> OcpiError:
    return OcpiError(UNKNOWN_LOCATION, f"Unknown {what}", http_status=404)


def _same_id(a: Any, b: str) -> bool:
    return isinstance(a, str) and a.upper() == b.upper()


def _as_ocpi(location: Location) -> dict:
    """What we hold for a location, as a partner's object: its raw copy, or our columns."""
    if location.raw:
        return copy.deepcopy(location.raw)
    return locations_to_ocpi([location])[0]


def _find_in(items: list, key: str, value: str) -> int | None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and _same_id(item.get(key), value):
            return index
    return None


def _later(*stamps: Any) -> str:
    parsed = []
    for stamp in stamps:
        try:
            parsed.append(parse_datetime(stamp))
        except OcpiError:
            continue
    return format_datetime(max(parsed)) if parsed else stamps[-1]


@ocpi_endpoint("locations", methods=("GET", "PUT", "PATCH"))
def location_receiver(
    ctx: PartnerContext,
    country_code: str,
    party_id: str,
    location_id: str,
    evse_uid: str | None = None,
    connector_id: str | None = None,
):
    owner = check_owner(ctx, country_code, party_id)
    if ctx.request.method == "GET":
        return _receiver_get(owner, location_id, evse_uid, connector_id)
    body = ctx.json()
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "body: must be a JSON object", http_status=400)
    if ctx.request.method == "PATCH" and "last_updated" not in body:
        raise OcpiError(INVALID_PARAMETERS, "last_updated: required in a PATCH")
    with transaction.atomic():
        location = _find_location(owner, location_id, lock=True)
        created = location is None
        if created:
            if evse_uid is not None or ctx.request.method == "PATCH":
                raise _not_found(f"location {location_id}")
            document = _new_location(body, country_code, party_id, location_id)
        else:
            document = _changed_document(ctx.request.method, _as_ocpi(location), body, evse_uid, connector_id)
        try:
            parsed = parse_location(document)
        except InvalidObject as error:
            raise OcpiError(INVALID_PARAMETERS, str(error)) from error
        parsed.party_id = owner.pk
        store_locations([parsed], source=ctx.connection)
    return ocpi_response(None, http_status=201 if created else 200)


def _new_location(body: dict, country_code: str, party_id: str, location_id: str) -> dict:
    for name, expected in (("country_code", country_code), ("party_id", party_id), ("id", location_id)):
        if not _same_id(body.get(name), expected):
            raise OcpiError(INVALID_PARAMETERS, f"{name}: must be {expected!r} as in the URL")
    return body


def _changed_document(method: str, document: dict, body: dict, evse_uid: str | None, connector_id: str | None) -> dict:
    """The whole location after a PUT or PATCH on it, one of its EVSEs, or one of its connectors.

    A change to an EVSE or connector sets the new last_updated on its parents too.
    """
    stamp = body.get("last_updated")
    if evse_uid is None:
        if method == "PUT":
            for name in ("country_code", "party_id", "id"):
                if not _same_id(body.get(name), document.get(name, "")):
                    raise OcpiError(INVALID_PARAMETERS, f"{name}: must be {document.get(name)!r} as in the URL")
            return body
        # Not the owner nor the id: a PATCH that moved them would lock the owner out of its own location.
        match_identity(
            body, {name: document.get(name, "") for name in ("country_code", "party_id", "id")}, "the stored location"
        )
        document.update(body)
        return document

    evses = document.setdefault("evses", [])
    index = _find_in(evses, "uid", evse_uid)
    if connector_id is None:
        if method == "PUT":
            if not _same_id(body.get("uid"), evse_uid):
                raise OcpiError(INVALID_PARAMETERS, f"uid: must be {evse_uid!r} as in the URL")
            if index is None:
                evses.append(body)
            else:
                evses[index] = body
        else:
            if index is None:
                raise _not_found(f"EVSE {evse_uid}")
            if "uid" in body and not _same_id(body["uid"], evse_uid):
                raise OcpiError(INVALID_PARAMETERS, "uid: a PATCH may not change the EVSE uid")
            evses[index].update(body)
        document["last_updated"] = _later(document.get("last_updated"), stamp)
        return document

    if index is None:
        raise _not_found(f"EVSE {evse_uid}")
    evse = evses[index]
    connectors = evse.setdefault("connectors", [])
    position = _find_in(connectors, "id", connector_id)
    if method == "PUT":
        if not _same_id(body.get("id"), connector_id):
            raise OcpiError(INVALID_PARAMETERS, f"id: must be {connector_id!r} as in the URL")
        if position is None:
            connectors.append(body)
        else:
            connectors[position] = body
    else:
        if position is None:
            raise _not_found(f"connector {connector_id}")
        if "id" in body and not _same_id(body["id"], connector_id):
            raise OcpiError(INVALID_PARAMETERS, "id: a PATCH may not change the connector id")
        connectors[position].update(body)
    evse["last_updated"] = _later(evse.get("last_updated"), stamp)
    document["last_updated"] = _later(document.get("last_updated"), stamp)
    return document


def _receiver_get(owner: Party, location_id: str, evse_uid: str | None, connector_id: str | None) -> dict:
    """What the CPO sent us (`Location.raw`: its last PUT with every later PATCH merged in), not our columns,
    so fields we keep no column for (energy_mix, directions, related_locations, images...) come back as sent."""
    location = _find_location(owner, location_id)
    if location is None:
        raise _not_found(f"location {location_id}")
    if not location.raw:  # stored before raw copies were kept
        return _one_object(location, evse_uid, connector_id)
    document = location.raw
    if evse_uid is None:
        return document
    evses = document.get("evses") or []
    index = _find_in(evses, "uid", evse_uid)
    if index is None:
        raise _not_found(f"EVSE {evse_uid}")
    if connector_id is None:
        return evses[index]
    connectors = evses[index].get("connectors") or []
    position = _find_in(connectors, "id", connector_id)
    if position is None:
        raise _not_found(f"connector {connector_id}")
    return connectors[position]


def _one_object(location: Location, evse_uid: str | None, connector_id: str | None) -> dict:
    if evse_uid is None:
        return locations_to_ocpi([location])[0]
    evse = EVSE.objects.filter(location=location, uid__iexact=evse_uid).first()
    if evse is None:
        raise _not_found(f"EVSE {evse_uid}")
    connectors = list(evse.connectors.order_by("connector_id"))
    if connector_id is None:
        return evse_to_ocpi(evse, connectors)
    for connector in connectors:
        if connector.connector_id.upper() == connector_id.upper():
            return connector_to_ocpi(connector)
    raise _not_found(f"connector {connector_id}")


# ---------------------------------------------------------------------------------------------
# Sender: /ocpi/cpo/2.2.1/locations[/{location_id}[/{evse_uid}[/{connector_id}]]] (our own stations)
#
# Pages are cut on the stable key (last_updated, id) with a cursor in the Link, so page 550 costs
# the same index range scan as page 1 (an OFFSET would read and drop every earlier row).


def _encode_cursor(location: Location) -> str:
    text = f"{location.last_updated.isoformat()}|{location.pk}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[dt.datetime, int]:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        stamp, pk = text.rsplit("|", 1)
        moment, key = dt.datetime.fromisoformat(stamp), int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise OcpiError(INVALID_PARAMETERS, "cursor: not a cursor from one of our Link headers") from exc
    # Ours always carry an offset and a key the id column can hold; anything else was made up.
    if moment.tzinfo is None or not 0 <= key < 2**63:
        raise OcpiError(INVALID_PARAMETERS, "cursor: not a cursor from one of our Link headers")
    return moment, key


@ocpi_endpoint("locations", methods=("GET",))
def location_sender_list(ctx: PartnerContext) -> JsonResponse:
    request = ctx.request
    max_limit = settings.FEEDS_SENDER_MAX_LIMIT
    params = page_request(request, default_limit=max_limit, max_limit=max_limit)
    limit, offset = params.limit, params.offset

    window = Location.objects.filter(party=own_party(), removed_at__isnull=True)
    if params.date_from:
        window = window.filter(last_updated__gte=params.date_from)
    if params.date_to:
        window = window.filter(last_updated__lt=params.date_to)
    page = window.select_related("party").order_by("last_updated", "pk")
    cursor = request.GET.get("cursor")
    if cursor:
        stamp, pk = _decode_cursor(cursor)
        # The `>=` bound gives the index a range to start from; the OR alone would scan from the first row.
        page = page.filter(last_updated__gte=stamp).filter(Q(last_updated__gt=stamp) | Q(pk__gt=pk))
    elif offset:
        # A partner that pages by offset itself still gets an answer; our own Links never use it.
        page = page[offset:]
    locations = list(page[: limit + 1])
    more = len(locations) > limit
    locations = locations[:limit]
    headers = {"X-Total-Count": str(window.count()), "X-Limit": str(max_limit)}
    if more:
        query = {k: v for k, v in request.GET.items() if k not in ("cursor", "offset")}
        query.update(cursor=_encode_cursor(locations[-1]), limit=str(limit))
        headers["Link"] = f'<{request.build_absolute_uri(request.path)}?{urlencode(query)}>; rel="next"'
    return ocpi_response(locations_to_ocpi(locations), headers=headers)


@ocpi_endpoint("locations", methods=("GET",))
def location_sender_object(
    ctx: PartnerContext, location_id: str, evse_uid: str | None = None, connector_id: str | None = None
):
    location = _find_location(own_party(), location_id)
    if location is None or location.removed_at is not None:
        raise _not_found(f"location {location_id}")
    return _one_object(location, evse_uid, connector_id)
