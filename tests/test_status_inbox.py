"""The status inbox (STATUS_INBOX): a status-only EVSE PATCH is answered after one statement and applied in batches."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from roaming.ocpi.envelope import format_datetime
from stations.models import EVSE, EvseStatusChange, Location, MapDirtyLocation, PendingStatus
from stations.selectors import bump_map_cache_version
from stations.services import evse_status_changed
from stations.status_inbox import _LOCK_ID, apply_pending_statuses, drain_status_inbox
from tests.conftest import make_ocpi_partner
from tests.feeds_fixtures import example
from tests.test_metrics import METRICS_TOKEN, scrape, value

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/locations"
OCPI_TOKEN = "bec-token"


@pytest.fixture(autouse=True)
def inbox(settings):
    settings.STATUS_INBOX = True


@pytest.fixture
def stored(ocpi):
    """The spec's example location (EVSE 3256 AVAILABLE, 3257 RESERVED), pushed by its CPO; caches warmed."""
    make_ocpi_partner(country_code="BE", party_id="BEC", token=OCPI_TOKEN, tokens__to_them="to-bec")
    assert ocpi("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json")).status_code == 201
    _patch(ocpi, "3256", "AVAILABLE", -120)  # warms the per-process caches; a confirmation
    apply_pending_statuses()
    return Location.objects.get(ocpi_id="LOC1")


def _stamp(seconds: float = 0) -> str:
    return format_datetime(timezone.now() + dt.timedelta(seconds=seconds))


def _patch(ocpi, uid: str, status: str, seconds: float = 0, **more):
    response = ocpi("PATCH", f"{BASE}/BE/BEC/LOC1/{uid}", {"status": status, "last_updated": _stamp(seconds), **more})
    assert (response.status_code, response.envelope["status_code"]) == (200, 1000), response.envelope
    return response


def test_a_status_patch_is_answered_after_one_statement_and_applied_later(ocpi, stored):
    history_before = EvseStatusChange.objects.count()
    with CaptureQueriesContext(connection) as queries:
        _patch(ocpi, "3257", "OUTOFORDER")
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO stations_pendingstatus"), statements
    # Answered 1000: queued for good, not yet on the EVSE.
    assert list(PendingStatus.objects.values_list("status", flat=True)) == ["OUTOFORDER"]
    assert EVSE.objects.get(uid="3257").status == "RESERVED"

    heard = []
    evse_status_changed.connect(lambda changes, **_: heard.extend(changes), weak=False, dispatch_uid="test-heard")
    try:
        assert apply_pending_statuses() == 1
    finally:
        evse_status_changed.disconnect(dispatch_uid="test-heard")

    evse = EVSE.objects.get(uid="3257")
    assert evse.status == "OUTOFORDER"
    assert EvseStatusChange.objects.count() == history_before + 1
    assert EvseStatusChange.objects.filter(evse=evse).first().status == "OUTOFORDER"
    location = Location.objects.get(pk=stored.pk)
    assert (location.map_status, location.available_evse_count, location.evse_count) == ("available", 1, 2)
    assert location.status_updated_at == evse.status_changed_at and location.content_hash == ""
    assert MapDirtyLocation.objects.filter(location_id=stored.pk).exists()  # the cluster cells follow
    assert [(c.evse_id, c.status, c.previous) for c in heard] == [(evse.pk, "OUTOFORDER", "RESERVED")]
    assert not PendingStatus.objects.exists()


def test_the_statement_is_prepared_once_per_connection(ocpi, stored):
    _patch(ocpi, "3257", "OUTOFORDER")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        prepared = [row[0] for row in cursor.fetchall()]
    assert [statement.split(" ", 3)[:3] for statement in prepared] == [["INSERT", "INTO", "stations_pendingstatus"]]


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_dropped_behind_our_back_is_prepared_again(ocpi, stored):
    # A connection pooler's DISCARD ALL drops it without psycopg's knowing; the next PATCH still queues its change.
    with connection.cursor() as cursor:
        cursor.execute("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")
    with CaptureQueriesContext(connection) as queries:
        _patch(ocpi, "3257", "OUTOFORDER")
    statements = [q["sql"].split(" ", 3)[:3] for q in queries.captured_queries]
    assert statements == [["INSERT", "INTO", "stations_pendingstatus"]] * 2  # refused, then prepared again
    assert list(PendingStatus.objects.values_list("status", flat=True)) == ["OUTOFORDER"]
    with CaptureQueriesContext(connection) as queries:
        _patch(ocpi, "3257", "AVAILABLE", 1)
    assert len(queries.captured_queries) == 1 and PendingStatus.objects.count() == 2


