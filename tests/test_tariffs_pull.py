"""Pulling a partner's Tariffs SENDER over real HTTP (ocpi_peer): pages by Link, delta by date_from, each bad object
rejected alone, full pulls drop what the feed no longer lists, from the staff console and on beat's schedule."""

from __future__ import annotations

import copy
import datetime as dt
import time

import pytest
from django.utils import timezone

from mobilityplus.celery import app as celery_app
from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.envelope import format_datetime
from tariffs import pull
from tariffs.models import Tariff, TariffPull
from tariffs.tasks import dispatch_tariff_pulls
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory, UserFactory
from tests.feeds_fixtures import LocationFeed, example
from tests.ocpi_peer import PeerResponse, ok

TOKEN_TO_THEM = "token-for-the-cpo-tariffs"
PATH = "/ocpi/cpo/2.2.1/tariffs"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.FEEDS_RETRY_BACKOFF_S = 0.01
    settings.FEEDS_PAGE_RETRIES = 1
    settings.TARIFFS_PAGE_LIMIT = 1000


def tariff(
    tariff_id: str,
    *,
    party_id: str = "ALL",
    country_code: str = "NL",
    updated: str = "2026-01-01T10:00:00Z",
    price: float = 0.25,
) -> dict:
    body = example("tariff_9_025kwh_start.json")
    body.update(country_code=country_code, party_id=party_id, id=tariff_id, last_updated=updated)
    body["elements"][0]["price_components"][1]["price"] = price
    return body


def connection_to(peer, *, party_id: str = "ALL", role: str = "CPO"):
    party = PartyFactory(country_code="NL", party_id=party_id, role=role, name=f"Partner {party_id}")
    connection = PartnerConnectionFactory(
        party=party,
        endpoints=[{"identifier": "tariffs", "role": "SENDER", "url": peer.url(PATH)}],
        tokens__to_them=TOKEN_TO_THEM,
    )
    if role != "HUB":
        RoamingAgreementFactory(partner=party)
    return connection


def stamp(minutes_from_now: float = 0) -> str:
    return format_datetime(timezone.now() + dt.timedelta(minutes=minutes_from_now))


@pytest.mark.django_db
def test_pages_are_followed_through_the_link_header_with_our_token(ocpi_peer):
    connection = connection_to(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [tariff(f"T{i:03d}") for i in range(250)], max_limit=100, path=PATH)

    run = pull.pull_tariffs(connection.pk)

    assert (run.status, run.full, run.pages, run.stored, run.rejected) == ("succeeded", True, 3, 250, 0), run.error
    assert feed.served_pages == 3
    assert Tariff.objects.filter(party=connection.party, source=connection).count() == 250
    first, *rest = ocpi_peer.requests
    assert first.query["limit"] == "1000" and "date_from" not in first.query and first.query["date_to"]
    assert [r.query["offset"] for r in rest] == ["100", "200"]
    assert first.header("Authorization") == authorization_header(TOKEN_TO_THEM)
    connection.refresh_from_db()
    assert connection.last_contact_at is not None


@pytest.mark.django_db
def test_bad_objects_are_rejected_alone_with_their_reason(ocpi_peer):
    connection = connection_to(ocpi_peer)
    bad_price = tariff("BAD1")
    bad_price["elements"][0]["price_components"][1]["price"] = "0.25"
    no_elements = tariff("BAD2")
    del no_elements["elements"]
    page = [tariff("A1"), bad_price, tariff("X1", party_id="OTH"), no_elements, tariff("A2"), "not an object"]
    ocpi_peer.route("GET", PATH, lambda request: ok(page))

    run = pull.pull_tariffs(connection.pk)

    assert (run.status, run.stored, run.rejected) == ("succeeded", 2, 4)
    assert set(Tariff.objects.values_list("ocpi_id", flat=True)) == {"A1", "A2"}
    reasons = {reject["id"]: reject["error"] for reject in run.rejects}
    assert reasons["BAD1"].startswith("elements[0].price_components[1].price: must be a JSON number")
    assert reasons["BAD2"].startswith("elements:")
    assert "NL*OTH is not the sending party NL*ALL" in reasons["X1"]
    assert reasons[""].startswith("body: a Tariff must be a JSON object")


@pytest.mark.django_db
def test_a_delta_asks_from_the_last_successful_pull_and_a_full_pull_drops_what_is_gone(ocpi_peer):
    connection = connection_to(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [tariff("A1"), tariff("A2"), tariff("A3")], path=PATH)
    first = pull.pull_tariffs(connection.pk)
    assert (first.full, first.stored) == (True, 3)

    time.sleep(0.01)
    feed.objects = [tariff("A1", updated=stamp(), price=0.30), tariff("A3")]  # A1 changed, A2 gone
    delta = pull.pull_tariffs(connection.pk)
    assert delta.full is False and ocpi_peer.requests[-1].query["date_from"] == format_datetime(first.started_at)
    assert (delta.stored, delta.unchanged, delta.removed) == (1, 0, 0)  # the delta carries only A1
    assert Tariff.objects.get(ocpi_id="A1").document["elements"][0]["price_components"][1]["price"] == 0.30
    assert Tariff.objects.filter(ocpi_id="A2").exists()  # a delta never implies deletion

    full = pull.pull_tariffs(connection.pk, full=True)
    assert (full.full, full.stored, full.unchanged, full.removed) == (True, 0, 2, 1)
    assert set(Tariff.objects.values_list("ocpi_id", flat=True)) == {"A1", "A3"}


