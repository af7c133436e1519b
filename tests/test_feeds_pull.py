"""Pulling partner location feeds over real HTTP (ocpi_peer): each feed in the wild is one case."""

from __future__ import annotations

import copy
import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from stations import feeds
from stations.models import EVSE, Connector, EvseStatusChange, Location, RejectedObject, SyncRun
from stations.ocpi_locations import parse_location
from stations.services import store_locations
from tests.factories import PartyFactory, RoamingAgreementFactory
from tests.feeds_fixtures import LocationFeed, cpo_connection, example, location, stamp
from tests.ocpi_peer import PeerResponse

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.FEEDS_RETRY_BACKOFF_S = 0.01
    settings.FEEDS_PAGE_RETRIES = 2
    settings.FEEDS_PAGE_LIMIT = 1000
    cache.clear()


def run_bookkeeping(sql: str) -> bool:
    """The writes a pull makes whatever the feed holds: its SyncRun, and the partner's last contact."""
    return "stations_syncrun" in sql or sql.startswith('UPDATE "roaming_partnerconnection" SET "last_contact_at"')


def pull(connection, full=False) -> SyncRun:
    return feeds.pull_locations(connection.pk, full=full)


def test_spec_examples_are_stored_with_summaries_and_limited_access(ocpi_peer):
    hub = cpo_connection(ocpi_peer, country_code="DE", party_id="HUB", role="HUB")
    for cc, pid in [("BE", "BEC"), ("SE", "EVC"), ("NL", "ALF"), ("NL", "ALL"), ("DE", "ALL")]:
        RoamingAgreementFactory(partner=PartyFactory(country_code=cc, party_id=pid))
    names = [
        "location_example.json",
        "location_example_parking_garage_opening_hours.json",
        "location_example_uc2_destination_charger.json",
        "location_example_uc4_limited_visibility.json",
        "location_example_uc5_home_charge_point.json",
    ]
    LocationFeed(ocpi_peer, [example(n) for n in names])

    run = pull(hub)

    assert (run.status, run.created, run.rejected, run.skipped) == ("succeeded", 5, 0, 0), run.error
    gent = Location.objects.get(ocpi_id="LOC1", party__party_id="BEC")
    assert (gent.map_status, gent.evse_count, gent.available_evse_count) == ("available", 2, 1)
    assert gent.connector_standards == ",IEC_62196_T2,"
    assert gent.max_power_kw == pytest.approx(10.6)  # 220 V x 16 A x 3 phases
    assert gent.raw == example("location_example.json")  # what the partner sent, as sent
    assert not gent.limited_access
    reasons = dict(Location.objects.values_list("party__party_id", "limited_access_reasons"))
    assert reasons["ALF"] == ["parking_customers"]
    assert reasons["EVC"] == []  # a garage with opening hours: open to all, its hours are their own cue
    assert Location.objects.get(party__country_code="NL", party__party_id="ALL").limited_access_reasons == [
        "not_public"
    ]
    assert Location.objects.get(party__country_code="DE", party__party_id="ALL").limited_access_reasons == [
        "not_public",
        "parking_type_on_driveway",
    ]
    assert EvseStatusChange.objects.count() == EVSE.objects.count() == 6


def test_invalid_object_is_rejected_with_its_error_and_the_rest_of_the_page_is_stored(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    bad = location("BAD1")
    bad["evses"] = [example("location_put_example_add_evse.json")]  # no power_type, number as physical_reference
    no_coordinates = location("BAD2")
    del no_coordinates["coordinates"]
    LocationFeed(ocpi_peer, [location("A1"), bad, location("A2"), no_coordinates])

    run = pull(conn)

    assert (run.status, run.created, run.rejected) == ("succeeded", 2, 2)
    assert set(Location.objects.values_list("ocpi_id", flat=True)) == {"A1", "A2"}
    rejects = {r.object_id: r for r in RejectedObject.objects.all()}
    assert rejects["BAD1"].error == "evses[0].connectors[0].format: unknown value 'SOCKET'" or "evses[0]" in (
        rejects["BAD1"].error
    )
    assert rejects["BAD1"].payload == bad
    assert rejects["BAD2"].error == "coordinates: required"
    assert rejects["BAD1"].sync_run == run


def test_a_cpo_feed_may_not_carry_another_partys_locations(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location("A1"), location("X1", party_id="OTH")])

    run = pull(conn)

    assert (run.created, run.rejected) == (1, 1)
    assert "NL*OTH is not the sending party NL*ALL" in RejectedObject.objects.get().error


