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

from django.utils import timezone

from roaming.ocpi.countries import ALPHA3, ALPHA3_OF_ALPHA2
from roaming.ocpi.envelope import OcpiError, format_datetime, parse_datetime
from roaming.ocpi.input import InvalidInput, check_not_future
from roaming.ocpi.repairs import Repair, note
from stations.models import EVSE, Connector, EvseStatus, Location
from stations.storable import INTEGER_MAX, UnstorableValue, checked_json_bytes, integer_problem, storable_repr

EVSE_STATUSES = frozenset(EvseStatus.values)
CONNECTOR_FORMATS = frozenset({"SOCKET", "CABLE"})
# Conductors carrying power: what voltage x amperage is multiplied by.
PHASES = {"AC_1_PHASE": 1, "AC_2_PHASE": 2, "AC_2_PHASE_SPLIT": 2, "AC_3_PHASE": 3, "DC": 1}
POWER_TYPES = frozenset(PHASES)
_STANDARDS = (
    "CHADEMO CHAOJI DOMESTIC_A DOMESTIC_B DOMESTIC_C DOMESTIC_D DOMESTIC_E DOMESTIC_F DOMESTIC_G DOMESTIC_H "
    "DOMESTIC_I DOMESTIC_J DOMESTIC_K DOMESTIC_L DOMESTIC_M DOMESTIC_N DOMESTIC_O GBT_AC GBT_DC "
    "IEC_60309_2_single_16 IEC_60309_2_three_16 IEC_60309_2_three_32 IEC_60309_2_three_64 IEC_62196_T1 "
    "IEC_62196_T1_COMBO IEC_62196_T2 IEC_62196_T2_COMBO IEC_62196_T3A IEC_62196_T3C NEMA_5_20 NEMA_6_30 "
    "NEMA_6_50 NEMA_10_30 NEMA_10_50 NEMA_14_30 NEMA_14_50 PANTOGRAPH_BOTTOM_UP PANTOGRAPH_TOP_DOWN TESLA_R "
    "TESLA_S"
)
CONNECTOR_STANDARDS = {s.upper(): s for s in _STANDARDS.split()}  # OCPI ConnectorType, keyed in upper case
STANDARD_VALUES = frozenset(CONNECTOR_STANDARDS.values())
PARKING_TYPES = frozenset(
    {"ALONG_MOTORWAY", "PARKING_GARAGE", "PARKING_LOT", "ON_DRIVEWAY", "ON_STREET", "UNDERGROUND_GARAGE"}
)
# Enum lists whose items are put in OCPI's form when only their case or spaces differ (unknown items stay).
LIST_ENUMS = {
    "parking_restrictions": frozenset({"EV_ONLY", "PLUGGED", "DISABLED", "CUSTOMERS", "MOTORCYCLES"}),
    "capabilities": frozenset(
        {
            "CHARGING_PROFILE_CAPABLE",
            "CHARGING_PREFERENCES_CAPABLE",
            "CHIP_CARD_SUPPORT",
            "CONTACTLESS_CARD_SUPPORT",
            "CREDIT_CARD_PAYABLE",
            "DEBIT_CARD_PAYABLE",
            "PED_TERMINAL",
            "REMOTE_START_STOP_CAPABLE",
            "RESERVABLE",
            "RFID_READER",
            "START_SESSION_CONNECTOR_REQUIRED",
            "TOKEN_GROUP_CAPABLE",
            "UNLOCK_CAPABLE",
        }
    ),  # fmt: skip
    "facilities": frozenset(
        {
            "HOTEL",
            "RESTAURANT",
            "CAFE",
            "MALL",
            "SUPERMARKET",
            "SPORT",
            "RECREATION_AREA",
            "NATURE",
            "MUSEUM",
            "BIKE_SHARING",
            "BUS_STOP",
            "TAXI_STAND",
            "TRAM_STOP",
            "METRO_STATION",
            "TRAIN_STATION",
            "AIRPORT",
            "PARKING_LOT",
            "CARPOOL_PARKING",
            "FUEL_STATION",
            "WIFI",
        }
    ),  # fmt: skip
}
# Above this a connector's max_electric_power is taken as a unit mistake (W x 1000), whatever it claims.
POWER_LIMIT_W = 1_000_000
# A stated power may exceed voltage x amperage x phases by this much (7.4 kW is how 230 V x 32 A is sold).
POWER_TOLERANCE = 1.05
# A three-phase voltage above this is line-to-line (400 V); OCPI wants line-to-neutral (230 V).
LINE_TO_LINE_ABOVE_V = 300
SQRT3 = 3**0.5


