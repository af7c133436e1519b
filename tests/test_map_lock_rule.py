"""What the lock means: who may use a station; opening hours as their own cue; EV_ONLY/PLUGGED as information."""

from __future__ import annotations

import datetime as dt
import importlib
import re

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from roaming.models import RoamingAgreement
from roaming.selectors import own_party
from stations.models import Location
from stations.ocpi_locations import parse_location
from stations.opening_hours import opening_cue
from stations.selectors import bump_map_cache_version
from stations.services import EvseSummaryInput, location_summary, store_locations
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)
from tests.feeds_fixtures import location

BRUSSELS_STREETS = {"bbox": "4.30,50.80,4.40,50.90", "zoom": 17}
UTRECHT_STREETS = {"bbox": "5.0,52.0,5.2,52.2", "zoom": 17}  # where feeds_fixtures.location() puts a site
CUSTOMERS_TEXT = "Only for customers of the site (shop, hotel, restaurant)"
NOT_PUBLIC_TEXT = "Not a public station: the operator keeps it for some drivers only"


@pytest.fixture
def feed():
    """A CPO whose stations take our cards, and its feed connection; a fresh map cache."""
    # The cache (Redis when REDIS_URL is set) outlives a test's database: start each test on a new version.
    bump_map_cache_version()
    own_party()
    party = PartyFactory(country_code="NL", party_id="ALL")
    RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    return party, PartnerConnectionFactory(party=party)


def stored(feed, obj: dict) -> Location:
    """The location as the feed writer stores it from what the partner sent."""
    party, source = feed
    parsed = parse_location(obj)
    parsed.party_id = party.pk
    store_locations([parsed], source=source)
    return Location.objects.get(party=party, ocpi_id=obj["id"])


def summary_of(obj: dict) -> dict:
    """The summary function itself, on the same OCPI object."""
    return location_summary(
        publish=obj["publish"],
        parking_type=obj.get("parking_type", ""),
        evses=[EvseSummaryInput("AVAILABLE", None, e.get("parking_restrictions", []), []) for e in obj["evses"]],
    )


def with_restrictions(ocpi_id: str, *restrictions: str, **fields) -> dict:
    obj = location(ocpi_id, **fields)
    obj["evses"][0]["parking_restrictions"] = list(restrictions)
    return obj


# --- the lock, per OCPI value -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("restriction", "reasons", "information"),
    [
        # Every driver of ours drives an electric vehicle: a bay kept for EVs is information, not a lock.
        ("EV_ONLY", [], ["Parking reserved for electric vehicles"]),
        ("PLUGGED", [], ["Park only while plugged in"]),
        ("DISABLED", ["Reserved for disabled drivers"], []),
        ("CUSTOMERS", [CUSTOMERS_TEXT], []),
        ("MOTORCYCLES", ["Only for motorcycles and scooters"], []),
    ],
)
def test_each_parking_restriction_locks_only_when_some_of_our_drivers_may_not_use_it(
    client, feed, restriction, reasons, information
):
    obj = with_restrictions(f"R-{restriction}", restriction)
    saved = stored(feed, obj)

    props = client.get(f"/api/v1/stations/{saved.pk}").json()["properties"]
    assert props["limited"] is bool(reasons)
    assert props["limited_reasons"] == reasons
    assert props["parking_information"] == information
    # The summary function says the same, and so does the map's marker.
    assert summary_of(obj)["limited_access"] is bool(reasons)
    assert summary_of(obj)["limited_access_reasons"] == saved.limited_access_reasons
    [marker] = client.get("/api/v1/stations", UTRECHT_STREETS).json()["features"]
    assert marker["properties"]["limited"] is bool(reasons)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("parking_type", "reasons"),
    [
        ("ALONG_MOTORWAY", []),
        ("PARKING_GARAGE", []),
        ("PARKING_LOT", []),
        # The one OCPI parking type that says private parking (a home's or a company's own driveway).
        ("ON_DRIVEWAY", ["Private parking (a driveway)"]),
        ("ON_STREET", []),
        ("UNDERGROUND_GARAGE", []),
    ],
)
def test_each_parking_type_locks_only_for_private_parking(client, feed, parking_type, reasons):
    obj = location(f"T-{parking_type}", parking_type=parking_type)
    saved = stored(feed, obj)

    props = client.get(f"/api/v1/stations/{saved.pk}").json()["properties"]
    assert (props["limited"], props["limited_reasons"]) == (bool(reasons), reasons)
    assert summary_of(obj)["limited_access_reasons"] == saved.limited_access_reasons


