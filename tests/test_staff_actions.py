"""Staff actions tell the truth: each checks what it can before queueing, says what will happen or why not,
and a queued job shows its outcome."""

from __future__ import annotations

import time
import zoneinfo

import pytest
from django.utils import timezone

from console.models import StaffJob
from roaming.models import PartnerConnection, Party
from stations.models import Location, SyncRun
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory, SyncRunFactory, UserFactory
from tests.feeds_fixtures import location
from tests.ocpi_peer import ok

PARTNERS_URL = "/admin/roaming/party/"


@pytest.fixture
def staff(client):
    user = UserFactory(username="stella", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def action(client, name: str, parties, **extra):
    return client.post(
        PARTNERS_URL, {"action": name, "_selected_action": [p.pk for p in parties], **extra}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def feed_partner(ocpi_peer, name: str = "Allego", party_id: str = "ALL") -> Party:
    party = PartyFactory(name=name, country_code="NL", party_id=party_id)
    RoamingAgreementFactory(partner=party)
    PartnerConnectionFactory(
        party=party,
        endpoints=[{"identifier": "locations", "role": "SENDER", "url": ocpi_peer.url("/ocpi/cpo/2.2.1/locations")}],
        tokens__to_them=f"token-for-{party_id.lower()}",
    )
    ocpi_peer.route("GET", r"/ocpi/cpo/2.2.1/locations", lambda r: ok([location("A1"), location("A2")]))
    return party


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_endpoint", "Allego: no pull: they list no locations SENDER endpoint: there is no feed to pull"),
        ("planned", "Allego: no pull: the connection is planned: we hold no usable token to call them"),
        ("suspended", "Allego: no pull: the connection is suspended"),
        ("hub_client", "Allego: no pull: reached through Hubject: its stations come with the hub's feed"),
        ("no_connection", "Allego: no pull: no connection yet"),
    ],
)
def test_pull_locations_says_why_it_cannot_run_and_queues_nothing(client, staff, case, expected):
    party = PartyFactory(name="Allego", party_id="ALL")
    endpoints = [{"identifier": "locations", "role": "SENDER", "url": "https://allego.example/locations"}]
    if case == "no_endpoint":
        PartnerConnectionFactory(party=party, endpoints=[{"identifier": "tokens", "role": "RECEIVER", "url": "x"}])
    elif case in ("planned", "suspended"):
        PartnerConnectionFactory(party=party, endpoints=endpoints, status=case)
    elif case == "hub_client":
        hub = PartnerConnectionFactory(party=PartyFactory(name="Hubject", role=Party.Role.HUB), endpoints=endpoints)
        PartnerConnectionFactory(party=party, via_hub=hub)

    found = messages_of(action(client, "pull_locations_now", [party]))

    assert len(found) == 1 and found[0].startswith(expected), found
    assert found[0].endswith("Nothing was queued.")
    assert not StaffJob.objects.exists() and not SyncRun.objects.exists()


@pytest.mark.django_db
def test_pull_while_one_is_running_says_so_and_queues_nothing(client, staff):
    party = PartyFactory(name="Fastned")
    connection = PartnerConnectionFactory(
        party=party, endpoints=[{"identifier": "locations", "role": "SENDER", "url": "https://f.example/locations"}]
    )
    SyncRunFactory(connection=connection, status="running", finished_at=None, full=True, pages=12, updated=3000)

    found = messages_of(action(client, "pull_locations_now", [party]))

    assert found == [
        "Fastned: no pull queued: a full pull is already running (page 12, 3000 objects so far); "
        "its progress is on the partner page."
    ]
    assert not StaffJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_pull_from_the_partner_page_runs_and_the_job_records_its_outcome(client, staff, ocpi_peer):
    party = feed_partner(ocpi_peer)

    response = client.post(
        PARTNERS_URL,
        {"action": "pull_locations_now", "_selected_action": [party.pk], "_dashboard": "1"},
    )

    assert response.status_code == 302 and response["Location"] == f"/admin/roaming/party/{party.pk}/change/"
    page = client.get(response["Location"])
    found = messages_of(page)
    # No earlier successful pull: the first is a full one, and the message says so (and what it did: tasks ran here).
    assert found == [
        "Allego: a full pull of their locations (every location; those missing from it are removed): "
        "succeeded: 1 page(s), 2 object(s) stored (2 new, 0 changed), 0 removed, 0 rejected."
    ]
    job = StaffJob.objects.get()
    assert (job.kind, job.status, job.requested_by, job.party) == ("pull", "succeeded", staff, party)
    assert job.started_at and job.finished_at
    assert set(Location.objects.filter(party=party).values_list("ocpi_id", flat=True)) == {"A1", "A2"}
    assert "succeeded: 1 page(s), 2 object(s) stored" in page.content.decode()  # in the page's Jobs list

    # The next one is a delta from the start of that run, and says from when (in the staff member's zone).
    found = messages_of(action(client, "pull_locations_now", [party]))
    first_start = SyncRun.objects.order_by("started_at").first().started_at
    since = timezone.localtime(first_start, zoneinfo.ZoneInfo("Europe/Brussels"))
    assert found[0].startswith(
        f"Allego: a delta pull of their locations (changes since {since:%d %b %H:%M} {since:%Z}): succeeded"
    ), found  # in the staff member's zone (Europe/Brussels by default), labelled