class InvalidObject(InvalidInput):
    """A partner object we cannot store; the message names the field (2001 on the OCPI endpoints)."""


@dataclass
class RejectedEvse:
    """An invalid EVSE dropped from a location we kept: where it was, as sent, and why."""

    where: str
    payload: Any
    reason: str


@dataclass
class ParsedLocation:
    country_code: str
    party_code: str
    location: dict[str, Any]  # Location model fields
    evses: list[dict[str, Any]]  # EVSE model fields, each with "connectors": [Connector model fields]
    content_hash: str
    party_id: int | None = None  # our Party pk, set once the owner is resolved
    raw: dict = field(default_factory=dict, repr=False)
    repairs: list[Repair] = field(default_factory=list)  # what was fixed instead of refused
    rejected_evses: list[RejectedEvse] = field(default_factory=list)


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


# Each check below returns what we store and notes a repair in `notes` when it had to fix what was sent.
# An optional field sent as `null` is absent. Identity fields (ids, uid, country_code, party_id) are never
# truncated: a cut id could name another object.


def _text(
    obj: dict,
    name: str,
    max_length: int,
    notes: list[Repair],
    *,
    required: bool = False,
    where: str = "",
    truncate: bool = False,
) -> str:
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise InvalidObject(f"{where}{name}: required")
        return ""
    if type(value) is not str:
        if type(value) is not int:  # bool is not int here
            raise InvalidObject(f"{where}{name}: must be a string, got {type(value).__name__}")
        note(notes, "text_as_number", f"{where}{name}", value, str(value))
        value = str(value)
    if len(value) > max_length:
        if not truncate:
            raise InvalidObject(f"{where}{name}: longer than {max_length} characters")
        note(notes, "text_truncated", f"{where}{name}", value, value[:max_length], length=len(value))
        value = value[:max_length]
    if "\x00" in value:  # PostgreSQL text cannot hold it (a feed page is not walked like a pushed body)
        raise InvalidObject(f"{where}{name}: contains a NUL byte (\\u0000)")  # as storable.text_problem says
    return value


def _enum(obj: dict, name: str, allowed: frozenset[str], notes: list[Repair], where: str) -> str:
    """A required enum value; other case or stray spaces are repaired, an unknown value refused."""
    value = obj.get(name)
    if type(value) is str and value in allowed:  # the usual case, without a call
        return value
    if value is None or value == "":
        raise InvalidObject(f"{where}{name}: required")
    if isinstance(value, str):
        fixed = value.strip().upper()
        if fixed in allowed:
            note(notes, "enum_case", f"{where}{name}", value, fixed)
            return fixed
        raise InvalidObject(f"{where}{name}: unknown value {storable_repr(value)}")
    raise InvalidObject(f"{where}{name}: must be a string, got {type(value).__name__}")


def _enum_list(obj: dict, name: str, notes: list[Repair], where: str) -> list:
    items = _list(obj, name, where)
    if not items:
        return items
    allowed = LIST_ENUMS[name]
    try:
        if allowed.issuperset(items):
            return items
    except TypeError:  # an object or a list among the items: looked at one by one below
        pass
    fixed = []
    for item in items:
        if isinstance(item, str) and item not in allowed and item.strip().upper() in allowed:
            note(notes, "enum_case", f"{where}{name}", item, item.strip().upper())
            item = item.strip().upper()
        fixed.append(item)
    return fixed


