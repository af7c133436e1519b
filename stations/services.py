"""Writes to stations: upserting partner locations, map summaries, limited access, EVSE status history.

Every path that changes EVSEs (feed pulls, the push receiver, demo data) computes the map summary with
`location_summary` (or, for a status-only change, `apply_evse_status` from the same rules), and every EVSE
status change, on any path, goes through `record_status_changes` (history row, `evse_status_changed`).
Every change the map shows goes through `note_map_changes` (the cluster cells' dirty list, the map
cache's area versions).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection as db
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.dispatch import Signal
from django.utils import timezone

from roaming.ocpi.repairs import RepairTally
from stations.bulk_writes import Row, bulk_insert, bulk_update_rows, bulk_upsert
from stations.map_cache import note_changed_places
from stations.metrics import STATUS_CHANGES
from stations.models import (
    EVSE,
    Connector,
    EvseStatus,
    EvseStatusChange,
    Location,
    MapDirtyLocation,
    MapStatus,
    RejectedObject,
    is_published_to_our_drivers,
)
from stations.ocpi_locations import ParsedLocation, StatusPatch
from stations.storable import storable_copy, storable_text

IN_USE_STATUSES = {EvseStatus.CHARGING, EvseStatus.RESERVED, EvseStatus.BLOCKED}
FAULTY_STATUSES = {EvseStatus.OUTOFORDER, EvseStatus.INOPERATIVE}
# The lock says who may use a station (docs/map.md, "What the lock means"). Parking some of our drivers may
# not use locks it; EV_ONLY (a bay kept for electric vehicles: every driver of ours) and PLUGGED (park only
# while charging) are rules every driver of ours can follow, so the panel shows them as information.
LIMITED_PARKING_RESTRICTIONS = {"CUSTOMERS", "DISABLED", "MOTORCYCLES"}
INFORMATION_PARKING_RESTRICTIONS = ("EV_ONLY", "PLUGGED")
# Private parking: of OCPI's parking types only a driveway (a home or a company's own) says so.
LIMITED_PARKING_TYPES = {"ON_DRIVEWAY"}

LOCATION_FIELDS = [
    "source",
    "publish",
    "publish_allowed_to",
    "published_to_our_drivers",
    "name",
    "address",
    "city",
    "postal_code",
    "state",
    "country",
    "latitude",
    "longitude",
    "parking_type",
    "operator",
    "suboperator",
    "owner",
    "facilities",
    "time_zone",
    "opening_times",
    "charging_when_closed",
    "last_updated",
    "raw",
    "content_hash",
    "removed_at",
]
EVSE_FIELDS = [
    "evse_id",
    "status",
    "status_changed_at",
    "status_schedule",
    "capabilities",
    "floor_level",
    "latitude",
    "longitude",
    "physical_reference",
    "directions",
    "parking_restrictions",
    "images",
    "last_updated",
]
CONNECTOR_FIELDS = [
    "standard",
    "format",
    "power_type",
    "max_voltage",
    "max_amperage",
    "max_electric_power",
    "tariff_ids",
    "terms_and_conditions",
    "last_updated",
]
SUMMARY_FIELDS = [
    "map_status",
    "status_updated_at",
    "max_power_kw",
    "connector_standards",
    "evse_count",
    "available_evse_count",
    "limited_access",
    "limited_access_reasons",
]


# ---------------------------------------------------------------------------------------------
# Summaries and limited access (pure functions, then the one writer)


def map_status_of(statuses: Iterable[str]) -> str:
    """What the map shows for a set of EVSE statuses. Unknown is never shown as in use."""
    present = {s for s in statuses if s != EvseStatus.REMOVED}
    if EvseStatus.AVAILABLE in present:
        return MapStatus.AVAILABLE
    if present & IN_USE_STATUSES:
        return MapStatus.IN_USE
    if present & FAULTY_STATUSES:
        return MapStatus.FAULTY
    return MapStatus.UNKNOWN


def status_summary(live: list[tuple[str, dt.datetime | None]]) -> tuple[str, int, dt.datetime | None]:
    """A location's map status, available EVSE count and latest status change, from its live EVSEs'
    (status, status_changed_at): the part of its map summary a status change moves."""
    stamps = [at for _status, at in live if at is not None]
    available = sum(1 for status, _at in live if status == EvseStatus.AVAILABLE)
    return map_status_of(status for status, _at in live), available, max(stamps) if stamps else None


def connector_power_kw(
    power_type: str, max_voltage: int | None, max_amperage: int | None, max_electric_power: int | None
) -> float:
    if max_electric_power:
        return max_electric_power / 1000
    if max_voltage is None or max_amperage is None:
        return 0.0
    phases = 3 if power_type == "AC_3_PHASE" else 1
    return max_voltage * max_amperage * (1 if power_type == "DC" else phases) / 1000


def limited_access_reasons(*, publish: bool, parking_type: str, parking_restrictions: Iterable[str]) -> list[str]:
    """Why some MobilityPlus drivers may not be allowed to use a station (the lock); empty means all may.

    Only who may use it counts. When it is open is its own cue (`stations.opening_hours`), and EV_ONLY or
    PLUGGED are information in the panel (`parking_information`).
    """
    reasons = []
    if not publish:
        # Shown to us only because `publish_allowed_to` names our issuer: published to named issuers only.
        reasons.append("not_public")
    for restriction in sorted(set(parking_restrictions) & LIMITED_PARKING_RESTRICTIONS):
        reasons.append(f"parking_{restriction.lower()}")
    if parking_type in LIMITED_PARKING_TYPES:
        reasons.append(f"parking_type_{parking_type.lower()}")
    return reasons


def parking_information(parking_restrictions: Iterable[str]) -> list[str]:
    """Parking rules every driver of ours can follow (EV_ONLY, PLUGGED), in OCPI order: information, not a lock."""
    present = set(parking_restrictions)
    return [r for r in INFORMATION_PARKING_RESTRICTIONS if r in present]


def refresh_location_summaries(location_ids: Iterable[int]) -> int:
    """Recompute the map summary and limited-access fields of these locations from their EVSEs; returns rows."""
    ids = sorted(set(location_ids))
    if not ids:
        return 0
    written = 0
    points: list[tuple[float, float]] = []
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        written += _refresh_chunk(chunk, points)
    if written:
        # Cached map answers of these areas are dropped after commit; cluster counts follow within
        # MAP_CELLS_REFRESH_SECONDS.
        note_map_changes(ids, points)
    return written


@dataclass
class EvseSummaryInput:
    """What a location's summary needs of one EVSE."""

    status: str
    status_changed_at: dt.datetime | None
    parking_restrictions: list[str]
    connectors: list[tuple[str, str, int, int, int | None]]  # standard, power_type, volts, amps, watts


