"""The status stream: a status-only EVSE PATCH writes only what changed (stations.services.apply_evse_status)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from roaming.ocpi.envelope import format_datetime
from stations.models import EVSE, EvseStatusChange, Location, MapDirtyLocation
from stations.services import evse_status_changed
from tests.conftest import make_ocpi_partner
from tests.feeds_fixtures import example

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/locations"
OCPI_TOKEN = "bec-token"


@pytest.fixture
def cpo():
    partner = make_ocpi_partner(country_code="BE", party_id="BEC", token=OCPI_TOKEN, tokens__to_them="to-bec")
    return partner.connection


@pytest.fixture
def stored(ocpi, cpo):
    """The spec's example location (EVSE 3256 AVAILABLE, 3257 RESERVED), pushed by its CPO; 3256 then CHARGING."""
    response = ocpi("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    assert response.status_code == 201
    ocpi("PATCH", BASE + "/BE/BEC/LOC1/3256", {"status": "CHARGING", "last_updated": _stamp(-60)})  # warm caches
    return Location.objects.get(ocpi_id="LOC1")


def _stamp(seconds: float = 0) -> str:
    return format_datetime(timezone.now() + dt.timedelta(seconds=seconds))


def test_a_status_patch_writes_the_evse_its_history_row_and_the_map_summary_in_few_queries(ocpi, stored):
    raw_before, history_before = stored.raw, EvseStatusChange.objects.count()
    heard = []
    evse_status_changed.connect(lambda changes, **_: heard.extend(changes), weak=False, dispatch_uid="test-heard")
    try:
        with CaptureQueriesContext(connection) as queries:
            response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", {"status": "OUTOFORDER", "last_updated": _stamp()})
    finally:
        evse_status_changed.disconnect(dispatch_uid="test-heard")

    assert (response.status_code, response.envelope["status_code"]) == (200, 1000)
    # Two round trips: lock the location and read its EVSEs; then the four writes at once (the EVSE, the history
    # row, the summary, the cells' dirty list). Authentication, ownership and agreements come from the
    # per-process caches the first PATCH warmed.
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(statements) == 2, "\n".join(statements)
    assert statements[0].startswith("SELECT") and "FOR UPDATE" in statements[0]
    assert [write.split()[:3] for write in statements[1].split("; ")] == [
        ["UPDATE", "stations_evse", "SET"],
        ["INSERT", "INTO", '"stations_evsestatuschange"'],
        ["UPDATE", "stations_location", "SET"],
        ["INSERT", "INTO", '"stations_mapdirtylocation"'],
    ]
    evse = EVSE.objects.get(uid="3257")
    assert evse.status == "OUTOFORDER"
    assert EvseStatusChange.objects.count() == history_before + 1
    assert EvseStatusChange.objects.filter(evse=evse).first().status == "OUTOFORDER"
    location = Location.objects.get(pk=stored.pk)
    assert (location.map_status, location.available_evse_count, location.evse_count) == ("in_use", 0, 2)
    assert location.status_updated_at == evse.status_changed_at
    assert location.raw == raw_before and location.content_hash == ""  # the next full version is written whatever
    assert MapDirtyLocation.objects.filter(location_id=stored.pk).exists()  # the cluster cells follow
    assert [(c.evse_id, c.status, c.previous) for c in heard] == [(evse.pk, "OUTOFORDER", "RESERVED")]


def test_an_identical_status_writes_only_the_confirmation_time(ocpi, stored):
    evse = EVSE.objects.get(uid="3256")  # CHARGING since the fixture
    location_before = Location.objects.filter(pk=stored.pk).values().get()
    history_before, later = EvseStatusChange.objects.count(), _stamp(-5)

    with CaptureQueriesContext(connection) as queries:
        response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3256", {"status": "CHARGING", "last_updated": later})

    assert response.envelope["status_code"] == 1000
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 1 and writes[0].startswith('UPDATE "stations_evse" SET "last_updated"')
    assert EvseStatusChange.objects.count() == history_before
    assert Location.objects.filter(pk=stored.pk).values().get() == location_before
    after = EVSE.objects.get(pk=evse.pk)
    assert (after.status, after.status_changed_at) == (evse.status, evse.status_changed_at)
    assert after.last_updated > evse.last_updated  # confirmed
    # An older confirmation never moves it back.
    ocpi("PATCH", BASE + "/BE/BEC/LOC1/3256", {"status": "CHARGING", "last_updated": _stamp(-3600)})
    assert EVSE.objects.get(pk=evse.pk).last_updated == after.last_updated


def test_the_receiver_get_and_a_later_full_patch_see_the_fast_path_statuses(ocpi, stored):
    ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", {"status": "BLOCKED", "last_updated": _stamp()})

    got = ocpi("GET", BASE + "/BE/BEC/LOC1").data
    assert {e["uid"]: e["status"] for e in got["evses"]} == {"3256": "CHARGING", "3257": "BLOCKED"}
    assert ocpi("GET", BASE + "/BE/BEC/LOC1/3257").data["status"] == "BLOCKED"
    # A PATCH of the location (the general path) keeps the statuses the fast path wrote.
    ocpi("PATCH", BASE + "/BE/BEC/LOC1", {"name": "Renamed", "last_updated": _stamp()})
    assert dict(EVSE.objects.values_list("uid", "status")) == {"3256": "CHARGING", "3257": "BLOCKED"}
    # A full PUT of the original content is a change (not skipped as unchanged by its digest).
    ocpi("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    assert dict(EVSE.objects.values_list("uid", "status")) == {"3256": "AVAILABLE", "3257": "RESERVED"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "FLYING", "last_updated": "2026-01-01T00:00:00Z"}, "status"),
        ({"status": 7, "last_updated": "2026-01-01T00:00:00Z"}, "status"),
        ({"status": "AVAILABLE", "last_updated": "yesterday"}, "last_updated"),
        ({"status": "AVAILABLE", "last_updated": "2999-01-01T00:00:00Z"}, "last_updated"),
        ({"status": "AVAILABLE"}, "last_updated"),
        ({"status": "AVAILABLE", "status_schedule": "soon", "last_updated": "2026-01-01T00:00:00Z"}, "status_schedule"),
    ],
)
def test_bad_input_is_still_refused_with_2001_naming_the_field_and_nothing_stored(ocpi, stored, body, field):
    before = (list(EVSE.objects.values_list("status", "last_updated")), EvseStatusChange.objects.count())

    response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", body)

    assert (response.status_code, response.envelope["status_code"]) == (400, 2001)
    assert field in response.envelope["status_message"]
    assert (list(EVSE.objects.values_list("status", "last_updated")), EvseStatusChange.objects.count()) == before


def test_another_partner_may_not_patch_the_status_and_unknown_evses_get_404(ocpi, stored):
    other = make_ocpi_partner(country_code="NL", party_id="OTH", token="other-token")
    body = {"status": "OUTOFORDER", "last_updated": _stamp()}

    response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", body, token="other-token")
    assert (response.status_code, response.envelope["status_code"]) == (403, 2000)
    # Under its own party id it finds nothing: BEC's location is not NL*OTH's.
    response = ocpi("PATCH", BASE + "/NL/OTH/LOC1/3257", body, partner=other)
    assert response.status_code == 404
    assert ocpi("PATCH", BASE + "/BE/BEC/LOC1/NOPE", body).status_code == 404
    assert EVSE.objects.get(uid="3257").status == "RESERVED"


def test_removed_goes_through_the_general_path_and_changes_the_evse_count(ocpi, stored):
    response = ocpi("PATCH", BASE + "/BE/BEC/LOC1/3257", {"status": "REMOVED", "last_updated": _stamp()})
    assert response.envelope["status_code"] == 1000
    location = Location.objects.get(pk=stored.pk)
    assert (location.evse_count, location.map_status) == (1, "in_use")
    assert EvseStatusChange.objects.filter(evse__uid="3257").first().status == "REMOVED"
