"""Hub takeover: nobody outside acts as MobilityPlus itself, and a hub acts only for parties attached to it
that staff confirmed (an agreement in force with that party through that hub).

Each test plays the attack that used to work, over real HTTP against `live_server`, and checks that the
answer is HTTP 403 with an OCPI 2000-series envelope and that nothing stored changed.
"""

from __future__ import annotations

import importlib

import pytest
import requests
from django.apps import apps as django_apps

from cards.authorization import card_directory
from cards.models import ForeignToken
from charging.models import CDR, Session
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.selectors import own_party
from stations.models import EVSE, Location
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)
from tests.feeds_fixtures import example, location, stamp

pytestmark = pytest.mark.django_db(transaction=True)

OCPI_TOKEN = "hub-token"  # the hub (fixture `hub`) calls unless a test says otherwise

BACKEND_TOKEN = "backend-token-for-hub-tests"


@pytest.fixture(autouse=True)
def _backend(settings):
    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    yield
    card_directory.clear()


@pytest.fixture
def hub():
    """DE*HBJ, a hub with one legitimate client FR*TOT (agreed through the hub)."""
    hub = PartnerConnectionFactory(
        party=PartyFactory(country_code="DE", party_id="HBJ", role=Party.Role.HUB, name="Hubject"),
        tokens__from_them="hub-token",
    )
    client = PartyFactory(country_code="FR", party_id="TOT", role=Party.Role.CPO)
    PartnerConnectionFactory(party=client, via_hub=hub)
    RoamingAgreementFactory(partner=client, hub=hub.party)
    return hub


@pytest.fixture
def our_station():
    """One of our own stations, as the map and our CPO locations feed serve it."""
    station = LocationFactory(party=own_party(), ocpi_id="BE-BRU-1", city="Brussel", name="Grand-Place")
    evse = EVSEFactory(location=station, uid="BE*MBP*E0001", status="AVAILABLE")
    ConnectorFactory(evse=evse)
    return station


def routed(country_code: str, party_id: str) -> dict[str, str]:
    return {"OCPI-from-country-code": country_code, "OCPI-from-party-id": party_id}


def client_info(country_code: str, party_id: str, role: str = "CPO", status: str = "CONNECTED") -> dict:
    return {
        "country_code": country_code,
        "party_id": party_id,
        "role": role,
        "status": status,
        "last_updated": "2026-01-01T10:00:00Z",
    }