def _stamp(obj: dict, where: str, *, required: bool = True) -> dt.datetime | None:
    value = obj.get("last_updated")
    if not required and (value is None or value == ""):
        return None  # the caller derives it (and notes the repair)
    try:
        # From the future it would make every later, real update look stale (and be ignored).
        return check_not_future(parse_datetime(value, f"{where}last_updated"), f"{where}last_updated")
    except OcpiError as exc:
        raise InvalidObject(exc.message) from exc
    except (ValueError, OverflowError) as exc:
        # Well-formed but impossible (month 13, 30 February, year 0, offset +25:00), or out of range once in UTC.
        raise InvalidObject(f"{where}last_updated: not a valid date and time: {storable_repr(value)} ({exc})") from exc


def _integer(obj: dict, name: str, where: str, notes: list[Repair], *, required: bool = True) -> int | None:
    value = obj.get(name)
    if type(value) is int and 0 <= value <= INTEGER_MAX:  # the usual case, without a call
        return value
    if value is None or value == "":
        if required:
            raise InvalidObject(f"{where}{name}: required")
        return None
    if isinstance(value, str):
        digits = value.strip()
        if 0 < len(digits) <= 10 and digits.isascii() and digits.isdigit():  # longer is out of range anyway
            note(notes, "number_as_text", f"{where}{name}", value, int(digits))
            value = int(digits)
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


def _standard(obj: dict, notes: list[Repair], where: str) -> str:
    """The connector type: required (a driver relies on it); a known one in other case is repaired."""
    value = _text(obj, "standard", 40, notes, required=True, where=where)
    if value in STANDARD_VALUES:  # the usual case
        return value
    fixed = CONNECTOR_STANDARDS.get(value.strip().upper())
    if fixed is None:
        return value  # a type OCPI does not list (hubs add their own): kept as sent
    note(notes, "enum_case", f"{where}standard", value, fixed)
    return fixed


def _power(obj: dict, power_type: str, notes: list[Repair], where: str) -> tuple[int | None, int | None, int | None]:
    """(max_voltage, max_amperage, max_electric_power) a driver can rely on.

    Power is what matters: a connector with it keeps a missing voltage or amperage empty (or derived from the
    other); a stated power beyond what voltage, amperage and phases allow (or beyond 1 MW, a W-for-kW slip) is
    replaced by the derived one. A three-phase voltage given line-to-line (400 V) is divided by sqrt(3) first,
    so it is not counted sqrt(3) too high.
    """
    voltage = _integer(obj, "max_voltage", where, notes, required=False)
    amperage = _integer(obj, "max_amperage", where, notes, required=False)
    power = _integer(obj, "max_electric_power", where, notes, required=False)
    phases = PHASES[power_type]
    if voltage is None or amperage is None:
        missing = "max_voltage" if voltage is None else "max_amperage"
        if not power:
            raise InvalidObject(f"{where}{missing}: required (no max_electric_power to go by)")
        if power > POWER_LIMIT_W:
            raise InvalidObject(
                f"{where}max_electric_power: implausible {power} W, and no voltage and amperage to derive it from"
            )
        if voltage is None and amperage:
            voltage = round(power / (amperage * phases))
            note(notes, "voltage_or_amperage_derived", f"{where}max_voltage", None, voltage)
        elif amperage is None and voltage:
            line_to_neutral = voltage / SQRT3 if phases == 3 and voltage > LINE_TO_LINE_ABOVE_V else voltage
            amperage = round(power / (line_to_neutral * phases))
            note(notes, "voltage_or_amperage_derived", f"{where}max_amperage", None, amperage)
        else:  # neither, or the other is 0: nothing to derive from, the power alone is kept
            note(notes, "voltage_or_amperage_missing", f"{where}{missing}", None, None)
        return voltage, amperage, power
    line_to_line = phases == 3 and voltage > LINE_TO_LINE_ABOVE_V
    derived = (voltage / SQRT3 if line_to_line else voltage) * amperage * phases
    if power is None:
        if line_to_line:  # voltage x amperage x 3 would be sqrt(3) too high: keep the real figure
            power = round(derived)
            note(notes, "line_to_line_voltage", f"{where}max_electric_power", None, power, max_voltage=voltage)
        return voltage, amperage, power
    if derived and (power > POWER_LIMIT_W or power > derived * POWER_TOLERANCE):
        if derived > POWER_LIMIT_W:
            raise InvalidObject(f"{where}max_electric_power: implausible {power} W (over {POWER_LIMIT_W} W)")
        note(notes, "power_implausible", f"{where}max_electric_power", power, round(derived))
        power = round(derived)
    elif power > POWER_LIMIT_W:  # a voltage or amperage of 0: nothing to derive it from
        raise InvalidObject(f"{where}max_electric_power: implausible {power} W (over {POWER_LIMIT_W} W)")
    return voltage, amperage, power