def location_summary(*, publish: bool, parking_type: str, evses: Iterable[EvseSummaryInput]) -> dict[str, Any]:
    """The map summary and limited-access fields (SUMMARY_FIELDS) of a location, from its EVSEs."""
    live = [e for e in evses if e.status != EvseStatus.REMOVED]
    changed = [e.status_changed_at for e in live if e.status_changed_at]
    connectors = [c for e in live for c in e.connectors]
    reasons = limited_access_reasons(
        publish=publish,
        parking_type=parking_type,
        parking_restrictions=[r for e in live for r in e.parking_restrictions],
    )
    standards = sorted({c[0] for c in connectors})
    return {
        "map_status": map_status_of(e.status for e in live),
        "status_updated_at": max(changed) if changed else None,
        "max_power_kw": round(max((connector_power_kw(*c[1:]) for c in connectors), default=0.0), 1),
        "connector_standards": ("," + ",".join(standards) + ",") if standards else "",
        "evse_count": len(live),
        "available_evse_count": sum(1 for e in live if e.status == EvseStatus.AVAILABLE),
        "limited_access": bool(reasons),
        "limited_access_reasons": reasons,
    }


def _refresh_chunk(ids: list[int], points: list[tuple[float, float]]) -> int:
    evses: dict[int, list[EvseSummaryInput]] = defaultdict(list)
    by_pk: dict[int, EvseSummaryInput] = {}
    for evse_pk, location_id, status, changed_at, restrictions in EVSE.objects.filter(
        location_id__in_array=ids
    ).values_list("pk", "location_id", "status", "status_changed_at", "parking_restrictions"):
        by_pk[evse_pk] = EvseSummaryInput(status, changed_at, restrictions or [], [])
        evses[location_id].append(by_pk[evse_pk])
    for evse_pk, *connector in Connector.objects.filter(evse__location_id__in_array=ids).values_list(
        "evse_id", "standard", "power_type", "max_voltage", "max_amperage", "max_electric_power"
    ):
        by_pk[evse_pk].connectors.append(tuple(connector))

    rows = []
    for pk, publish, parking_type, latitude, longitude in Location.objects.filter(pk__in_array=ids).values_list(
        "pk", "publish", "parking_type", "latitude", "longitude"
    ):
        points.append((latitude, longitude))
        summary = location_summary(publish=publish, parking_type=parking_type, evses=evses.get(pk, []))
        rows.append((pk, *(summary[name] for name in SUMMARY_FIELDS)))
    _write_summaries(rows)
    return len(rows)


