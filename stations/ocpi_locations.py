"""OCPI 2.2.1 Location objects on the wire: checking what partners send, and writing what we serve.

Validation is hand-written (not a DRF serializer) because a feed brings millions of EVSEs and
connectors; it checks what our columns need and the spec requires, and ignores fields it does
not know (hubs add their own: the whole object is kept in `Location.raw`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from roaming.ocpi.envelope import OcpiError, format_datetime, parse_datetime
from roaming.ocpi.input import InvalidInput, check_not_future
from stations.models import EVSE, Connector, EvseStatus, Location
from stations.storable import INTEGER_MAX, UnstorableValue, checked_json_bytes, integer_problem, storable_repr

EVSE_STATUSES = set(EvseStatus.values)
CONNECTOR_FORMATS = {"SOCKET", "CABLE"}
POWER_TYPES = {"AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE", "DC"}


class InvalidObject(InvalidInput):
    """A partner object we cannot store; the message names the field (2001 on the OCPI endpoints)."""


@dataclass
class ParsedLocation:
    country_code: str
    party_code: str
    location: dict[str, Any]  # Location model fields
    evses: list[dict[str, Any]]  # EVSE model fields, each with "connectors": [Connector model fields]
    content_hash: str
    party_id: int | None = None  # our Party pk, set once the owner is resolved
    raw: dict = field(default_factory=dict, repr=False)


_STAMP = re.compile(rb'"last_updated":"[^"]*"')


def content_hash(obj: Any) -> str:
    """Digest of an object without its `last_updated` stamps: a bumped stamp alone is not a change.

    Raises InvalidObject for a value the database cannot store anywhere in the object (NaN, a NUL byte, a lone
    surrogate, absurd nesting): the whole object is kept in jsonb, so any such value would fail the write.
    """
    try:
        text = checked_json_bytes(obj, sort_keys=True)
    except UnstorableValue as exc:
        raise InvalidObject(str(exc)) from exc
    # A key cannot appear unescaped inside a JSON string value, so the pattern only meets real keys.
    return hashlib.blake2b(_STAMP.sub(b"", text), digest_size=16).hexdigest()


def _text(obj: dict, name: str, max_length: int, *, required: bool = False, where: str = "") -> str:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise InvalidObject(f"{where}{name}: required")
        return ""
    if not isinstance(value, str):
        raise InvalidObject(f"{where}{name}: must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidObject(f"{where}{name}: longer than {max_length} characters")
    if "\x00" in value:  # PostgreSQL text cannot hold it (a feed page is not walked like a pushed body)
        raise InvalidObject(f"{where}{name}: contains a NUL byte")
    return value


def _stamp(obj: dict, where: str) -> dt.datetime:
    value = obj.get("last_updated")
    try:
        # From the future it would make every later, real update look stale (and be ignored).
        return check_not_future(parse_datetime(value, f"{where}last_updated"), f"{where}last_updated")
    except OcpiError as exc:
        raise InvalidObject(exc.message) from exc
    except (ValueError, OverflowError) as exc:
        # Well-formed but impossible (month 13, 30 February, year 0, offset +25:00), or out of range once in UTC.
        raise InvalidObject(f"{where}last_updated: not a valid date and time: {storable_repr(value)} ({exc})") from exc


def _integer(obj: dict, name: str, where: str, *, required: bool = True) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidObject(f"{where}{name}: required")
        return None
    if type(value) is int and 0 <= value <= INTEGER_MAX:  # the usual case, without a call
        return value
    problem = integer_problem(value)
    if problem:
        raise InvalidObject(f"{where}{name}: {problem}")
    return int(value)


def _list(obj: dict, name: str, where: str) -> list:
    value = obj.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidObject(f"{where}{name}: must be a list")
    return value


def _coordinate(obj: Any, name: str, limit: float, where: str) -> float:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{where}coordinates: must be an object with latitude and longitude")
    value = obj.get(name)
    if isinstance(value, bool):
        raise InvalidObject(f"{where}coordinates.{name}: not a number: {value!r}")
    try:
        number = float(value)  # the spec says strings; some hubs send numbers, which mean the same
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidObject(f"{where}coordinates.{name}: not a number: {storable_repr(value)}") from exc
    if not -limit <= number <= limit:  # NaN fails this too
        raise InvalidObject(f"{where}coordinates.{name}: out of range: {storable_repr(value)}")
    return number


def parse_connector(obj: Any, where: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{where.rstrip('.')}: must be an object")
    connector_format = _text(obj, "format", 6, required=True, where=where)
    if connector_format not in CONNECTOR_FORMATS:
        raise InvalidObject(f"{where}format: unknown value {connector_format!r}")
    power_type = _text(obj, "power_type", 16, required=True, where=where)
    if power_type not in POWER_TYPES:
        raise InvalidObject(f"{where}power_type: unknown value {power_type!r}")
    return {
        "connector_id": _text(obj, "id", 36, required=True, where=where),
        "standard": _text(obj, "standard", 40, required=True, where=where),
        "format": connector_format,
        "power_type": power_type,
        "max_voltage": _integer(obj, "max_voltage", where),
        "max_amperage": _integer(obj, "max_amperage", where),
        "max_electric_power": _integer(obj, "max_electric_power", where, required=False),
        "tariff_ids": [str(t) for t in _list(obj, "tariff_ids", where)],
        "terms_and_conditions": _text(obj, "terms_and_conditions", 255, where=where),
        "last_updated": _stamp(obj, where),
    }


def parse_evse(obj: Any, where: str = "") -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{where.rstrip('.')}: must be an object")
    status = _text(obj, "status", 12, required=True, where=where)
    if status not in EVSE_STATUSES:
        raise InvalidObject(f"{where}status: unknown value {status!r}")
    coordinates = obj.get("coordinates")
    connectors = [parse_connector(c, f"{where}connectors[{i}].") for i, c in enumerate(_list(obj, "connectors", where))]
    ids = [c["connector_id"] for c in connectors]
    if len(set(ids)) != len(ids):
        raise InvalidObject(f"{where}connectors: the same id appears twice")
    if not connectors and status != EvseStatus.REMOVED:
        raise InvalidObject(f"{where}connectors: at least one connector is required")
    return {
        "uid": _text(obj, "uid", 36, required=True, where=where),
        # Any text: hubs send evse_ids that are not eMI3, and a driver still needs to see them.
        "evse_id": _text(obj, "evse_id", 48, where=where),
        "status": status,
        "status_schedule": _list(obj, "status_schedule", where),
        "capabilities": _list(obj, "capabilities", where),
        "floor_level": _text(obj, "floor_level", 4, where=where),
        "latitude": _coordinate(coordinates, "latitude", 90, where) if coordinates else None,
        "longitude": _coordinate(coordinates, "longitude", 180, where) if coordinates else None,
        "physical_reference": _text(obj, "physical_reference", 16, where=where),
        "directions": _list(obj, "directions", where),
        "parking_restrictions": [str(r) for r in _list(obj, "parking_restrictions", where)],
        "images": _list(obj, "images", where),
        "last_updated": _stamp(obj, where),
        "connectors": connectors,
    }


def parse_location(obj: Any) -> ParsedLocation:
    """Check one Location as a partner sent it; raises InvalidObject naming the first bad field."""
    if not isinstance(obj, dict):
        raise InvalidObject("location: must be an object")
    publish = obj.get("publish")
    if not isinstance(publish, bool):
        raise InvalidObject("publish: required, true or false")
    opening_times = obj.get("opening_times")
    if opening_times is not None and not isinstance(opening_times, dict):
        raise InvalidObject("opening_times: must be an object")
    when_closed = obj.get("charging_when_closed")
    if when_closed is not None and not isinstance(when_closed, bool):
        raise InvalidObject("charging_when_closed: must be true or false")
    coordinates = obj.get("coordinates")
    if coordinates is None:
        raise InvalidObject("coordinates: required")
    evses = [parse_evse(e, f"evses[{i}].") for i, e in enumerate(_list(obj, "evses", ""))]
    uids = [e["uid"] for e in evses]
    if len(set(uids)) != len(uids):
        raise InvalidObject("evses: the same uid appears twice")
    for name in ("operator", "suboperator", "owner"):
        if obj.get(name) is not None and not isinstance(obj[name], dict):
            raise InvalidObject(f"{name}: must be an object")
    location = {
        "ocpi_id": _text(obj, "id", 36, required=True),
        "publish": publish,
        "publish_allowed_to": _list(obj, "publish_allowed_to", ""),
        "name": _text(obj, "name", 255),
        "address": _text(obj, "address", 255, required=True),
        "city": _text(obj, "city", 45, required=True),
        "postal_code": _text(obj, "postal_code", 10),
        "state": _text(obj, "state", 45),
        "country": _text(obj, "country", 3, required=True),
        "latitude": _coordinate(coordinates, "latitude", 90, ""),
        "longitude": _coordinate(coordinates, "longitude", 180, ""),
        "parking_type": _text(obj, "parking_type", 32),
        "operator": obj.get("operator"),
        "suboperator": obj.get("suboperator"),
        "owner": obj.get("owner"),
        "facilities": _list(obj, "facilities", ""),
        "time_zone": _text(obj, "time_zone", 255),
        "opening_times": opening_times,
        "charging_when_closed": when_closed,
        # A parent is at least as recent as its children, even when a CPO forgets to bump it.
        "last_updated": max(
            [_stamp(obj, "")]
            + [e["last_updated"] for e in evses]
            + [c["last_updated"] for e in evses for c in e["connectors"]]
        ),
        "raw": obj,
    }
    return ParsedLocation(
        country_code=_text(obj, "country_code", 2, required=True).upper(),
        party_code=_text(obj, "party_id", 3, required=True).upper(),
        location=location,
        evses=evses,
        content_hash=content_hash(obj),
    )


# ---------------------------------------------------------------------------------------------
# What we serve (our own stations, and GET on the receiver)


def connector_to_ocpi(connector: Connector) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": connector.connector_id,
        "standard": connector.standard,
        "format": connector.format,
        "power_type": connector.power_type,
        "max_voltage": connector.max_voltage,
        "max_amperage": connector.max_amperage,
    }
    if connector.max_electric_power:
        data["max_electric_power"] = connector.max_electric_power
    if connector.tariff_ids:
        data["tariff_ids"] = connector.tariff_ids
    if connector.terms_and_conditions:
        data["terms_and_conditions"] = connector.terms_and_conditions
    data["last_updated"] = format_datetime(connector.last_updated)
    return data


def evse_to_ocpi(evse: EVSE, connectors: list[Connector]) -> dict[str, Any]:
    data: dict[str, Any] = {"uid": evse.uid}
    if evse.evse_id:
        data["evse_id"] = evse.evse_id
    data["status"] = evse.status
    for name in ("status_schedule", "capabilities", "directions", "parking_restrictions", "images"):
        if getattr(evse, name):
            data[name] = getattr(evse, name)
    data["connectors"] = [connector_to_ocpi(c) for c in connectors]
    if evse.floor_level:
        data["floor_level"] = evse.floor_level
    if evse.latitude is not None and evse.longitude is not None:
        data["coordinates"] = {"latitude": f"{evse.latitude:.6f}", "longitude": f"{evse.longitude:.6f}"}
    if evse.physical_reference:
        data["physical_reference"] = evse.physical_reference
    data["last_updated"] = format_datetime(evse.last_updated)
    return data


def location_to_ocpi(location: Location, evses: list[EVSE], connectors: dict[int, list[Connector]]) -> dict[str, Any]:
    """A Location as OCPI 2.2.1 describes it, from our columns (`location.party` must be loaded)."""
    data: dict[str, Any] = {
        "country_code": location.party.country_code,
        "party_id": location.party.party_id,
        "id": location.ocpi_id,
        "publish": location.publish,
    }
    if location.publish_allowed_to:
        data["publish_allowed_to"] = location.publish_allowed_to
    if location.name:
        data["name"] = location.name
    data["address"] = location.address
    data["city"] = location.city
    if location.postal_code:
        data["postal_code"] = location.postal_code
    if location.state:
        data["state"] = location.state
    data["country"] = location.country
    data["coordinates"] = {"latitude": f"{location.latitude:.6f}", "longitude": f"{location.longitude:.6f}"}
    if location.parking_type:
        data["parking_type"] = location.parking_type
    data["evses"] = [evse_to_ocpi(e, connectors.get(e.pk, [])) for e in evses]
    for name in ("operator", "suboperator", "owner"):
        if getattr(location, name):
            data[name] = getattr(location, name)
    if location.facilities:
        data["facilities"] = location.facilities
    data["time_zone"] = location.time_zone or "UTC"
    if location.opening_times:
        data["opening_times"] = location.opening_times
    if location.charging_when_closed is not None:
        data["charging_when_closed"] = location.charging_when_closed
    data["last_updated"] = format_datetime(location.last_updated)
    return data


def locations_to_ocpi(locations: list[Location]) -> list[dict[str, Any]]:
    """Serialize a page of locations with two queries for all their EVSEs and connectors."""
    ids = [loc.pk for loc in locations]
    evses: dict[int, list[EVSE]] = {}
    for evse in EVSE.objects.filter(location_id__in=ids).order_by("location_id", "uid"):
        evses.setdefault(evse.location_id, []).append(evse)
    connectors: dict[int, list[Connector]] = {}
    for connector in Connector.objects.filter(evse__location_id__in=ids).order_by("evse_id", "connector_id"):
        connectors.setdefault(connector.evse_id, []).append(connector)
    return [location_to_ocpi(loc, evses.get(loc.pk, []), connectors) for loc in locations]