@pytest.mark.django_db
def test_published_to_named_issuers_only_locks_and_other_unpublished_sites_are_not_shown(client, feed):
    public = stored(feed, location("PUBLIC"))
    ours = stored(feed, location("OURS", publish=False, publish_allowed_to=[{"issuer": "MobilityPlus"}]))
    theirs = stored(feed, location("THEIRS", publish=False, publish_allowed_to=[{"issuer": "Other eMSP"}]))

    assert client.get(f"/api/v1/stations/{public.pk}").json()["properties"]["limited"] is False
    props = client.get(f"/api/v1/stations/{ours.pk}").json()["properties"]
    assert (props["limited"], props["limited_reasons"]) == (True, [NOT_PUBLIC_TEXT])
    assert client.get(f"/api/v1/stations/{theirs.pk}").status_code == 404


@pytest.mark.django_db
def test_opening_hours_and_ev_only_do_not_lock_and_the_hide_limited_filter_keeps_them(client, feed):
    garage = stored(
        feed,
        with_restrictions(
            "GARAGE",
            "EV_ONLY",
            "PLUGGED",
            parking_type="PARKING_GARAGE",
            time_zone="Europe/Amsterdam",
            opening_times={
                "twentyfourseven": False,
                "regular_hours": [{"weekday": d, "period_begin": "07:00", "period_end": "18:00"} for d in range(1, 8)],
            },
        ),
    )
    customers = stored(feed, with_restrictions("SHOP", "CUSTOMERS", "EV_ONLY"))
    view = UTRECHT_STREETS

    assert {f["properties"]["id"] for f in client.get("/api/v1/stations", view).json()["features"]} == {
        garage.pk,
        customers.pk,
    }
    hidden = client.get("/api/v1/stations", view | {"hide_limited": "true"}).json()["features"]
    assert [f["properties"]["id"] for f in hidden] == [garage.pk]
    props = client.get(f"/api/v1/stations/{garage.pk}").json()["properties"]
    assert props["limited"] is False and props["limited_reasons"] == []
    assert props["opening_hours"].startswith("Mon 07:00–18:00")
    cue = r"(Open now, closes 18:00|Closed now, opens (\w{3} )?07:00) \(Europe/Amsterdam time\)"
    assert re.fullmatch(cue, props["open_now"])
    assert props["parking_information"] == ["Parking reserved for electric vehicles", "Park only while plugged in"]
    shop = client.get(f"/api/v1/stations/{customers.pk}").json()["properties"]
    assert shop["limited_reasons"] == [CUSTOMERS_TEXT]
    assert shop["parking_information"] == ["Parking reserved for electric vehicles"]


# --- opening hours: the cue ---------------------------------------------------------------------------------------