@pytest.mark.django_db
def test_a_failing_page_fails_the_run_keeps_earlier_pages_and_the_next_delta_starts_before_it(ocpi_peer):
    connection = connection_to(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [tariff(f"T{i}") for i in range(5)], max_limit=2, path=PATH)
    good = pull.pull_tariffs(connection.pk)
    feed.fail = {2: PeerResponse({"status_code": 3000, "status_message": "down"}, status=500)}
    feed.fail_times = {2: 5}
    feed.objects = [tariff(f"T{i}", updated=stamp()) for i in range(5)]

    failed = pull.pull_tariffs(connection.pk)

    assert failed.status == "failed" and "HTTP 500" in failed.error
    assert failed.pages == 1 and failed.stored == 2
    after = pull.pull_tariffs(connection.pk)
    assert after.date_from == good.started_at  # the failed run does not count


@pytest.mark.django_db
def test_a_hub_feed_keeps_only_the_cpos_confirmed_through_it(ocpi_peer):
    hub = connection_to(ocpi_peer, party_id="HUB", role="HUB")
    confirmed = PartyFactory(country_code="DE", party_id="ION")
    RoamingAgreementFactory(partner=confirmed, hub=hub.party)
    PartyFactory(country_code="DE", party_id="XXX")  # known, but no agreement through this hub
    LocationFeed(
        ocpi_peer,
        [tariff("I1", country_code="DE", party_id="ION"), tariff("X1", country_code="DE", party_id="XXX")],
        path=PATH,
    )

    run = pull.pull_tariffs(hub.pk)

    assert (run.stored, run.skipped, run.rejected) == (1, 1, 0)
    assert Tariff.objects.get().party == confirmed


@pytest.mark.django_db
def test_not_connected_or_without_a_sender_is_not_pulled(ocpi_peer):
    connection = connection_to(ocpi_peer)
    connection.endpoints = [{"identifier": "tariffs", "role": "RECEIVER", "url": ocpi_peer.url(PATH)}]
    connection.save()
    with pytest.raises(pull.PullNotPossible):
        pull.pull_tariffs(connection.pk)
    assert pull.connections_due() == []


@pytest.mark.django_db
def test_staff_pull_a_partners_tariffs_from_the_partners_list(client, ocpi_peer):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    connection = connection_to(ocpi_peer)
    LocationFeed(ocpi_peer, [tariff("A1")], path=PATH)

    response = client.post(
        "/admin/roaming/party/",
        {"action": "pull_tariffs_now", "_selected_action": [connection.party.pk]},
        follow=True,
    )

    said = [str(m) for m in response.context["messages"]]
    # The console records the job and, run in-process here, says what it did.
    assert f"{connection.party.name}: a pull of their tariffs: succeeded: 1 page(s), 1 tariff(s) stored" in said[0]
    assert TariffPull.objects.get(connection=connection).status == "succeeded"
    assert Tariff.objects.get().ocpi_id == "A1"
    runs = client.get("/admin/tariffs/tariffpull/")
    assert runs.status_code == 200 and connection.party.name in runs.content.decode()


def test_beat_runs_due_pulls_through_a_real_worker(ocpi_peer, redis_celery_worker, settings):
    """Beat's entry point queues each due partner's pull on Redis; a worker runs it; a partner pulled within
    the interval is not due again."""
    settings.TARIFFS_PULL_INTERVAL_MINUTES = 60
    connection = connection_to(ocpi_peer)
    LocationFeed(ocpi_peer, [tariff("A1"), tariff("A2")], path=PATH)
    assert "tariffs-dispatch-pulls" in celery_app.conf.beat_schedule

    queued = dispatch_tariff_pulls.delay().get(timeout=20)

    assert queued == [connection.pk]
    deadline = time.monotonic() + 20
    while not TariffPull.objects.filter(connection=connection, status="succeeded").exists():
        assert time.monotonic() < deadline, "the queued pull never ran"
        time.sleep(0.1)
    assert Tariff.objects.count() == 2
    assert pull.connections_due() == []  # pulled within the interval
    later = timezone.now() + dt.timedelta(minutes=61)
    assert pull.connections_due(later) == [(connection.pk, False)]  # due again, as a delta
    first = copy.copy(TariffPull.objects.get())
    assert first.full is True