@pytest.mark.parametrize("write_behind", [False, True], ids=["inline", "write-behind"])
def test_hub_pages_of_100_are_followed_through_the_link_header(ocpi_peer, settings, write_behind):
    settings.FEEDS_WRITE_BEHIND = write_behind
    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i:03d}") for i in range(250)], max_limit=100)

    run = pull(conn)

    assert (run.status, run.pages, run.created) == ("succeeded", 3, 250)
    assert feed.served_pages == 3
    first, *rest = [r for r in ocpi_peer.requests if r.path.endswith("/locations")]
    assert first.query["limit"] == "1000"  # we ask for our size, the hub caps it (X-Limit)
    assert [r.query["offset"] for r in rest] == ["100", "200"]
    assert all(r.query["date_to"] == first.query["date_to"] for r in rest)


def test_the_last_page_ends_the_run_and_an_empty_feed_is_a_success(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(100)], max_limit=100)
    assert pull(conn).pages == 1  # exactly one full page, no Link

    empty = cpo_connection(ocpi_peer, party_id="EMP", path="/empty/locations")
    LocationFeed(ocpi_peer, [], path="/empty/locations")
    run = pull(empty)
    assert (run.status, run.pages, run.created) == ("succeeded", 1, 0)


def test_a_partner_that_ignores_limit_is_read_whole(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(30)], max_limit=10)
    feed.ignore_limit = True

    run = pull(conn)

    assert (run.pages, run.created) == (1, 30)


