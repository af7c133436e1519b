"""Partners pull our own stations: GET /ocpi/cpo/2.2.1/locations (cursor pages) and single objects."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from roaming.models import RoamingAgreement
from roaming.selectors import own_party
from stations import feeds
from stations.models import EVSE, Location
from stations.services import refresh_location_summaries
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/ocpi/cpo/2.2.1/locations"
OCPI_TOKEN = "shl-token"  # the eMSP pulling (fixture `emsp`)
BASE_TIME = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def our_stations():
    me = own_party()
    locations = []
    for i in range(25):
        # Pairs share a last_updated, so the cursor must break ties on the id.
        stamp = BASE_TIME + dt.timedelta(minutes=i // 2)  # a location is as recent as its EVSEs and connectors
        loc = LocationFactory(party=me, ocpi_id=f"MBP{i:03d}", last_updated=stamp)
        evse = EVSEFactory(
            location=loc, uid=f"MBP{i:03d}-1", evse_id=f"BE*MBP*E{i:03d}1", status="AVAILABLE", last_updated=stamp
        )
        ConnectorFactory(evse=evse, connector_id="1", last_updated=stamp)
        ConnectorFactory(
            evse=evse,
            connector_id="2",
            standard="IEC_62196_T2_COMBO",
            power_type="DC",
            format="CABLE",
            max_voltage=500,  # 500 V x 50 A allows the factory's 22 kW (230 V x 32 A DC would not: it is repaired)
            max_amperage=50,
            last_updated=stamp,
        )
        locations.append(loc)
    gone = LocationFactory(party=me, ocpi_id="GONE", last_updated=BASE_TIME, removed_at=timezone.now())
    LocationFactory(party=PartyFactory(), ocpi_id="THEIRS", last_updated=BASE_TIME)  # a partner's: not ours to serve
    refresh_location_summaries([loc.pk for loc in locations] + [gone.pk])
    return locations


@pytest.fixture
def emsp():
    party = PartyFactory(country_code="NL", party_id="SHL", role="EMSP")
    RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    return PartnerConnectionFactory(party=party, tokens__from_them="shl-token")


def test_pages_follow_a_cursor_link_to_the_end_without_gaps_or_repeats(ocpi_live, our_stations, emsp, settings):
    settings.FEEDS_SENDER_MAX_LIMIT = 10
    response = ocpi_live("GET", URL, limit=500)
    ids, pages = [], 0
    while True:
        body = response.json()
        assert body["status_code"] == 1000
        assert response.headers["X-Total-Count"] == "25" and response.headers["X-Limit"] == "10"
        ids += [loc["id"] for loc in body["data"]]
        pages += 1
        link = response.headers.get("Link")
        if not link:
            break
        next_url = link[link.index("<") + 1 : link.index(">")]
        assert "cursor=" in next_url and "offset=" not in next_url
        response = ocpi_live("GET", next_url)

    assert pages == 3
    assert ids == [f"MBP{i:03d}" for i in range(25)]  # oldest first, each once, removed and others' left out


def test_date_from_and_date_to_select_a_window(ocpi_live, our_stations, emsp):
    response = ocpi_live("GET", URL, date_from="2026-03-01T12:03:00Z", date_to="2026-03-01T12:05:00Z")
    assert [loc["id"] for loc in response.json()["data"]] == ["MBP006", "MBP007", "MBP008", "MBP009"]
    assert response.headers["X-Total-Count"] == "4" and "Link" not in response.headers


@pytest.mark.parametrize(
    ("params", "message"),
    [({"limit": "ten"}, "limit"), ({"date_from": "yesterday"}, "date_from"), ({"cursor": "%%%"}, "cursor")],
)
def test_bad_list_parameters_are_ocpi_2001(ocpi_live, our_stations, emsp, params, message):
    body = ocpi_live("GET", URL, **params).json()
    assert body["status_code"] == 2001 and message in body["status_message"]


def test_the_list_costs_the_same_few_queries_whatever_the_page_size(
    ocpi, our_stations, emsp, django_assert_max_num_queries
):
    ocpi("GET", URL, limit=2)  # the first call fills the per-process partner and agreement caches
    with django_assert_max_num_queries(5):  # own party, page, count, EVSEs, connectors
        response = ocpi("GET", URL, limit=25)
    assert len(response.json()["data"]) == 25
    assert response.json()["data"][0]["evses"][0]["connectors"][1]["standard"] == "IEC_62196_T2_COMBO"


def test_single_objects_and_unknown_ones(ocpi_live, our_stations, emsp):
    body = ocpi_live("GET", f"{URL}/MBP003").json()
    assert body["data"]["id"] == "MBP003" and body["data"]["country_code"] == "BE"
    body = ocpi_live("GET", f"{URL}/MBP003/MBP003-1").json()
    assert body["data"]["evse_id"] == "BE*MBP*E0031"
    body = ocpi_live("GET", f"{URL}/MBP003/MBP003-1/2").json()
    assert body["data"]["power_type"] == "DC"
    for path in ("/NOPE", "/MBP003/NOPE", "/MBP003/MBP003-1/7", "/GONE", "/THEIRS"):
        response = ocpi_live("GET", f"{URL}{path}")
        assert (response.status_code, response.json()["status_code"]) == (404, 2003), path
    assert ocpi_live("GET", URL, token="wrong").status_code == 401


def test_our_own_puller_pulls_our_own_sender(live_server, our_stations, settings):
    """Round trip: what we serve parses with our own feed reader and changes nothing we hold."""
    settings.FEEDS_SENDER_MAX_LIMIT = 10
    cache.clear()
    me = own_party()
    # Our reader pulls as if from a partner (our own party never authenticates with us: nobody outside may
    # act as it), with the token of a partner that may read our sender.
    reader = PartnerConnectionFactory(tokens__from_them="loop-token")
    RoamingAgreementFactory(partner=reader.party)
    loopback = PartnerConnectionFactory(
        party=me,
        endpoints=[{"identifier": "locations", "role": "SENDER", "url": live_server.url + URL}],
        tokens__to_them="loop-token",
    )
    before = {
        loc.ocpi_id: (loc.name, loc.latitude, loc.map_status, loc.max_power_kw, loc.connector_standards)
        for loc in Location.objects.filter(party=me, removed_at__isnull=True)
    }

    run = feeds.pull_locations(loopback.pk, full=True)

    assert (run.status, run.pages, run.rejected, run.created, run.removed) == ("succeeded", 3, 0, 0, 0), run.error
    after = {
        loc.ocpi_id: (loc.name, loc.latitude, loc.map_status, loc.max_power_kw, loc.connector_standards)
        for loc in Location.objects.filter(party=me, removed_at__isnull=True)
    }
    assert after == before
    assert EVSE.objects.filter(location__party=me, status="AVAILABLE").count() == 25
    again = feeds.pull_locations(loopback.pk, full=True)
    assert again.unchanged == 25 and again.updated == 0