def _write_summaries(rows: list[tuple]) -> None:
    columns = ["id", *SUMMARY_FIELDS]
    bulk_update_rows(Location, columns, [(*row[:-1], json.dumps(row[-1])) for row in rows])


# ---------------------------------------------------------------------------------------------
# Upserting parsed locations (one page of a feed, or one pushed object)


@dataclass
class StoreResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0  # objects the database refused when a page was stored one by one
    stored_ids: list[int] = field(default_factory=list)  # every location seen, changed or not
    changed_ids: list[int] = field(default_factory=list)


def reject_object(connection, payload, error: str, *, sync_run=None, object_id: Any = "") -> RejectedObject:
    """Keep a partner's object we could not store, with why; what is kept is made storable first (the object
    was rejected for holding what the database refuses: NUL bytes, lone surrogates, NaN, absurd nesting)."""
    object_id = str(object_id) if isinstance(object_id, str | int) else ""
    return RejectedObject.objects.create(
        connection=connection,
        sync_run=sync_run,
        object_id=storable_text(object_id)[:64],
        error=storable_text(error),
        payload=storable_copy(payload),
    )


def record_repairs(tally: RepairTally, connection, item: ParsedLocation, *, sync_run=None) -> None:
    """Count a kept location's repairs for its owner; keep each EVSE dropped from it as a rejected object."""
    tally.add(item.party_id, item.repairs, item.location["ocpi_id"])
    for evse in item.rejected_evses:
        uid = evse.payload.get("uid") if isinstance(evse.payload, dict) else None
        reject_object(
            connection,
            evse.payload,
            f"{evse.reason} (the EVSE alone was rejected; location {item.location['ocpi_id']} was kept)",
            sync_run=sync_run,
            object_id=f"{item.location['ocpi_id']}/{uid}" if isinstance(uid, str | int) else item.location["ocpi_id"],
        )