def assert_refused(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    assert 2000 <= response.json()["status_code"] < 3000


def forged_station() -> dict:
    body = location("BE-BRU-1", country_code="BE", party_id="MBP", statuses=("OUTOFORDER",), updated=stamp())
    body["city"] = "Nowhere"
    body["evses"][0]["uid"] = "FAKE-1"
    return body


def station_state(station: Location) -> tuple:
    station.refresh_from_db()
    evses = sorted(EVSE.objects.filter(location=station).values_list("uid", "status"))
    return station.city, evses, Location.objects.filter(party=own_party()).count()


def test_a_hub_cannot_make_our_own_party_its_client_nor_rewrite_our_stations(ocpi_live, hub, our_station):
    before = station_state(our_station)
    me = own_party()

    # The attack: ClientInfo about BE*MBP, then the hub "speaks for" us.
    assert_refused(ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/BE/MBP", client_info("BE", "MBP")))
    assert not PartnerConnection.objects.filter(party=me).exists()
    assert_refused(ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/be/mbp", client_info("be", "mbp")))

    url = "/ocpi/emsp/2.2.1/locations/BE/MBP/BE-BRU-1"
    assert_refused(ocpi_live("PUT", url, forged_station(), routing=routed("BE", "MBP")))
    status_patch = {"status": "REMOVED", "last_updated": stamp()}
    assert_refused(ocpi_live("PATCH", url + "/BE*MBP*E0001", status_patch, routing=routed("BE", "MBP")))
    assert_refused(ocpi_live("PUT", url, forged_station(), routing=routed("be", "mbp")))  # CiString
    assert station_state(our_station) == before

    # A via-hub row for our party left by the old code changes nothing: still refused.
    PartnerConnection.objects.create(party=me, via_hub=hub, status=PartnerConnection.Status.CONNECTED)
    RoamingAgreementFactory(partner=me, hub=hub.party)
    assert_refused(ocpi_live("PUT", url, forged_station(), routing=routed("BE", "MBP")))
    assert station_state(our_station) == before

    # Our CPO locations feed still serves the real station.
    partner = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="ALL"), tokens__from_them="p")
    RoamingAgreementFactory(partner=partner.party)
    feed = ocpi_live("GET", "/ocpi/cpo/2.2.1/locations", token="p").json()["data"]
    assert [(item["city"], [e["status"] for e in item["evses"]]) for item in feed] == [("Brussel", ["AVAILABLE"])]


def test_the_migration_detaches_our_party_from_a_hub(hub):
    me = own_party()
    PartnerConnection.objects.create(party=me, via_hub=hub, status=PartnerConnection.Status.CONNECTED)
    migration = importlib.import_module("roaming.migrations.0003_partner_data_version")
    migration.detach_our_party_from_hubs(django_apps, None)
    left = PartnerConnection.objects.get(party=me)
    assert left.via_hub is None and left.status == PartnerConnection.Status.DISCONNECTED


def test_nobody_writes_our_objects_or_speaks_as_us(ocpi_live, hub, our_station):
    """A direct partner, or a hub without routing headers, naming our party in the URL or the object."""
    partner = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO_EMSP), tokens__from_them="p"
    )
    RoamingAgreementFactory(partner=partner.party)
    card = CardFactory()
    token = example("token_example_2_full_rfid.json") | {"country_code": "BE", "party_id": "MBP"}
    for who in ({"token": "p"}, {"token": "hub-token"}):
        for headers in ({}, routed("BE", "MBP")):
            assert_refused(
                ocpi_live("PUT", f"/ocpi/cpo/2.2.1/tokens/BE/MBP/{token['uid']}", token, **who, routing=headers)
            )
            session = example("session_example_1_simple_start.json") | {"country_code": "BE", "party_id": "MBP"}
            assert_refused(ocpi_live("PUT", "/ocpi/emsp/2.2.1/sessions/BE/MBP/101", session, **who, routing=headers))
            cdr = example("cdr_example.json") | {"country_code": "BE", "party_id": "MBP"}
            assert_refused(ocpi_live("POST", "/ocpi/emsp/2.2.1/cdrs", cdr, **who, routing=headers))
        # Speaking as us on a read or an authorization is refused too.
        assert_refused(
            ocpi_live("POST", f"/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize", **who, routing=routed("BE", "MBP"))
        )
    assert not ForeignToken.objects.exists() and not Session.objects.exists() and not CDR.objects.exists()


def test_a_hub_cannot_push_tokens_for_an_emsp_it_does_not_reach(ocpi_live, live_server, hub, our_station):
    """The attack: another eMSP we agreed with directly, without a connection row yet, claimed by a hub."""
    emsp = PartyFactory(country_code="NL", party_id="EMS", role=Party.Role.EMSP)
    RoamingAgreementFactory(partner=emsp, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    token = example("token_example_2_full_rfid.json") | {"country_code": "NL", "party_id": "EMS", "whitelist": "ALWAYS"}
    url = f"/ocpi/cpo/2.2.1/tokens/NL/EMS/{token['uid']}"

    # The ClientInfo is recorded (the hub may report on it), but gives the hub no rights.
    assert ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/NL/EMS", client_info("NL", "EMS", "EMSP")).status_code == 201
    assert PartnerConnection.objects.get(party=emsp).via_hub == hub
    assert_refused(ocpi_live("PUT", url, token, routing=routed("NL", "EMS")))
    assert not ForeignToken.objects.exists()

    def authorize() -> dict:
        body = {"uid": token["uid"], "location_id": "BE-BRU-1", "evse_uid": "BE*MBP*E0001"}
        headers = {"Authorization": f"Bearer {BACKEND_TOKEN}"}
        return requests.post(live_server.url + "/api/v1/authorizations", json=body, headers=headers, timeout=10).json()

    assert authorize()["allowed"] == "NOT_ALLOWED" and authorize()["path"] == "unknown"

    # Staff confirm the client: an agreement with it through this hub. Now the hub may act for it.
    RoamingAgreementFactory(
        partner=emsp, hub=hub.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
    )
    assert ocpi_live("PUT", url, token, routing=routed("NL", "EMS")).status_code == 201
    assert authorize()["allowed"] == "ALLOWED" and authorize()["path"] == "cache"


def test_a_party_reached_directly_or_through_another_hub_is_never_reattached(ocpi_live, hub):
    direct = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO), tokens__from_them="p"
    )
    RoamingAgreementFactory(partner=direct.party)
    other_hub = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="GIR", role=Party.Role.HUB))
    elsewhere = PartnerConnectionFactory(party=PartyFactory(country_code="NL", party_id="EVB"), via_hub=other_hub)
    RoamingAgreementFactory(partner=elsewhere.party, hub=other_hub.party)
    # Even an agreement naming the attacking hub does not move a party reached another way.
    RoamingAgreementFactory(partner=direct.party, hub=hub.party)

    for connection in (direct, elsewhere):
        party = connection.party
        answer = ocpi_live(
            "PUT",
            f"/ocpi/2.2.1/hubclientinfo/{party.country_code}/{party.party_id}",
            client_info(party.country_code, party.party_id, role="EMSP"),
        )
        assert answer.status_code == 200 and "not connected through this hub" in answer.json()["status_message"]
        before = (connection.via_hub_id, connection.hub_client_status)
        connection.refresh_from_db()
        assert (connection.via_hub_id, connection.hub_client_status) == before
        party.refresh_from_db()
        assert party.role == Party.Role.CPO  # the hub's report does not widen a role either

        body = location("X1", country_code=party.country_code, party_id=party.party_id, updated=stamp())
        path = f"/ocpi/emsp/2.2.1/locations/{party.country_code}/{party.party_id}/X1"
        assert_refused(ocpi_live("PUT", path, body, routing=routed(party.country_code, party.party_id)))
    assert not Location.objects.exists()