DAILY_7_TO_18 = {
    "twentyfourseven": False,
    "regular_hours": [{"weekday": d, "period_begin": "07:00", "period_end": "18:00"} for d in range(1, 8)],
}
# Friday night into Saturday, and nothing else.
FRIDAY_NIGHT = {
    "twentyfourseven": False,
    "regular_hours": [{"weekday": 5, "period_begin": "22:00", "period_end": "02:00"}],
}
WEEKDAYS_8_TO_20 = {
    "twentyfourseven": False,
    "regular_hours": [{"weekday": d, "period_begin": "08:00", "period_end": "20:00"} for d in range(1, 6)],
}
# OCPI's own examples (location_hours_*.json).
OPEN_247_CLOSED_CHRISTMAS_NIGHT = {
    "twentyfourseven": True,
    "exceptional_closings": [{"period_begin": "2018-12-25T03:00:00Z", "period_end": "2018-12-25T05:00:00Z"}],
}
NIGHTS_WITH_A_CLOSING = {
    "twentyfourseven": False,
    "regular_hours": [
        {"weekday": 1, "period_begin": "01:00", "period_end": "06:00"},
        {"weekday": 2, "period_begin": "01:00", "period_end": "06:00"},
    ],
    "exceptional_closings": [{"period_begin": "2018-12-25T03:00:00Z", "period_end": "2018-12-25T05:00:00Z"}],
}
NIGHTS_WITH_AN_OPENING = {
    "twentyfourseven": False,
    "regular_hours": [
        {"weekday": 1, "period_begin": "00:00", "period_end": "04:00"},
        {"weekday": 2, "period_begin": "00:00", "period_end": "04:00"},
    ],
    "exceptional_openings": [{"period_begin": "2018-12-25T05:00:00Z", "period_end": "2018-12-25T06:00:00Z"}],
}


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("opening_times", "zone", "now", "cue"),
    [
        # 2026-12-04 is a Friday; Stockholm is UTC+1 in December.
        (DAILY_7_TO_18, "Europe/Stockholm", "2026-12-04T04:30", "Closed now, opens 07:00 (Europe/Stockholm time)"),
        (DAILY_7_TO_18, "Europe/Stockholm", "2026-12-04T11:00", "Open now, closes 18:00 (Europe/Stockholm time)"),
        # After closing: the next opening is tomorrow morning, named by its day.
        (DAILY_7_TO_18, "Europe/Stockholm", "2026-12-04T19:00", "Closed now, opens Sat 07:00 (Europe/Stockholm time)"),
        # The same hours in another zone are other instants: 11:00 UTC is 06:00 in New York.
        (DAILY_7_TO_18, "America/New_York", "2026-12-04T11:00", "Closed now, opens 07:00 (America/New_York time)"),
        # Across midnight: Friday 22:00 to Saturday 02:00 (Europe/London is UTC in December).
        (FRIDAY_NIGHT, "Europe/London", "2026-12-04T21:00", "Closed now, opens 22:00 (Europe/London time)"),
        (FRIDAY_NIGHT, "Europe/London", "2026-12-04T23:30", "Open now, closes Sat 02:00 (Europe/London time)"),
        (FRIDAY_NIGHT, "Europe/London", "2026-12-05T01:00", "Open now, closes 02:00 (Europe/London time)"),
        (FRIDAY_NIGHT, "Europe/London", "2026-12-05T02:00", "Closed now, opens Fri 22:00 (Europe/London time)"),
        # Friday evening closing, next opening Monday.
        (WEEKDAYS_8_TO_20, "Europe/Brussels", "2026-12-04T19:30", "Closed now, opens Mon 08:00 (Europe/Brussels time)"),
        # 24/7 with an exceptional closing on Christmas night (Brussels is UTC+1).
        (OPEN_247_CLOSED_CHRISTMAS_NIGHT, "Europe/Brussels", "2018-12-20T12:00", "Open now"),
        (
            OPEN_247_CLOSED_CHRISTMAS_NIGHT,
            "Europe/Brussels",
            "2018-12-24T12:00",
            "Open now, closes Tue 04:00 (Europe/Brussels time)",
        ),
        (
            OPEN_247_CLOSED_CHRISTMAS_NIGHT,
            "Europe/Brussels",
            "2018-12-25T01:00",
            "Open now, closes 04:00 (Europe/Brussels time)",
        ),
        (
            OPEN_247_CLOSED_CHRISTMAS_NIGHT,
            "Europe/Brussels",
            "2018-12-25T04:00",
            "Closed now, opens 06:00 (Europe/Brussels time)",
        ),
        # An exceptional closing wins over regular hours (2018-12-25 is a Tuesday).
        (NIGHTS_WITH_A_CLOSING, "Europe/London", "2018-12-25T02:00", "Open now, closes 03:00 (Europe/London time)"),
        (NIGHTS_WITH_A_CLOSING, "Europe/London", "2018-12-25T04:00", "Closed now, opens 05:00 (Europe/London time)"),
        (
            NIGHTS_WITH_A_CLOSING,
            "Europe/London",
            "2018-12-25T07:00",
            "Closed now, opens Mon 01:00 (Europe/London time)",
        ),
        # An exceptional opening outside regular hours.
        (NIGHTS_WITH_AN_OPENING, "Europe/London", "2018-12-25T04:30", "Closed now, opens 05:00 (Europe/London time)"),
        (NIGHTS_WITH_AN_OPENING, "Europe/London", "2018-12-25T05:30", "Open now, closes 06:00 (Europe/London time)"),
        ({"twentyfourseven": True}, "Europe/Brussels", "2026-12-04T12:00", "Open now"),
        ({"twentyfourseven": True}, "", "2026-12-04T12:00", "Open now"),  # no zone needed
        # Only a past exceptional opening: closed, and no opening to name.
        (
            {
                "twentyfourseven": False,
                "exceptional_openings": [
                    {"period_begin": "2018-12-25T05:00:00Z", "period_end": "2018-12-25T06:00:00Z"}
                ],
            },
            "Europe/London",
            "2026-12-04T12:00",
            "Closed now",
        ),
        # Nothing we can use: say nothing.
        (None, "Europe/Brussels", "2026-12-04T12:00", None),
        ({}, "Europe/Brussels", "2026-12-04T12:00", None),
        ({"twentyfourseven": False, "regular_hours": []}, "Europe/Brussels", "2026-12-04T12:00", None),
        (DAILY_7_TO_18, "", "2026-12-04T12:00", None),  # local hours without a zone: no guessed hour
        (DAILY_7_TO_18, "Mars/Olympus_Mons", "2026-12-04T12:00", None),
        (
            {"twentyfourseven": False, "regular_hours": [{"weekday": 9, "period_begin": "7", "period_end": "x"}]},
            "Europe/Brussels",
            "2026-12-04T12:00",
            None,
        ),
    ],
)
def test_opening_cue(opening_times, zone, now, cue):
    assert opening_cue(opening_times, zone, utc(now)) == cue


