"""The staff console in the Django admin: the partners list, its actions, data quality, history."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header, decrypt_token, hash_token
from stations.models import RejectedObject
from tests.conftest import ocpi_call
from tests.factories import (
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SyncRunFactory,
    UserFactory,
)
from tests.ocpi_peer import PeerResponse, ok

PARTNERS_URL = "/admin/roaming/party/"
QUALITY_URL = "/admin/roaming/party/data-quality/"


@pytest.fixture
def staff(client):
    user = UserFactory(username="stella", is_staff=True, is_superuser=True)
    client.force_login(user)
    return user


def partner_with_feed(name: str, party_id: str, *, stations: int = 2, rejected: int = 0, **connection) -> Party:
    party = PartyFactory(name=name, party_id=party_id)
    conn = PartnerConnectionFactory(party=party, **connection)
    RoamingAgreementFactory(partner=party)
    for _ in range(stations):
        EVSEFactory(location=LocationFactory(party=party, source=conn))
    SyncRunFactory(connection=conn, rejected=rejected, updated=stations)
    return party


def action(client, name: str, parties, **extra):
    return client.post(
        PARTNERS_URL, {"action": name, "_selected_action": [p.pk for p in parties], **extra}, follow=True
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- access ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", [PARTNERS_URL, QUALITY_URL, "/admin/roaming/partnerconnection/"])
def test_anonymous_and_non_staff_users_are_refused(client, url):
    assert client.get(url).status_code == 302  # to the admin login
    client.force_login(UserFactory(is_staff=False))
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_staff_without_roaming_permissions_is_refused(client):
    client.force_login(UserFactory(is_staff=True))
    assert client.get(PARTNERS_URL).status_code == 403
    assert client.get(QUALITY_URL).status_code == 403


# --- the partners list -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_partners_list_shows_role_connection_last_sync_stations_and_open_errors(client, staff):
    allego = partner_with_feed("Allego", "ALL", stations=3, rejected=2)
    conn = allego.connection
    conn.last_error = "Handshake failed (OCPI 3001) at versions: transport"
    conn.save()
    hub = PartnerConnectionFactory(party=PartyFactory(name="Hubject", party_id="HBJ", role=Party.Role.HUB))
    PartnerConnectionFactory(
        party=PartyFactory(name="Ionity", party_id="ION"), via_hub=hub, hub_client_status="OFFLINE"
    )
    PartyFactory(name="Q8", party_id="Q8C")  # no connection yet

    response = client.get(PARTNERS_URL)
    assert response.status_code == 200
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert rows["Allego"].station_count == 3 and rows["Allego"].last_sync_at is not None
    html = response.content.decode()
    allego_row = re.search(r"<tr[^>]*>.*?Allego.*?</tr>", html, re.S).group(0)
    assert "NL*ALL" in allego_row and "Charge point operator" in allego_row and "Connected" in allego_row
    assert ">3<" in allego_row.replace("</td>", "<")
    assert "2 rejected in last sync" in allego_row and ">3</span>" in allego_row  # 2 rejects + the connection error
    assert "Connected via Hubject (hub: OFFLINE)" in html
    assert "Partner data quality" in html


@pytest.mark.django_db
def test_partners_list_query_count_does_not_grow_with_partners(client, staff):
    def count_queries() -> int:
        with CaptureQueriesContext(db_connection) as queries:
            assert client.get(PARTNERS_URL).status_code == 200
        return len(queries)

    for index in range(3):
        partner_with_feed(f"Small {index}", f"S{index:02d}", rejected=1)
    few = count_queries()
    for index in range(20):
        partner_with_feed(f"Large {index}", f"L{index:02d}", rejected=1)
    assert count_queries() == few


@pytest.mark.django_db
def test_partners_list_query_budget(client, staff, django_assert_max_num_queries):
    for index in range(10):
        partner_with_feed(f"Partner {index}", f"P{index:02d}")
    with django_assert_max_num_queries(12):
        client.get(PARTNERS_URL)


@pytest.mark.django_db
def test_partners_list_filters_and_search(client, staff):
    allego = partner_with_feed("Allego", "ALL")
    partner_with_feed("Fastned", "FST", status=PartnerConnection.Status.SUSPENDED)
    hub = PartnerConnectionFactory(party=PartyFactory(name="Hubject", party_id="HBJ", role=Party.Role.HUB))
    PartnerConnectionFactory(party=PartyFactory(name="Ionity", party_id="ION"), via_hub=hub)
    RoamingAgreement.objects.filter(partner=allego).update(status=RoamingAgreement.Status.ENDED)

    def names(query: str) -> set[str]:
        return {p.name for p in client.get(PARTNERS_URL + query).context["cl"].result_list}

    assert names("?connection_status=suspended") == {"Fastned"}
    assert names("?reached=hub") == {"Ionity"}
    assert names("?role=HUB") == {"Hubject"}
    assert names("?agreement_status=ended") == {"Allego"}
    assert names("?q=fastn") == {"Fastned"}
    assert names("?q=ION") == {"Ionity"}


@pytest.mark.django_db
def test_partner_page_has_connection_and_agreement_inlines(client, staff):
    allego = partner_with_feed("Allego", "ALL")
    allego.connection.handshake_log = [
        {"step": "versions", "ok": False, "detail": "timeout", "at": "2026-01-01T00:00:00Z"}
    ]
    allego.connection.save()
    response = client.get(f"{PARTNERS_URL}{allego.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Roaming agreements" in html and 'name="agreements-0-direction"' in html
    assert 'name="connection-0-versions_url"' in html
    assert "✘ <strong>versions</strong> timeout" in html
    assert "token_from_them_hash" not in html and "token_to_them_encrypted" not in html


# --- actions ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_issue_registration_token_shows_it_once_and_stores_only_its_hash(client, staff):
    party = PartyFactory(name="Newcomer", party_id="NEW")
    response = client.post(PARTNERS_URL, {"action": "issue_registration_token", "_selected_action": [party.pk]})
    assert response.status_code == 200
    token = re.search(r'class="registration-token">([^<]+)<', response.content.decode()).group(1)
    connection = PartnerConnection.objects.get(party=party)
    assert connection.registration_token_hash == hash_token(token)
    assert connection.status == PartnerConnection.Status.PLANNED
    assert "/ocpi/versions" in response.content.decode()
    # Token A opens versions and credentials only.
    assert ocpi_call(client, "GET", "/ocpi/versions", token=token).status_code == 200
    # Never in a message (cookie) or in the next page.
    assert token not in client.get(PARTNERS_URL).content.decode()


@pytest.mark.django_db(transaction=True)
def test_connect_action_asks_for_token_a_then_registers_us_at_the_partner(
    client, staff, live_server, settings, ocpi_peer
):
    from tests.test_credentials_handshake import PeerParty

    settings.OCPI_BASE_URL = live_server.url
    peer = PeerParty(ocpi_peer)
    peer.accepted = {"token-a-from-peer"}
    party = PartyFactory(name="Peer", country_code="NL", party_id="PEE")

    form = client.post(PARTNERS_URL, {"action": "connect", "_selected_action": [party.pk]})
    assert form.status_code == 200 and 'name="token_a"' in form.content.decode()

    response = action(
        client, "connect", [party], apply="1", versions_url=peer.versions_url, token_a="token-a-from-peer"
    )
    assert any("Connecting to Peer" in m for m in messages_of(response))
    connection = PartnerConnection.objects.get(party=party)
    assert connection.status == PartnerConnection.Status.CONNECTED
    assert decrypt_token(connection.token_to_them_encrypted) == "peer-token-C1"
    assert connection.history.first().history_user == staff


@pytest.mark.django_db
def test_connect_action_failure_is_recorded_and_token_a_is_not_kept(client, staff):
    party = PartyFactory(name="Broken", party_id="BRK")
    action(client, "connect", [party], apply="1", versions_url="http://127.0.0.1:9/ocpi/versions", token_a="secret-a")
    connection = PartnerConnection.objects.get(party=party)
    assert connection.status == PartnerConnection.Status.PLANNED
    assert connection.last_error.startswith("Handshake failed (OCPI 3001) at versions")
    assert connection.token_to_them_encrypted == "" and connection.registration_token_hash == ""
    stored = str(list(PartnerConnection.objects.values())) + str(list(PartnerConnection.history.values()))
    assert "secret-a" not in stored


@pytest.mark.django_db
def test_connect_action_refuses_hub_clients_and_several_partners(client, staff):
    hub = PartnerConnectionFactory(party=PartyFactory(role=Party.Role.HUB))
    via_hub = PartnerConnectionFactory(via_hub=hub)
    response = action(client, "connect", [via_hub.party])
    assert any("through a hub" in m for m in messages_of(response))
    response = action(client, "connect", [hub.party, via_hub.party])
    assert any("one partner at a time" in m for m in messages_of(response))


@pytest.mark.django_db
def test_test_connection_shows_latency_or_the_failure(client, staff, ocpi_peer):
    ocpi_peer.route("GET", r"/ocpi/versions", lambda r: ok([{"version": "2.2.1", "url": "x"}]))
    ocpi_peer.route("GET", r"/broken/versions", lambda r: PeerResponse(raw=b"<html>", status=502))
    good = partner_with_feed("Good", "GOO", versions_url=ocpi_peer.url("/ocpi/versions"), tokens__to_them="tok")
    bad = partner_with_feed("Bad", "BAD", versions_url=ocpi_peer.url("/broken/versions"), tokens__to_them="tok")
    unregistered = partner_with_feed("Planned", "PLN", status=PartnerConnection.Status.PLANNED)

    found = messages_of(action(client, "test_connection", [good, bad, unregistered]))

    assert any(re.fullmatch(r"Good: OK in \d+ ms \(versions offered: 2\.2\.1\)", m) for m in found), found
    assert any(m.startswith("Bad: failed: http") and "502" in m for m in found), found
    assert "Planned: failed: not registered: no versions URL or token" in found
    assert ocpi_peer.requests[0].header("Authorization") == authorization_header("tok")
    good.connection.refresh_from_db()
    assert good.connection.last_contact_at is not None


@pytest.mark.django_db
def test_suspend_and_resume_change_status_and_keep_history(client, staff):
    allego = partner_with_feed("Allego", "ALL", tokens__from_them="allego-token")
    action(client, "suspend", [allego])
    allego.connection.refresh_from_db()
    assert allego.connection.status == PartnerConnection.Status.SUSPENDED
    assert ocpi_call(client, "GET", "/ocpi/versions", token="allego-token").status_code == 403
    action(client, "resume", [allego])
    allego.connection.refresh_from_db()
    assert allego.connection.status == PartnerConnection.Status.CONNECTED
    assert ocpi_call(client, "GET", "/ocpi/versions", token="allego-token").status_code == 200

    history = client.get(f"/admin/roaming/partnerconnection/{allego.connection.pk}/history/").content.decode()
    assert history.count("stella") >= 2
    assert re.search(r"(?i)<strong>status:</strong>\s*connected\s*&nbsp;&rarr;&nbsp;&nbsp;suspended", history)


@pytest.mark.django_db
def test_resume_without_tokens_goes_back_to_planned(client, staff):
    party = partner_with_feed("Fresh", "FRS", status=PartnerConnection.Status.SUSPENDED)
    action(client, "resume", [party])
    party.connection.refresh_from_db()
    assert party.connection.status == PartnerConnection.Status.PLANNED


@pytest.mark.django_db
def test_agreement_and_party_history_shows_who_when_what(client, staff):
    agreement = RoamingAgreementFactory(partner=PartyFactory(name="Fastned", party_id="FST"))
    response = client.post(
        f"/admin/roaming/roamingagreement/{agreement.pk}/change/",
        {
            "partner": agreement.partner.pk,
            "direction": agreement.direction,
            "valid_from": agreement.valid_from.isoformat(),
            "valid_until": (timezone.localdate() + dt.timedelta(days=10)).isoformat(),
            "status": RoamingAgreement.Status.ENDED,
            "hub": "",
            "notes": "Ended by mutual consent",
        },
    )
    assert response.status_code == 302
    record = agreement.history.first()
    assert record.history_user == staff and record.history_type == "~"
    page = client.get(f"/admin/roaming/roamingagreement/{agreement.pk}/history/").content.decode()
    assert "stella" in page and "Changed" in page
    assert re.search(r"(?i)<strong>status:</strong>\s*active\s*&nbsp;&rarr;&nbsp;&nbsp;ended", page)
    assert "Ended by mutual consent" in page

    party = agreement.partner
    party.name = "Fastned BV"
    party.save()  # outside a request: recorded without a user
    page = client.get(f"{PARTNERS_URL}{party.pk}/history/").content.decode()
    assert "Fastned BV" in page and "<strong>Name:</strong>" in page


# --- data quality ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_data_quality_ranks_worst_partners_first_with_table_and_chart(client, staff):
    now = timezone.now()
    good = PartyFactory(name="Good Data", party_id="GOO")
    good_connection = PartnerConnectionFactory(party=good)
    for _ in range(4):
        location = LocationFactory(party=good, opening_times={"twentyfourseven": True}, status_updated_at=now)
        EVSEFactory(location=location, status="AVAILABLE", status_changed_at=now, parking_restrictions=["EV_ONLY"])
    SyncRunFactory(connection=good_connection, updated=4)

    poor = PartyFactory(name="Poor Data", party_id="POO")
    poor_connection = PartnerConnectionFactory(party=poor)
    for index in range(4):
        location = LocationFactory(party=poor, address="#NA" if index else "Real street 1")
        EVSEFactory(
            location=location, status="UNKNOWN" if index else "CHARGING", status_changed_at=now - dt.timedelta(hours=5)
        )
    SyncRunFactory(connection=poor_connection, started_at=now - dt.timedelta(days=1), rejected=0, updated=4)
    last = SyncRunFactory(connection=poor_connection, rejected=1, updated=3)
    RejectedObject.objects.create(sync_run=last, connection=poor_connection, error="bad", payload={})

    empty_cpo = PartnerConnectionFactory(party=PartyFactory(name="No Stations CPO", party_id="NOS"))
    PartnerConnectionFactory(party=PartyFactory(name="Pure eMSP", party_id="EMP", role=Party.Role.EMSP))

    response = client.get(QUALITY_URL)
    assert response.status_code == 200
    qualities = response.context["qualities"]
    # A partner without stations has no station data yet: shown apart, not ranked as the worst.
    assert [q.party.name for q in qualities] == ["Poor Data", "Good Data"]
    assert [q.party.name for q in response.context["without_data"]] == ["No Stations CPO"]
    poor_quality = qualities[0]
    assert (poor_quality.with_address, poor_quality.with_live_status) == (0.25, 0.25)
    assert (poor_quality.status_fresh, poor_quality.with_access_data) == (0.0, 0.0)
    assert poor_quality.rejected_last_sync == 1 and poor_quality.rejected_share == 0.25
    assert qualities[1].score == 1.0
    assert empty_cpo.party.name == response.context["without_data"][0].party.name

    html = response.content.decode()
    content = html[html.index('<div id="content"') :]
    assert "<svg" in content and "<script" not in content  # our page adds no JavaScript
    assert html.index("Poor Data") < html.index("Good Data")
    poor_row = re.search(r"<tr>\s*<td><a[^>]*>Poor Data.*?</tr>", html, re.S).group(0)
    assert re.findall(r"(\d+)%<div", poor_row) == ["25", "25", "0", "0"]
    assert "1 (25%)" in poor_row


@pytest.mark.django_db
def test_data_quality_query_count_is_flat(client, staff, django_assert_max_num_queries):
    for index in range(8):
        partner_with_feed(f"Partner {index}", f"Q{index:02d}", stations=3, rejected=index % 2)
    with django_assert_max_num_queries(12):
        assert client.get(QUALITY_URL).status_code == 200


@pytest.mark.django_db
def test_connection_history_says_a_token_changed_but_never_shows_it(client, staff):
    party = PartyFactory(name="Newcomer", party_id="NEW")
    client.post(PARTNERS_URL, {"action": "issue_registration_token", "_selected_action": [party.pk]})
    client.post(PARTNERS_URL, {"action": "issue_registration_token", "_selected_action": [party.pk]})
    connection = PartnerConnection.objects.get(party=party)
    page = client.get(f"/admin/roaming/partnerconnection/{connection.pk}/history/").content.decode()
    assert re.search(r"(?i)<strong>registration token hash:</strong>\s*set\s*&nbsp;&rarr;&nbsp;&nbsp;replaced", page)
    assert connection.registration_token_hash not in page
    assert "stella" in page


@pytest.mark.django_db
def test_rotate_and_unregister_actions_say_why_they_cannot_run_before_sending_anything(client, staff):
    party = partner_with_feed("Planned", "PLN", status=PartnerConnection.Status.PLANNED)
    for name in ("rotate_tokens", "unregister"):
        found = messages_of(action(client, name, [party]))
        assert found == [
            "Planned: not done: not registered directly with this partner: we hold no token for their side "
            "(Connect first). Nothing was sent."
        ]
        party.connection.refresh_from_db()
        assert party.connection.last_error == ""  # checked before queueing: nothing ran, nothing failed
        assert party.connection.status == PartnerConnection.Status.PLANNED


@pytest.mark.django_db
def test_staff_edit_agreement_inline_on_the_partner_page_is_in_history(client, staff):
    party = partner_with_feed("Allego", "ALL")
    agreement = party.agreements.get()
    connection = party.connection
    data = {
        "name": "Allego",
        "country_code": "NL",
        "party_id": "ALL",
        "role": Party.Role.CPO,
        "website": "",
        "logo_url": "",
        "connection-TOTAL_FORMS": "1",
        "connection-INITIAL_FORMS": "1",
        "connection-MIN_NUM_FORMS": "0",
        "connection-MAX_NUM_FORMS": "1",
        "connection-0-id": connection.pk,
        "connection-0-party": party.pk,
        "connection-0-status": "connected",
        "connection-0-via_hub": "",
        "connection-0-versions_url": "https://ocpi.allego.example/ocpi/versions",
        "connection-0-location_pull_interval_minutes": "30",
        "agreements-TOTAL_FORMS": "1",
        "agreements-INITIAL_FORMS": "1",
        "agreements-MIN_NUM_FORMS": "0",
        "agreements-MAX_NUM_FORMS": "1000",
        "agreements-0-id": agreement.pk,
        "agreements-0-partner": party.pk,
        "agreements-0-direction": agreement.direction,
        "agreements-0-status": RoamingAgreement.Status.SUSPENDED,
        "agreements-0-valid_from": agreement.valid_from.isoformat(),
        "agreements-0-valid_until": "",
        "agreements-0-hub": "",
        "agreements-0-notes": "Paused while invoices are disputed",
    }
    response = client.post(f"{PARTNERS_URL}{party.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"] if response.context else response
    agreement.refresh_from_db()
    connection.refresh_from_db()
    assert agreement.status == RoamingAgreement.Status.SUSPENDED
    assert connection.location_pull_interval_minutes == 30
    assert agreement.history.first().history_user == staff
    assert connection.history.first().history_user == staff
    page = client.get(f"/admin/roaming/roamingagreement/{agreement.pk}/history/").content.decode()
    assert "stella" in page and "Paused while invoices are disputed" in page


@pytest.mark.django_db(transaction=True)
def test_pull_locations_now_pulls_the_partners_feed(client, staff, ocpi_peer):
    from stations.models import Location, SyncRun
    from tests.feeds_fixtures import location

    party = PartyFactory(name="Allego", country_code="NL", party_id="ALL")
    RoamingAgreementFactory(partner=party)
    PartnerConnectionFactory(
        party=party,
        endpoints=[{"identifier": "locations", "role": "SENDER", "url": ocpi_peer.url("/ocpi/cpo/2.2.1/locations")}],
        tokens__to_them="token-for-allego",
    )
    ocpi_peer.route("GET", r"/ocpi/cpo/2.2.1/locations", lambda r: ok([location("A1"), location("A2")]))

    response = action(client, "pull_locations_now", [party])

    assert messages_of(response) == [
        "Allego: a full pull of their locations (every location; those missing from it are removed): "
        "succeeded: 1 page(s), 2 object(s) stored (2 new, 0 changed), 0 removed, 0 rejected."
    ]
    run = SyncRun.objects.get(connection__party=party)
    assert (run.status, run.created) == ("succeeded", 2)
    assert set(Location.objects.filter(party=party).values_list("ocpi_id", flat=True)) == {"A1", "A2"}
    assert ocpi_peer.requests[0].header("Authorization") == authorization_header("token-for-allego")
