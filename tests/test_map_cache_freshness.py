"""The map under a status stream: per-area cache versions, a bounded staleness, cluster cells kept incrementally."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from roaming.ocpi.envelope import format_datetime
from stations.map_cells import BUILT_FROM_KEY, refresh_map_cells, refresh_map_cells_if_changed, update_map_cells
from stations.models import Location, MapCell, MapCellMember, MapDirtyLocation
from stations.selectors import bump_map_cache_version
from tests.conftest import make_ocpi_partner
from tests.factories import MapLocationFactory
from tests.feeds_fixtures import example

# Committed for real: the cache's versions move after commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/ocpi/emsp/2.2.1/locations"
OCPI_TOKEN = "bec-token"
PARIS = {"bbox": "2.34,48.85,2.36,48.87", "zoom": 17}
EUROPE = {"bbox": "-25,34,45,72", "zoom": 5}


@pytest.fixture
def cpo():
    partner = make_ocpi_partner(country_code="BE", party_id="BEC", token=OCPI_TOKEN, tokens__to_them="to-bec")
    bump_map_cache_version()  # the cache (Redis when REDIS_URL is set) outlives a test's database
    return partner


@pytest.fixture
def paris_operator():
    return make_ocpi_partner(country_code="FR", party_id="PAR").party


@pytest.fixture
def ghent(ocpi, cpo):
    """The spec's example location in Ghent (EVSE 3256 AVAILABLE, 3257 RESERVED), pushed by its CPO."""
    assert ocpi("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json")).status_code == 201
    location = Location.objects.get(ocpi_id="LOC1")
    street = f"{location.longitude - 0.01},{location.latitude - 0.01},{location.longitude + 0.01},"
    return location, {"bbox": street + f"{location.latitude + 0.01}", "zoom": 17}


def _status(client, view) -> str:
    return client.get("/api/v1/stations", view).json()["features"][0]["properties"]["status"]


def _push(ocpi, uid: str, status: str) -> None:
    body = {"status": status, "last_updated": format_datetime(timezone.now())}
    assert ocpi("PATCH", f"{BASE}/BE/BEC/LOC1/{uid}", body).envelope["status_code"] == 1000


def test_a_change_is_shown_at_once_while_other_areas_answers_keep_hitting(client, ocpi, ghent, paris_operator):
    _location, view = ghent
    paris = MapLocationFactory(party=paris_operator, latitude=48.86, longitude=2.35, map_status="available")
    assert (_status(client, view), _status(client, PARIS)) == ("available", "available")
    # Behind the services' back: nothing tells the cache, so Paris's answer stays the cached one.
    Location.objects.filter(pk=paris.pk).update(map_status="faulty")

    _push(ocpi, "3256", "OUTOFORDER")

    assert _status(client, view) == "in_use"  # (3257 is RESERVED) Ghent's area moved: recomputed at once
    assert _status(client, PARIS) == "available"  # another area: still the cached answer


def test_a_busy_area_is_recomputed_at_most_every_fresh_seconds(client, ocpi, ghent, settings):
    settings.MAP_FRESH_SECONDS = 1.0
    _location, view = ghent
    assert _status(client, view) == "available"
    _push(ocpi, "3256", "CHARGING")
    assert _status(client, view) == "in_use"  # the first change after a quiet spell: at once
    pushed = time.monotonic()
    _push(ocpi, "3256", "AVAILABLE")
    # The area is busy: its answer, recomputed for a change a moment ago, is reused within the bound...
    if time.monotonic() - pushed < 0.9:
        assert _status(client, view) == "in_use"
    time.sleep(max(0.0, 1.05 - (time.monotonic() - pushed)))
    assert _status(client, view) == "available"  # ...and never longer


def test_wide_views_are_reused_for_the_fresh_seconds_only(client, ocpi, ghent, paris_operator, settings):
    settings.MAP_FRESH_SECONDS = 0.5
    settings.MAP_MAX_STATIONS = 1000
    first = client.get("/api/v1/stations", EUROPE).json()
    assert first["meta"]["stations"] == 1
    MapLocationFactory(party=paris_operator, latitude=48.86, longitude=2.35)  # behind the services' back
    assert client.get("/api/v1/stations", EUROPE).json() == first
    time.sleep(0.55)
    assert client.get("/api/v1/stations", EUROPE).json()["meta"]["stations"] == 2


def _cells() -> list[tuple]:
    rows = MapCell.objects.values_list(
        "kind", "level", "x", "y", "party_id", "map_status", "limited", "max_power_kw", "connector_standards",
        "stations",
    )  # fmt: skip
    return sorted(rows, key=lambda row: tuple(str(value) for value in row))


def test_cluster_cells_take_in_the_changed_locations_without_a_rebuild(client, ocpi, ghent, paris_operator):
    paris = MapLocationFactory(party=paris_operator, latitude=48.86, longitude=2.35)
    refresh_map_cells()
    built = cache.get(BUILT_FROM_KEY)
    assert MapCellMember.objects.count() == 2 and not MapDirtyLocation.objects.exists()

    _push(ocpi, "3256", "OUTOFORDER")
    _push(ocpi, "3257", "OUTOFORDER")  # Ghent is now faulty
    assert MapDirtyLocation.objects.count() == 2  # one row per change

    assert refresh_map_cells_if_changed() is True
    assert cache.get(BUILT_FROM_KEY) == built  # taken in, not rebuilt
    assert not MapDirtyLocation.objects.exists()
    coarse = dict(
        MapCell.objects.filter(kind=MapCell.Kind.SUMMARY, level=3).values_list("map_status", "stations")
    )
    assert coarse == {"faulty": 1, "available": 1}
    assert refresh_map_cells_if_changed() is False  # nothing changed since

    # What the increments left is exactly what a rebuild counts.
    incremental = _cells()
    refresh_map_cells()
    assert _cells() == incremental
    # A station gone from the map leaves its cells.
    Location.objects.filter(pk=paris.pk).update(removed_at=timezone.now() - dt.timedelta(minutes=1))
    MapDirtyLocation.objects.create(location_id=paris.pk)
    assert update_map_cells() == 1
    assert dict(
        MapCell.objects.filter(kind=MapCell.Kind.SUMMARY, level=3).values_list("map_status", "stations")
    ) == {"faulty": 1}


def _faulty(answer: dict) -> int:
    return sum(feature["properties"]["statuses"].get("faulty", 0) for feature in answer["features"])


def test_clustered_views_follow_the_cells_not_each_status_change(client, ocpi, ghent, paris_operator, settings):
    settings.MAP_FRESH_SECONDS = 0.0  # no reuse window: only the cells' version keeps the answer
    settings.MAP_MAX_STATIONS = 1
    MapLocationFactory(party=paris_operator, latitude=48.86, longitude=2.35, map_status="available")
    refresh_map_cells()
    first = client.get("/api/v1/stations", EUROPE).json()
    assert first["meta"]["clustered"] and first["meta"]["stations"] == 2 and _faulty(first) == 0

    _push(ocpi, "3256", "OUTOFORDER")
    _push(ocpi, "3257", "OUTOFORDER")  # Ghent is faulty now; its area's version moved twice

    # The counts a clustered view shows are the cells': until they take the change in, the cached answer stands
    # (not even recomputed: no query reads the stations or the cells).
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/stations", EUROPE).json() == first
    assert not [q["sql"] for q in queries.captured_queries if "stations_" in q["sql"]]
    assert update_map_cells() == 1
    assert _faulty(client.get("/api/v1/stations", EUROPE).json()) == 1
