"""The staff console's pages: a partner's dashboard, the staff overview, data quality, times in the staff's zone."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.conf import settings
from django.utils import timezone

from cards.models import AuthorizationDecision
from console.models import StaffPreference
from console.selectors import month_start
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.outbox_models import OutboxMessage
from stations.models import EvseStatusChange
from tests.factories import (
    CardFactory,
    CdrFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SessionFactory,
    SyncRunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    {"identifier": "locations", "role": "SENDER", "url": "https://ocpi.example/cpo/locations"},
    {"identifier": "tokens", "role": "SENDER", "url": "https://ocpi.example/emsp/tokens"},
    {"identifier": "credentials", "role": "SENDER", "url": "https://ocpi.example/credentials"},
]


@pytest.fixture
def staff(client):
    user = UserFactory(username="stella", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def page_of(party: Party) -> str:
    return f"/admin/roaming/party/{party.pk}/change/"


def decision(party: Party, direction: str, result: str, path: str, elapsed_ms: float, **fields):
    return AuthorizationDecision(
        direction=direction,
        partner=party.ocpi_id,
        token_uid="04AA",
        token_type="RFID",
        result=result,
        reason=fields.pop("reason", "test"),
        path=path,
        elapsed_ms=elapsed_ms,
        # A second ago: "today" in the staff's zone whatever the hour (5 minutes ago was yesterday there
        # from 23:00 to 23:05 UTC).
        decided_at=fields.pop("decided_at", timezone.now() - dt.timedelta(seconds=1)),
    )


def partner_with_everything(name: str = "TotalEnergies", party_id: str = "TOT", *, scale: int = 1) -> Party:
    """A CPO+eMSP partner with data in every figure of its page; `scale` multiplies the rows (query counts)."""
    now = timezone.now()
    party = PartyFactory(name=name, party_id=party_id, role=Party.Role.CPO_EMSP)
    connection = PartnerConnectionFactory(
        party=party, endpoints=ENDPOINTS, last_contact_at=now - dt.timedelta(hours=3), tokens__to_them="t-to-them"
    )
    RoamingAgreementFactory(partner=party, direction=RoamingAgreement.Direction.BOTH)
    RoamingAgreementFactory(
        partner=party,
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
        status=RoamingAgreement.Status.ENDED,
        valid_from=timezone.localdate() - dt.timedelta(days=400),
        valid_until=timezone.localdate() - dt.timedelta(days=40),
    )
    for _ in range(3 * scale):
        evse = EVSEFactory(location=LocationFactory(party=party, source=connection))
        EvseStatusChange.objects.create(evse=evse, status="CHARGING", changed_at=now - dt.timedelta(minutes=10))
        EvseStatusChange.objects.create(evse=evse, status="AVAILABLE", changed_at=now - dt.timedelta(hours=3))
    LocationFactory(party=party, source=connection, publish=False)  # hidden from our drivers
    LocationFactory(party=party, source=connection, removed_at=now - dt.timedelta(days=2))
    for days_ago in range(1, 6 * scale):
        started = now - dt.timedelta(days=days_ago % 29 + 1)
        SyncRunFactory(connection=connection, started_at=started, finished_at=started, unchanged=100, rejected=2)
    SyncRunFactory(
        connection=connection,
        started_at=now - dt.timedelta(minutes=20),
        finished_at=now - dt.timedelta(minutes=19),
        updated=7,
        rejected=1,
    )
    E, C = AuthorizationDecision.Direction.EMSP, AuthorizationDecision.Direction.CPO
    P = AuthorizationDecision.Path
    rows = [decision(party, E, "ALLOWED", P.LOCAL, 0.5) for _ in range(3)]
    rows.append(decision(party, E, "BLOCKED", P.LOCAL, 0.5))
    rows.append(decision(party, E, "ALLOWED", P.LOCAL, 0.5, decided_at=now - dt.timedelta(days=2)))  # too old
    rows += [decision(party, C, "ALLOWED", P.REALTIME, float(ms)) for ms in range(10, 210, 10)]  # 20 answers
    rows.append(decision(party, C, "ALLOWED", P.FALLBACK, 3000.0, reason=f"{party.ocpi_id}: no answer in time; x"))
    AuthorizationDecision.objects.bulk_create(rows * scale)
    card = CardFactory()
    for index, status in enumerate(("pending", "failed", "delivered")):  # one waiting, one refused, one through
        OutboxMessage.objects.create(
            partner=party, module="tokens", object_id=f"T{index}", method="PUT", status=status, next_attempt_at=now
        )
    this_month = now - dt.timedelta(minutes=1)
    last_month = month_start(now) - dt.timedelta(days=1)
    for index in range(2):
        SessionFactory(party=party, card=card, start_date_time=this_month, status="COMPLETED" if index else "ACTIVE")
    SessionFactory(party=party, card=card, start_date_time=last_month, status="COMPLETED")
    CdrFactory(party=party, start_date_time=this_month, end_date_time=now)
    CdrFactory(party=party, start_date_time=last_month, end_date_time=last_month)
    return party


def test_partner_page_shows_every_figure_of_the_partnership_above_the_form(client, staff):
    party = partner_with_everything()

    response = client.get(page_of(party))

    assert response.status_code == 200
    d = response.context["dashboard"]
    assert d.roaming.connection.status == PartnerConnection.Status.CONNECTED
    assert [e["identifier"] for e in d.roaming.endpoints] == ["credentials", "locations", "tokens"]
    assert [a.direction for a in d.roaming.agreements_in_force] == ["both"]
    assert [a.status for a in d.roaming.other_agreements] == ["ended"]
    assert (d.stations.visible, d.stations.hidden, d.stations.removed) == (3, 1, 1)
    assert d.stations.statuses_last_hour == 3
    # Last contact: the sync 19 minutes ago is later than the connection's own record (3 hours ago).
    assert d.last_contact_what == "a feed sync"
    assert abs((timezone.now() - d.last_contact_at) - dt.timedelta(minutes=19)) < dt.timedelta(minutes=1)
    assert d.sync.status == "succeeded" and d.sync.objects == 8 and d.sync.rejected == 1
    assert len(d.runs) == 6 and d.runs[0].updated == 7
    assert d.chart.total_rejects == 2 * 5 + 1 and len(d.chart.objects) == 30
    a = d.authorizations
    assert (a.asked_by_them, a.allowed_by_us, a.allowed_share_by_us) == (4, 3, 0.75)
    assert (a.about_their_cards, a.allowed_their_cards) == (21, 21)
    assert (a.realtime_calls, a.timeouts) == (21, 1)
    assert a.realtime_p95_ms == pytest.approx(190.5)  # percentile_cont over 10..200 ms
    assert (d.deliveries.waiting, d.deliveries.failed) == (1, 1)
    assert (d.charging["sessions"], d.charging["active_sessions"], d.charging["cdrs"]) == (2, 1, 1)

    html = response.content.decode()
    dashboard = html[html.index('id="partner-dashboard"') : html.index("<form", html.index('id="dash-actions"'))]
    assert html.index('id="partner-dashboard"') < html.index('id="party_form"')  # above the form
    for figure, value in {"visible": "3", "hidden": "1", "removed": "1", "statuses": "3", "asked-by-them": "4",
                          "allowed-by-us": "75%", "p95": "191 ms", "timeouts": "1 of 21", "waiting": "1",
                          "failed": "1", "sessions": "2", "cdrs": "1"}.items():  # fmt: skip
        assert re.search(rf'data-figure="{figure}">{re.escape(value)}<', dashboard), figure
    assert "<svg class=\"feed-chart\"" in html and "objects stored" in html
    assert "<script>" not in html and "style=" not in dashboard  # CSP: our script is a file of its own
    assert 'src="/static/console/dashboard.js"' in html
    assert 'data-action="pull_locations_now"' in html and 'data-action="rotate_tokens"' in html


def test_partner_page_query_count_does_not_grow_with_the_partners_data(client, staff, django_assert_max_num_queries):
    small = partner_with_everything("Small", "SML")
    big = partner_with_everything("Big", "BIG", scale=4)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small_queries:
        assert client.get(page_of(small)).status_code == 200
    with CaptureQueriesContext(connection) as big_queries:
        assert client.get(page_of(big)).status_code == 200
    assert len(big_queries) == len(small_queries)
    with django_assert_max_num_queries(60):  # the admin's own form and inlines included
        client.get(page_of(big))


def test_a_hubs_page_lists_its_clients_with_clientinfo_status_and_staff_confirmation(client, staff):
    hub_party = PartyFactory(name="Hubject", party_id="HBJ", country_code="DE", role=Party.Role.HUB)
    hub = PartnerConnectionFactory(party=hub_party)
    confirmed = PartyFactory(name="Vattenfall", party_id="VAT", country_code="SE")
    PartnerConnectionFactory(party=confirmed, via_hub=hub, hub_client_status="CONNECTED")
    RoamingAgreementFactory(partner=confirmed, hub=hub_party)
    announced = PartyFactory(name="EWE Go", party_id="EWE", country_code="DE")
    PartnerConnectionFactory(party=announced, via_hub=hub, hub_client_status="SUSPENDED")

    response = client.get(page_of(hub_party))

    clients = response.context["dashboard"].roaming.hub_clients
    assert [(c.party.name, c.client_info_status, c.confirmed) for c in clients] == [
        ("EWE Go", "SUSPENDED", False),
        ("Vattenfall", "CONNECTED", True),
    ]
    html = response.content.decode()
    table = html[html.index('id="hub-clients"') :]
    assert "add an agreement through this hub" in table.split("Vattenfall")[0]  # EWE Go's row offers it
    # A client's own page says it is reached through the hub, and whether staff confirmed it.
    client_page = client.get(page_of(announced)).content.decode()
    assert "not confirmed by staff" in client_page and "the hub says SUSPENDED" in client_page
    assert "reached through Hubject" in client_page  # why "Pull locations now" is disabled


def test_data_quality_lists_partners_without_station_data_apart_with_a_30_day_trend(client, staff):
    party = partner_with_everything()
    empty = PartnerConnectionFactory(party=PartyFactory(name="No Stations CPO", party_id="NOS"))
    SyncRunFactory(connection=empty, rejected=4)

    response = client.get("/admin/roaming/party/data-quality/")

    assert [q.party.name for q in response.context["qualities"]] == ["TotalEnergies"]
    assert [q.party.name for q in response.context["without_data"]] == ["No Stations CPO"]
    trend = response.context["qualities"][0].trend
    staff_today = timezone.localdate(timezone=zoneinfo.ZoneInfo(settings.STAFF_TIME_ZONE))  # the page's day
    assert len(trend) == 30 and trend[-1].day == staff_today
    assert sum(day.rejected for day in trend) == 11 and sum(day.objects for day in trend) == 5 * 100 + 7
    html = response.content.decode()
    apart = html[html.index('id="without-data"') :]
    assert "No Stations CPO" in apart and "no station data yet" in apart
    assert "No Stations CPO" not in html[html.index('id="data-quality"') : html.index('id="without-data"')]
    assert "11 rejected of 518 objects in 30 days" in html
    assert party.name in html


def test_staff_overview_lists_partners_needing_attention_and_todays_figures(client, staff):
    partner_with_everything()  # deliveries waiting and failed, 1 reject in its latest sync
    broken = PartyFactory(name="Ionity", party_id="ION", country_code="DE")
    broken_connection = PartnerConnectionFactory(party=broken, last_error="HTTP 502 from their versions endpoint")
    SyncRunFactory(connection=broken_connection, status="failed", error="GET locations: HTTP 502")
    PartnerConnectionFactory(party=PartyFactory(name="All Fine", party_id="FIN"))

    response = client.get("/admin/")

    overview = response.context["overview"]
    reasons = {a.party.name: a.reasons for a in overview.attention}
    assert set(reasons) == {"TotalEnergies", "Ionity"}
    assert reasons["Ionity"] == ["connection error: HTTP 502 from their versions endpoint", "latest feed sync failed"]
    assert reasons["TotalEnergies"] == [
        "1 object(s) rejected in the latest sync",
        "outgoing deliveries failed: 1",
        "outgoing deliveries waiting: 1",
    ]
    assert overview.authorizations["total"] >= 25  # today's (the 2-day-old one is not)
    assert overview.sessions["active"] == 1
    html = response.content.decode()
    assert 'id="needing-attention"' in html and f'href="/admin/roaming/party/{broken.pk}/change/"' in html
    assert "Roaming partners and agreements" in html  # the admin's app list stays below


def test_staff_land_on_the_overview_after_login_and_drivers_on_the_map(client):
    UserFactory(username="stella", is_staff=True)
    UserFactory(username="dana")
    staff = client.post("/accounts/login/", {"username": "stella", "password": "secret-password"})
    assert staff.status_code == 302 and staff["Location"] == "/admin/"
    client.logout()
    driver = client.post("/accounts/login/", {"username": "dana", "password": "secret-password"})
    assert driver.status_code == 302 and driver["Location"] == "/"
    client.logout()
    explicit = client.post("/accounts/login/?next=/admin/console/staffjob/", {"username": "stella",
                           "password": "secret-password", "next": "/admin/console/staffjob/"})  # fmt: skip
    assert explicit["Location"] == "/admin/console/staffjob/"


def test_admin_times_are_in_the_staff_members_zone_and_say_which(client, staff):
    run = SyncRunFactory(
        connection=PartnerConnectionFactory(party=PartyFactory(name="Allego")),
        started_at=dt.datetime(2026, 7, 1, 10, 30, tzinfo=dt.UTC),
        finished_at=dt.datetime(2026, 7, 1, 10, 5, tzinfo=dt.UTC),
        full=True,
    )
    SyncRunFactory(connection=run.connection, full=False)

    listing = client.get("/admin/stations/syncrun/").content.decode()
    assert "Times in Europe/Brussels." in listing
    assert "July 1, 2026, 12:30 p.m." in listing  # 10:30 UTC is 12:30 in Brussels in summer
    kinds = re.findall(r'<td class="field-sync_kind">(\w+)</td>', listing)
    assert sorted(kinds) == ["delta", "full"]
    assert "icon-no.svg" not in listing.split('id="result_list"')[1]  # no red ✗ reading as a failure

    page = client.get(f"/admin/roaming/party/{run.connection.party_id}/change/").content.decode()
    assert "Started (Europe/Brussels)" in page

    assert client.post("/admin/time-zone/", {"time_zone": "America/New_York"}).status_code == 302
    assert StaffPreference.objects.get(user=staff).time_zone == "America/New_York"
    listing = client.get("/admin/stations/syncrun/").content.decode()
    assert "Times in America/New_York." in listing and "July 1, 2026, 6:30 a.m." in listing
    assert zoneinfo.ZoneInfo("America/New_York")  # a real zone name


def test_running_sync_progress_is_served_for_the_page_to_poll(client, staff):
    connection = PartnerConnectionFactory(party=PartyFactory(name="Fastned"))
    run = SyncRunFactory(
        connection=connection,
        full=True,
        status="running",
        started_at=timezone.now() - dt.timedelta(seconds=100),
        finished_at=None,
        pages=10,
        created=500,
        updated=400,
        unchanged=80,
        rejected=20,
        expected_objects=5000,
    )
    url = f"/admin/roaming/party/{connection.party_id}/sync-progress/"

    sync = client.get(url).json()["sync"]

    assert (sync["running"], sync["kind"], sync["pages"], sync["objects"], sync["rejected"]) == (
        True, "full", 10, 1000, 20,
    )  # fmt: skip
    assert sync["expected"] == 5000 and sync["percent"] == 20
    assert 9 <= sync["per_second"] <= 10.1  # 1,000 objects in ~100 s
    assert 390 <= sync["seconds_left"] <= 410  # 4,000 left at ~10 a second
    assert client.get(url).json()["active"] is True

    run.status, run.finished_at, run.error = "failed", timezone.now(), "GET locations: HTTP 502"
    run.save()
    answer = client.get(url).json()
    assert answer["active"] is False
    assert (answer["sync"]["status"], answer["sync"]["seconds_left"], answer["sync"]["error"]) == (
        "failed", None, "GET locations: HTTP 502",
    )  # fmt: skip

    client.force_login(UserFactory(is_staff=False))
    assert client.get(url).status_code == 302  # to the admin login
