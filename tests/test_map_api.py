"""The driver map API: which stations a MobilityPlus driver sees, filters, clusters, nearby, bad input."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.utils import timezone

from roaming.models import RoamingAgreement
from roaming.selectors import agreements_in_force, own_party
from stations.map_cells import refresh_map_cells, refresh_map_cells_if_changed
from stations.models import Location
from stations.selectors import bump_map_cache_version
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SyncRunFactory,
)

pytestmark = pytest.mark.django_db

EUROPE = {"bbox": "-25,34,45,72", "zoom": 6}
BRUSSELS_STREETS = {"bbox": "4.30,50.80,4.40,50.90", "zoom": 17}


@pytest.fixture(autouse=True)
def _fresh_map_cache():
    # The cache (Redis when REDIS_URL is set) outlives a test's database: start each test on a new version.
    bump_map_cache_version()
    own_party()  # exists in any running system; created here so query counts are those of a request


@pytest.fixture
def partner():
    """A CPO whose stations take our cards."""
    agreement = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    return agreement.partner


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {feature["properties"]["id"] for feature in response.json()["features"]}


def test_an_unchanged_status_is_current_while_its_feed_keeps_confirming_it(
    client, partner, settings, django_assert_max_num_queries
):
    """Stale means not heard for too long, not unchanged for too long."""
    settings.MAP_STATUS_STALE_AFTER_MINUTES = 30
    two_hours_ago = timezone.now() - dt.timedelta(hours=2)

    def feed(**fields):
        party = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
        return PartnerConnectionFactory(party=party, **fields)

    pulled = feed()
    SyncRunFactory(connection=pulled, started_at=timezone.now() - dt.timedelta(minutes=1))
    SyncRunFactory(connection=pulled, started_at=timezone.now(), status="failed")  # a failure confirms nothing
    pushing = feed(last_contact_at=timezone.now() - dt.timedelta(minutes=3))
    # Its pulls stopped succeeding two hours ago; its calls to us (authorizations) do not vouch for its feed.
    silent = feed(last_contact_at=timezone.now())
    SyncRunFactory(connection=silent, started_at=two_hours_ago)
    stations = {
        name: MapLocationFactory(
            party=source.party if source else partner, source=source, status_updated_at=two_hours_ago
        )
        for name, source in (("pulled", pulled), ("pushing", pushing), ("silent", silent), ("no feed", None))
    }

    agreements_in_force.accepting_our_cards()  # each process keeps the agreement rule's answer (roaming.selectors)
    # Stations + their feeds' confirmations (+ the partner-data counter, read every ROAMING_CHANGES_CHECK_S).
    with django_assert_max_num_queries(3):
        response = client.get("/api/v1/stations", BRUSSELS_STREETS)
    stale = {f["properties"]["id"]: f["properties"]["stale"] for f in response.json()["features"]}
    assert {name: stale[loc.pk] for name, loc in stations.items()} == {
        "pulled": False,
        "pushing": False,
        "silent": True,
        "no feed": True,
    }
    detail = client.get(f"/api/v1/stations/{stations['pulled'].pk}").json()["properties"]
    assert detail["stale"] is False


def test_only_stations_taking_our_card_are_shown(client, partner):
    today = timezone.localdate()
    ours = MapLocationFactory(party=own_party())
    theirs = MapLocationFactory(party=partner)
    both_ways = MapLocationFactory(party=RoamingAgreementFactory(direction=RoamingAgreement.Direction.BOTH).partner)
    hidden = [
        MapLocationFactory(),  # no agreement at all
        MapLocationFactory(
            party=RoamingAgreementFactory(direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS).partner
        ),
        MapLocationFactory(
            party=RoamingAgreementFactory(
                valid_from=today - dt.timedelta(days=60), valid_until=today - dt.timedelta(days=1)
            ).partner
        ),  # expired
        MapLocationFactory(party=RoamingAgreementFactory(status=RoamingAgreement.Status.SUSPENDED).partner),
        MapLocationFactory(party=partner, removed_at=timezone.now()),
        MapLocationFactory(party=partner, publish=False),
        MapLocationFactory(party=partner, publish=False, publish_allowed_to=[{"uid": "04A1B2C3", "type": "RFID"}]),
        MapLocationFactory(party=partner, evse_count=0, available_evse_count=0),  # every EVSE removed
    ]
    shown = {ours.pk, theirs.pk, both_ways.pk}

    assert ids(client.get("/api/v1/stations", BRUSSELS_STREETS)) == shown
    assert ids(client.get("/api/v1/stations/nearby", {"lat": 50.85, "lon": 4.35})) == shown
    for location in hidden:
        assert client.get(f"/api/v1/stations/{location.pk}").status_code == 404
    assert client.get(f"/api/v1/stations/{theirs.pk}").status_code == 200

    # The rule is read at request time: ending the agreement hides the partner's stations at once.
    RoamingAgreement.objects.filter(partner=partner).update(status=RoamingAgreement.Status.ENDED)
    assert ids(client.get("/api/v1/stations", BRUSSELS_STREETS)) == {ours.pk, both_ways.pk}


def test_filters_narrow_the_stations(client, partner, django_assert_max_num_queries):
    other = RoamingAgreementFactory(direction=RoamingAgreement.Direction.BOTH).partner
    ac = MapLocationFactory(party=partner, max_power_kw=22, connector_standards=",IEC_62196_T2,")
    dc = MapLocationFactory(
        party=partner, max_power_kw=150, connector_standards=",CHADEMO,IEC_62196_T2_COMBO,", map_status="in_use"
    )
    faulty = MapLocationFactory(party=other, map_status="faulty", max_power_kw=50, connector_standards=",CHADEMO,")
    limited = MapLocationFactory(party=other, limited_access=True, limited_access_reasons=["parking_customers"])
    unlocked = MapLocationFactory(party=other, limited_access=True, limited_access_override=False)
    locked = MapLocationFactory(party=other, limited_access=False, limited_access_override=True)

    def shown(**filters):
        return ids(client.get("/api/v1/stations", {**BRUSSELS_STREETS, **filters}))

    everything = {ac.pk, dc.pk, faulty.pk, limited.pk, unlocked.pk, locked.pk}
    with django_assert_max_num_queries(3):  # agreement rule (2) + the stations
        assert shown() == everything
    assert shown(standard="CHADEMO") == {dc.pk, faulty.pk}
    assert shown(standard=["IEC_62196_T2_COMBO", "CHADEMO"]) == {dc.pk, faulty.pk}
    assert shown(min_power_kw="50") == {dc.pk, faulty.pk}
    assert shown(min_power_kw="100") == {dc.pk}
    assert shown(available="true") == {ac.pk, limited.pk, unlocked.pk, locked.pk}
    assert shown(available="false") == everything
    assert shown(hide_limited="true") == {ac.pk, dc.pk, faulty.pk, unlocked.pk}
    assert shown(operator=other.ocpi_id) == {faulty.pk, limited.pk, unlocked.pk, locked.pk}
    assert shown(operator=[other.ocpi_id, partner.ocpi_id]) == everything
    with django_assert_max_num_queries(7):  # + operator validation (3) and lookup (1)
        assert shown(operator=partner.ocpi_id, standard="IEC_62196_T2") == {ac.pk}

    features = {f["properties"]["id"]: f for f in client.get("/api/v1/stations", BRUSSELS_STREETS).json()["features"]}
    assert features[limited.pk]["properties"]["limited"] is True
    assert features[locked.pk]["properties"]["limited"] is True
    assert features[unlocked.pk]["properties"]["limited"] is False
    assert features[dc.pk]["properties"]["status"] == "in_use"


def test_status_older_than_the_setting_is_stale_and_unknown_stays_unknown(client, partner, settings):
    settings.MAP_STATUS_STALE_AFTER_MINUTES = 30
    fresh = MapLocationFactory(party=partner, status_updated_at=timezone.now() - dt.timedelta(minutes=5))
    old = MapLocationFactory(party=partner, status_updated_at=timezone.now() - dt.timedelta(minutes=31))
    never = MapLocationFactory(party=partner, status_updated_at=None, map_status="unknown")
    features = {
        f["properties"]["id"]: f["properties"]
        for f in client.get("/api/v1/stations", BRUSSELS_STREETS).json()["features"]
    }
    assert features[fresh.pk]["stale"] is False
    assert features[old.pk]["stale"] is True
    assert features[never.pk]["status"] == "unknown"  # never shown as in use
    assert features[never.pk]["stale"] is True


def _spread(party, count: int, lat: float, lon: float, **fields) -> list[Location]:
    return [
        MapLocationFactory(party=party, latitude=lat + 0.001 * n, longitude=lon + 0.001 * n, **fields)
        for n in range(count)
    ]


def test_crowded_views_get_clusters_counted_on_the_server(client, partner, settings, django_assert_max_num_queries):
    settings.MAP_MAX_STATIONS = 5
    brussels = _spread(partner, 6, 50.85, 4.35)
    amsterdam = _spread(partner, 4, 52.37, 4.90, map_status="in_use")
    _spread(PartyFactory(), 5, 50.86, 4.36)  # no agreement: never counted
    refresh_map_cells()

    with django_assert_max_num_queries(4):
        body = client.get("/api/v1/stations", EUROPE).json()
    assert body["meta"]["clustered"] is True
    assert all(f["properties"]["cluster"] for f in body["features"])
    assert sum(f["properties"]["count"] for f in body["features"]) == 10
    assert body["meta"]["stations"] == 10
    by_count = sorted((f["properties"]["count"], f["properties"]["statuses"]) for f in body["features"])
    assert by_count == [
        (4, {"available": 0, "in_use": 4, "faulty": 0, "unknown": 0}),
        (6, {"available": 6, "in_use": 0, "faulty": 0, "unknown": 0}),
    ]
    lon, lat = next(f for f in body["features"] if f["properties"]["count"] == 6)["geometry"]["coordinates"]
    assert lat == pytest.approx(50.8525, abs=1e-3) and lon == pytest.approx(4.3525, abs=1e-3)

    # Filters apply to clusters too, from each kind of cell: summary (available now), filter values
    # (connector, power) and per party (operator).
    available = client.get("/api/v1/stations", {**EUROPE, "available": "true"}).json()
    assert available["meta"]["clustered"] is True and available["meta"]["stations"] == 6
    type2 = client.get("/api/v1/stations", {**EUROPE, "standard": "IEC_62196_T2", "min_power_kw": "22"}).json()
    assert type2["meta"]["clustered"] is True and type2["meta"]["stations"] == 10
    mine = client.get("/api/v1/stations", {**EUROPE, "operator": partner.ocpi_id, "standard": "IEC_62196_T2"}).json()
    assert mine["meta"]["stations"] == 10

    # Few enough stations left after filtering: the stations themselves, not clusters.
    few = client.get("/api/v1/stations", {**EUROPE, "available": "false", "hide_limited": "true", "min_power_kw": "50"})
    assert few.json()["meta"] == {**few.json()["meta"], "clustered": False, "stations": 0}

    # Zoomed in on Amsterdam: its four stations, as stations.
    assert ids(client.get("/api/v1/stations", {"bbox": "4.8,52.3,5.0,52.4", "zoom": 9})) == {s.pk for s in amsterdam}

    # Crowded street-level view (beyond the precomputed levels): clusters counted live in the database.
    with django_assert_max_num_queries(5):
        body = client.get("/api/v1/stations", {"bbox": "4.30,50.80,4.40,50.90", "zoom": 15}).json()
    assert body["meta"]["clustered"] is True
    assert sum(f["properties"]["count"] for f in body["features"]) == len(brussels)
    # At the highest zooms the stations are always listed (at most MAP_MAX_STATIONS, flagged truncated).
    body = client.get("/api/v1/stations", BRUSSELS_STREETS).json()
    assert body["meta"]["clustered"] is False and len(body["features"]) == 5 and body["meta"]["truncated"] is True


def test_cluster_cells_follow_changes_once_rebuilt(client, partner, settings):
    settings.MAP_MAX_STATIONS = 1
    first = _spread(partner, 3, 50.85, 4.35)
    # Cells not built yet (or out of date): the crowded view is still clustered, counted live.
    body = client.get("/api/v1/stations", EUROPE).json()
    assert body["meta"]["clustered"] is True and body["meta"]["stations"] == 3
    refresh_map_cells()  # bumps the cache version itself
    with connection.cursor() as cursor:  # room on each page, so the incremental updates rewrite cells in place
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'stations_mapcell'")
        assert cursor.fetchone()[0] == ["fillfactor=70"]
    assert refresh_map_cells_if_changed() is False  # nothing moved since
    assert client.get("/api/v1/stations", EUROPE).json()["meta"]["stations"] == 3
    first[0].removed_at = timezone.now()
    first[0].save()
    bump_map_cache_version()  # what the feeds do after a change
    assert refresh_map_cells_if_changed() is True
    assert client.get("/api/v1/stations", EUROPE).json()["meta"]["stations"] == 2


def test_cached_answers_are_dropped_when_a_status_changes(client, partner):
    station = MapLocationFactory(party=partner, map_status="available")
    first = client.get("/api/v1/stations", BRUSSELS_STREETS).json()
    assert first["features"][0]["properties"]["status"] == "available"
    Location.objects.filter(pk=station.pk).update(map_status="faulty")
    # Served from the cache until a writer bumps the version...
    assert client.get("/api/v1/stations", BRUSSELS_STREETS).json() == first
    bump_map_cache_version()
    assert client.get("/api/v1/stations", BRUSSELS_STREETS).json()["features"][0]["properties"]["status"] == "faulty"


def test_boxes_crossing_the_antimeridian(client, partner):
    east = MapLocationFactory(party=partner, latitude=-17.7, longitude=179.5)
    west = MapLocationFactory(party=partner, latitude=-17.8, longitude=-179.5)
    MapLocationFactory(party=partner, latitude=-17.7, longitude=0.0)
    assert ids(client.get("/api/v1/stations", {"bbox": "179,-20,-179,-15", "zoom": 17})) == {east.pk, west.pk}
    assert ids(client.get("/api/v1/stations/nearby", {"lat": -17.75, "lon": 179.9, "radius_km": 100})) == {
        east.pk,
        west.pk,
    }


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"zoom": 5}, "bbox"),
        ({"bbox": "1,2,3", "zoom": 5}, "bbox"),
        ({"bbox": "a,b,c,d", "zoom": 5}, "bbox"),
        ({"bbox": "nan,50,5,51", "zoom": 5}, "bbox"),
        ({"bbox": "-200,50,5,51", "zoom": 5}, "bbox"),
        ({"bbox": "4,-95,5,51", "zoom": 5}, "bbox"),
        ({"bbox": "4,52,5,51", "zoom": 5}, "bbox"),  # south > north
        ({"bbox": "10,50,5,51", "zoom": 5}, "bbox"),  # west > east, not crossing the antimeridian
        ({"bbox": "4,50,5,51"}, "zoom"),
        ({"bbox": "4,50,5,51", "zoom": 40}, "zoom"),
        ({"bbox": "4,50,5,51", "zoom": 5, "standard": "STEAM"}, "standard"),
        ({"bbox": "4,50,5,51", "zoom": 5, "min_power_kw": "42"}, "min_power_kw"),
        ({"bbox": "4,50,5,51", "zoom": 5, "min_power_kw": "lots"}, "min_power_kw"),
        ({"bbox": "4,50,5,51", "zoom": 5, "available": "maybe"}, "available"),
        ({"bbox": "4,50,5,51", "zoom": 5, "hide_limited": "1"}, "hide_limited"),
        ({"bbox": "4,50,5,51", "zoom": 5, "operator": "XX*NOP"}, "operator"),
    ],
)
def test_bad_viewport_parameters_get_400_naming_them(client, params, bad):
    response = client.get("/api/v1/stations", params)
    assert response.status_code == 400
    assert set(response.json()) == {bad}


def test_every_bad_parameter_is_named_at_once(client):
    response = client.get("/api/v1/stations", {"bbox": "x", "zoom": "-1", "standard": "X", "available": "y"})
    assert response.status_code == 400
    assert set(response.json()) == {"bbox", "zoom", "standard", "available"}


def test_operator_without_agreement_is_an_unknown_filter_value(client):
    stranger = PartyFactory()
    response = client.get("/api/v1/stations", {**BRUSSELS_STREETS, "operator": stranger.ocpi_id})
    assert response.status_code == 400 and "operator" in response.json()


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"lon": 4}, "lat"),
        ({"lat": 95, "lon": 4}, "lat"),
        ({"lat": 50, "lon": 181}, "lon"),
        ({"lat": 50, "lon": 4, "radius_km": 0}, "radius_km"),
        ({"lat": 50, "lon": 4, "radius_km": 1000}, "radius_km"),
        ({"lat": 50, "lon": 4, "limit": 0}, "limit"),
        ({"lat": 50, "lon": 4, "limit": 1000}, "limit"),
        ({"lat": 50, "lon": 4, "standard": "STEAM"}, "standard"),
    ],
)
def test_bad_nearby_parameters_get_400_naming_them(client, params, bad):
    response = client.get("/api/v1/stations/nearby", params)
    assert response.status_code == 400
    assert set(response.json()) == {bad}


def test_nearby_is_ordered_by_distance_within_the_radius(client, partner, django_assert_max_num_queries):
    # One degree of latitude is 111.2 km.
    near = MapLocationFactory(party=partner, latitude=50.009, longitude=4.0)  # 1.0 km north
    nearer = MapLocationFactory(party=partner, latitude=50.0, longitude=4.007)  # 0.5 km east
    far = MapLocationFactory(party=partner, latitude=50.09, longitude=4.0, map_status="in_use")  # 10 km
    MapLocationFactory(party=partner, latitude=50.3, longitude=4.0)  # 33 km: outside 25 km
    # The agreement rule is kept per process: one answer first, as a running server has given (run alone, this
    # test otherwise also counted the cold process's lookup of our own party).
    client.get("/api/v1/stations/nearby", {"lat": 10.0, "lon": 10.0, "radius_km": 1})

    with django_assert_max_num_queries(5):  # agreement rule (2) + widening circles: 1, 8, 25 km (3)
        response = client.get("/api/v1/stations/nearby", {"lat": 50.0, "lon": 4.0, "radius_km": 25})
    features = response.json()["features"]
    assert [f["properties"]["id"] for f in features] == [nearer.pk, near.pk, far.pk]
    distances = [f["properties"]["distance_km"] for f in features]
    assert distances == pytest.approx([0.5, 1.0, 10.0], abs=0.02)

    top = client.get("/api/v1/stations/nearby", {"lat": 50.0, "lon": 4.0, "limit": 2}).json()["features"]
    assert [f["properties"]["id"] for f in top] == [nearer.pk, near.pk]
    busy = client.get("/api/v1/stations/nearby", {"lat": 50.0, "lon": 4.0, "available": "true", "radius_km": 25})
    assert far.pk not in ids(busy)


def test_station_detail_lists_evses_connectors_and_how_to_start(
    client, partner, settings, django_assert_max_num_queries
):
    settings.MAP_STATUS_STALE_AFTER_MINUTES = 30
    # The operator takes our commands: its remotely startable charge points can be started from the app.
    PartnerConnectionFactory(
        party=partner, endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/c"}]
    )
    now = timezone.now()
    location = MapLocationFactory(
        party=partner,
        operator={"name": "Fast Charging BV"},
        opening_times={
            "twentyfourseven": False,
            "regular_hours": [{"weekday": 1, "period_begin": "08:00", "period_end": "20:00"}],
        },
        limited_access=True,
        limited_access_reasons=["parking_customers", "SOMETHING_NEW"],
    )
    fast = EVSEFactory(
        location=location,
        uid="E1",
        evse_id="NL*ABC*E1",
        status="CHARGING",
        status_changed_at=now - dt.timedelta(minutes=12),
        capabilities=["RFID_READER", "REMOTE_START_STOP_CAPABLE"],
    )
    ConnectorFactory(
        evse=fast,
        standard="IEC_62196_T2_COMBO",
        power_type="DC",
        max_voltage=500,
        max_amperage=300,
        max_electric_power=150000,
    )
    ConnectorFactory(
        evse=fast,
        connector_id="2",
        standard="CHADEMO",
        power_type="DC",
        max_voltage=500,
        max_amperage=100,
        max_electric_power=None,
    )
    slow = EVSEFactory(
        location=location,
        uid="E2",
        status="AVAILABLE",
        status_changed_at=now - dt.timedelta(hours=2),
        capabilities=["RFID_READER"],
    )
    ConnectorFactory(evse=slow)
    EVSEFactory(location=location, uid="E3", status="REMOVED")

    agreements_in_force.accepting_our_cards()  # each process keeps the agreement rule's answer (roaming.selectors)
    # location, EVSEs, connectors + the operator's commands receiver (app start) (+ the partner-data counter)
    with django_assert_max_num_queries(6):
        body = client.get(f"/api/v1/stations/{location.pk}").json()
    props = body["properties"]
    assert props["operator"] == "Fast Charging BV"
    assert props["opening_hours"] == "Mon 08:00–20:00"
    assert props["limited"] is True
    assert props["limited_reasons"] == [
        "Only for customers of the site (shop, hotel, restaurant)",
        "SOMETHING_NEW",  # a code from a newer version is shown as it is rather than dropped
    ]
    assert props["card"] is True and props["app"] is True
    assert [e["uid"] for e in props["evses"]] == ["E1", "E2"]  # the removed EVSE is gone
    e1, e2 = props["evses"]
    assert e1["map_status"] == "in_use" and e1["stale"] is False and e1["status_age_minutes"] == 12
    assert e1["start_url"] == f"/charging/start/{location.pk}/E1/"
    assert [(c["label"], c["power_kw"]) for c in e1["connectors"]] == [("CCS (Combo 2)", 150.0), ("CHAdeMO", 50.0)]
    assert e2["map_status"] == "available" and e2["stale"] is True
    assert e2["card"] is True and e2["app"] is False and e2["start_url"] is None
    assert e2["app_reason"] == "Card only: this charge point cannot be started from an app."

    assert client.get("/api/v1/stations/999999").status_code == 404


def test_search_finds_cities_postal_codes_and_station_names_we_show(client, partner):
    MapLocationFactory(
        party=partner, name="Gent Sint-Pieters", city="Gent", postal_code="9000", latitude=51.03, longitude=3.71
    )
    MapLocationFactory(
        party=partner, name="Korenmarkt", city="Gent", postal_code="9000", latitude=51.05, longitude=3.72
    )
    MapLocationFactory(name="Gent Secret", city="Gentbrugge", postal_code="9050")  # no agreement
    results = client.get("/api/v1/stations/search", {"q": "gent"}).json()["results"]
    # The town from the gazetteer (GeoNames' centre of Gent), with the stations we show within 10 km.
    assert results[0] == {
        "kind": "place",
        "what": "City in Belgium",
        "label": "Gent",
        "stations": 2,
        "lat": pytest.approx(51.05, abs=0.01),
        "lon": pytest.approx(3.717, abs=0.01),
    }
    assert [r["label"] for r in results if r["kind"] == "station"] == ["Gent Sint-Pieters, 9000 Gent"]
    by_code = client.get("/api/v1/stations/search", {"q": "900"}).json()["results"]
    assert [r["label"] for r in by_code if r["kind"] == "place"] == ["9000 Gent"]
    assert client.get("/api/v1/stations/search", {"q": "x"}).status_code == 400


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/stations:", "/api/v1/stations/{id}:", "/api/v1/stations/nearby:", "bbox", "min_power_kw"):
        assert path in text
    assert client.get("/api/docs/").status_code == 200


def test_beat_task_rebuilds_cells_only_after_a_change(partner, settings):
    from mobilityplus.celery import app as celery_app
    from stations.map_tasks import refresh_map_cells_if_changed as task

    celery_app.loader.import_default_modules()
    assert "stations.map_tasks.refresh_map_cells_if_changed" in celery_app.tasks
    assert settings.CELERY_BEAT_SCHEDULE["map-cells-refresh"]["task"] == task.name
    _spread(partner, 2, 50.85, 4.35)
    assert task.delay().get() is True
    assert task.delay().get() is False
    bump_map_cache_version()
    assert task.delay().get() is True
    # Rebuilt now and then even when no writer bumped the version.
    settings.MAP_CELLS_MAX_AGE_SECONDS = 0
    assert task.delay().get() is True


@pytest.mark.parametrize("path", ["/", "/map/"])
def test_map_page_serves_its_own_scripts_and_the_operators_taking_our_card(client, partner, path):
    stranger = PartyFactory(name="Stranger Charging")
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert scripts and all(src.startswith("/static/") for src in scripts), scripts  # no CDN
    assert "leaflet/leaflet" in html and "map/map.js" in html
    assert f'<option value="{partner.ocpi_id}">{partner.name}</option>' in html
    assert stranger.name not in html


def test_every_limited_access_reason_the_feeds_store_reads_as_text_for_drivers():
    from stations.api import LIMITED_REASON_TEXT
    from stations.services import LIMITED_PARKING_RESTRICTIONS, LIMITED_PARKING_TYPES, limited_access_reasons

    codes = set(
        limited_access_reasons(publish=False, parking_type="", parking_restrictions=LIMITED_PARKING_RESTRICTIONS)
    )
    for parking_type in LIMITED_PARKING_TYPES:
        codes |= set(limited_access_reasons(publish=True, parking_type=parking_type, parking_restrictions=[]))
    assert codes - set(LIMITED_REASON_TEXT) == set()


def test_a_customers_only_station_shows_why_and_still_takes_our_card(client, partner):
    """Reasons as the writer derives them; a station without RFID_READER in its (optional) capabilities."""
    from stations.services import refresh_location_summaries

    location = MapLocationFactory(party=partner)
    evse = EVSEFactory(location=location, parking_restrictions=["CUSTOMERS"], capabilities=["RESERVABLE"])
    ConnectorFactory(evse=evse)
    refresh_location_summaries([location.pk])

    props = client.get(f"/api/v1/stations/{location.pk}").json()["properties"]

    assert props["limited"] is True
    assert props["limited_reasons"] == ["Only for customers of the site (shop, hotel, restaurant)"]
    assert props["card"] is True and props["evses"][0]["card"] is True


def test_an_unpublished_station_the_cpo_opens_to_our_cards_is_shown_with_a_lock(client, partner):
    """OCPI `publish_allowed_to`: an entry with our cards' issuer admits all our drivers."""
    from stations.services import refresh_location_summaries

    location = MapLocationFactory(party=partner, publish=False, publish_allowed_to=[{"issuer": "mobilityplus"}])
    ConnectorFactory(evse=EVSEFactory(location=location))
    refresh_location_summaries([location.pk])

    assert ids(client.get("/api/v1/stations", BRUSSELS_STREETS)) == {location.pk}
    props = client.get(f"/api/v1/stations/{location.pk}").json()["properties"]
    assert props["limited"] is True
    assert props["limited_reasons"] == ["Not a public station: the operator keeps it for some drivers only"]