def test_a_link_pointing_elsewhere_is_followed_as_given(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    ocpi_peer.route(
        "GET",
        "/ocpi/cpo/2.2.1/locations",
        lambda req: PeerResponse(
            {"status_code": 1000, "data": [location("P1")], "timestamp": stamp()},
            headers={"Link": f'<{ocpi_peer.url("/hub/cursor/abc")}?token=xyz>; rel="next"', "X-Limit": "1"},
        ),
    )
    ocpi_peer.route(
        "GET",
        "/hub/cursor/abc",
        lambda req: {"status_code": 1000, "data": [location("P2")], "timestamp": stamp()},
    )

    run = pull(conn)

    assert (run.pages, run.created) == (2, 2)
    second = ocpi_peer.requests[-1]
    assert second.path == "/hub/cursor/abc" and second.query == {"token": "xyz"}  # nothing of ours added


def test_a_link_that_loops_back_fails_the_run_instead_of_looping(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    url = ocpi_peer.url("/ocpi/cpo/2.2.1/locations")
    ocpi_peer.route(
        "GET",
        "/loop",
        lambda req: PeerResponse(
            {"status_code": 1000, "data": [location("P1")]}, headers={"Link": f'<{url}?loop=1>; rel="next"'}
        ),
    )
    ocpi_peer.route(
        "GET",
        "/ocpi/cpo/2.2.1/locations",
        lambda req: PeerResponse(
            {"status_code": 1000, "data": []}, headers={"Link": f'<{ocpi_peer.url("/loop")}>; rel="next"'}
        ),
    )
    run = pull(conn)
    assert run.status == "failed" and "already fetched" in run.error
    assert Location.objects.filter(ocpi_id="P1").exists()


def test_objects_updated_during_the_crawl_are_caught_by_the_next_delta(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [location(f"L{i:02d}", updated=f"2026-01-01T10:{i:02d}:00Z") for i in range(30)]
    feed = LocationFeed(ocpi_peer, objects, max_limit=10)

    def move_first_object(page_number):
        # While we read page 2, the partner updates an object of page 1: it moves to the end of the list.
        if page_number == 2 and objects[0]["evses"][0]["status"] == "AVAILABLE":
            objects[0]["evses"][0]["status"] = "CHARGING"
            objects[0]["last_updated"] = stamp()

    feed.on_page = move_first_object
    first = pull(conn)
    # L00 left the window (date_to is the crawl's start), so the partner's offsets shifted by one and
    # L10 slid onto page 1, already read: the run notices the count fall and does not move the mark.
    assert (first.status, first.created, first.pages, first.window_shifted) == ("succeeded", 29, 3, True)
    assert Location.objects.get(ocpi_id="L00").map_status == "available"

    feed.on_page = None
    delta = pull(conn)

    assert delta.date_from == first.date_from  # the same window again (here: all, as the first was full)
    assert (delta.created, delta.updated, delta.unchanged) == (1, 1, 28)
    assert Location.objects.count() == 30  # nothing skipped
    assert Location.objects.get(ocpi_id="L00").map_status == "in_use"
    assert pull(conn).date_from == delta.started_at  # a clean run moves the mark on


def test_a_full_sync_whose_window_shifts_removes_only_what_the_next_full_sync_misses_too(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [location(f"L{i:02d}", updated=f"2026-01-01T10:{i:02d}:00Z") for i in range(30)]
    feed = LocationFeed(ocpi_peer, objects, max_limit=10)
    pull(conn, full=True)
    objects.pop(25)  # L25 is really gone at the partner

    def move_first_object(page_number):
        if page_number == 2 and objects[0]["evses"][0]["status"] == "AVAILABLE":
            objects[0]["evses"][0]["status"] = "CHARGING"
            objects[0]["last_updated"] = stamp()

    feed.on_page = move_first_object
    shifted = pull(conn, full=True)

    # L00 (read on page 1) then left the window, so L10 slid onto page 1, already read: it was never seen,
    # yet it is still in the feed.
    assert (shifted.status, shifted.window_shifted, shifted.removed) == ("succeeded", True, 0)
    missed = set(Location.objects.filter(pk__in=shifted.deferred_removals).values_list("ocpi_id", flat=True))
    assert missed == {"L10", "L25"}
    assert not Location.objects.filter(removed_at__isnull=False).exists()
    assert "stay on the map until a second full sync" in shifted.error

    feed.on_page = None
    confirmed = pull(conn, full=True)

    assert (confirmed.window_shifted, confirmed.removed) == (False, 1)
    assert list(Location.objects.filter(removed_at__isnull=False).values_list("ocpi_id", flat=True)) == ["L25"]


def test_a_bumped_last_updated_with_the_same_content_writes_nothing(ocpi_peer, settings):
    settings.FEEDS_WRITE_BEHIND = False  # every statement on this thread's connection, where we can see it
    conn = cpo_connection(ocpi_peer)
    objects = [location(f"L{i}") for i in range(5)]
    LocationFeed(ocpi_peer, objects)
    pull(conn, full=True)
    stored = Location.objects.get(ocpi_id="L0").last_updated
    for obj in objects:
        obj["last_updated"] = obj["evses"][0]["last_updated"] = stamp()

    with CaptureQueriesContext(db_connection) as queries:
        run = pull(conn)

    assert (run.unchanged, run.updated, run.created) == (5, 0, 0)
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert all(run_bookkeeping(sql) for sql in writes), writes
    assert Location.objects.get(ocpi_id="L0").last_updated == stored


def test_a_second_full_pull_with_nothing_changed_writes_no_rows(ocpi_peer, settings):
    settings.FEEDS_WRITE_BEHIND = False  # every statement on this thread's connection, where we can see it
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}", statuses=("AVAILABLE", "CHARGING")) for i in range(40)], max_limit=15)
    pull(conn, full=True)

    with CaptureQueriesContext(db_connection) as queries:
        run = pull(conn, full=True)

    assert (run.status, run.unchanged, run.removed) == ("succeeded", 40, 0)
    writes = [q["sql"] for q in queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert all(run_bookkeeping(sql) for sql in writes), writes


def test_a_pull_that_creates_locations_leaves_the_planner_fresh_statistics(ocpi_peer, settings):
    """Without them PostgreSQL reads every location of the partner for each page (autovacuum may be off)."""
    settings.FEEDS_WRITE_BEHIND = False
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(40)], max_limit=15)

    with CaptureQueriesContext(db_connection) as queries:
        run = pull(conn, full=True)

    assert (run.status, run.created) == ("succeeded", 40)
    analyzes = [q["sql"] for q in queries if q["sql"].startswith("ANALYZE")]
    if db_connection.vendor != "postgresql":
        assert analyzes == []  # SQLite plans without them
        return
    # After the first page (15 created) and after the second (30): each time the run doubled what it created.
    assert len(analyzes) == 2 and "stations_location" in analyzes[0]
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'stations_location'")
        assert cursor.fetchone()[0] == 30


def test_a_delta_with_a_removed_evse_keeps_it_as_removed_and_the_map_ignores_it(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [location("L1", statuses=("OUTOFORDER", "AVAILABLE"))]
    LocationFeed(ocpi_peer, objects)
    pull(conn)
    assert Location.objects.get().map_status == "available"

    objects[0]["evses"][1]["status"] = "REMOVED"
    objects[0]["evses"][1]["connectors"] = []  # as some CPOs send it
    objects[0]["last_updated"] = objects[0]["evses"][1]["last_updated"] = stamp()
    run = pull(conn)

    loc = Location.objects.get()
    assert run.updated == 1
    assert (loc.map_status, loc.evse_count, loc.available_evse_count) == ("faulty", 1, 0)
    removed = EVSE.objects.get(uid="L1-2")
    assert removed.status == "REMOVED"
    assert list(removed.status_changes.values_list("status", flat=True)) == ["REMOVED", "AVAILABLE"]
    assert removed.connectors.count() == 1  # what it was stays for staff


def test_an_evse_missing_from_a_new_version_is_marked_removed_not_deleted(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [location("L1", statuses=("AVAILABLE", "CHARGING"))]
    LocationFeed(ocpi_peer, objects)
    pull(conn)
    objects[0]["evses"] = objects[0]["evses"][1:]
    objects[0]["last_updated"] = stamp()

    pull(conn)

    assert dict(EVSE.objects.values_list("uid", "status")) == {"L1-1": "REMOVED", "L1-2": "CHARGING"}
    assert Location.objects.get().map_status == "in_use"
    assert Connector.objects.filter(evse__uid="L1-1").exists()  # what it was stays for staff


def test_hub_fields_and_non_emi3_evse_ids_are_kept(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    obj = location("L1")
    # An integer beyond 64 bits is valid JSON (the fast encoder refuses it; we fall back, never reject).
    obj["hub_score"] = {"popularity": 7, "hub_ref": 2**70 + 1}
    obj["evses"][0]["evse_id"] = "12345-local"
    obj["evses"][0]["x_hub_plug_colour"] = "blue"
    LocationFeed(ocpi_peer, [obj])

    run = pull(conn)

    assert (run.created, run.rejected) == (1, 0)
    loc = Location.objects.get()
    assert loc.raw["hub_score"] == {"popularity": 7, "hub_ref": 2**70 + 1}
    assert loc.raw["evses"][0]["x_hub_plug_colour"] == "blue"
    assert EVSE.objects.get().evse_id == "12345-local"


def test_one_hub_list_of_many_cpos_keeps_only_owners_we_have_an_agreement_with(ocpi_peer):
    hub = cpo_connection(ocpi_peer, country_code="DE", party_id="HBJ", role="HUB")
    RoamingAgreementFactory(partner=PartyFactory(country_code="NL", party_id="FST"))
    RoamingAgreementFactory(partner=PartyFactory(country_code="DE", party_id="ION"))
    PartyFactory(country_code="BE", party_id="Q8C")  # known, no agreement
    LocationFeed(
        ocpi_peer,
        [
            location("SAME", country_code="NL", party_id="FST"),
            location("SAME", country_code="DE", party_id="ION"),  # same id, other owner: another location
            location("Q1", country_code="BE", party_id="Q8C"),
            location("Z1", country_code="FR", party_id="ZZZ"),  # unknown to us
        ],
    )

    run = pull(hub)

    assert (run.created, run.skipped, run.rejected) == (2, 2, 0)
    assert set(Location.objects.values_list("party__party_id", "ocpi_id")) == {("FST", "SAME"), ("ION", "SAME")}
    assert set(Location.objects.values_list("source", flat=True)) == {hub.pk}


@pytest.mark.parametrize(
    "failure",
    [
        PeerResponse({"status_code": 3000, "status_message": "busy"}, status=503),
        PeerResponse(raw=b"<html>gateway timeout</html>", status=200),
        PeerResponse({"status_code": 3000, "status_message": "try again"}, status=200),
    ],
    ids=["http-5xx", "invalid-json", "ocpi-status-3000"],
)
def test_a_failing_page_is_retried(ocpi_peer, failure):
    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(20)], max_limit=10)
    feed.fail, feed.fail_times = {2: failure}, {2: 2}

    run = pull(conn)

    assert (run.status, run.created, run.pages) == ("succeeded", 20, 2)


def test_a_page_that_times_out_is_retried(ocpi_peer, settings):
    settings.OCPI_HTTP_TIMEOUT_S = 0.3
    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(20)], max_limit=10)
    slow = {2: 1}

    def answer_late_once(page_number):
        if slow.get(page_number):
            slow[page_number] -= 1
            time.sleep(1.0)  # longer than our timeout: the client gives up and asks again

    feed.on_page = answer_late_once
    run = pull(conn)

    assert (run.status, run.created, run.pages) == ("succeeded", 20, 2)
    # Page 2 was asked for twice: the first answer came too late, the retry's in time.
    assert [r.query.get("offset") for r in ocpi_peer.requests].count("10") == 2


@pytest.mark.parametrize("write_behind", [False, True], ids=["inline", "write-behind"])
def test_a_page_that_keeps_failing_ends_the_run_failed_and_the_next_run_resumes(ocpi_peer, settings, write_behind):
    settings.FEEDS_WRITE_BEHIND = write_behind
    conn = cpo_connection(ocpi_peer)
    objects = [location(f"L{i:02d}", updated=f"2026-01-01T10:{i:02d}:00Z") for i in range(30)]
    feed = LocationFeed(ocpi_peer, objects, max_limit=10)
    first = pull(conn)
    time.sleep(1)  # the changes below happen after the first run started
    objects[25]["evses"][0]["status"] = "CHARGING"
    objects[25]["last_updated"] = stamp(0.005)
    objects.append(location("NEW", updated=stamp()))
    objects[3]["evses"][0]["status"] = "OUTOFORDER"
    objects[3]["last_updated"] = stamp(0.01)
    feed.max_limit = 1  # the delta: L03, then L25 (which keeps failing), then NEW
    feed.fail, feed.fail_times = {2: PeerResponse(raw=b"garbage", status=502)}, {2: 99}

    failed = pull(conn)

    assert failed.status == "failed" and "HTTP 502" in failed.error
    assert failed.pages == 1  # the first page (the oldest changes) is stored, intact
    assert Location.objects.count() == 30 and EVSE.objects.get(uid="L03-1").status == "OUTOFORDER"
    assert Location.objects.get(ocpi_id="L25").map_status == "available"  # not reached: untouched

    feed.fail = {}
    resumed = pull(conn)

    assert resumed.date_from == first.started_at  # from the last good point, nothing skipped
    assert resumed.status == "succeeded"
    assert (resumed.created, resumed.updated, resumed.unchanged) == (1, 1, 1)
    assert Location.objects.get(ocpi_id="L25").map_status == "in_use"


def test_a_full_sync_marks_missing_locations_removed_and_a_delta_never_does(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [location(f"L{i}") for i in range(5)]
    LocationFeed(ocpi_peer, objects)
    pull(conn, full=True)
    other = cpo_connection(ocpi_peer, party_id="OTH", path="/other/locations")
    LocationFeed(ocpi_peer, [location("O1", party_id="OTH")], path="/other/locations")
    pull(other)
    del objects[1]

    delta = pull(conn)
    assert delta.removed == 0 and not Location.objects.filter(removed_at__isnull=False).exists()

    full = pull(conn, full=True)

    assert full.removed == 1
    gone = Location.objects.get(ocpi_id="L1")
    assert gone.removed_at is not None  # kept, not deleted
    assert Location.objects.filter(removed_at__isnull=True).count() == 5  # 4 of ours + the other partner's

    objects.append(location("L1"))  # it comes back
    back = pull(conn, full=True)
    assert (back.updated, back.removed) == (1, 0)
    assert Location.objects.get(ocpi_id="L1").removed_at is None


def test_runs_never_overlap_for_one_partner_and_a_dead_workers_lock_expires(ocpi_peer, settings):
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location("L1")])
    settings.FEEDS_LOCK_TIMEOUT_S = 1
    dead_worker = feeds.PullLock(conn.pk)
    assert dead_worker.acquire()

    with pytest.raises(feeds.PullBusy):
        pull(conn)
    from stations.tasks import pull_locations

    assert pull_locations.delay(conn.pk).get() == {"status": "busy"}
    assert not SyncRun.objects.exists()

    time.sleep(1.5)  # the dead worker never refreshed its lock
    assert pull(conn).status == "succeeded"
    assert feeds.PullLock(conn.pk).acquire()  # released after the run


