"""Reads for the driver map: which stations a MobilityPlus driver sees, where, and in what state."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db.models import Avg, Count, F, IntegerField, Min, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import ASin, Coalesce, Cos, Floor, Power, Radians, Sin, Sqrt
from django.utils import timezone

from roaming.models import PartnerConnection, Party
from roaming.selectors import active_agreements, agreements_in_force
from stations import map_cache, map_cells
from stations.models import EVSE, EvseStatus, Location, MapCell, MapStatus, PendingStatus, SyncRun

EARTH_RADIUS_KM = 6371.0088
# Zoom from which the map always lists stations (a few streets: never thousands of them).
STATIONS_ALWAYS_ZOOM = 17
STATUS_NAMES = [choice.value for choice in MapStatus]


def bump_map_cache_version() -> None:
    """After rows the map shows were changed behind the services' back (SQL by hand, tests): every cached
    answer is dropped now and the cluster cells are rebuilt at the next run. The services note their own
    changes (`stations.services.note_map_changes`)."""
    map_cache.drop_all_answers()
    map_cells.request_rebuild()


# --- query shapes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BBox:
    """west, south, east, north in degrees; west > east means the box crosses the antimeridian."""

    west: float
    south: float
    east: float
    north: float

    def longitude_ranges(self) -> list[tuple[float, float]]:
        if self.west <= self.east:
            return [(self.west, self.east)]
        return [(self.west, 180.0), (-180.0, self.east)]

    def location_q(self, prefix: str = "") -> Q:
        lon = Q()
        for low, high in self.longitude_ranges():
            lon |= Q(**{f"{prefix}longitude__gte": low, f"{prefix}longitude__lte": high})
        return Q(**{f"{prefix}latitude__gte": self.south, f"{prefix}latitude__lte": self.north}) & lon

    def cells_q(self, level: int) -> Q:
        """The cells at this level overlapping the box."""
        xs = Q()
        for low, high in self.longitude_ranges():
            xs |= Q(x__gte=map_cells.cell_x(low, level), x__lte=map_cells.cell_x(high, level))
        return (
            Q(level=level, y__gte=map_cells.cell_y(self.north, level), y__lte=map_cells.cell_y(self.south, level)) & xs
        )

    def key(self) -> str:
        return f"{self.west:.5f},{self.south:.5f},{self.east:.5f},{self.north:.5f}"


@dataclass(frozen=True)
class MapFilters:
    """What the driver asked to see: each empty/false field means no filtering on it."""

    standards: tuple[str, ...] = ()
    min_power_kw: float = 0.0
    available: bool = False
    hide_limited: bool = False
    operators: tuple[int, ...] = field(default_factory=tuple)  # party ids

    def key(self) -> str:
        return (
            f"s={','.join(sorted(self.standards))}&p={self.min_power_kw:g}&a={int(self.available)}"
            f"&l={int(self.hide_limited)}&o={','.join(map(str, sorted(self.operators)))}"
        )

    def cell_kind(self) -> int:
        """The smallest kind of precomputed cell rows that can answer these filters."""
        if self.operators:
            return MapCell.Kind.PARTY
        if self.standards or self.min_power_kw:
            return MapCell.Kind.FILTERS
        return MapCell.Kind.SUMMARY

    def q(self, *, limited_field: str | None = None) -> Q:
        """The filters as a Q on Location (default) or on MapCell (limited_field='limited')."""
        q = Q()
        if self.standards:
            any_standard = Q()
            for standard in self.standards:
                any_standard |= Q(connector_standards__contains=f",{standard},")
            q &= any_standard
        if self.min_power_kw:
            q &= Q(max_power_kw__gte=self.min_power_kw)
        if self.available:
            q &= Q(map_status=MapStatus.AVAILABLE)
        if self.hide_limited:
            if limited_field:
                q &= Q(**{limited_field: False})
            else:
                q &= Q(limited_access_override=False) | Q(limited_access_override__isnull=True, limited_access=False)
        if self.operators:
            q &= Q(party_id__in=self.operators)
        return q


# --- which stations a driver sees ---------------------------------------------------------------
def accepting_parties() -> set[int]:
    """Parties whose stations take our cards (our own included), from this process's copy of the agreements
    (`roaming.selectors.agreements_in_force`, coherent within ROAMING_CHANGES_CHECK_S): no query on the map's
    hot paths (a polled viewport or station)."""
    return set(agreements_in_force.accepting_our_cards())


def visible_locations(accepted_party_ids: set[int] | None = None) -> QuerySet[Location]:
    """Locations shown on the map: owner takes our cards (or is us), published, not removed, with an EVSE."""
    if accepted_party_ids is None:
        accepted_party_ids = accepting_parties()
    return Location.objects.filter(
        party_id__in=accepted_party_ids, removed_at__isnull=True, published_to_our_drivers=True, evse_count__gt=0
    )


def stale_before(now: dt.datetime | None = None) -> dt.datetime:
    return (now or timezone.now()) - dt.timedelta(minutes=settings.MAP_STATUS_STALE_AFTER_MINUTES)


def is_stale(
    status_updated_at: dt.datetime | None, now: dt.datetime | None = None, confirmed_at: dt.datetime | None = None
) -> bool:
    """A status is stale when neither its last change nor a later confirmation is recent enough."""
    heard = max((t for t in (status_updated_at, confirmed_at) if t is not None), default=None)
    return heard is None or heard < stale_before(now)


def status_confirmed_at(connection_ids: Iterable[int | None]) -> dict[int, dt.datetime]:
    """When each feed connection last confirmed the statuses we hold from it (one query).

    A status that has not changed for hours is still current when the partner's feed says so: the start of
    its last successful pull (a delta lists every change since the previous one), or, for a partner we do
    not pull, its last call to us.
    """
    ids = {pk for pk in connection_ids if pk is not None}
    if not ids:
        return {}
    last_pull = (
        SyncRun.objects.filter(connection=OuterRef("pk"), status=SyncRun.Status.SUCCEEDED)
        .order_by("-started_at")
        .values("started_at")[:1]
    )
    confirmed = {}
    for pk, pulled, contacted in (
        PartnerConnection.objects.filter(pk__in=ids)
        .annotate(last_pull=Subquery(last_pull))
        .values_list("pk", "last_pull", "last_contact_at")
    ):
        # A feed we pull is confirmed by our pulls only (the partner may call us for authorizations while its
        # feed fails); a partner that only pushes confirms by calling us.
        latest = pulled or contacted
        if latest is not None:
            confirmed[pk] = latest
    return confirmed


def cluster_level(zoom: int) -> int:
    """Grid level whose cells are about 128 px wide at this zoom (256 px tiles at level == zoom)."""
    return max(map_cells.MIN_CELL_LEVEL, zoom + 1)


# --- viewport ------------------------------------------------------------------------------------
STATION_FIELDS = (
    "id",
    "name",
    "latitude",
    "longitude",
    "map_status",
    "status_updated_at",
    "limited_access",
    "limited_access_override",
    "max_power_kw",
    "evse_count",
    "available_evse_count",
    "source_id",
)


def station_feature(row: dict, now: dt.datetime, confirmed: dict[int, dt.datetime]) -> dict:
    limited = row["limited_access"] if row["limited_access_override"] is None else row["limited_access_override"]
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(row["longitude"], 6), round(row["latitude"], 6)]},
        "properties": {
            "id": row["id"],
            "name": row["name"],
            "status": row["map_status"],
            "stale": is_stale(row["status_updated_at"], now, confirmed.get(row["source_id"])),
            "limited": limited,
            "max_power_kw": row["max_power_kw"],
            "evses": row["evse_count"],
            "available_evses": row["available_evse_count"],
        },
    }


def cluster_feature(row: dict) -> dict:
    count = row["count"]
    return {
        "type": "Feature",
        "geometry": {
            "type": "Point",
            "coordinates": [round(row["sum_lon"] / count, 5), round(row["sum_lat"] / count, 5)],
        },
        "properties": {
            "cluster": True,
            "count": count,
            "statuses": {name: row[name] or 0 for name in STATUS_NAMES},
        },
    }


def _status_sums(count_field: str, aggregate) -> dict:
    return {name: aggregate(count_field, filter=Q(map_status=name)) for name in STATUS_NAMES}


def cells_in_bbox(bbox: BBox, level: int, filters: MapFilters, accepted: set[int]) -> list[dict]:
    """Cluster rows (count, coordinate sums, per-status counts) from the precomputed cells."""
    kind = filters.cell_kind()
    if kind != MapCell.Kind.PARTY and map_cells.summary_parties() == sorted(accepted):
        cells = MapCell.objects.filter(kind=kind, party__isnull=True)
    else:  # the agreements changed since the last rebuild: apply the rule to the per-party rows
        cells = MapCell.objects.filter(kind=MapCell.Kind.PARTY, party_id__in=accepted)
    return list(
        cells.filter(bbox.cells_q(level), filters.q(limited_field="limited"))
        .values("x", "y")
        .annotate(
            count=Sum("stations"),
            sum_lat=Sum("sum_latitude"),
            sum_lon=Sum("sum_longitude"),
            **_status_sums("stations", Sum),
        )
        .order_by()
    )


def live_clusters(locations: QuerySet[Location], level: int) -> list[dict]:
    """Cluster rows counted straight from the locations (small viewports that are still crowded)."""
    rows = (
        locations.annotate(
            cx=Floor((F("longitude") + 180.0) * (2**level / 360.0)),
            cy=Floor((90.0 - F("latitude")) * (2**level / 180.0)),
        )
        .values("cx", "cy")
        .annotate(count=Count("id"), lat=Avg("latitude"), lon=Avg("longitude"), **_status_sums("id", Count))
        .order_by()
    )
    return [{**row, "sum_lat": row["lat"] * row["count"], "sum_lon": row["lon"] * row["count"]} for row in rows]


def map_features(bbox: BBox, zoom: int, filters: MapFilters) -> dict:
    """GeoJSON for one viewport: the stations themselves, or clusters when there are too many."""
    return orjson.loads(map_features_json(bbox, zoom, filters))


def map_features_json(bbox: BBox, zoom: int, filters: MapFilters) -> bytes:
    """GeoJSON for one viewport: the stations themselves, or clusters when there are too many."""
    accepted = accepting_parties()  # a cached viewport costs no query at all
    key = f"{bbox.key()}:{zoom}:{filters.key()}:{','.join(map(str, sorted(accepted)))}"
    # Reused while the areas it covers did not change, or for MAP_FRESH_SECONDS (stations/map_cache.py).
    return map_cache.cached_answer(key, bbox, lambda: _map_features(bbox, zoom, filters, accepted))


def _map_features(bbox: BBox, zoom: int, filters: MapFilters, accepted: set[int]) -> dict:
    limit = settings.MAP_MAX_STATIONS
    now = timezone.now()
    level = cluster_level(zoom)
    locations = visible_locations(accepted).filter(bbox.location_q(), filters.q())
    cells = None
    if zoom < STATIONS_ALWAYS_ZOOM and level <= map_cells.MAX_CELL_LEVEL:
        cells = cells_in_bbox(bbox, level, filters, accepted)
        # Cells overlapping the edge count a few stations outside: we cluster slightly early, never late.
        if sum(cell["count"] for cell in cells) > limit:
            return _collection([cluster_feature(cell) for cell in cells], zoom, clustered=True)
    rows = list(locations.values(*STATION_FIELDS)[: limit + 1])
    if len(rows) > limit and zoom < STATIONS_ALWAYS_ZOOM:
        # The cells said few stations but there are many: out of date, not built yet, or (per-party
        # rows) not kept at this level. Count them live.
        clusters = live_clusters(locations, level)
        return _collection([cluster_feature(cell) for cell in clusters], zoom, clustered=True)
    truncated, rows = len(rows) > limit, rows[:limit]
    confirmed = status_confirmed_at(row["source_id"] for row in rows)
    features = [station_feature(row, now, confirmed) for row in rows]
    return _collection(features, zoom, clustered=False, truncated=truncated)


def _collection(features: list[dict], zoom: int, *, clustered: bool, truncated: bool = False) -> dict:
    return {
        "type": "FeatureCollection",
        "features": features,
        "meta": {
            "zoom": zoom,
            "clustered": clustered,
            "stations": sum(f["properties"].get("count", 1) for f in features),
            "truncated": truncated,
            "stale_after_minutes": settings.MAP_STATUS_STALE_AFTER_MINUTES,
        },
    }


# --- nearby ---------------------------------------------------------------------------------------
def _distance_km(lat: float, lon: float):
    """Haversine distance from (lat, lon) to each location, as a database expression."""
    half_dlat = (Radians(F("latitude")) - math.radians(lat)) / 2
    half_dlon = (Radians(F("longitude")) - math.radians(lon)) / 2
    a = Power(Sin(half_dlat), 2) + math.cos(math.radians(lat)) * Cos(Radians(F("latitude"))) * Power(Sin(half_dlon), 2)
    return 2 * EARTH_RADIUS_KM * ASin(Sqrt(a))


def around(lat: float, lon: float, radius_km: float) -> BBox:
    """The box holding every point within radius_km of (lat, lon), for the lat/lon index prefilter."""
    dlat = math.degrees(radius_km / EARTH_RADIUS_KM)
    south, north = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    widest = max(abs(south), abs(north))
    if widest >= 89.9:
        return BBox(-180.0, south, 180.0, north)
    dlon = math.degrees(radius_km / (EARTH_RADIUS_KM * math.cos(math.radians(widest))))
    if dlon >= 180:
        return BBox(-180.0, south, 180.0, north)
    west, east = lon - dlon, lon + dlon
    west = west + 360 if west < -180 else west
    east = east - 360 if east > 180 else east
    return BBox(west, south, east, north)


def nearby_stations(lat: float, lon: float, radius_km: float, limit: int, filters: MapFilters) -> list[dict]:
    """The `limit` visible stations nearest to (lat, lon) within radius_km, nearest first."""
    accepted = accepting_parties()
    now = timezone.now()
    # Try small circles first: in a city the nearest twenty lie within a kilometre, and
    # once a circle holds `limit` stations no station outside it can be nearer.
    radius = min(radius_km, 1.0)
    while True:
        rows = list(
            visible_locations(accepted)
            .filter(around(lat, lon, radius).location_q(), filters.q())
            .annotate(distance_km=_distance_km(lat, lon))
            .filter(distance_km__lte=radius)
            .order_by("distance_km", "id")
            .values(*STATION_FIELDS, "distance_km")[:limit]
        )
        if len(rows) >= limit or radius >= radius_km:
            break
        radius = min(radius_km, radius * 8)
    features = []
    confirmed = status_confirmed_at(row["source_id"] for row in rows)
    for row in rows:
        feature = station_feature(row, now, confirmed)
        feature["properties"]["distance_km"] = round(row["distance_km"], 3)
        features.append(feature)
    return features


# --- one station ----------------------------------------------------------------------------------
def station_detail(location_id: int) -> Location | None:
    """A visible location with its current EVSEs and their connectors (three queries), or None."""
    evses = EVSE.objects.exclude(status=EvseStatus.REMOVED).prefetch_related("connectors").order_by("uid")
    return (
        visible_locations()
        .select_related("party")
        .prefetch_related(Prefetch("evses", queryset=evses))
        .filter(pk=location_id)
        .first()
    )


PLACE_RADIUS_KM = 10.0  # stations counted "in" a town of the gazetteer: within this distance of its centre


def search_places(query: str, limit: int = 10) -> list[dict]:
    """Towns (any language, no accents needed), then postal codes, operators and stations, each saying what it is.

    Places come from the offline gazetteer (`stations.places`), with how many stations lie within
    PLACE_RADIUS_KM; then our own data: postal codes and towns the gazetteer lacks, operators by name (the result
    sets the operator filter), stations by name.
    """
    from stations.places import fold, gazetteer

    query = query.strip()
    if not query:
        return []
    accepted = accepting_parties()
    visible = visible_locations(accepted)
    results: list[dict] = []
    numeric = query[:1].isdigit()
    seen_places: set[str] = set()
    if not numeric:
        for place, matched in gazetteer().search(query, limit=4):
            kind = "City" if place.population >= 100_000 else "Town"
            label = place.name if fold(place.name) == matched else f"{place.name} ({matched.title()})"
            results.append(
                {
                    "kind": "place",
                    "what": f"{kind} in {place.country}",
                    "label": label,
                    "stations": visible.filter(around(place.latitude, place.longitude, PLACE_RADIUS_KM).location_q())
                    .order_by()
                    .count(),
                    "lat": place.latitude,
                    "lon": place.longitude,
                }
            )
            seen_places.add(fold(place.name))
    # Our own towns and postal codes (villages the gazetteer does not list, and postal codes it has not at all).
    own = visible.filter(postal_code__istartswith=query) if numeric else visible.filter(city__istartswith=query)
    own = (
        own.values("city", "postal_code" if numeric else "country")
        .annotate(stations=Count("id"), lat=Avg("latitude"), lon=Avg("longitude"))
        .order_by("-stations")[:5]
    )
    for row in own:
        if not numeric and fold(row["city"]) in seen_places:
            continue
        label = f"{row['postal_code']} {row['city']}" if numeric else row["city"]
        results.append(
            {
                "kind": "place",
                "what": "Postal code" if numeric else "Town",
                "label": label,
                "stations": row["stations"],
                "lat": row["lat"],
                "lon": row["lon"],
            }
        )
    if not numeric:
        for party in Party.objects.filter(pk__in=accepted, name__icontains=query).order_by("name")[:3]:
            results.append(
                {
                    "kind": "operator",
                    "what": "Operator",
                    "label": party.name,
                    "operator": party.ocpi_id,
                    "lat": None,
                    "lon": None,
                }
            )
    # Unordered so the database stops at the first few matches (a city name matches thousands of stations).
    by_name = Q(name__icontains=query) | Q(postal_code__istartswith=query) if numeric else Q(name__icontains=query)
    stations = (
        visible.filter(by_name)
        .order_by()
        .values("id", "name", "city", "postal_code", "latitude", "longitude")[: max(2, limit - len(results))]
    )
    for row in sorted(stations, key=lambda row: row["name"]):
        results.append(
            {
                "kind": "station",
                "what": "Station",
                "id": row["id"],
                "label": f"{row['name']}, {row['postal_code']} {row['city']}".replace(",  ", ", "),
                "lat": row["latitude"],
                "lon": row["longitude"],
            }
        )
    return results


def roaming_partners_for_drivers():
    """Partners whose stations take our cards today, with how many of their stations are on the map."""
    stations = (
        Location.objects.filter(party=OuterRef("pk"), removed_at__isnull=True, published_to_our_drivers=True)
        .order_by()
        .values("party")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Party.objects.filter(pk__in=active_agreements(our_cards=True).values("partner_id"), is_self=False)
        .annotate(station_count=Coalesce(Subquery(stations, output_field=IntegerField()), 0))
        .order_by("name")
    )


# --- favourite stations -----------------------------------------------------------------------------
def favourite_stations(user) -> list[dict]:
    """A driver's starred stations still on the map, newest star first, as map features (two queries)."""
    from stations.models import FavouriteStation

    ids = list(FavouriteStation.objects.filter(user=user).values_list("location_id", flat=True))
    rows = {row["id"]: row for row in visible_locations().filter(pk__in=ids).values(*STATION_FIELDS)}
    now = timezone.now()
    confirmed = status_confirmed_at(row["source_id"] for row in rows.values())
    return [station_feature(rows[pk], now, confirmed) for pk in ids if pk in rows]


def status_inbox_backlog() -> tuple[int, float]:
    """Status PATCHes queued and not yet applied (stations/status_inbox.py), and the oldest one's age in seconds."""
    backlog = PendingStatus.objects.aggregate(waiting=Count("pk"), oldest=Min("received_at"))
    oldest = backlog["oldest"]
    return backlog["waiting"], (timezone.now() - oldest).total_seconds() if oldest else 0.0