def store_locations(
    parsed: list[ParsedLocation], *, source, now: dt.datetime | None = None, durable: bool = True
) -> StoreResult:
    """Upsert whole locations (with their EVSEs, connectors and map summaries) in one transaction.

    A location whose content digest is unchanged (and that is not marked removed) is not written.
    EVSEs absent from a stored location's new version are set to REMOVED, never deleted, so their
    status history stays; connectors absent from an EVSE are deleted. The map summary is computed
    from the new version itself (as `refresh_location_summaries` would from the stored rows), so each
    location row is written once.

    `durable=False` (feed pages) does not wait for the commit to reach the disk: a crash may lose the
    last pages, which the next run reads again from the last successful run's start.
    """
    now = now or timezone.now()
    result = StoreResult()
    if not parsed:
        return result
    # The last version of an object wins when a page repeats it.
    by_key: dict[tuple[int, str], ParsedLocation] = {}
    for item in parsed:
        by_key[(item.party_id, item.location["ocpi_id"])] = item
    existing = _existing_locations(by_key.keys())
    changed: list[ParsedLocation] = []
    for key, item in by_key.items():
        found = existing.get(key)
        if found and found[1] == item.content_hash and found[2] is None:
            result.unchanged += 1
            result.stored_ids.append(found[0])
            continue
        if found:
            result.updated += 1
        else:
            result.created += 1
        changed.append(item)
    if not changed:
        return result

    old_evses = _stored_evses([existing[key][0] for key in by_key if key in existing])
    with transaction.atomic():
        if not durable and db.vendor == "postgresql":
            with db.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        plans = [
            _plan_evses(item, existing.get((item.party_id, item.location["ocpi_id"])), old_evses, now)
            for item in changed
        ]
        location_rows = [
            {
                "party_id": item.party_id,
                "source_id": source.pk if source else None,
                "content_hash": item.content_hash,
                "removed_at": None,
                **item.location,
                "published_to_our_drivers": is_published_to_our_drivers(
                    item.location["publish"], item.location["publish_allowed_to"]
                ),
                **plan.summary(item),
            }
            for item, plan in zip(changed, plans, strict=True)
        ]
        location_ids = bulk_upsert(
            Location, location_rows, unique_fields=["party", "ocpi_id"], update_fields=LOCATION_FIELDS + SUMMARY_FIELDS
        )
        _store_evses(plans, location_ids, old_evses, now)
        # The old place too: a location that moved leaves its former area.
        moved_from = [found[3] for key in by_key if (found := existing.get(key)) is not None]
        note_map_changes(location_ids, [(row["latitude"], row["longitude"]) for row in location_rows] + moved_from)
    result.changed_ids = location_ids
    result.stored_ids.extend(location_ids)
    return result


def _existing_locations(keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], tuple[int, str, object, tuple]]:
    """(party, ocpi_id) -> (pk, content_hash, removed_at, (latitude, longitude)) of the stored locations."""
    by_party: dict[int, list[str]] = defaultdict(list)
    for party_id, ocpi_id in keys:
        by_party[party_id].append(ocpi_id)
    found = {}
    for party_id, ocpi_ids in by_party.items():
        rows = Location.objects.filter(party_id=party_id, ocpi_id__in_array=ocpi_ids).values_list(
            "pk", "ocpi_id", "content_hash", "removed_at", "latitude", "longitude"
        )
        for pk, ocpi_id, content_hash, removed_at, latitude, longitude in rows:
            found[(party_id, ocpi_id)] = (pk, content_hash, removed_at, (latitude, longitude))
    return found


def _stored_evses(location_ids: list[int]) -> dict[tuple[int, str], tuple[int, str, dt.datetime | None]]:
    """(location pk, uid) -> (pk, status, status_changed_at) of the EVSEs we hold for these locations."""
    return {
        (location_id, uid): (pk, status, changed_at)
        for pk, location_id, uid, status, changed_at in EVSE.objects.filter(
            location_id__in_array=location_ids
        ).values_list("pk", "location_id", "uid", "status", "status_changed_at")
    }


@dataclass
class EvsePlan:
    """What one changed location's new version does to its EVSEs, before any pk is known."""

    location_pk: int | None  # None for a new location
    rows: list[Row]  # EVSE rows as sent (without location_id yet)
    connectors_of: list[list[dict] | None]  # per row; None keeps the connectors we hold
    new_status: list[bool]  # per row: its status changed (a history entry is due)
    gone: list[tuple[int, str]]  # (pk, uid) of stored EVSEs the new version no longer lists

    def summary(self, item: ParsedLocation) -> dict[str, Any]:
        location = item.location
        return location_summary(
            publish=location["publish"],
            parking_type=location["parking_type"],
            evses=[
                EvseSummaryInput(
                    row["status"],
                    row["status_changed_at"],
                    row["parking_restrictions"],
                    [
                        (c["standard"], c["power_type"], c["max_voltage"], c["max_amperage"], c["max_electric_power"])
                        for c in connectors or []
                    ],
                )
                for row, connectors in zip(self.rows, self.connectors_of, strict=True)
            ],
        )


