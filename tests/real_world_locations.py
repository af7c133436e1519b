"""Location objects shaped like real partners' feeds: one cosmetic fault each (repaired), or one a driver would
notice (refused). Each case says what we must store, or why we refuse it.

Built from tests.feeds_fixtures.location (a valid NL*ALL location, one EVSE, one 22 kW Type 2 socket).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stations.models import EVSE, Connector, Location
from tests.feeds_fixtures import location
from tests.ocpi_peer import PeerResponse, ok

PATH = "/ocpi/cpo/2.2.1/locations"
UPDATED = "2026-01-01T10:00:00Z"
EVSE_UPDATED = "2026-01-02T08:30:00Z"


def first_connector(obj: dict) -> dict:
    return obj["evses"][0]["connectors"][0]


def stored_evse(loc: Location, index: int = 0) -> EVSE:
    return loc.evses.order_by("uid")[index]


def stored_connector(loc: Location) -> Connector:
    return Connector.objects.get(evse=stored_evse(loc))


@dataclass
class RepairCase:
    ocpi_id: str
    kinds: set[str]  # the repairs noted for it (empty: kept as sent, nothing to repair)
    change: Callable[[dict], None]
    check: Callable[[Location], Any]  # asserts on what we stored
    expected_example: dict = field(default_factory=dict)  # part of the example noted for its first kind

    def object(self) -> dict:
        obj = location(self.ocpi_id, updated=UPDATED)
        self.change(obj)
        return obj


@dataclass
class RefusalCase:
    ocpi_id: str
    reason: str  # part of the reject's error
    change: Callable[[dict], None]

    def object(self) -> dict:
        obj = location(self.ocpi_id, updated=UPDATED)
        self.change(obj)
        return obj


# --- repaired -----------------------------------------------------------------------------------------------


def _status_with_space(obj):
    obj["evses"][0]["status"] = "CHARGING "


def _lower_case_enums(obj):
    first_connector(obj).update(format="socket", power_type="ac_3_phase", standard="iec_62196_t2")
    obj["evses"][0]["parking_restrictions"] = ["ev_only"]


def _numbers_as_text(obj):
    first_connector(obj).update(max_voltage="230", max_amperage=" 32", max_electric_power="22000")


def _ids_as_numbers(obj):
    obj["id"] = 4711
    obj["postal_code"] = 3511
    obj["evses"][0]["uid"] = 47111
    first_connector(obj)["id"] = 1


def _long_text(obj):
    obj["name"] = "Parkeergarage " + "Centrum " * 40
    obj["city"] = "Sint-Michielsgestel-" * 3


def _no_country(obj):
    del obj["country"]


def _country_alpha2(obj):
    obj["country"] = "nl"


def _no_location_stamp(obj):
    del obj["last_updated"]
    obj["evses"][0]["last_updated"] = EVSE_UPDATED
    first_connector(obj)["last_updated"] = EVSE_UPDATED


def _no_stamps_at_all(obj):
    del obj["last_updated"]
    del obj["evses"][0]["last_updated"]
    del first_connector(obj)["last_updated"]


def _power_only(obj):
    connector = first_connector(obj)
    del connector["max_voltage"], connector["max_amperage"]
    connector["max_electric_power"] = 11000


def _no_amperage(obj):
    del first_connector(obj)["max_amperage"]


def _dutch(amperage: int, power: int):
    def change(obj):
        first_connector(obj).update(
            power_type="AC_1_PHASE", max_voltage=230, max_amperage=amperage, max_electric_power=power
        )

    return change


def _line_to_line(obj):
    connector = first_connector(obj)
    connector.update(max_voltage=400, max_amperage=32)
    del connector["max_electric_power"]


def _line_to_line_with_power(obj):
    first_connector(obj).update(max_voltage=400, max_amperage=16, max_electric_power=11000)


def _one_bad_evse(obj):
    bad = dict(obj["evses"][0], uid=f"{obj['id']}-2", evse_id="NL*ALL*EBAD", connectors=[])
    obj["evses"].append(bad)


def _explicit_nulls(obj):
    for name in ("name", "postal_code", "state", "parking_type", "operator", "suboperator", "owner", "facilities"):
        obj[name] = None
    obj.update(time_zone=None, opening_times=None, charging_when_closed=None, publish_allowed_to=None, images=None)
    obj["evses"][0].update(
        evse_id=None,
        floor_level=None,
        coordinates=None,
        physical_reference=None,
        directions=None,
        parking_restrictions=None,
        capabilities=None,
        status_schedule=None,
        images=None,
    )
    first_connector(obj).update(max_electric_power=None, tariff_ids=None, terms_and_conditions=None)


def _check_power_kw(kw: float, voltage, amperage, power):
    def check(loc: Location):
        connector = stored_connector(loc)
        assert (connector.max_voltage, connector.max_amperage, connector.max_electric_power) == (
            voltage,
            amperage,
            power,
        )
        assert loc.max_power_kw == kw

    return check


def _check_nulls(loc: Location):
    evse = stored_evse(loc)
    assert (loc.name, loc.postal_code, loc.operator, loc.opening_times, loc.facilities) == ("", "", None, None, [])
    assert (evse.evse_id, evse.latitude, evse.parking_restrictions, evse.capabilities) == ("", None, [], [])
    assert stored_connector(loc).max_electric_power is None and loc.max_power_kw == 22.1  # 230 V x 32 A x 3


REPAIRS = [
    RepairCase(
        "R-STATUS-SPACE",
        {"enum_case"},
        _status_with_space,
        lambda loc: stored_evse(loc).status == "CHARGING" and loc.map_status == "in_use" or _fail(loc),
        {"field": "evses[0].status", "sent": "CHARGING ", "kept": "CHARGING"},
    ),
    RepairCase(
        "R-LOWER-CASE",
        {"enum_case"},
        _lower_case_enums,
        lambda loc: (
            (
                (c := stored_connector(loc)).format == "SOCKET"
                and c.power_type == "AC_3_PHASE"
                and c.standard == "IEC_62196_T2"
                and loc.connector_standards == ",IEC_62196_T2,"
                and loc.limited_access_reasons == ["parking_ev_only"]
            )
            or _fail(loc)
        ),
    ),
    RepairCase(
        "R-NUMBERS-AS-TEXT",
        {"number_as_text"},
        _numbers_as_text,
        _check_power_kw(22.0, 230, 32, 22000),
        {"field": "evses[0].connectors[0].max_voltage", "sent": "230", "kept": 230},
    ),
    RepairCase(
        "4711",
        {"text_as_number"},
        _ids_as_numbers,
        lambda loc: (
            (loc.postal_code, stored_evse(loc).uid, stored_connector(loc).connector_id) == ("3511", "47111", "1")
            or _fail(loc)
        ),
    ),
    RepairCase(
        "R-LONG-TEXT",
        {"text_truncated"},
        _long_text,
        lambda loc: (
            (len(loc.name), len(loc.city), loc.raw["city"]) == (255, 45, "Sint-Michielsgestel-" * 3) or _fail(loc)
        ),
        {"field": "name", "length": 334},
    ),
    RepairCase(
        "R-NO-COUNTRY",
        {"country_derived"},
        _no_country,
        lambda loc: loc.country == "NLD" or _fail(loc),
        {"field": "country", "sent": None, "kept": "NLD", "country_code": "NL"},
    ),
    RepairCase("R-COUNTRY-ALPHA2", {"country_alpha2"}, _country_alpha2, lambda loc: loc.country == "NLD" or _fail(loc)),
    RepairCase(
        "R-NO-LOCATION-STAMP",
        {"last_updated_derived"},
        _no_location_stamp,
        lambda loc: loc.last_updated.isoformat() == "2026-01-02T08:30:00+00:00" or _fail(loc),
        {"field": "last_updated", "kept": "2026-01-02T08:30:00Z"},
    ),
    RepairCase(
        "R-NO-STAMPS",
        {"last_updated_derived"},
        _no_stamps_at_all,
        lambda loc: loc.last_updated.year >= 2026 and stored_evse(loc).last_updated == loc.last_updated or _fail(loc),
    ),
    RepairCase(
        "R-POWER-ONLY",
        {"voltage_or_amperage_missing"},
        _power_only,
        _check_power_kw(11.0, None, None, 11000),
    ),
    RepairCase(
        "R-NO-AMPERAGE",
        {"voltage_or_amperage_derived"},
        _no_amperage,
        _check_power_kw(22.0, 230, 32, 22000),
        {"field": "evses[0].connectors[0].max_amperage", "sent": None, "kept": 32},
    ),
    # Two real Dutch stations: watts sent as milliwatts (7,360 and 7,590 kW on a 230 V single-phase socket).
    RepairCase(
        "R-DUTCH-7360",
        {"power_implausible"},
        _dutch(32, 7_360_000),
        _check_power_kw(7.4, 230, 32, 7360),
        {"field": "evses[0].connectors[0].max_electric_power", "sent": 7_360_000, "kept": 7360},
    ),
    RepairCase("R-DUTCH-7590", {"power_implausible"}, _dutch(33, 7_590_000), _check_power_kw(7.6, 230, 33, 7590)),
    # 400 V is line-to-line: 400 V x 32 A x 3 would be 38.4 kW; the real figure is 230.9 V x 32 A x 3 = 22.2 kW.
    RepairCase(
        "R-400V",
        {"line_to_line_voltage"},
        _line_to_line,
        _check_power_kw(22.2, 400, 32, 22170),
        {"field": "evses[0].connectors[0].max_electric_power", "kept": 22170, "max_voltage": 400},
    ),
    RepairCase("R-400V-STATED", set(), _line_to_line_with_power, _check_power_kw(11.0, 400, 16, 11000)),
    RepairCase(
        "R-ONE-BAD-EVSE",
        {"evse_rejected"},
        _one_bad_evse,
        lambda loc: list(loc.evses.values_list("uid", flat=True)) == ["R-ONE-BAD-EVSE-1"] or _fail(loc),
        {
            "field": "evses[1]",
            "sent": "R-ONE-BAD-EVSE-2",
            "reason": "evses[1].connectors: at least one connector is required",
        },
    ),
    RepairCase("R-NULLS", set(), _explicit_nulls, _check_nulls),
]


def _fail(loc: Location):
    raise AssertionError(f"{loc.ocpi_id} stored wrongly: {loc.__dict__}")


# --- refused: what a driver relies on is never made up -----------------------------------------------------------


def _without(path: str):
    def change(obj):
        *parents, last = path.split(".")
        for name in parents:
            obj = obj[int(name)] if name.isdigit() else obj[name]
        del obj[last]

    return change


def _set(path: str, value: Any):
    def change(obj):
        *parents, last = path.split(".")
        for name in parents:
            obj = obj[int(name)] if name.isdigit() else obj[name]
        obj[last] = value

    return change


def _no_power_at_all(obj):
    connector = first_connector(obj)
    del connector["max_voltage"], connector["max_electric_power"]


def _absurd_power_alone(obj):
    connector = first_connector(obj)
    del connector["max_voltage"], connector["max_amperage"]
    connector["max_electric_power"] = 7_360_000


def _short_evse_ids(obj):
    obj["evses"][0].update(uid="E1", evse_id="NL*ALL*E1")


def _all_evses_bad(obj):
    second = dict(obj["evses"][0], uid=f"{obj['id']}-2", connectors=[])
    del obj["evses"][0]["status"]
    obj["evses"].append(second)


REFUSALS = [
    RefusalCase("X-NO-STATUS", "evses[0].status: required", _without("evses.0.status")),
    RefusalCase("X-UNKNOWN-STATUS", "evses[0].status: unknown value 'BROKEN'", _set("evses.0.status", "BROKEN")),
    RefusalCase("X-NO-COORDINATES", "coordinates: required", _without("coordinates")),
    RefusalCase(
        "X-NO-STANDARD", "evses[0].connectors[0].standard: required", _without("evses.0.connectors.0.standard")
    ),
    RefusalCase("X-NO-POWER", "evses[0].connectors[0].max_voltage: required", _no_power_at_all),
    RefusalCase("X-ABSURD-POWER", "max_electric_power: implausible 7360000 W", _absurd_power_alone),
    RefusalCase(
        "X-ALL-EVSES-BAD",
        "evses: none is usable: evses[0].status: required; evses[1].connectors: at least one connector is required",
        _all_evses_bad,
    ),
    # An id is never cut: a cut id could name another station.
    RefusalCase("X-" + "LONG-ID-" * 5, "id: longer than 36 characters", _short_evse_ids),
]


class ShapedFeed:
    """A Locations SENDER serving the objects as they are (no date filter: some lack last_updated), in pages."""

    def __init__(self, peer, objects: list[dict], *, page_size: int = 10):
        self.peer = peer
        self.objects = objects
        self.page_size = page_size
        peer.route("GET", PATH, self.handle)

    def handle(self, request) -> PeerResponse:
        offset = int(request.query.get("offset", 0))
        page = self.objects[offset : offset + self.page_size]
        headers = {"X-Total-Count": str(len(self.objects))}
        if offset + self.page_size < len(self.objects):
            headers["Link"] = f'<{self.peer.url(PATH)}?offset={offset + self.page_size}>; rel="next"'
        return ok(page, **headers)
