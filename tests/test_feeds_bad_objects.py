"""A location feed holding objects the database cannot store: each is rejected alone, the feed goes on.

The feed is a real OCPI server on 127.0.0.1 sending the bytes a broken partner sends (NaN literals, escaped NUL
bytes and lone surrogates, impossible dates, numbers beyond our columns, absurd nesting).
"""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache
from django.db import connection as db_connection

from stations import feeds
from stations.models import EVSE, Connector, Location, RejectedObject
from tests.feeds_fixtures import cpo_connection, location
from tests.ocpi_peer import PeerResponse

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ocpi/cpo/2.2.1/locations"
HOLE = "@@HOLE@@"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.FEEDS_RETRY_BACKOFF_S = 0.01
    settings.FEEDS_PAGE_RETRIES = 1
    cache.clear()


def with_raw(ocpi_id: str, raw: str, place) -> str:
    """The JSON text of a valid location with one value replaced by `raw`, exactly as it goes on the wire."""
    obj = location(ocpi_id)
    place(obj)
    text = json.dumps(obj)
    assert f'"{HOLE}"' in text
    return text.replace(f'"{HOLE}"', raw)


def connector(obj):
    return obj["evses"][0]["connectors"][0]


def put(path: str):
    """Set the field at a dotted path (list indexes as numbers) to the hole."""

    def place(obj):
        *parents, last = path.split(".")
        for name in parents:
            obj = obj[int(name)] if name.isdigit() else obj[name]
        obj[last] = HOLE

    return place


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# (object id on the wire, its raw value, where it goes, what the reject says)
BAD = [
    (
        "BAD-NAN",
        "NaN",
        put("evses.0.connectors.0.max_amperage"),
        "connectors[0].max_amperage: must be a non-negative integer, got nan",
    ),
    ("BAD-NAN-COORD", "NaN", put("coordinates.latitude"), "coordinates.latitude: out of range: nan"),
    ("BAD-INFINITY", "Infinity", put("x_hub_rating"), "x_hub_rating: inf is not a JSON number"),
    (
        "BAD-MONTH",
        '"2026-13-01T10:00:00Z"',
        put("last_updated"),
        "last_updated: not a valid date and time: '2026-13-01T10:00:00Z'",
    ),
    (
        "BAD-FEB30",
        '"2026-02-30T10:00:00Z"',
        put("evses.0.last_updated"),
        "evses[0].last_updated: not a valid date and time",
    ),
    (
        "BAD-YEAR0",
        '"0000-06-01T10:00:00Z"',
        put("evses.0.connectors.0.last_updated"),
        "connectors[0].last_updated: not a valid date and time",
    ),
    (
        "BAD-OFFSET",
        '"2026-01-01T10:00:00+25:00"',
        put("last_updated"),
        "last_updated: not a valid date and time: '2026-01-01T10:00:00+25:00'",
    ),
    (
        "BAD-BEFORE-YEAR1",
        '"0001-01-01T00:00:00+03:00"',
        put("last_updated"),
        "last_updated: not a valid date and time: '0001-01-01T00:00:00+03:00'",
    ),
    (
        "BAD-POWER",
        "2147483648",
        put("evses.0.connectors.0.max_electric_power"),
        "max_electric_power: out of range: 2147483648 (at most 2147483647)",
    ),
    (
        "BAD-HUGE",
        "1" + "0" * 30,
        put("evses.0.connectors.0.max_voltage"),
        "max_voltage: out of range: 1000000000000000000000000000000",
    ),
    ("BAD-NUL-NAME", '"Site\\u0000 Utrecht"', put("name"), "name: contains a NUL byte"),
    ("BAD-NUL-KEY", '{"brand\\u0000": "x"}', put("operator"), "operator: a key contains a NUL byte"),
    ("BAD-SURROGATE", '"Utrecht\\ud800"', put("city"), "city: contains a lone surrogate"),
    ("BAD-SURROGATE-UID", '"E1\\udc00"', put("evses.0.uid"), "evses[0].uid: contains a lone surrogate"),
    ("BAD-DEEP", nested(400), put("x_hub_extra"), "nested deeper than 255 levels"),
    ("BAD-ABSURDLY-DEEP", nested(100_000), put("x_hub_extra"), "nested deeper than 255 levels"),
]


def bad_objects() -> list[str]:
    texts = [with_raw(ocpi_id, raw, place) for ocpi_id, raw, place, _ in BAD]
    # An id the database cannot hold: the reject is still kept, under a storable id.
    texts.append(with_raw("ignored", '"BAD\\u0000NUL"', put("id")))
    return texts


