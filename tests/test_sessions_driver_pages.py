"""The driver's charging page: live panel (and the JSON it polls), history by month, CSV; only their own."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.http import HttpRequest
from django.utils import timezone

from tests.factories import (
    CardFactory,
    CdrFactory,
    DriverFactory,
    EVSEFactory,
    LocationFactory,
    PartyFactory,
    SessionFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def driver():
    return DriverFactory()


@pytest.fixture
def card(driver):
    return CardFactory(driver=driver)


def aware(year, month, day, hour=10):
    return timezone.make_aware(dt.datetime(year, month, day, hour))


def test_pages_need_login(client):
    for url in ("/charging/", "/charging/live.json", "/charging/history.csv", "/charging/start/1/X/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_live_panel_shows_the_active_session_of_this_driver_only(client, driver, card):
    cpo = PartyFactory(name="Allego")
    location = LocationFactory(party=cpo, ocpi_id="LOC1", name="Gent Zuid")
    evse = EVSEFactory(location=location, uid="3256", evse_id="BE*BEC*E041503003")
    SessionFactory(
        party=cpo, card=card, location=location, evse=evse, kwh=7.25, total_cost_excl_vat=2, total_cost_incl_vat=2.42
    )
    someone_else = SessionFactory(party=cpo, kwh=99, location=location, evse=evse)
    client.force_login(driver.user)

    live = client.get("/charging/live.json").json()
    session = live["session"]
    assert session["station"] == "Gent Zuid" and session["evse"] == "BE*BEC*E041503003"
    assert session["kwh"] == "7.25" and session["cost"] == "€2.42" and session["status_label"] == "Charging"
    assert session["can_stop"] and not session["ended"] and session["duration"].startswith("30m")
    page = client.get("/charging/").content.decode()
    assert "Gent Zuid" in page and "7.25 kWh" in page and "99.00" not in page
    # Another driver's session is not reachable, not even to stop it.
    assert client.post(f"/charging/stop/{someone_else.pk}/").status_code == 404


def test_ended_session_waits_for_then_shows_the_cdr(client, driver, card):
    cpo = PartyFactory()
    session = SessionFactory(party=cpo, card=card, status="COMPLETED", end_date_time=timezone.now(), kwh=12)
    client.force_login(driver.user)
    live = client.get("/charging/live.json").json()["session"]
    assert live["ended"] and live["cdr"] is None and not live["can_stop"]
    CdrFactory(
        party=cpo, session=session, card=card, total_energy=12.5, total_cost_excl_vat=5, total_cost_incl_vat=6.05
    )
    live = client.get("/charging/live.json").json()["session"]
    assert live["cdr"] == {"total_energy": "12.50", "total_cost": "€6.05", "credited": False}


def test_history_by_month_with_cdr_totals_and_csv(client, driver, card, django_assert_max_num_queries):
    cpo = PartyFactory(name="Fastned")
    october = SessionFactory(
        party=cpo,
        card=card,
        status="COMPLETED",
        start_date_time=aware(2026, 10, 3),
        end_date_time=aware(2026, 10, 3, 11),
    )
    CdrFactory(party=cpo, session=october, card=card, total_energy=30, total_cost_incl_vat=14.2)
    for day in (2, 9, 16):
        SessionFactory(
            party=cpo,
            card=card,
            status="COMPLETED",
            start_date_time=aware(2026, 9, day),
            end_date_time=aware(2026, 9, day, 11),
        )
    # A CDR of the driver's card whose session never reached us still counts.
    CdrFactory(
        party=cpo,
        card=card,
        start_date_time=aware(2026, 10, 20),
        end_date_time=aware(2026, 10, 20, 12),
        unknown_session=True,
        total_energy=8,
        total_cost_incl_vat=3.3,
        cdr_location={"name": "Somewhere"},
    )
    SessionFactory(party=cpo, status="COMPLETED", start_date_time=aware(2026, 10, 5))  # another driver's
    client.force_login(driver.user)

    with django_assert_max_num_queries(14):
        page = client.get("/charging/?month=2026-10")
    rows = page.context["rows"]
    assert [(r.kwh, r.cost) for r in rows] == [(Decimal("8"), Decimal("3.3")), (Decimal("30"), Decimal("14.2"))]
    assert "October 2026" in page.content.decode() and "September 2026" in page.content.decode()
    assert len(client.get("/charging/").context["rows"]) == 5

    response = client.get("/charging/history.csv?month=2026-10")
    assert response["Content-Disposition"] == 'attachment; filename="charging-sessions-2026-10.csv"'
    lines = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [line["cost"] for line in lines] == ["3.30", "14.20"]
    assert lines[1]["session_id"] == october.ocpi_id and lines[1]["operator"] == "Fastned"
    # Partner-supplied text cannot turn into a spreadsheet formula.
    october.location_ocpi_id = "=HYPERLINK(1)"
    october.save()
    lines = list(csv.DictReader(io.StringIO(client.get("/charging/history.csv?month=2026-10").content.decode())))
    assert lines[1]["station"] == "'=HYPERLINK(1)"
    # A month that makes no sense just shows everything.
    assert len(client.get("/charging/?month=2026-99").context["rows"]) == 5


def test_month_filter_offers_months_that_only_have_cdrs_whose_session_never_reached_us(client, driver, card):
    cpo = PartyFactory(name="Fastned")
    SessionFactory(
        party=cpo, card=card, status="COMPLETED", start_date_time=aware(2026, 9, 2), end_date_time=aware(2026, 9, 2, 11)
    )
    for start, name in ((aware(2026, 7, 14), "Brugge Station"), (aware(2026, 9, 20), "Gent Zuid")):
        CdrFactory(
            party=cpo,
            card=card,
            start_date_time=start,
            end_date_time=start + dt.timedelta(hours=1),
            unknown_session=True,
            cdr_location={"name": name},
        )
    other = aware(2026, 5, 1)  # another driver's orphan CDR
    CdrFactory(party=cpo, card=CardFactory(), start_date_time=other, end_date_time=other, unknown_session=True)
    client.force_login(driver.user)

    page = client.get("/charging/")
    assert page.context["months"] == [dt.date(2026, 9, 1), dt.date(2026, 7, 1)]
    html = page.content.decode()
    assert '<option value="2026-07"' in html and "July 2026" in html and "May 2026" not in html
    july = client.get("/charging/?month=2026-07").context["rows"]
    assert [(row.station, row.status) for row in july] == [("Brugge Station", "Ended")]


def test_history_query_count_does_not_grow_with_sessions(client, driver, card, django_assert_max_num_queries):
    cpo = PartyFactory()
    for index in range(30):
        session = SessionFactory(party=cpo, card=card, status="COMPLETED", end_date_time=timezone.now())
        CdrFactory(party=cpo, session=session, card=card, ocpi_id=f"C{index}")
    client.force_login(driver.user)
    with django_assert_max_num_queries(10):
        assert client.get("/charging/live.json").json()["session"]["ended"]
    with django_assert_max_num_queries(14):
        assert len(client.get("/charging/").context["rows"]) == 30
    with django_assert_max_num_queries(8):
        assert len(client.get("/charging/history.csv").content.decode().splitlines()) == 31


def test_user_without_driver_profile_sees_an_explanation(client):
    from tests.factories import UserFactory

    user = UserFactory()
    client.force_login(user)
    assert "no driver profile" in client.get("/charging/").content.decode()
    assert client.get("/charging/live.json").json() == {"session": None, "command": None}


def test_demo_driver_has_an_active_session_and_a_history(client):
    from django.core.management import call_command

    from charging.models import CDR

    call_command("load_demo", stdout=io.StringIO())
    call_command("load_demo", stdout=io.StringIO())  # safe to run twice
    # django-axes checks every login against the request it came with.
    client.login(request=HttpRequest(), username="driver", password="mobilityplus-demo")
    live = client.get("/charging/live.json").json()
    assert live["session"]["status"] == "ACTIVE" and live["session"]["can_stop"]
    rows = client.get("/charging/").context["rows"]
    assert len(rows) == 6  # five at partners' stations, one at ours (played through the charge-point backend API)
    assert [row.operator for row in rows].count("MobilityPlus") == 1
    assert CDR.objects.filter(unknown_session=True).count() == 1


def test_times_are_shown_as_the_stations_clock_shows_them(client, driver, card):
    brussels = LocationFactory(time_zone="Europe/Brussels", name="Brussel Zuid")
    SessionFactory(
        party=brussels.party,
        card=card,
        location=brussels,
        status="COMPLETED",
        start_date_time=aware(2026, 10, 3, 10),
        end_date_time=aware(2026, 10, 3, 11),
    )
    client.force_login(driver.user)
    page = client.get("/charging/").content.decode()
    assert "03 Oct 2026 12:00" in page  # 10:00 UTC is noon in Brussels in October (CEST)
    lines = list(csv.DictReader(io.StringIO(client.get("/charging/history.csv").content.decode())))
    assert lines[0]["start"] == "2026-10-03T10:00:00Z"  # the CSV stays in UTC