def _plan_evses(item: ParsedLocation, found: tuple | None, old_evses: dict, now: dt.datetime) -> EvsePlan:
    location_pk = found[0] if found else None
    plan = EvsePlan(location_pk, [], [], [], [])
    seen = set()
    for evse in item.evses:
        row = dict(evse)
        connectors = row.pop("connectors")
        seen.add(row["uid"])
        old = old_evses.get((location_pk, row["uid"])) if location_pk else None
        changed = old is None or old[1] != row["status"]
        row["status_changed_at"] = min(row["last_updated"], now) if changed else old[2]
        plan.rows.append(row)
        plan.new_status.append(changed)
        # A REMOVED EVSE sent without connectors keeps the ones we knew (staff still see what it was).
        plan.connectors_of.append(None if row["status"] == EvseStatus.REMOVED and not connectors else connectors)
    if location_pk:
        # EVSEs the new version no longer lists are gone: keep them (and their history) as REMOVED.
        for (location_id, uid), (pk, status, _changed) in old_evses.items():
            if location_id == location_pk and uid not in seen and status != EvseStatus.REMOVED:
                plan.gone.append((pk, uid))
    return plan


def _store_evses(plans: list[EvsePlan], location_ids: list[int], old_evses: dict, now: dt.datetime) -> None:
    rows: list[Row] = []
    connectors_of: list[list[dict] | None] = []
    new_status: list[bool] = []
    gone: list[tuple[int, str]] = []
    for plan, location_pk in zip(plans, location_ids, strict=True):
        for row in plan.rows:
            row["location_id"] = location_pk
        rows.extend(plan.rows)
        connectors_of.extend(plan.connectors_of)
        new_status.extend(plan.new_status)
        gone.extend(plan.gone)
    # A changed location often changes one EVSE status: the others are not rewritten.
    known = {key: value[0] for key, value in old_evses.items()}
    evse_pks = bulk_upsert(EVSE, rows, unique_fields=["location", "uid"], update_fields=EVSE_FIELDS, known_pks=known)
    if gone:
        # Only the status changes; the rest of the row stays as the partner last described it.
        EVSE.objects.filter(pk__in=[pk for pk, _uid in gone]).update(
            status=EvseStatus.REMOVED, status_changed_at=now, last_updated=now
        )
    previous = {value[0]: value[1] for value in old_evses.values()}
    changes = [
        StatusChange(pk, row["location_id"], row["status"], row["status_changed_at"], previous.get(pk))
        for pk, row, changed in zip(evse_pks, rows, new_status, strict=True)
        if changed
    ]
    location_of = {pk: row["location_id"] for pk, row in zip(evse_pks, rows, strict=True)}
    location_of.update({value[0]: key[0] for key, value in old_evses.items()})
    changes += [StatusChange(pk, location_of[pk], EvseStatus.REMOVED, now, previous.get(pk)) for pk, _uid in gone]
    record_status_changes(changes)
    _store_connectors(evse_pks, connectors_of)


def _store_connectors(evse_pks: list[int], connectors_of: list[list[dict] | None]) -> None:
    evse_ids = [pk for pk, connectors in zip(evse_pks, connectors_of, strict=True) if connectors is not None]
    kept: set[tuple[int, str]] = set()
    rows: list[Row] = []
    for evse_pk, connectors in zip(evse_pks, connectors_of, strict=True):
        for data in connectors or []:
            kept.add((evse_pk, data["connector_id"]))
            rows.append({"evse_id": evse_pk, **data})
    known: dict[tuple, int] = {}
    stale = []
    for pk, evse_id, connector_id in Connector.objects.filter(evse_id__in_array=evse_ids).values_list(
        "pk", "evse_id", "connector_id"
    ):
        if (evse_id, connector_id) in kept:
            known[(evse_id, connector_id)] = pk
        else:
            stale.append(pk)
    if stale:
        Connector.objects.filter(pk__in=stale).delete()
    bulk_upsert(
        Connector, rows, unique_fields=["evse", "connector_id"], update_fields=CONNECTOR_FIELDS, known_pks=known
    )


