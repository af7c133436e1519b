"""What the map reads: a location's status, power, connector types and limited access, from its EVSEs."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from roaming.selectors import own_party
from stations.models import EVSE, Location
from stations.ocpi_locations import parse_location
from stations.services import SUMMARY_FIELDS, refresh_location_summaries, store_locations
from tests.factories import ConnectorFactory, EVSEFactory, LocationFactory, PartnerConnectionFactory, PartyFactory
from tests.feeds_fixtures import location, stamp

pytestmark = pytest.mark.django_db


def site(*statuses: str, **fields) -> Location:
    loc = LocationFactory(**fields)
    for n, status in enumerate(statuses):
        evse = EVSEFactory(location=loc, uid=f"{loc.ocpi_id}-{n}", status=status)
        ConnectorFactory(evse=evse)
    refresh_location_summaries([loc.pk])
    loc.refresh_from_db()
    return loc


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("AVAILABLE", "CHARGING"), "available"),
        (("CHARGING", "OUTOFORDER"), "in_use"),
        (("RESERVED",), "in_use"),
        (("BLOCKED", "UNKNOWN"), "in_use"),
        (("OUTOFORDER", "INOPERATIVE", "UNKNOWN"), "faulty"),
        (("UNKNOWN",), "unknown"),  # never shown as in use
        (("PLANNED",), "unknown"),
        (("REMOVED", "REMOVED"), "unknown"),
        (("REMOVED", "OUTOFORDER"), "faulty"),  # a removed EVSE is ignored, whatever it was
        ((), "unknown"),
    ],
)
def test_map_status_from_evse_statuses(statuses, expected):
    assert site(*statuses).map_status == expected


def test_counts_power_and_connector_standards():
    loc = LocationFactory()
    fast = EVSEFactory(location=loc, status="AVAILABLE")
    ConnectorFactory(
        evse=fast,
        connector_id="1",
        standard="IEC_62196_T2_COMBO",
        power_type="DC",
        max_voltage=920,
        max_amperage=500,
        max_electric_power=None,
    )
    ConnectorFactory(evse=fast, connector_id="2", standard="CHADEMO", power_type="DC", max_electric_power=50000)
    slow = EVSEFactory(location=loc, status="CHARGING")
    ConnectorFactory(evse=slow, max_electric_power=None, max_voltage=230, max_amperage=16)  # 3 x 230 V x 16 A
    gone = EVSEFactory(location=loc, status="REMOVED")
    ConnectorFactory(evse=gone, standard="DOMESTIC_F", max_electric_power=400000)

    refresh_location_summaries([loc.pk])
    loc.refresh_from_db()

    assert (loc.evse_count, loc.available_evse_count) == (2, 1)
    assert loc.max_power_kw == pytest.approx(460.0)  # 920 V x 500 A; the removed 400 kW EVSE does not count
    assert loc.connector_standards == ",CHADEMO,IEC_62196_T2,IEC_62196_T2_COMBO,"
    assert loc.status_updated_at is None  # no status change known yet


@pytest.mark.parametrize(
    ("fields", "restrictions", "reasons"),
    [
        ({}, [], []),
        ({"publish": False}, [], ["not_public"]),
        ({}, ["CUSTOMERS"], ["parking_customers"]),
        ({}, ["EV_ONLY", "PLUGGED"], []),  # information in the panel, not a lock (docs/map.md)
        ({"parking_type": "ON_DRIVEWAY"}, [], ["parking_type_on_driveway"]),
        ({"opening_times": {"twentyfourseven": False, "regular_hours": []}}, [], []),  # its own cue, not a lock
        ({"opening_times": {"twentyfourseven": True}}, [], []),
    ],
)
def test_limited_access_is_derived_with_its_reasons(fields, restrictions, reasons):
    loc = LocationFactory(**fields)
    EVSEFactory(location=loc, parking_restrictions=restrictions)
    refresh_location_summaries([loc.pk])
    loc.refresh_from_db()
    assert (loc.limited_access, loc.limited_access_reasons) == (bool(reasons), reasons)


def test_staff_override_wins_over_the_derived_flag_and_survives_a_refresh():
    loc = site("AVAILABLE", publish=False)
    assert loc.is_limited_access
    loc.limited_access_override = False
    loc.save()
    refresh_location_summaries([loc.pk])
    loc.refresh_from_db()
    assert loc.limited_access and not loc.is_limited_access


def test_refresh_is_a_few_queries_for_many_locations(django_assert_max_num_queries):
    ids = [site("AVAILABLE").pk for _ in range(30)]
    # Three reads (locations, EVSEs, connectors), then one UPDATE (staged by COPY on PostgreSQL).
    with django_assert_max_num_queries(7):
        assert refresh_location_summaries(ids) == 30


def test_load_demo_stations_carry_summaries():
    call_command("load_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    ours = Location.objects.filter(party=own_party())
    assert ours.exists()
    for loc in Location.objects.all():
        statuses = list(EVSE.objects.filter(location=loc).values_list("status", flat=True))
        assert loc.evse_count == len(statuses) > 0
        assert loc.map_status != "unknown" or set(statuses) <= {"UNKNOWN"}
        assert loc.connector_standards.startswith(",")
    assert Location.objects.filter(limited_access=True).exists()


def test_a_feed_write_stores_the_summary_the_stored_rows_give(feed_party):
    """store_locations computes summaries from what the partner sent; a refresh from the rows must agree."""
    party, connection = feed_party
    first = [
        location("S1", statuses=("AVAILABLE", "CHARGING", "OUTOFORDER")),
        location("S2", statuses=("REMOVED",), publish=False),
        location("S3", statuses=("OUTOFORDER", "UNKNOWN"), opening_times={"twentyfourseven": False}),
    ]
    first[0]["evses"][1]["parking_restrictions"] = ["CUSTOMERS"]
    first[0]["evses"][2]["connectors"][0].update(
        standard="CHADEMO", power_type="DC", max_voltage=500, max_amperage=125, max_electric_power=50000
    )
    store(first, party, connection)
    # The next version drops S1's available EVSE and makes S3's faulty one available.
    second = [
        location("S1", statuses=("CHARGING", "OUTOFORDER"), updated=stamp()),
        location("S3", statuses=("AVAILABLE", "UNKNOWN"), updated=stamp(), opening_times={"twentyfourseven": False}),
    ]
    second[0]["evses"] = first[0]["evses"][1:]
    store(second, party, connection)

    written = summaries()
    assert written["S1"]["map_status"] == "in_use" and written["S1"]["evse_count"] == 2
    assert written["S1"]["limited_access_reasons"] == ["parking_customers"]
    assert written["S1"]["max_power_kw"] == 50.0
    assert written["S2"]["limited_access_reasons"] == ["not_public"] and written["S2"]["evse_count"] == 0
    assert written["S3"]["map_status"] == "available" and written["S3"]["status_updated_at"] is not None
    refresh_location_summaries(Location.objects.values_list("pk", flat=True))
    assert summaries() == written


def store(objects: list[dict], party, connection) -> None:
    parsed = [parse_location(obj) for obj in objects]
    for item in parsed:
        item.party_id = party.pk
    store_locations(parsed, source=connection)


def summaries() -> dict[str, dict]:
    return {row["ocpi_id"]: row for row in Location.objects.values("ocpi_id", *SUMMARY_FIELDS)}


@pytest.fixture
def feed_party():
    party = PartyFactory(country_code="NL", party_id="ALL")
    return party, PartnerConnectionFactory(party=party)


def test_a_feed_location_opened_to_our_issuer_is_on_our_map_and_others_unpublished_are_not(feed_party):
    party, connection = feed_party
    store(
        [
            location("OPEN", publish=False, publish_allowed_to=[{"issuer": "MobilityPlus"}]),
            location("CLOSED", publish=False, publish_allowed_to=[{"issuer": "Another eMSP"}]),
            location("PUBLIC"),
        ],
        party,
        connection,
    )
    flags = dict(Location.objects.values_list("ocpi_id", "published_to_our_drivers"))
    assert flags == {"OPEN": True, "CLOSED": False, "PUBLIC": True}
    assert Location.objects.get(ocpi_id="OPEN").limited_access_reasons == ["not_public"]