@pytest.mark.django_db
def test_the_station_detail_gives_the_cue_in_the_locations_time_and_nothing_without_hours(client, feed):
    zone = "Asia/Tokyo"
    in_three_days = (timezone.now().astimezone(dt.timezone(dt.timedelta(hours=9))) + dt.timedelta(days=3)).date()
    hours = {
        "twentyfourseven": False,
        "regular_hours": [{"weekday": in_three_days.isoweekday(), "period_begin": "07:00", "period_end": "18:00"}],
    }
    later = stored(feed, location("LATER", time_zone=zone, opening_times=hours))
    silent = stored(feed, location("SILENT", opening_times=None))

    props = client.get(f"/api/v1/stations/{later.pk}").json()["properties"]
    day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][in_three_days.weekday()]
    assert props["open_now"] == f"Closed now, opens {day} 07:00 (Asia/Tokyo time)"
    assert props["time_zone"] == zone and props["limited"] is False
    quiet = client.get(f"/api/v1/stations/{silent.pk}").json()["properties"]
    assert (quiet["opening_hours"], quiet["open_now"]) == (None, None)


# --- stored rows: the data migration ------------------------------------------------------------------------------


# The migration's PostgreSQL statement runs where the suite runs on PostgreSQL (CI); the row-by-row path everywhere.
MIGRATION_PATHS = ["postgresql", "row_by_row"] if connection.vendor == "postgresql" else ["row_by_row"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", MIGRATION_PATHS)
def test_the_migration_drops_only_the_reasons_that_no_longer_lock(client, feed, path):
    party, _ = feed
    before = {
        "EV": (["parking_ev_only"], None),
        "HOURS": (["opening_hours"], None),
        "BOTH": (["parking_ev_only", "opening_hours"], None),
        "MIXED": (["not_public", "parking_customers", "parking_ev_only", "opening_hours"], None),
        "CUSTOMERS": (["parking_customers"], None),
        "OPEN": ([], None),
        "OVERRIDDEN": (["parking_ev_only"], True),  # staff said locked: their decision stands
    }
    rows = {}
    for ocpi_id, (reasons, override) in before.items():
        rows[ocpi_id] = MapLocationFactory(
            party=party,
            ocpi_id=ocpi_id,
            limited_access=bool(reasons),
            limited_access_reasons=reasons,
            limited_access_override=override,
        )
        ConnectorFactory(evse=EVSEFactory(location=rows[ocpi_id]))

    migration = importlib.import_module("stations.migrations.0008_lock_for_who_may_use_it")
    if path == "postgresql":
        with connection.schema_editor() as editor:
            migration.drop_reasons_that_no_longer_lock(apps, editor)
    else:  # the embedded SQLite database's path, run here on the same rows
        migration.drop_row_by_row(Location)

    after = {
        ocpi_id: (limited, reasons, override)
        for ocpi_id, limited, reasons, override in Location.objects.values_list(
            "ocpi_id", "limited_access", "limited_access_reasons", "limited_access_override"
        )
    }
    assert after == {
        "EV": (False, [], None),
        "HOURS": (False, [], None),
        "BOTH": (False, [], None),
        "MIXED": (True, ["not_public", "parking_customers"], None),
        "CUSTOMERS": (True, ["parking_customers"], None),
        "OPEN": (False, [], None),
        "OVERRIDDEN": (False, [], True),
    }
    bump_map_cache_version()
    shown = client.get("/api/v1/stations", BRUSSELS_STREETS | {"hide_limited": "true"}).json()["features"]
    assert {f["properties"]["id"] for f in shown} == {rows[k].pk for k in ("EV", "HOURS", "BOTH", "OPEN")}


# --- the panel in the browser -------------------------------------------------------------------------------------


@pytest.fixture
def panel_stations(feed) -> tuple[Location, Location]:
    """Stored before the browser starts: under Playwright's event loop the ORM would use another connection."""
    ev_bay = stored(feed, with_restrictions("EVBAY", "EV_ONLY", opening_times=None))
    shop = stored(
        feed, with_restrictions("SHOP", "CUSTOMERS", coordinates={"latitude": "52.089900", "longitude": "5.112600"})
    )
    return ev_bay, shop


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_panel_shows_ev_only_as_information_without_a_lock(live_server, panel_stations, browser):
    ev_bay, shop = panel_stations
    context = browser.new_context()
    page = context.new_page()
    # No tile server here: tiles fail fast, as offline.
    page.route(re.compile(r"https?://(?!127\.0\.0\.1|localhost).*"), lambda route: route.abort())
    page.goto(f"{live_server.url}/?lat=52.0892&lon=5.1106&z=17")
    page.wait_for_function("() => document.body.dataset.mapLoaded")

    ev_marker = page.locator(f'.station-icon[data-station-id="{ev_bay.pk}"]')
    shop_marker = page.locator(f'.station-icon[data-station-id="{shop.pk}"]')
    expect(ev_marker).to_have_count(1)
    expect(ev_marker.locator(".lock-badge")).to_have_count(0)
    expect(shop_marker.locator(".lock-badge")).to_have_count(1)

    ev_marker.click()
    panel = page.locator("#station-panel")
    expect(panel.locator(".parking-info")).to_contain_text("Parking reserved for electric vehicles")
    expect(panel).not_to_contain_text("Limited access")
    expect(panel.locator(".lock-badge")).to_have_count(0)
    # No opening times given: the panel says nothing about them.
    expect(panel).not_to_contain_text("Opening times")
    expect(panel.locator(".open-now")).to_have_count(0)

    page.keyboard.press("Escape")
    shop_marker.click()
    expect(panel).to_contain_text("Limited access")
    expect(panel).to_contain_text(CUSTOMERS_TEXT)
    expect(panel).to_contain_text("Opening times: Open 24/7")
    expect(panel.locator(".open-now")).to_have_text("Open now")
    expect(panel.locator(".parking-info")).to_have_count(0)
    context.close()  # no request of the page still open on the live server when the database goes