def record_staff_edit(
    location_id: int, *, evse: EVSE | None = None, status_changed: bool = False, created: bool = False
) -> None:
    """After staff edited a location or an EVSE in the admin: status history, map summary, cached map answers,
    and for our own stations the change pushed to partners (in the admin's transaction, through the outbox)."""
    from stations import partner_pushes

    now = timezone.now()
    if evse is not None and status_changed:
        EVSE.objects.filter(pk=evse.pk).update(status_changed_at=now, last_updated=now)
        record_status_changes([StatusChange(evse.pk, location_id, evse.status, now, None)])
    # Rewrites the location's summary row and moves the map's cache version, whatever staff changed.
    refresh_location_summaries([location_id])
    location = Location.objects.select_related("party").get(pk=location_id)
    if not partner_pushes.is_ours(location):
        return
    if evse is None:
        partner_pushes.push_location(location)
    elif created or not status_changed:
        partner_pushes.push_evse(evse)  # a new EVSE, or its other fields: the whole EVSE
    else:
        partner_pushes.push_evse_status(evse)


@transaction.atomic
def record_our_evse_status(evse: EVSE, status: str, at: dt.datetime) -> bool:
    """An EVSE of ours took `status` at `at` (our charge-point backend, or staff): history, map, every partner.

    Idempotent and ordered by `at`: the same report again, or one older than the status we hold, changes nothing
    (returns False). Otherwise the status is stored and a PATCH is written to the outbox for every connected eMSP or
    hub served by our stations, in this transaction (a not-yet-sent status of the same EVSE is replaced).
    """
    from stations import partner_pushes

    if status not in EvseStatus.values:
        raise ValueError(f"unknown EVSE status {status!r}")
    locked = EVSE.objects.select_for_update().select_related("location__party").get(pk=evse.pk)
    if not partner_pushes.is_ours(locked.location):
        raise ValueError("not an EVSE of our own stations")
    if locked.status_changed_at and at <= locked.status_changed_at:
        return False
    if locked.status == status:
        return False
    previous = locked.status
    locked.status, locked.status_changed_at, locked.last_updated = status, at, max(at, locked.last_updated)
    locked.save(update_fields=["status", "status_changed_at", "last_updated"])
    Location.objects.filter(pk=locked.location_id, last_updated__lt=locked.last_updated).update(
        last_updated=locked.last_updated
    )
    record_status_changes([StatusChange(locked.pk, locked.location_id, status, at, previous)])
    refresh_location_summaries([locked.location_id])
    partner_pushes.push_evse_status(locked)
    evse.status, evse.status_changed_at, evse.last_updated = status, at, locked.last_updated
    return True


def analyze_station_tables() -> None:
    """Fresh planner statistics for the station tables after a bulk change (PostgreSQL; a no-op elsewhere)."""
    if db.vendor == "postgresql":
        tables = ", ".join(db.ops.quote_name(m._meta.db_table) for m in (Location, EVSE, Connector))
        with db.cursor() as cursor:
            cursor.execute(f"ANALYZE {tables}")


def mark_locations_removed(location_ids: Iterable[int], *, now: dt.datetime | None = None) -> int:
    """Locations gone from a partner's full feed: kept, marked removed (the map no longer shows them)."""
    ids = list(location_ids)
    now = now or timezone.now()
    count = 0
    for start in range(0, len(ids), 5000):
        count += Location.objects.filter(pk__in=ids[start : start + 5000], removed_at__isnull=True).update(
            removed_at=now
        )
    if count:
        note_map_changes(ids, None)
    return count


# --- favourite stations -------------------------------------------------------------------------
def add_favourite(user, location: Location) -> bool:
    """Star a station for a driver; True when it was new (a second star is a no-op)."""
    from stations.models import FavouriteStation

    _, created = FavouriteStation.objects.get_or_create(user=user, location=location)
    return created


def remove_favourite(user, location_id: int) -> bool:
    """Unstar; True when there was a star."""
    from stations.models import FavouriteStation

    deleted, _ = FavouriteStation.objects.filter(user=user, location_id=location_id).delete()
    return bool(deleted)


# ---------------------------------------------------------------------------------------------
# EVSE status changes: the one function every path records them through, and the status fast path

# Sent once per batch of status changes, inside the writing transaction, after the history rows are
# written: `changes` is a list of StatusChange. Hooks (outgoing status pushes for our own stations) defer
# their own work with transaction.on_commit or write in this transaction (an outbox row).
evse_status_changed = Signal()