def parse_connector(obj: Any, where: str = "", notes: list[Repair] | None = None) -> dict[str, Any]:
    """One connector; its `last_updated` may be None when it was missing (the EVSE's stamp fills it)."""
    notes = [] if notes is None else notes
    if not isinstance(obj, dict):
        raise InvalidObject(f"{where.rstrip('.')}: must be an object")
    connector_format = _enum(obj, "format", CONNECTOR_FORMATS, notes, where)
    power_type = _enum(obj, "power_type", POWER_TYPES, notes, where)
    voltage, amperage, power = _power(obj, power_type, notes, where)
    return {
        "connector_id": _text(obj, "id", 36, notes, required=True, where=where),
        "standard": _standard(obj, notes, where),
        "format": connector_format,
        "power_type": power_type,
        "max_voltage": voltage,
        "max_amperage": amperage,
        "max_electric_power": power,
        "tariff_ids": [str(t) for t in _list(obj, "tariff_ids", where)],
        "terms_and_conditions": _text(obj, "terms_and_conditions", 255, notes, where=where),
        "last_updated": _stamp(obj, where, required=False),
    }


def parse_evse(obj: Any, where: str = "", notes: list[Repair] | None = None) -> dict[str, Any]:
    """One EVSE; its `last_updated` may be None when neither it nor its connectors had one."""
    notes = [] if notes is None else notes
    if not isinstance(obj, dict):
        raise InvalidObject(f"{where.rstrip('.')}: must be an object")
    status = _enum(obj, "status", EVSE_STATUSES, notes, where)
    coordinates = obj.get("coordinates")
    connectors = [
        parse_connector(c, f"{where}connectors[{i}].", notes) for i, c in enumerate(_list(obj, "connectors", where))
    ]
    ids = [c["connector_id"] for c in connectors]
    if len(set(ids)) != len(ids):
        raise InvalidObject(f"{where}connectors: the same id appears twice")
    if not connectors and status != EvseStatus.REMOVED:
        raise InvalidObject(f"{where}connectors: at least one connector is required")
    stamp = _stamp(obj, where, required=False)
    if stamp is None:
        stamps = [c["last_updated"] for c in connectors if c["last_updated"] is not None]
        if stamps:
            stamp = max(stamps)
            note(notes, "last_updated_derived", f"{where}last_updated", None, format_datetime(stamp))
    for index, connector in enumerate(connectors):
        if connector["last_updated"] is None and stamp is not None:
            connector["last_updated"] = stamp
            note(notes, "last_updated_derived", f"{where}connectors[{index}].last_updated", None, "the EVSE's")
    return {
        "uid": _text(obj, "uid", 36, notes, required=True, where=where),
        # Any text: hubs send evse_ids that are not eMI3, and a driver still needs to see them.
        "evse_id": _text(obj, "evse_id", 48, notes, where=where),
        "status": status,
        "status_schedule": _list(obj, "status_schedule", where),
        "capabilities": _enum_list(obj, "capabilities", notes, where),
        "floor_level": _text(obj, "floor_level", 4, notes, where=where, truncate=True),
        "latitude": _coordinate(coordinates, "latitude", 90, where) if coordinates else None,
        "longitude": _coordinate(coordinates, "longitude", 180, where) if coordinates else None,
        "physical_reference": _text(obj, "physical_reference", 16, notes, where=where, truncate=True),
        "directions": _list(obj, "directions", where),
        "parking_restrictions": [str(r) for r in _enum_list(obj, "parking_restrictions", notes, where)],
        "images": _list(obj, "images", where),
        "last_updated": stamp,
        "connectors": connectors,
    }


