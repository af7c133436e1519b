"""Writes to stations: upserting partner locations, map summaries, limited access, EVSE status history.

Every path that changes EVSEs (feed pulls, the push receiver, demo data) ends in
`refresh_location_summaries`, so what the map reads is computed by one function.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from stations.bulk_writes import bulk_update_rows, bulk_upsert
from stations.models import EVSE, Connector, EvseStatus, EvseStatusChange, Location, MapStatus, RejectedObject
from stations.ocpi_locations import ParsedLocation
from stations.selectors import bump_map_cache_version

IN_USE_STATUSES = {EvseStatus.CHARGING, EvseStatus.RESERVED, EvseStatus.BLOCKED}
FAULTY_STATUSES = {EvseStatus.OUTOFORDER, EvseStatus.INOPERATIVE}
# Parking that only some drivers may use: a driver sees these as a lock on the map.
LIMITED_PARKING_RESTRICTIONS = {"CUSTOMERS", "EV_ONLY", "DISABLED", "MOTORCYCLES"}
LIMITED_PARKING_TYPES = {"ON_DRIVEWAY"}

LOCATION_FIELDS = [
    "source",
    "publish",
    "publish_allowed_to",
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


def connector_power_kw(power_type: str, max_voltage: int, max_amperage: int, max_electric_power: int | None) -> float:
    if max_electric_power:
        return max_electric_power / 1000
    phases = 3 if power_type == "AC_3_PHASE" else 1
    return max_voltage * max_amperage * (1 if power_type == "DC" else phases) / 1000


def limited_access_reasons(
    *,
    publish: bool,
    parking_type: str,
    opening_times: dict | None,
    charging_when_closed: bool | None,
    parking_restrictions: Iterable[str],
) -> list[str]:
    """Why a driver may not simply drive up and charge; empty means open to all."""
    reasons = []
    if not publish:
        reasons.append("not_public")
    for restriction in sorted(set(parking_restrictions) & LIMITED_PARKING_RESTRICTIONS):
        reasons.append(f"parking_{restriction.lower()}")
    if parking_type in LIMITED_PARKING_TYPES:
        reasons.append(f"parking_type_{parking_type.lower()}")
    if isinstance(opening_times, dict) and not opening_times.get("twentyfourseven", False):
        # Charging when closed (default true in OCPI) still lets a driver charge, but not drive in at any hour.
        reasons.append("opening_hours")
    return reasons


def refresh_location_summaries(location_ids: Iterable[int]) -> int:
    """Recompute the map summary and limited-access fields of these locations from their EVSEs; returns rows."""
    ids = sorted(set(location_ids))
    if not ids:
        return 0
    written = 0
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        written += _refresh_chunk(chunk)
    if written:
        # Cached map answers are dropped at once; cluster counts follow at the next cells refresh.
        bump_map_cache_version()
    return written


def _refresh_chunk(ids: list[int]) -> int:
    evses: dict[int, list[tuple]] = defaultdict(list)
    evse_location: dict[int, int] = {}
    for evse_pk, location_id, status, changed_at, restrictions in EVSE.objects.filter(
        location_id__in_array=ids
    ).values_list("pk", "location_id", "status", "status_changed_at", "parking_restrictions"):
        evses[location_id].append((status, changed_at, restrictions or []))
        evse_location[evse_pk] = location_id
    power: dict[int, float] = defaultdict(float)
    standards: dict[int, set[str]] = defaultdict(set)
    for evse_pk, standard, power_type, voltage, amperage, electric_power in (
        Connector.objects.filter(evse__location_id__in_array=ids)
        .exclude(evse__status=EvseStatus.REMOVED)
        .values_list("evse_id", "standard", "power_type", "max_voltage", "max_amperage", "max_electric_power")
    ):
        location_id = evse_location[evse_pk]
        power[location_id] = max(power[location_id], connector_power_kw(power_type, voltage, amperage, electric_power))
        standards[location_id].add(standard)

    rows = []
    for pk, publish, parking_type, opening_times, when_closed in Location.objects.filter(pk__in_array=ids).values_list(
        "pk", "publish", "parking_type", "opening_times", "charging_when_closed"
    ):
        live = [e for e in evses.get(pk, []) if e[0] != EvseStatus.REMOVED]
        changed = [e[1] for e in live if e[1]]
        reasons = limited_access_reasons(
            publish=publish,
            parking_type=parking_type,
            opening_times=opening_times,
            charging_when_closed=when_closed,
            parking_restrictions=[r for e in live for r in e[2]],
        )
        rows.append(
            (
                pk,
                map_status_of(e[0] for e in live),
                max(changed) if changed else None,
                round(power.get(pk, 0.0), 1),
                ("," + ",".join(sorted(standards[pk])) + ",") if standards.get(pk) else "",
                len(live),
                sum(1 for e in live if e[0] == EvseStatus.AVAILABLE),
                bool(reasons),
                reasons,
            )
        )
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
    stored_ids: list[int] = field(default_factory=list)  # every location seen, changed or not
    changed_ids: list[int] = field(default_factory=list)


def reject_object(connection, payload, error: str, *, sync_run=None, object_id: str = "") -> RejectedObject:
    return RejectedObject.objects.create(
        connection=connection, sync_run=sync_run, object_id=str(object_id)[:64], error=error, payload=payload
    )


def store_locations(parsed: list[ParsedLocation], *, source, now: dt.datetime | None = None) -> StoreResult:
    """Upsert whole locations (with their EVSEs and connectors) in one transaction.

    A location whose content digest is unchanged (and that is not marked removed) is not written.
    EVSEs absent from a stored location's new version are set to REMOVED, never deleted, so their
    status history stays; connectors absent from an EVSE are deleted.
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

    with transaction.atomic():
        locations = [
            Location(
                party_id=item.party_id, source=source, content_hash=item.content_hash, removed_at=None, **item.location
            )
            for item in changed
        ]
        bulk_upsert(locations, unique_fields=["party", "ocpi_id"], update_fields=LOCATION_FIELDS)
        location_ids = [loc.pk for loc in locations]
        _store_evses(changed, locations, now)
        refresh_location_summaries(location_ids)
    result.changed_ids = location_ids
    result.stored_ids.extend(location_ids)
    return result