def test_pull_through_the_real_redis_worker(ocpi_peer, redis_celery_worker):
    from stations.tasks import pull_locations

    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(12)], max_limit=5)

    result = pull_locations.delay(conn.pk, full=True).get(timeout=60)

    assert result["status"] == "succeeded" and result["created"] == 12 and result["pages"] == 3
    assert Location.objects.filter(source=conn).count() == 12


def test_beat_dispatcher_enqueues_connections_that_are_due(ocpi_peer):
    from stations.tasks import dispatch_location_pulls

    due = cpo_connection(ocpi_peer)
    never = cpo_connection(ocpi_peer, party_id="NVR", path="/never/locations")
    never.location_pull_interval_minutes = 0
    never.save()
    LocationFeed(ocpi_peer, [location("L1")])

    assert dispatch_location_pulls.delay().get() == [due.pk]  # runs it too (eager)
    assert SyncRun.objects.get().full  # the first run is a full one
    assert dispatch_location_pulls.delay().get() == []  # not due again within the interval


def test_manage_py_pull_locations_with_progress(ocpi_peer, capsys):
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(25)], max_limit=10)

    call_command("pull_locations", "NL*ALL", "--full")

    out = capsys.readouterr()
    assert "Succeeded: 3 pages, 25 created" in out.out
    assert "25/25" in out.err  # tqdm's bar, total from X-Total-Count
    assert SyncRun.objects.get(connection=conn).full