# Fields an EVSE PATCH may carry and still take the status fast path (stations.services.apply_evse_status).
STATUS_PATCH_FIELDS = frozenset({"status", "status_schedule", "last_updated", "uid"})


@dataclass(frozen=True)
class StatusPatch:
    """A clean status-only EVSE PATCH: what the fast path writes."""

    status: str
    last_updated: dt.datetime
    status_schedule: list | None = None  # None: not sent, the stored schedule stays


def parse_status_patch(body: dict, evse_uid: str) -> StatusPatch | None:
    """The PATCH as a StatusPatch when it touches only status fields and needs no repair, else None.

    None sends the PATCH down the general path, which refuses bad input with its usual messages (2001) and
    repairs what it repairs: the fast path never decides on input the general path would treat otherwise.
    """
    if not body.keys() <= STATUS_PATCH_FIELDS or "status" not in body:
        return None
    status = body["status"]
    if type(status) is not str or status not in EVSE_STATUSES or status == EvseStatus.REMOVED:
        return None  # REMOVED changes the location's EVSE count and connectors: the general path
    uid = body.get("uid")
    if uid is not None and (type(uid) is not str or uid != evse_uid):
        return None
    schedule = body.get("status_schedule")
    if schedule is not None and not isinstance(schedule, list):
        return None
    try:
        stamp = _stamp(body, "")
    except InvalidObject:
        return None
    return StatusPatch(status=status, last_updated=stamp, status_schedule=schedule)


def _country(obj: dict, country_code: str, notes: list[Repair]) -> str:
    value = obj.get("country")
    if type(value) is str and value in ALPHA3:  # the usual case
        return value
    if value is None or value == "":
        derived = ALPHA3_OF_ALPHA2.get(country_code)
        if derived is None:
            raise InvalidObject("country: required")
        note(notes, "country_derived", "country", value, derived, country_code=country_code)
        return derived
    if isinstance(value, str):
        fixed = value.strip().upper()
        if fixed in ALPHA3:
            note(notes, "enum_case", "country", value, fixed)
            return fixed
        if fixed in ALPHA3_OF_ALPHA2:
            note(notes, "country_alpha2", "country", value, ALPHA3_OF_ALPHA2[fixed])
            return ALPHA3_OF_ALPHA2[fixed]
    # Not a country we know: kept as before when it fits (a code ISO added later), refused when it does not.
    return _text(obj, "country", 3, notes, required=True)


def _parking_type(obj: dict, notes: list[Repair]) -> str:
    value = _text(obj, "parking_type", 32, notes)
    if value and value not in PARKING_TYPES and value.strip().upper() in PARKING_TYPES:
        note(notes, "enum_case", "parking_type", value, value.strip().upper())
        return value.strip().upper()
    return value