def test_a_batch_applies_each_evses_changes_in_arrival_order_in_a_few_statements(ocpi, stored):
    _patch(ocpi, "3256", "CHARGING", -30)
    _patch(ocpi, "3257", "AVAILABLE", -29)
    _patch(ocpi, "3256", "CHARGING", -20)  # a confirmation: no history row
    _patch(ocpi, "3256", "AVAILABLE", -10, status_schedule=[])
    _patch(ocpi, "3256", "INOPERATIVE", -5)
    history_before = EvseStatusChange.objects.count()

    with CaptureQueriesContext(connection) as queries:
        assert apply_pending_statuses() == 5
    # Lock, take the queue, lock the locations with their EVSEs, then the EVSEs, the summaries and the dirty
    # list at once, and the history rows: the same handful of statements for 5 changes or 2,000.
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 5, "\n".join(statements)

    history = EvseStatusChange.objects.filter(changed_at__gt=stored.last_updated).order_by("id")
    assert EvseStatusChange.objects.count() == history_before + 4
    assert [(h.evse.uid, h.status) for h in history.select_related("evse")][-4:] == [
        ("3256", "CHARGING"),
        ("3257", "AVAILABLE"),
        ("3256", "AVAILABLE"),
        ("3256", "INOPERATIVE"),
    ]
    evses = {e.uid: e for e in EVSE.objects.filter(location=stored)}
    assert (evses["3256"].status, evses["3257"].status) == ("INOPERATIVE", "AVAILABLE")
    location = Location.objects.get(pk=stored.pk)
    assert (location.map_status, location.available_evse_count) == ("available", 1)


def test_an_identical_status_moves_only_the_confirmation_time_and_never_back(ocpi, stored):
    evse = EVSE.objects.get(uid="3256")
    location_before = Location.objects.filter(pk=stored.pk).values().get()
    history_before = EvseStatusChange.objects.count()
    _patch(ocpi, "3256", "AVAILABLE", -1)
    _patch(ocpi, "3256", "AVAILABLE", -3600)  # older: the confirmation time stays
    assert apply_pending_statuses() == 2
    after = EVSE.objects.get(pk=evse.pk)
    assert (after.status, after.status_changed_at) == (evse.status, evse.status_changed_at)
    assert after.last_updated > evse.last_updated and after.last_updated > timezone.now() - dt.timedelta(seconds=30)
    assert EvseStatusChange.objects.count() == history_before
    assert Location.objects.filter(pk=stored.pk).values().get() == location_before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "FLYING"}, "status"),
        ({"status": "AVAILABLE", "last_updated": "yesterday"}, "last_updated"),
        ({"status": "AVAILABLE", "status_schedule": "soon"}, "status_schedule"),
    ],
)
def test_bad_input_is_refused_as_before_and_nothing_is_queued(ocpi, stored, body, field):
    response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3256", {"last_updated": _stamp(), **body})
    assert (response.status_code, response.envelope["status_code"]) == (400, 2001)
    assert field in response.envelope["status_message"]
    assert not PendingStatus.objects.exists()


def test_unknown_evses_and_other_partners_locations_queue_nothing(ocpi, stored):
    other = make_ocpi_partner(country_code="NL", party_id="OTH", token="other-token")
    body = {"status": "CHARGING", "last_updated": _stamp()}
    assert ocpi("PATCH", BASE + "/BE/BEC/LOC1/NOPE", body).status_code == 404
    theirs = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3256", body, token="other-token")
    assert (theirs.status_code, theirs.envelope["status_code"]) == (403, 2000)
    # Under its own party id it finds nothing: BEC's location is not NL*OTH's.
    assert ocpi("PATCH", BASE + "/NL/OTH/LOC1/3256", body, partner=other).status_code == 404
    assert not PendingStatus.objects.exists()


