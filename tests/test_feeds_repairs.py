"""Real partners' feeds and pushes are not schema-clean: every usable station is kept, each repair is counted
per partner (with an example), and what a driver relies on (status, coordinates, connector type, power) is never
made up. Feeds are pulled from a real OCPI server on 127.0.0.1; pushes are PUT over HTTP to our receiver.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import requests
from django.core.cache import cache

from roaming.models import RepairCount
from roaming.ocpi.credentials import authorization_header
from stations import feeds
from stations.models import EVSE, Location, RejectedObject
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory, UserFactory
from tests.feeds_fixtures import cpo_connection, location, stamp
from tests.real_world_locations import REFUSALS, REPAIRS, ShapedFeed

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVER = "/ocpi/emsp/2.2.1/locations"
QUALITY_URL = "/admin/roaming/party/data-quality/"


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.FEEDS_RETRY_BACKOFF_S = 0.01
    settings.FEEDS_PAGE_RETRIES = 1
    cache.clear()


def expected_counts() -> Counter:
    return Counter(kind for case in REPAIRS for kind in case.kinds)


def repair_counts(channel: str) -> dict[str, int]:
    return dict(RepairCount.objects.filter(channel=channel).values_list("kind", "repaired"))


def check_examples(channel: str) -> None:
    examples = dict(RepairCount.objects.filter(channel=channel).values_list("kind", "example"))
    for case in REPAIRS:
        if case.expected_example:
            (kind,) = case.kinds
            example = examples[kind]
            # Each kind keeps one example, the latest: check it where the case is the only one of its kind.
            if expected_counts()[kind] == 1:
                assert example["object"] == case.ocpi_id
                assert example.items() >= case.expected_example.items(), (case.ocpi_id, example)


# --- through a feed ---------------------------------------------------------------------------------------------


def test_a_real_world_feed_keeps_every_usable_station_and_counts_each_repair(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    objects = [case.object() for case in REPAIRS] + [case.object() for case in REFUSALS]
    ShapedFeed(ocpi_peer, objects)

    run = feeds.pull_locations(conn.pk)

    assert (run.status, run.created, run.rejected) == ("succeeded", len(REPAIRS), len(REFUSALS)), run.error
    assert run.repaired == sum(1 for case in REPAIRS if case.kinds)
    for case in REPAIRS:
        stored = Location.objects.get(ocpi_id=case.ocpi_id)
        case.check(stored)
        assert stored.raw == next(o for o in objects if str(o["id"]) == case.ocpi_id)  # the original, as sent
    assert repair_counts("pull") == expected_counts()
    assert set(RepairCount.objects.values_list("party_id", flat=True)) == {conn.party_id}
    check_examples("pull")

    rejects = {r.object_id: r.error for r in RejectedObject.objects.filter(sync_run=run)}
    for case in REFUSALS:
        assert case.reason in rejects[case.ocpi_id], (case.ocpi_id, rejects[case.ocpi_id])
        assert not Location.objects.filter(ocpi_id=case.ocpi_id).exists()
    # The invalid EVSE of a kept location is rejected alone, with its reason, for staff.
    assert "at least one connector is required" in rejects["R-ONE-BAD-EVSE/R-ONE-BAD-EVSE-2"]
    assert "location R-ONE-BAD-EVSE was kept" in rejects["R-ONE-BAD-EVSE/R-ONE-BAD-EVSE-2"]


def test_the_two_dutch_stations_no_longer_pass_the_power_filters_as_megawatt_chargers(ocpi_peer, client):
    conn = cpo_connection(ocpi_peer)
    dutch = [case.object() for case in REPAIRS if case.ocpi_id.startswith("R-DUTCH")]
    ShapedFeed(ocpi_peer, dutch)

    assert feeds.pull_locations(conn.pk).repaired == 2

    assert sorted(Location.objects.values_list("max_power_kw", flat=True)) == [7.4, 7.6]
    assert not Location.objects.filter(max_power_kw__gte=50).exists()


def test_an_unchanged_repaired_feed_writes_no_station_rows_and_counts_its_repairs_again(ocpi_peer):
    conn = cpo_connection(ocpi_peer)
    ShapedFeed(ocpi_peer, [case.object() for case in REPAIRS])
    feeds.pull_locations(conn.pk, full=True)
    hashes = dict(Location.objects.values_list("ocpi_id", "content_hash"))

    second = feeds.pull_locations(conn.pk, full=True)

    assert (second.status, second.created, second.updated, second.removed) == ("succeeded", 0, 0, 0), second.error
    assert second.unchanged == len(REPAIRS)
    assert second.repaired == sum(1 for case in REPAIRS if case.kinds)
    assert repair_counts("pull") == {kind: 2 * count for kind, count in expected_counts().items()}
    assert dict(Location.objects.values_list("ocpi_id", "content_hash")) == hashes


def test_a_hubs_feed_counts_repairs_for_the_cpo_that_owns_the_station(ocpi_peer):
    hub = cpo_connection(ocpi_peer, country_code="DE", party_id="HUB", role="HUB")
    owner = PartyFactory(country_code="NL", party_id="ALL")
    RoamingAgreementFactory(partner=owner, hub=hub.party)  # a hub's feed carries only its confirmed clients
    ShapedFeed(ocpi_peer, [next(case for case in REPAIRS if case.ocpi_id == "R-NO-COUNTRY").object()])

    run = feeds.pull_locations(hub.pk)

    assert (run.created, run.repaired) == (1, 1), run.error
    assert list(RepairCount.objects.values_list("party", "kind", "repaired")) == [(owner.pk, "country_derived", 1)]


# --- through a push ---------------------------------------------------------------------------------------------


@pytest.fixture
def pushing_cpo():
    party = PartyFactory(country_code="NL", party_id="ALL")
    RoamingAgreementFactory(partner=party)
    return PartnerConnectionFactory(party=party, tokens__from_them="all-token", tokens__to_them="to-all")


def push(live_server, method: str, path: str, body) -> tuple[int, dict]:
    response = requests.request(
        method,
        live_server.url + RECEIVER + path,
        json=body,
        headers={"Authorization": authorization_header("all-token")},
        timeout=10,
    )
    return response.status_code, response.json()


@pytest.mark.parametrize("case", REPAIRS, ids=[case.ocpi_id for case in REPAIRS])
def test_a_pushed_location_is_repaired_and_counted(live_server, pushing_cpo, case):
    status, answer = push(live_server, "PUT", f"/NL/ALL/{case.ocpi_id}", case.object())

    assert (status, answer["status_code"]) == (201, 1000), answer
    case.check(Location.objects.get(ocpi_id=case.ocpi_id, party=pushing_cpo.party))
    assert repair_counts("push") == dict.fromkeys(case.kinds, 1)
    assert not RepairCount.objects.filter(channel="pull").exists()
    if case.ocpi_id == "R-ONE-BAD-EVSE":  # the partner is told which EVSE we did not keep, and why
        assert "evses[1].connectors: at least one connector is required" in answer["status_message"]


@pytest.mark.parametrize("case", REFUSALS, ids=[case.ocpi_id for case in REFUSALS])
def test_a_pushed_location_a_driver_could_not_rely_on_is_refused(live_server, pushing_cpo, case):
    status, answer = push(live_server, "PUT", f"/NL/ALL/{case.ocpi_id}", case.object())

    assert (status, answer["status_code"]) == (400, 2001), answer
    assert case.reason in answer["status_message"]
    assert not Location.objects.exists() and not RepairCount.objects.exists()


def test_a_pushed_evse_that_is_invalid_is_refused_and_the_location_is_unchanged(live_server, pushing_cpo):
    push(live_server, "PUT", "/NL/ALL/P1", location("P1", updated=stamp()))
    before = Location.objects.get()
    evse = dict(location("P1")["evses"][0], connectors=[], last_updated=stamp())

    status, answer = push(live_server, "PUT", "/NL/ALL/P1/P1-1", evse)

    assert (status, answer["status_code"]) == (400, 2001)
    assert "connectors: at least one connector is required" in answer["status_message"]
    after = Location.objects.get()
    assert (after.content_hash, after.raw) == (before.content_hash, before.raw)
    assert EVSE.objects.get().status == "AVAILABLE"


def test_a_pushed_evse_and_a_patch_are_repaired_and_nulls_in_a_patch_change_nothing(live_server, pushing_cpo):
    push(live_server, "PUT", "/NL/ALL/P1", location("P1", updated=stamp()))
    evse = location("P1")["evses"][0]
    evse.update(status="available", last_updated=stamp())

    status, answer = push(live_server, "PUT", "/NL/ALL/P1/P1-1", evse)
    assert (status, answer["status_code"]) == (200, 1000), answer

    status, answer = push(
        live_server,
        "PATCH",
        "/NL/ALL/P1",
        {"name": None, "postal_code": None, "opening_times": None, "last_updated": stamp()},
    )
    assert (status, answer["status_code"]) == (200, 1000), answer
    stored = Location.objects.get()
    assert (stored.name, stored.postal_code, stored.opening_times) == ("Site P1", "3511", {"twentyfourseven": True})
    assert EVSE.objects.get().status == "AVAILABLE"
    # Each push is checked as the whole location it makes: the PATCH met the repaired status again.
    assert repair_counts("push") == {"enum_case": 2}


# --- the data-quality page ----------------------------------------------------------------------------------------


def test_the_data_quality_page_shows_what_share_was_repaired_and_the_most_frequent_repairs(ocpi_peer, client):
    conn = cpo_connection(ocpi_peer)
    conn.party.name = "Shaped Feeds BV"
    conn.party.save()
    objects = [case.object() for case in REPAIRS] + [case.object() for case in REFUSALS]
    ShapedFeed(ocpi_peer, objects)
    run = feeds.pull_locations(conn.pk)
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    response = client.get(QUALITY_URL)

    assert response.status_code == 200
    (quality,) = [q for q in response.context["qualities"] if q.party == conn.party]
    processed = run.created + run.rejected
    assert (quality.repaired_last_sync, quality.rejected_last_sync) == (run.repaired, len(REFUSALS))
    assert quality.repaired_share == pytest.approx(run.repaired / processed)
    top = [(r.kind, r.objects) for r in quality.repairs]
    assert top == [("enum_case", 2), ("last_updated_derived", 2), ("power_implausible", 2)]
    html = response.content.decode()
    row = re.search(r"<tr>\s*<td><a[^>]*>Shaped Feeds BV.*?</tr>", html, re.S).group(0)
    share = round(100 * run.repaired / processed)
    assert f"{run.repaired} ({share}%)" in row and f"{len(REFUSALS)} (" in row
    assert "<th>Repaired</th>" in html
    assert "max_electric_power implausible (derived value kept): <strong>2</strong>" in row
    assert "sent <code>7590000</code>" in row or "sent <code>7360000</code>" in row
