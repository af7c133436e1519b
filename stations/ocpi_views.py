"""OCPI Locations endpoints: the eMSP RECEIVER (partners push their stations) and the CPO SENDER (ours).

Views stay thin: writes go through stations.services.store_locations (the same path as feed pulls),
reads through stations.ocpi_locations.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
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
from roaming.ocpi.pagination import paginated_response
from roaming.ocpi.repairs import RepairTally
from roaming.selectors import own_party
from stations.models import EVSE, Location
from stations.ocpi_locations import (
    InvalidObject,
    ParsedLocation,
    connector_to_ocpi,
    evse_to_ocpi,
    locations_to_ocpi,
    parse_location,
    parse_status_patch,
)
from stations.services import record_repairs, store_locations
from stations.status_inbox import accept_evse_status

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
    if type(a) is int:  # an id sent as a number (a repair parse_location notes)
        a = str(a)
    return isinstance(a, str) and a.upper() == b.upper()


def _as_ocpi(location: Location) -> dict:
    """What we hold for a location, as a partner's object: its raw copy with the current statuses, or our columns."""
    if location.raw:
        return _with_current_statuses(copy.deepcopy(location.raw), location)
    return locations_to_ocpi([location])[0]


def _with_current_statuses(document: dict, location: Location) -> dict:
    """The raw copy with what the status fast path wrote since (it leaves `raw` alone): each EVSE's status,
    schedule and last_updated from its columns; the location's last_updated is the latest of its own and its
    EVSEs' (the fast path leaves the location's column alone: an indexed column would cost the row its
    in-place update)."""
    evses = document.get("evses")
    if isinstance(evses, list) and evses:
        current = {
            uid: (status, schedule, stamp)
            for uid, status, schedule, stamp in EVSE.objects.filter(location=location).values_list(
                "uid", "status", "status_schedule", "last_updated"
            )
        }
        for evse in evses:
            found = current.get(evse.get("uid")) if isinstance(evse, dict) else None
            if found is None:
                continue
            status, schedule, stamp = found
            _raise_stamp(document, stamp)
            sent = evse.get("status")
            # Only what the fast path changed: a value as sent (in another case, say) stays as sent.
            if not (isinstance(sent, str) and sent.strip().upper() == status):
                evse["status"] = status
            if schedule != (evse.get("status_schedule") or []):
                evse["status_schedule"] = schedule
            _raise_stamp(evse, stamp)
    if location.last_updated is not None:
        _raise_stamp(document, location.last_updated)
    return document


def _raise_stamp(obj: dict, stamp: dt.datetime | None) -> None:
    """Set obj's last_updated to `stamp` when that is later than the one it holds (or it holds none usable)."""
    if stamp is None:
        return
    try:
        held = parse_datetime(obj.get("last_updated"))
    except (OcpiError, TypeError, ValueError, OverflowError):
        held = None
    if held is None or stamp > held:
        obj["last_updated"] = format_datetime(stamp)


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
        except (OcpiError, TypeError, ValueError, OverflowError):
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
    if ctx.request.method == "PATCH":
        # An optional field sent as null is absent: in a PATCH it changes nothing.
        body = {name: value for name, value in body.items() if value is not None}
        if "last_updated" not in body:
            raise OcpiError(INVALID_PARAMETERS, "last_updated: required in a PATCH")
        if evse_uid is not None and connector_id is None:
            # The status stream (hundreds a second): a clean status-only PATCH writes only what changed.
            patch = parse_status_patch(body, evse_uid)
            if patch is not None and accept_evse_status(owner.pk, location_id, evse_uid, patch):
                return ocpi_response(None)
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
        _refuse_pushed_evse_if_rejected(parsed, evse_uid)
        parsed.party_id = owner.pk
        store_locations([parsed], source=ctx.connection)
    message = None
    if parsed.repairs:
        repairs = RepairTally("locations", "push")
        record_repairs(repairs, ctx.connection, parsed)
        repairs.save()
        if parsed.rejected_evses:
            message = "Location kept without invalid EVSEs: " + "; ".join(e.reason for e in parsed.rejected_evses)
    return ocpi_response(None, message=message, http_status=201 if created else 200)


def _refuse_pushed_evse_if_rejected(parsed: ParsedLocation, evse_uid: str | None) -> None:
    """A push of one EVSE (or one of its connectors) that leaves that EVSE invalid is refused, not dropped."""
    if evse_uid is None:
        return
    for evse in parsed.rejected_evses:
        if isinstance(evse.payload, dict) and _same_id(evse.payload.get("uid"), evse_uid):
            raise OcpiError(INVALID_PARAMETERS, evse.reason)


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
    document = _with_current_statuses(location.raw, location)
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


@ocpi_endpoint("locations", methods=("GET",))
def location_sender_list(ctx: PartnerContext) -> JsonResponse:
    """Our stations, in cursor pages (roaming.ocpi.pagination)."""
    max_limit = settings.FEEDS_SENDER_MAX_LIMIT
    window = Location.objects.filter(party=own_party(), removed_at__isnull=True).select_related("party")
    return paginated_response(ctx.request, window, locations_to_ocpi, default_limit=max_limit, max_limit=max_limit)


@ocpi_endpoint("locations", methods=("GET",))
def location_sender_object(
    ctx: PartnerContext, location_id: str, evse_uid: str | None = None, connector_id: str | None = None
):
    location = _find_location(own_party(), location_id)
    if location is None or location.removed_at is not None:
        raise _not_found(f"location {location_id}")
    return _one_object(location, evse_uid, connector_id)