def parse_location(obj: Any, *, now: dt.datetime | None = None) -> ParsedLocation:
    """Check one Location as a partner sent it; raises InvalidObject naming the first bad field.

    Cosmetic faults are repaired and noted in `repairs`; an invalid EVSE is dropped alone (`rejected_evses`),
    and the location is refused only when none of its EVSEs is usable. `now` is the time of the pull: the
    location's last_updated when neither it nor any of its EVSEs had one.
    """
    if not isinstance(obj, dict):
        raise InvalidObject("location: must be an object")
    notes: list[Repair] = []
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
    country_code = _text(obj, "country_code", 2, notes, required=True).upper()
    evses = []
    rejected: list[RejectedEvse] = []
    sent_evses = _list(obj, "evses", "")
    for index, sent in enumerate(sent_evses):
        mark = len(notes)
        try:
            evses.append(parse_evse(sent, f"evses[{index}].", notes))
        except InvalidObject as error:
            del notes[mark:]  # repairs of an EVSE we do not keep are not repairs
            rejected.append(RejectedEvse(f"evses[{index}]", sent, str(error)))
    if rejected:
        if not evses:
            if len(rejected) == 1:
                raise InvalidObject(rejected[0].reason)
            raise InvalidObject("evses: none is usable: " + "; ".join(r.reason for r in rejected))
        for evse in rejected:
            uid = evse.payload.get("uid") if isinstance(evse.payload, dict) else None
            note(notes, "evse_rejected", evse.where, uid, None, reason=evse.reason)
    uids = [e["uid"] for e in evses]
    if len(set(uids)) != len(uids):
        raise InvalidObject("evses: the same uid appears twice")
    for name in ("operator", "suboperator", "owner"):
        if obj.get(name) is not None and not isinstance(obj[name], dict):
            raise InvalidObject(f"{name}: must be an object")
    # A parent is at least as recent as its children, even when a CPO forgets to bump it.
    children = [e["last_updated"] for e in evses if e["last_updated"] is not None]
    children += [c["last_updated"] for e in evses for c in e["connectors"] if c["last_updated"] is not None]
    own = _stamp(obj, "", required=False)
    if own is None:
        own = max(children) if children else (now or timezone.now())
        note(notes, "last_updated_derived", "last_updated", None, format_datetime(own))
    for index, evse in enumerate(evses):
        if evse["last_updated"] is None:  # neither it nor its connectors had one: the location's
            evse["last_updated"] = own
            note(notes, "last_updated_derived", f"evses[{index}].last_updated", None, "the location's")
            for connector in evse["connectors"]:
                connector["last_updated"] = own
    location = {
        "ocpi_id": _text(obj, "id", 36, notes, required=True),
        "publish": publish,
        "publish_allowed_to": _list(obj, "publish_allowed_to", ""),
        "name": _text(obj, "name", 255, notes, truncate=True),
        "address": _text(obj, "address", 255, notes, required=True, truncate=True),
        "city": _text(obj, "city", 45, notes, required=True, truncate=True),
        "postal_code": _text(obj, "postal_code", 10, notes, truncate=True),
        "state": _text(obj, "state", 45, notes, truncate=True),
        "country": _country(obj, country_code, notes),
        "latitude": _coordinate(coordinates, "latitude", 90, ""),
        "longitude": _coordinate(coordinates, "longitude", 180, ""),
        "parking_type": _parking_type(obj, notes),
        "operator": obj.get("operator"),
        "suboperator": obj.get("suboperator"),
        "owner": obj.get("owner"),
        "facilities": _enum_list(obj, "facilities", notes, ""),
        "time_zone": _text(obj, "time_zone", 255, notes),
        "opening_times": opening_times,
        "charging_when_closed": when_closed,
        "last_updated": max([own, *children]),
        "raw": obj,
    }
    return ParsedLocation(
        country_code=country_code,
        party_code=_text(obj, "party_id", 3, notes, required=True).upper(),
        location=location,
        evses=evses,
        content_hash=content_hash(obj),
        repairs=notes,
        rejected_evses=rejected,
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