def test_pulled_locations_keep_a_copy_independent_of_the_payload(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    obj = location("L1")
    LocationFeed(ocpi_peer, [copy.deepcopy(obj)])
    pull(conn)
    assert Location.objects.get().raw == obj


def test_a_hub_copy_of_our_own_stations_is_never_stored_over_them(ocpi_peer):
    from roaming.selectors import own_party

    hub = cpo_connection(ocpi_peer, country_code="DE", party_id="HBJ", role="HUB")
    me = own_party()
    LocationFeed(ocpi_peer, [location("MBP1", country_code=me.country_code, party_id=me.party_id)])

    run = pull(hub)

    assert (run.created, run.skipped) == (0, 1)


def test_a_successful_pull_is_contact_with_the_partner_and_a_failed_one_is_not(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(5)], max_limit=10)
    feed.fail, feed.fail_times = {1: PeerResponse(raw=b"garbage", status=502)}, {1: 99}

    assert pull(conn).status == "failed"
    conn.refresh_from_db()
    assert conn.last_contact_at is None

    feed.fail = {}
    run = pull(conn)
    conn.refresh_from_db()
    assert run.status == "succeeded" and conn.last_contact_at >= run.started_at


def test_feed_pages_do_not_wait_for_the_disk_but_pushed_changes_do(ocpi_peer, client, settings):
    """A lost feed page is read again by the next run; a push the partner was told we stored is not resent."""
    settings.FEEDS_WRITE_BEHIND = False
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(3)])
    with CaptureQueriesContext(db_connection) as pulled:
        pull(conn)
    item = parse_location(location("P1"))
    item.party_id = conn.party_id
    with CaptureQueriesContext(db_connection) as pushed:
        store_locations([item], source=conn)  # what the push receiver calls

    relaxed = "SET LOCAL synchronous_commit = off"
    expected = db_connection.vendor == "postgresql"
    assert any(relaxed in q["sql"] for q in pulled) is expected
    assert not any(relaxed in q["sql"] for q in pushed)


def test_a_pull_collects_cycles_rarely_and_restores_the_collector_after(ocpi_peer):
    import gc

    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i}") for i in range(3)])
    before = gc.get_threshold()
    during = []
    feed.on_page = lambda page_number: during.append(gc.get_threshold()[0])

    pull(conn)

    assert during and during[0] > before[0] and gc.get_threshold() == before