@dataclass(frozen=True)
class StatusChange:
    """One EVSE taking a new status (`previous` is None when unknown: a new EVSE, or a staff edit)."""

    evse_id: int
    location_id: int
    status: str
    changed_at: dt.datetime
    previous: str | None = None


def record_status_changes(changes: list[StatusChange]) -> None:
    """Write the history rows of these status changes and tell the hooks (`evse_status_changed`).

    Every status change goes through here: feed pulls and full pushes (`store_locations`), the status
    fast path (`apply_evse_status`) and staff edits.
    """
    if not changes:
        return
    if len(changes) > 20 or db.vendor != "postgresql":
        bulk_insert(
            EvseStatusChange,
            [{"evse_id": c.evse_id, "status": c.status, "changed_at": c.changed_at} for c in changes],
        )
    else:  # a push's one or two rows: a plain INSERT is cheaper than a COPY
        with db.cursor() as cursor:
            cursor.execute(*_history_insert(changes))
    announce_status_changes(changes)


def announce_status_changes(changes: list[StatusChange]) -> None:
    """Count these changes and tell the hooks (`evse_status_changed`); their history rows are written."""
    STATUS_CHANGES.inc(len(changes))
    evse_status_changed.send(sender=StatusChange, changes=changes)


def _history_insert(changes: list[StatusChange]) -> tuple[str, list]:
    """The INSERT of a few history rows (a push's one or two: cheaper than a COPY)."""
    table = db.ops.quote_name(EvseStatusChange._meta.db_table)
    values = ", ".join(["(%s, %s, %s)"] * len(changes))
    return (
        f"INSERT INTO {table} (evse_id, status, changed_at) VALUES {values}",  # noqa: S608
        [value for c in changes for value in (c.evse_id, c.status, _db_time(c.changed_at))],
    )


def dirty_insert(location_ids: list[int]) -> tuple[str, list]:
    """The INSERT putting these locations on the cells' dirty list (`stations.map_cells`)."""
    table = db.ops.quote_name(MapDirtyLocation._meta.db_table)
    values = ", ".join(["(%s)"] * len(location_ids))
    return f"INSERT INTO {table} (location_id) VALUES {values}", list(location_ids)  # noqa: S608


def execute_together(statements: list[tuple[str, list]]) -> None:
    """Run these statements in one round trip on PostgreSQL (client-side binding, Django's default, lets one
    execute carry several); one by one elsewhere."""
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        else:
            for sql, params in statements:
                cursor.execute(sql, params)


def note_map_changes(location_ids: Iterable[int], points: Iterable[tuple[float, float]] | None) -> None:
    """These locations changed what the map shows: recount their cluster cells, drop their areas' answers.

    In the caller's transaction: the locations join the cells' dirty list (`stations.map_cells` takes it in
    within MAP_CELLS_REFRESH_SECONDS); after commit the map cache's versions of the areas holding `points`
    (latitude, longitude) move, or of every area when `points` is None (`stations.map_cache`).
    """
    ids = sorted(set(location_ids))
    if len(ids) == 1:  # one INSERT without RETURNING
        with db.cursor() as cursor:
            cursor.execute(*dirty_insert(ids))
    elif ids:
        bulk_insert(MapDirtyLocation, [{"location_id": pk} for pk in ids])
    note_changed_places(points)


_LOCATION_EVSES_SQL = (
    "SELECT e.id, e.uid, e.status, e.status_schedule, e.status_changed_at, l.id, l.removed_at, l.latitude, "
    "l.longitude FROM stations_location l JOIN stations_evse e ON e.location_id = l.id "
    "WHERE l.party_id = %s AND l.ocpi_id = %s"
)


# MAX() of two values on SQLite, GREATEST() elsewhere; %%s keeps a place for the optional schedule.
_GREATEST = "MAX" if db.vendor == "sqlite" else "GREATEST"
_EVSE_STATUS_SQL = (
    "UPDATE stations_evse SET status = %%s, status_changed_at = %%s, "  # noqa: S608 (a function name)
    f"last_updated = {_GREATEST}(last_updated, %%s)%s WHERE id = %%s"
)
# No indexed column (the location's own last_updated is indexed for paging: readers raise it to its EVSEs'
# stamps, stations.ocpi_views): PostgreSQL rewrites the row in place (stations migration 0014).
_LOCATION_SUMMARY_SQL = (
    "UPDATE stations_location SET map_status = %s, available_evse_count = %s, status_updated_at = %s, "
    "content_hash = '' WHERE id = %s"
)