@pytest.mark.django_db
def test_with_the_broker_down_the_job_is_marked_not_queued_and_staff_are_told(client, staff):
    from mobilityplus.celery import app as celery_app
    from tests.served_platform import free_port

    party = PartyFactory(name="Allego")
    PartnerConnectionFactory(
        party=party, endpoints=[{"identifier": "locations", "role": "SENDER", "url": "https://a.example/locations"}]
    )
    def fresh_connections() -> None:  # the next publish connects to whatever broker_url says now
        celery_app.pool.force_close_all()
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    broker = celery_app.conf.broker_url
    celery_app.conf.update(task_always_eager=False, broker_url=f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    fresh_connections()
    try:
        found = messages_of(action(client, "pull_locations_now", [party]))
    finally:
        celery_app.conf.update(task_always_eager=True, broker_url=broker)
        fresh_connections()

    assert len(found) == 1 and found[0].startswith("Could not queue the job (broker unavailable"), found
    job = StaffJob.objects.get()
    assert (job.status, job.outcome) == ("not_queued", "not queued: the task broker is unavailable")


@pytest.mark.django_db(transaction=True)
def test_a_queued_job_shows_queued_then_its_outcome_from_a_real_worker(client, staff, ocpi_peer, redis_celery_worker):
    party = feed_partner(ocpi_peer)

    found = messages_of(action(client, "full_pull_now", [party]))

    assert found == [
        "Allego: a full pull of their locations (every location; those missing from it are removed). "
        f'Queued; its progress and outcome show <a href="/admin/roaming/party/{party.pk}/change/">on the '
        "partner's page</a>."
    ]
    url = f"/admin/roaming/party/{party.pk}/sync-progress/"
    deadline = time.monotonic() + 30
    while True:
        jobs = client.get(url).json()["jobs"]
        if jobs and jobs[0]["status"] in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert jobs[0]["status"] == "succeeded", jobs
    assert jobs[0]["outcome"].startswith("succeeded: 1 page(s), 2 object(s) stored")
    answer = client.get(url).json()
    assert answer["active"] is False and answer["sync"]["status"] == "succeeded" and answer["sync"]["objects"] == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "connection", "expected"),
    [
        ("rotate_tokens", {"status": "planned"}, "Planned: not done: not registered directly with this partner"),
        ("unregister", {"status": "planned"}, "Planned: not done: not registered directly with this partner"),
        ("reread_endpoints", {"status": "planned"}, "Planned: not done: not registered directly with this partner"),
        ("rotate_tokens", {"tokens__to_them": "t"}, "Planned: not done: they list no credentials endpoint"),
        ("reread_endpoints", {"tokens__to_them": "t"}, "Planned: not done: no versions URL on record"),
    ],
)
def test_credentials_actions_say_why_they_cannot_run_and_send_nothing(client, staff, name, connection, expected):
    party = PartyFactory(name="Planned", party_id="PLN")
    PartnerConnectionFactory(party=party, **connection)

    found = messages_of(action(client, name, [party]))

    assert len(found) == 1 and found[0].startswith(expected) and found[0].endswith("Nothing was sent."), found
    assert not StaffJob.objects.exists()
    party.connection.refresh_from_db()
    assert party.connection.last_error == ""  # nothing ran, so nothing failed


@pytest.mark.django_db
def test_credentials_action_of_a_hub_client_points_at_the_hub(client, staff):
    hub = PartnerConnectionFactory(party=PartyFactory(name="Hubject", role=Party.Role.HUB), tokens__to_them="t")
    party = PartyFactory(name="Vattenfall")
    PartnerConnectionFactory(party=party, via_hub=hub)

    found = messages_of(action(client, "rotate_tokens", [party]))

    assert found == ["Vattenfall: not done: reached through Hubject: the tokens are the hub's (act on the hub). "
                     "Nothing was sent."]  # fmt: skip


@pytest.mark.django_db
def test_a_job_that_fails_says_so_with_the_partners_error(client, staff):
    party = PartyFactory(name="Gone")
    PartnerConnectionFactory(
        party=party,
        versions_url="http://127.0.0.1:9/ocpi/versions",  # nothing listens: refused at once
        tokens__to_them="t",
        endpoints=[{"identifier": "credentials", "role": "SENDER", "url": "http://127.0.0.1:9/ocpi/credentials"}],
    )

    found = messages_of(action(client, "reread_endpoints", [party]))

    assert len(found) == 1 and found[0].startswith("Gone: re-reading their versions and endpoints"), found
    job = StaffJob.objects.get()
    assert job.status == "failed" and job.outcome.startswith("failed: ") and "connection connected" in job.outcome
    assert job.outcome[len("failed: ") :].split(" (connection")[0] in found[0]


@pytest.mark.django_db
def test_partner_page_buttons_are_disabled_with_the_reason_when_they_cannot_run(client, staff):
    party = PartyFactory(name="Planned")
    PartnerConnectionFactory(party=party, status=PartnerConnection.Status.PLANNED)

    html = client.get(f"/admin/roaming/party/{party.pk}/change/").content.decode()

    assert 'data-action="pull_locations_now" disabled title="the connection is planned' in html
    assert 'data-action="rotate_tokens" disabled title="not registered directly with this partner' in html
    assert 'data-action="suspend"' in html and 'data-action="suspend" disabled' not in html
    assert 'data-action="unregister"' not in html  # ending a partnership stays in the list's drop-down