def test_an_unconfirmed_client_cannot_write_until_staff_confirm_it(ocpi_live, hub):
    assert ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/DE/ION", client_info("DE", "ION")).status_code == 201
    ionity = Party.objects.get(party_id="ION")
    path = "/ocpi/emsp/2.2.1/locations/DE/ION/I1"
    body = location("I1", country_code="DE", party_id="ION", updated=stamp())
    assert_refused(ocpi_live("PUT", path, body, routing=routed("DE", "ION")))
    # A direct agreement (not through this hub) is no confirmation of the hub's claim.
    direct = RoamingAgreementFactory(partner=ionity)
    assert_refused(ocpi_live("PUT", path, body, routing=routed("DE", "ION")))
    # Sessions pushed by the hub without routing headers go through the same rule.
    session = example("session_example_1_simple_start.json") | {"country_code": "DE", "party_id": "ION"}
    assert ocpi_live("PUT", "/ocpi/emsp/2.2.1/sessions/DE/ION/101", session).status_code == 403
    assert not Location.objects.exists() and not Session.objects.exists()

    direct.hub = hub.party  # staff confirm: the agreement runs through this hub
    direct.save()
    assert ocpi_live("PUT", path, body, routing=routed("DE", "ION")).status_code == 201
    assert Location.objects.get().party == ionity
    assert ocpi_live("PUT", "/ocpi/emsp/2.2.1/sessions/DE/ION/101", session).status_code == 201


def test_admin_shows_whether_staff_confirmed_a_hub_client(client, hub, admin_user):
    client.force_login(admin_user)
    unconfirmed = PartnerConnectionFactory(party=PartyFactory(country_code="DE", party_id="ION"), via_hub=hub)
    page = client.get(f"/admin/roaming/partnerconnection/{unconfirmed.pk}/change/").content.decode()
    assert "Not confirmed" in page and "Confirm: add an agreement through Hubject" in page
    assert f"/admin/roaming/roamingagreement/add/?partner={unconfirmed.party_id}&amp;hub={hub.party_id}" in page
    listing = client.get("/admin/roaming/party/").content.decode()
    assert "not confirmed by staff" in listing
    confirmed = PartnerConnection.objects.get(party__party_id="TOT")
    page = client.get(f"/admin/roaming/partnerconnection/{confirmed.pk}/change/").content.decode()
    assert "Confirmed: an agreement with FR*TOT through Hubject is in force." in page


def test_a_known_party_claimed_by_a_hub_gets_none_of_our_traffic_until_confirmed(ocpi_live, hub):
    """Our cards' tokens must not flow to a hub for a CPO we agreed with directly, on the hub's word alone."""
    from cards.selectors import token_push_targets

    hub.endpoints = [{"identifier": "tokens", "role": "RECEIVER", "url": "https://hub.example/tokens"}]
    hub.save()
    cpo = PartyFactory(country_code="NL", party_id="CPX", role=Party.Role.CPO)
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    answer = ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/NL/CPX", client_info("NL", "CPX", "CPO"))
    assert answer.status_code == 201
    claimed = PartnerConnection.objects.get(party=cpo)
    assert claimed.via_hub == hub and claimed.status == PartnerConnection.Status.PLANNED
    assert claimed.hub_client_status == "CONNECTED"  # the hub's report is kept, as its report
    assert claimed not in token_push_targets()
    assert PartnerConnection.objects.get(party__party_id="TOT") in token_push_targets()
