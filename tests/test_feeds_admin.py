"""Staff see each partner's feed runs, rejected objects and locations in the admin; others do not."""

from __future__ import annotations

import pytest
from django.forms import CheckboxInput
from django.utils import timezone

from stations.models import EvseStatusChange, RejectedObject, SyncRun
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    UserFactory,
)

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


def change_form_data(response, **changes) -> dict:
    """What the admin's change page would post back unchanged (main form and inlines), with `changes` applied."""
    data: dict = {}

    def add(bound) -> None:
        if isinstance(bound.field.widget, CheckboxInput):
            if bound.value():
                data[bound.html_name] = "on"
            return
        context = bound.field.widget.get_context(bound.html_name, bound.value(), {})["widget"]
        for widget in context.get("subwidgets") or [context]:
            value = widget["value"]
            if value is not None and value != [None]:
                data[widget["name"]] = value

    for bound in response.context["adminform"].form:
        add(bound)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for bound in formset.management_form:
            data[bound.html_name] = bound.value()
        for form in formset.forms:
            for bound in form:
                add(bound)
    data.update(changes)
    return data


def test_staff_edits_reach_the_map_at_once_and_keep_the_status_history(client):
    from roaming.selectors import own_party

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    location = MapLocationFactory(party=own_party())
    evse = EVSEFactory(location=location, status="AVAILABLE", status_changed_at=timezone.now())
    ConnectorFactory(evse=evse)
    detail = f"/api/v1/stations/{location.pk}"
    assert client.get(detail).json()["properties"]["limited"] is False  # now cached

    url = f"/admin/stations/location/{location.pk}/change/"
    response = client.post(url, change_form_data(client.get(url), limited_access_override="true"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert client.get(detail).json()["properties"]["limited"] is True

    url = f"/admin/stations/evse/{evse.pk}/change/"
    response = client.post(url, change_form_data(client.get(url), status="OUTOFORDER"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert list(EvseStatusChange.objects.filter(evse=evse).values_list("status", flat=True)) == ["OUTOFORDER"]
    assert client.get(detail).json()["properties"]["status"] == "faulty"
    assert "Outoforder" in client.get(url).content.decode()  # the history, as staff read it