def test_a_change_of_an_evse_removed_before_it_is_applied_is_dropped(ocpi, stored):
    _patch(ocpi, "3257", "CHARGING", -5)
    # REMOVED takes the general path at once (the EVSE count changes); the queued change comes after it.
    response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", {"status": "REMOVED", "last_updated": _stamp()})
    assert response.envelope["status_code"] == 1000
    history_before = EvseStatusChange.objects.count()
    assert apply_pending_statuses() == 1
    assert EVSE.objects.get(uid="3257").status == "REMOVED"
    assert EvseStatusChange.objects.count() == history_before
    assert Location.objects.get(pk=stored.pk).evse_count == 1


@pytest.mark.django_db(transaction=True)  # the lock is a transaction's: committed for real
def test_while_another_applier_works_the_queue_waits_for_it(ocpi, stored):
    _patch(ocpi, "3257", "CHARGING")
    settings_dict = connection.settings_dict
    other = psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        user=settings_dict["USER"],
        dbname=settings_dict["NAME"],
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [_LOCK_ID])
        assert apply_pending_statuses() == 0  # one applier at a time: changes apply in arrival order
        assert PendingStatus.objects.count() == 1
    finally:
        other.close()
    assert apply_pending_statuses() == 1


def test_the_backlog_and_its_age_are_on_the_metrics_page_for_the_alerts(ocpi, stored, client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    assert value(scrape(client), "mobilityplus_status_inbox_waiting") == 0
    _patch(ocpi, "3257", "CHARGING")
    _patch(ocpi, "3256", "CHARGING")
    PendingStatus.objects.update(received_at=timezone.now() - dt.timedelta(seconds=90))  # the applier is down
    found = scrape(client)
    assert value(found, "mobilityplus_status_inbox_waiting") == 2
    assert 90 <= value(found, "mobilityplus_status_inbox_oldest_seconds") < 120
    apply_pending_statuses()
    assert value(scrape(client), "mobilityplus_status_inbox_oldest_seconds") == 0


def test_a_change_that_cannot_be_applied_is_set_aside_and_the_others_still_apply(ocpi, stored, caplog):
    _patch(ocpi, "3256", "CHARGING", -3)
    # A row no partner can send (our parser refuses it): a time past what Python can read.
    PendingStatus.objects.create(evse_id=EVSE.objects.get(uid="3257").pk, status="BLOCKED", last_updated=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute("UPDATE stations_pendingstatus SET last_updated = 'infinity' WHERE status = 'BLOCKED'")
    _patch(ocpi, "3257", "OUTOFORDER", -1)

    assert drain_status_inbox() == 3

    assert not PendingStatus.objects.exists()
    evses = {e.uid: e.status for e in EVSE.objects.filter(location=stored)}
    assert evses == {"3256": "CHARGING", "3257": "OUTOFORDER"}
    assert "set aside, not applied" in caplog.text and "BLOCKED" in caplog.text


def test_the_applier_command_drains_the_queue(ocpi, stored):
    for seconds, status in [(-3, "CHARGING"), (-2, "AVAILABLE"), (-1, "BLOCKED")]:
        _patch(ocpi, "3257", status, seconds)
    call_command("apply_status_inbox", "--until-empty")
    assert not PendingStatus.objects.exists()
    assert EVSE.objects.get(uid="3257").status == "BLOCKED"


@pytest.mark.django_db(transaction=True)
def test_a_driver_sees_the_change_once_applied(ocpi, stored, client):
    bump_map_cache_version()  # the cache (Redis when REDIS_URL is set) outlives a test's database
    street = f"{stored.longitude - 0.01},{stored.latitude - 0.01},{stored.longitude + 0.01},{stored.latitude + 0.01}"

    def shown() -> str:
        return client.get("/api/v1/stations", {"bbox": street, "zoom": 17}).json()["features"][0]["properties"][
            "status"
        ]

    assert shown() == "available"
    _patch(ocpi, "3256", "CHARGING")
    apply_pending_statuses()
    assert shown() == "in_use"  # the area's cached answer was dropped when the batch committed