def apply_evse_status(party_id: int, location_id: str, evse_uid: str, patch: StatusPatch) -> bool:
    """A status-only PATCH of one EVSE, writing only what changed; False when it needs the general path.

    A repeated status writes only its confirmation time (the EVSE's last_updated). A new one writes the
    EVSE, its history row (`record_status_changes`) and the location's map summary, under the location's
    row lock (as the general path takes it). `Location.raw` keeps the partner's last full version: readers
    of it lay the EVSE columns over it (`stations.ocpi_views`), and the content digest is cleared so the
    next full version is written whatever it holds. The general path takes over for an unknown location
    or EVSE (or one matching only case-insensitively), a removed location or EVSE, and REMOVED itself.
    """
    stamp, now = patch.last_updated, timezone.now()
    with transaction.atomic():
        # The location's row lock (as the general path takes it) and all its EVSEs, in one round trip.
        with db.cursor() as cursor:
            lock = " FOR UPDATE OF l" if db.vendor == "postgresql" else ""
            cursor.execute(_LOCATION_EVSES_SQL + lock, [party_id, location_id])
            rows = cursor.fetchall()
        current = next((row for row in rows if row[1] == evse_uid), None)
        if current is None or current[6] is not None or current[2] == EvseStatus.REMOVED:
            return False  # unknown (or only case-insensitively known), removed: the general path decides
        evse_pk, location_pk, location = current[0], current[5], current[6:]
        if current[2] == patch.status and patch.status_schedule in (None, json_column(current[3])):
            # Nothing the map shows changed: only the time the partner confirmed the status moves (never back).
            EVSE.objects.filter(pk=evse_pk).update(last_updated=Greatest(F("last_updated"), stamp))
            return True
        if current[2] == patch.status:  # only the schedule changed
            EVSE.objects.filter(pk=evse_pk).update(
                status_schedule=patch.status_schedule, last_updated=Greatest(F("last_updated"), stamp)
            )
            return True
        evses = [(pk, other, _aware(at)) for pk, _uid, other, _schedule, at, *_rest in rows]
        changed_at = min(stamp, now)
        change = StatusChange(evse_pk, location_pk, patch.status, changed_at, current[2])
        live = [
            (patch.status, changed_at) if pk == evse_pk else (other, at)
            for pk, other, at in evses
            if pk == evse_pk or other != EvseStatus.REMOVED
        ]
        map_status, available, updated_at = status_summary(live)
        schedule = "" if patch.status_schedule is None else ", status_schedule = %s"
        # Plain SQL, the four writes in one round trip: the ORM would spend more time building them than the
        # database spends running them. The EVSE, its history row (as record_status_changes writes it), the
        # location's map summary (the rest of it, EVSE count, power, connectors, the lock, depends on which EVSEs
        # are live, which a status other than REMOVED does not change) and the cells' dirty list.
        execute_together(
            [
                (
                    _EVSE_STATUS_SQL % schedule,
                    [patch.status, _db_time(changed_at), _db_time(stamp)]
                    + ([json.dumps(patch.status_schedule)] if patch.status_schedule is not None else [])
                    + [evse_pk],
                ),
                _history_insert([change]),
                (
                    _LOCATION_SUMMARY_SQL,
                    [map_status, available, _db_time(updated_at) if updated_at else None, location_pk],
                ),
                dirty_insert([location_pk]),
            ]
        )
        announce_status_changes([change])
        note_changed_places([location[1:]])
    return True


def _aware(value: Any) -> dt.datetime | None:
    """A datetime column read by raw SQL (naive UTC, or text, on SQLite)."""
    if value is None:
        return None
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def json_column(value: Any) -> Any:
    """A JSON column read by raw SQL (text with Django's database adapters)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _db_time(value: dt.datetime) -> Any:
    """A datetime as this database stores it (raw SQL: Django's own adaptation, text on SQLite)."""
    return db.ops.adapt_datetimefield_value(value)