class RawFeed:
    """Two pages of JSON text: page 1 mixes good and bad objects, page 2 is good."""

    def __init__(self, peer, first: list[str], second: list[str]):
        self.peer = peer
        self.pages = [first, second]
        peer.route("GET", PATH, self.handle)

    def handle(self, request) -> PeerResponse:
        page = int(request.query.get("page", "1"))
        body = (
            '{"status_code": 1000, "timestamp": "2026-12-04T10:00:00Z", "data": ['
            + ", ".join(self.pages[page - 1])
            + "]}"
        )
        headers = {"X-Total-Count": str(sum(len(p) for p in self.pages)), "Content-Type": "application/json"}
        if page < len(self.pages):
            headers["Link"] = f'<{self.peer.url(PATH)}?page={page + 1}>; rel="next"'
        return PeerResponse(raw=body.encode(), headers=headers)


def test_each_bad_object_is_rejected_alone_and_the_feed_moves_on(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    year_one = location("GOOD-YEAR1", updated="0001-01-01T00:00:00Z")  # real partners send it: representable, kept
    bad = bad_objects()
    first = [json.dumps(location("GOOD-1")), *bad[:8], json.dumps(year_one), *bad[8:], json.dumps(location("GOOD-2"))]
    feed = RawFeed(ocpi_peer, first, [json.dumps(location("GOOD-3"))])

    run = feeds.pull_locations(conn.pk)

    assert (run.status, run.pages, run.created, run.rejected) == ("succeeded", 2, 4, len(BAD) + 1), run.error
    assert set(Location.objects.values_list("ocpi_id", flat=True)) == {"GOOD-1", "GOOD-2", "GOOD-3", "GOOD-YEAR1"}
    assert Location.objects.get(ocpi_id="GOOD-YEAR1").last_updated.year == 1
    assert EVSE.objects.count() == Connector.objects.count() == 4
    rejects = {r.object_id: r for r in RejectedObject.objects.filter(sync_run=run)}
    for ocpi_id, _raw, _place, reason in BAD:
        assert reason in rejects[ocpi_id].error, (ocpi_id, rejects[ocpi_id].error)
        assert rejects[ocpi_id].payload["id"] == ocpi_id  # what the partner sent is kept for staff
    assert rejects["BAD\ufffdNUL"].error == "id: contains a NUL byte (\\u0000)"
    assert rejects["BAD-NUL-NAME"].payload["name"] == "Site\ufffd Utrecht"  # storable, and still readable
    assert rejects["BAD-NAN"].payload["evses"][0]["connectors"][0]["max_amperage"] == "nan"
    with db_connection.cursor() as cursor:  # nothing stored holds a NUL, whatever the partner sent
        cursor.execute("SELECT count(*) FROM stations_rejectedobject WHERE payload::text LIKE '%%\\u0000%%'")
        assert cursor.fetchone()[0] == 0

    # The next run is not stuck on them: the bad objects are still in the feed, a changed good one is stored.
    changed = location("GOOD-2", statuses=("CHARGING",), updated="2026-06-01T10:00:00Z")
    feed.pages[0][-1] = json.dumps(changed)
    second = feeds.pull_locations(conn.pk)

    assert (second.status, second.updated, second.unchanged, second.rejected) == (
        "succeeded",
        1,
        3,
        len(BAD) + 1,
    ), second.error
    assert EVSE.objects.get(location__ocpi_id="GOOD-2").status == "CHARGING"
    assert feeds.pull_locations(conn.pk, full=True).status == "succeeded"


@pytest.fixture
def database_refuses_a_name():
    """A rule of the database itself that no validation of ours knows: the write of one object fails there."""
    with db_connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE stations_location ADD CONSTRAINT test_refused_name CHECK (name <> 'Refused by the database')"
        )
    try:
        yield
    finally:
        with db_connection.cursor() as cursor:
            cursor.execute("ALTER TABLE stations_location DROP CONSTRAINT test_refused_name")


@pytest.mark.parametrize("write_behind", [False, True], ids=["inline", "write-behind"])
def test_a_page_the_database_refuses_is_stored_object_by_object(
    ocpi_peer, settings, database_refuses_a_name, write_behind
):
    settings.FEEDS_WRITE_BEHIND = write_behind
    conn = cpo_connection(ocpi_peer)
    refused = location("REFUSED", name="Refused by the database")
    page = [json.dumps(location("A1")), json.dumps(refused), json.dumps(location("A2"))]
    RawFeed(ocpi_peer, page, [json.dumps(location("A3"))])

    run = feeds.pull_locations(conn.pk)

    assert (run.status, run.created, run.rejected) == ("succeeded", 3, 1), run.error
    assert set(Location.objects.values_list("ocpi_id", flat=True)) == {"A1", "A2", "A3"}
    reject = RejectedObject.objects.get(sync_run=run)
    assert reject.object_id == "REFUSED"
    assert reject.error.startswith("could not be stored: IntegrityError") and "test_refused_name" in reject.error
    assert reject.payload == refused