def _existing_locations(keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], tuple[int, str, object]]:
    by_party: dict[int, list[str]] = defaultdict(list)
    for party_id, ocpi_id in keys:
        by_party[party_id].append(ocpi_id)
    found = {}
    for party_id, ocpi_ids in by_party.items():
        rows = Location.objects.filter(party_id=party_id, ocpi_id__in_array=ocpi_ids).values_list(
            "pk", "ocpi_id", "content_hash", "removed_at"
        )
        for pk, ocpi_id, content_hash, removed_at in rows:
            found[(party_id, ocpi_id)] = (pk, content_hash, removed_at)
    return found


def _store_evses(changed: list[ParsedLocation], locations: list[Location], now: dt.datetime) -> None:
    location_ids = [loc.pk for loc in locations]
    old_evses: dict[tuple[int, str], tuple[int, str, object]] = {}
    for pk, location_id, uid, status, changed_at in EVSE.objects.filter(location_id__in_array=location_ids).values_list(
        "pk", "location_id", "uid", "status", "status_changed_at"
    ):
        old_evses[(location_id, uid)] = (pk, status, changed_at)

    evses: list[EVSE] = []
    connectors_of: list[list[dict] | None] = []
    removed: list[EVSE] = []
    status_changes: list[tuple[EVSE, str, dt.datetime]] = []
    for item, loc in zip(changed, locations, strict=True):
        seen = set()
        for evse in item.evses:
            data = dict(evse)
            connectors = data.pop("connectors")
            seen.add(data["uid"])
            old = old_evses.get((loc.pk, data["uid"]))
            row = EVSE(location_id=loc.pk, **data)
            if old is None or old[1] != row.status:
                row.status_changed_at = min(row.last_updated, now)
                status_changes.append((row, row.status, row.status_changed_at))
            else:
                row.status_changed_at = old[2]
            evses.append(row)
            # A REMOVED EVSE sent without connectors keeps the ones we knew (staff still see what it was).
            connectors_of.append(None if row.status == EvseStatus.REMOVED and not connectors else connectors)
        # EVSEs the new version no longer lists are gone: keep them (and their history) as REMOVED.
        for (location_id, uid), (pk, status, _changed) in old_evses.items():
            if location_id == loc.pk and uid not in seen and status != EvseStatus.REMOVED:
                row = EVSE(
                    pk=pk,
                    location_id=loc.pk,
                    uid=uid,
                    status=EvseStatus.REMOVED,
                    status_changed_at=now,
                    last_updated=now,
                )
                removed.append(row)
                status_changes.append((row, row.status, now))
    # A changed location often changes one EVSE status: the others are not rewritten.
    known = {key: value[0] for key, value in old_evses.items()}
    bulk_upsert(evses, unique_fields=["location", "uid"], update_fields=EVSE_FIELDS, known_pks=known)
    if removed:
        # Only the status changes; the rest of the row stays as the partner last described it.
        EVSE.objects.bulk_update(removed, ["status", "status_changed_at", "last_updated"], batch_size=500)
    if any(e.pk is None for e in evses):  # backends that do not return ids on conflict
        pks = {
            (lid, uid): pk
            for pk, lid, uid in EVSE.objects.filter(location_id__in_array=location_ids).values_list(
                "pk", "location_id", "uid"
            )
        }
        for evse in evses:
            evse.pk = pks[(evse.location_id, evse.uid)]
    if status_changes:
        EvseStatusChange.objects.bulk_create(
            [EvseStatusChange(evse_id=row.pk, status=status, changed_at=when) for row, status, when in status_changes],
            batch_size=2000,
        )
    _store_connectors(evses, connectors_of)


def _store_connectors(evses: list[EVSE], connectors_of: list[list[dict] | None]) -> None:
    evse_ids = [e.pk for e, connectors in zip(evses, connectors_of, strict=True) if connectors is not None]
    kept: set[tuple[int, str]] = set()
    rows: list[Connector] = []
    for evse, connectors in zip(evses, connectors_of, strict=True):
        for data in connectors or []:
            kept.add((evse.pk, data["connector_id"]))
            rows.append(Connector(evse_id=evse.pk, **data))
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
    bulk_upsert(rows, unique_fields=["evse", "connector_id"], update_fields=CONNECTOR_FIELDS, known_pks=known)


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
        bump_map_cache_version()
    return count
