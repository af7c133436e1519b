"""Staff see each partner's feed runs, rejected objects and locations in the admin; others do not."""

from __future__ import annotations

import pytest
from django.utils import timezone

from stations.models import RejectedObject, SyncRun
from tests.factories import EVSEFactory, LocationFactory, PartnerConnectionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs():
    conn = PartnerConnectionFactory()
    other = PartnerConnectionFactory()
    run = SyncRun.objects.create(
        connection=conn,
        started_at=timezone.now(),
        created=12,
        rejected=1,
        status="failed",
        error="GET page 3: HTTP 502",
    )
    SyncRun.objects.create(connection=other, started_at=timezone.now(), created=99)
    RejectedObject.objects.create(
        connection=conn, sync_run=run, object_id="BAD1", error="coordinates: required", payload={"id": "BAD1"}
    )
    return conn, other


def test_staff_see_runs_per_partner_rejects_and_locations(client, runs):
    conn, other = runs
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    page = client.get("/admin/stations/syncrun/", {"connection__id__exact": conn.pk}).content.decode()
    assert ">12<" in page and ">99<" not in page and "Failed" in page
    page = client.get("/admin/stations/rejectedobject/").content.decode()
    assert "coordinates: required" in page
    evse = EVSEFactory(location=LocationFactory(limited_access_reasons=["parking_customers"]))
    page = client.get(f"/admin/stations/location/{evse.location.pk}/change/").content.decode()
    assert "parking_customers" in page and evse.uid in page
    assert client.get(f"/admin/stations/evse/{evse.pk}/change/").status_code == 200


def test_drivers_do_not_get_the_admin(client, runs):
    client.force_login(UserFactory())
    assert client.get("/admin/stations/syncrun/").status_code == 302
