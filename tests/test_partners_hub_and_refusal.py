"""Who may call us, and as whom: suspended connections and agreements not in force are refused on every
functional module; calls through a hub are attributed to the client named in OCPI-from-*; the hub's
ClientInfo keeps each client's status; our calls through a hub carry the routing headers.

A probe endpoint stands in for "any functional module": it uses the same `ocpi_endpoint` decorator
as locations, tokens, sessions and the others.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone

from roaming import services
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi.client import OcpiClient
from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory
from tests.ocpi_peer import ok


@ocpi_endpoint("locations", methods=("GET",))
def probe(ctx: PartnerContext) -> dict:
    return {"party": ctx.party.ocpi_id, "connection": ctx.connection.party.ocpi_id}


urlpatterns = [path("probe/locations", probe), path("", include("mobilityplus.urls"))]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

PROBE_URL = "/probe/locations"
INFO_URL = "/ocpi/2.2.1/hubclientinfo/DE/ION"


@pytest.fixture
def partner():
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="ALL"), tokens__from_them="partner-token"
    )
    RoamingAgreementFactory(partner=connection.party)
    return connection


def test_partner_with_an_agreement_in_force_is_served(ocpi, partner):
    response = ocpi("GET", PROBE_URL, token="partner-token")
    assert response.status_code == 200
    assert response.json()["data"] == {"party": "NL*ALL", "connection": "NL*ALL"}


def test_suspended_connection_is_refused_everywhere(ocpi, partner):
    partner.status = PartnerConnection.Status.SUSPENDED
    partner.save()
    for url in ("/probe/locations", "/ocpi/versions", "/ocpi/2.2.1", "/ocpi/2.2.1/credentials"):
        response = ocpi("GET", url, token="partner-token")
        assert response.status_code == 403, url
        assert response.json()["status_code"] == 2000


@pytest.mark.parametrize(
    "change",
    [
        {"status": RoamingAgreement.Status.ENDED},
        {"status": RoamingAgreement.Status.SUSPENDED},
        {"status": RoamingAgreement.Status.DRAFT},
        {"valid_until": dt.date.today() - dt.timedelta(days=1)},  # expired yesterday
        {"valid_from": dt.date.today() + dt.timedelta(days=7)},  # not yet started
    ],
)
def test_agreement_not_in_force_is_refused_on_functional_modules(ocpi, partner, change):
    for agreement in RoamingAgreement.objects.filter(partner=partner.party):
        for field, value in change.items():
            setattr(agreement, field, value)
        agreement.save()
    response = ocpi("GET", PROBE_URL, token="partner-token")
    assert response.status_code == 403
    assert response.json()["status_code"] == 2000
    assert "No roaming agreement in force with NL*ALL" in response.json()["status_message"]
    # Configuration modules stay open, so the partner can still be (re)connected.
    assert ocpi("GET", "/ocpi/versions", token="partner-token").status_code == 200


def test_partner_without_any_agreement_is_refused(ocpi):
    PartnerConnectionFactory(tokens__from_them="stranger-token")
    assert ocpi("GET", PROBE_URL, token="stranger-token").status_code == 403


def test_direct_partner_cannot_speak_for_another_party(ocpi, partner):
    response = ocpi(
        "GET", PROBE_URL, token="partner-token", routing={"OCPI-from-country-code": "DE", "OCPI-from-party-id": "ION"}
    )
    assert response.status_code == 403
    # Naming itself is fine, and the response swaps the routing headers.
    response = ocpi(
        "GET",
        PROBE_URL,
        token="partner-token",
        routing={
            "OCPI-from-country-code": "NL",
            "OCPI-from-party-id": "ALL",
            "OCPI-to-country-code": "BE",
            "OCPI-to-party-id": "MBP",
        },
    )
    assert response.status_code == 200
    assert response["OCPI-to-party-id"] == "ALL" and response["OCPI-from-party-id"] == "MBP"


@pytest.fixture
def hub():
    hub = PartnerConnectionFactory(
        party=PartyFactory(country_code="DE", party_id="HBJ", role=Party.Role.HUB), tokens__from_them="hub-token"
    )
    client_party = PartyFactory(country_code="FR", party_id="TOT")
    PartnerConnectionFactory(party=client_party, via_hub=hub)
    RoamingAgreementFactory(partner=client_party, hub=hub.party)
    return hub


def hub_from(country: str, party_id: str) -> dict:
    return {"OCPI-from-country-code": country, "OCPI-from-party-id": party_id}


def test_call_through_hub_is_attributed_to_the_client_in_the_headers(ocpi, hub):
    response = ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("fr", "tot"))  # CiString: case-insensitive
    assert response.status_code == 200
    assert response.json()["data"] == {"party": "FR*TOT", "connection": "DE*HBJ"}
    # Without from-headers the hub speaks for itself; it carries agreements, so it may.
    assert ocpi("GET", PROBE_URL, token="hub-token").json()["data"]["party"] == "DE*HBJ"


def test_hub_may_only_speak_for_its_own_connected_clients_with_an_agreement(ocpi, hub, partner):
    # A party reached directly (not through this hub).
    assert ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("NL", "ALL")).status_code == 403
    # A party we have never heard of.
    assert ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("DE", "XYZ")).status_code == 403
    # A suspended client.
    client_connection = PartnerConnection.objects.get(party__party_id="TOT")
    client_connection.status = PartnerConnection.Status.SUSPENDED
    client_connection.save()
    assert ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("FR", "TOT")).status_code == 403
    # A client whose agreement ended.
    client_connection.status = PartnerConnection.Status.CONNECTED
    client_connection.save()
    RoamingAgreement.objects.filter(partner__party_id="TOT").update(status=RoamingAgreement.Status.ENDED)
    response = ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("FR", "TOT"))
    assert response.status_code == 403 and "FR*TOT" in response.json()["status_message"]


def client_info(status: str, last_updated: str = "2026-01-01T10:00:00Z", **overrides) -> dict:
    return {
        "party_id": "ION",
        "country_code": "DE",
        "role": "CPO",
        "status": status,
        "last_updated": last_updated,
        **overrides,
    }


def test_hubclientinfo_creates_the_party_and_keeps_its_status(ocpi, hub):
    response = ocpi("PUT", INFO_URL, client_info("CONNECTED"), token="hub-token")
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    ionity = PartnerConnection.objects.select_related("party").get(party__party_id="ION")
    assert ionity.via_hub == hub and ionity.party.role == Party.Role.CPO
    assert ionity.hub_client_status == "CONNECTED" and ionity.status == PartnerConnection.Status.CONNECTED

    assert ocpi("PUT", INFO_URL, client_info("SUSPENDED", "2026-01-01T11:00:00"), token="hub-token").status_code == 200
    # An older report arriving late does not win.
    assert ocpi("PUT", INFO_URL, client_info("CONNECTED", "2026-01-01T09:00:00Z"), token="hub-token").status_code == 200
    ionity.refresh_from_db()
    assert ionity.hub_client_status == "SUSPENDED"

    response = ocpi("GET", "/ocpi/2.2.1/hubclientinfo/de/ion", token="hub-token")
    assert response.status_code == 200
    assert response.json()["data"] == client_info("SUSPENDED", "2026-01-01T11:00:00Z")
    # The same party as EMSP too makes it CPO_EMSP.
    ocpi("PUT", INFO_URL, client_info("SUSPENDED", "2026-01-01T12:00:00Z", role="EMSP"), token="hub-token")
    assert Party.objects.get(party_id="ION").role == Party.Role.CPO_EMSP


def test_hubclientinfo_bad_input(ocpi, hub, partner):
    unknown = ocpi("GET", "/ocpi/2.2.1/hubclientinfo/DE/ZZZ", token="hub-token")
    assert unknown.status_code == 404 and unknown.json()["status_code"] == 2000
    mismatch = ocpi("PUT", INFO_URL, client_info("CONNECTED", party_id="XXX"), token="hub-token")
    assert mismatch.json()["status_code"] == 2001 and "URL" in mismatch.json()["status_message"]
    invalid = ocpi("PUT", INFO_URL, client_info("SLEEPING", last_updated="yesterday"), token="hub-token")
    assert invalid.json()["status_code"] == 2001
    assert "status" in invalid.json()["status_message"] and "last_updated" in invalid.json()["status_message"]
    garbage = ocpi("PUT", INFO_URL, b"{not json", token="hub-token")
    assert garbage.status_code == 400
    assert not Party.objects.filter(party_id="ION").exists()
    # Only a hub may send ClientInfo.
    assert ocpi("PUT", INFO_URL, client_info("CONNECTED"), token="partner-token").status_code == 403
    # A party we reach directly keeps its direct connection: the hub's report is not recorded against it.
    direct = ocpi(
        "PUT",
        "/ocpi/2.2.1/hubclientinfo/NL/ALL",
        client_info("OFFLINE", party_id="ALL", country_code="NL"),
        token="hub-token",
    )
    assert direct.status_code == 200
    partner.refresh_from_db()
    assert partner.via_hub is None and partner.hub_client_status == ""


def test_hub_client_created_by_clientinfo_can_be_spoken_for_once_agreed(ocpi, hub):
    ocpi("PUT", INFO_URL, client_info("CONNECTED"), token="hub-token")
    assert (
        ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("DE", "ION")).status_code == 403
    )  # no agreement yet
    RoamingAgreementFactory(partner=Party.objects.get(party_id="ION"), hub=hub.party)
    assert ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("DE", "ION")).json()["data"]["party"] == "DE*ION"


def test_our_calls_through_a_hub_carry_routing_headers_and_the_hub_token(ocpi_peer, hub):
    ocpi_peer.route("GET", r"/locations", lambda r: ok([]))
    from roaming.services import store_partner_tokens

    store_partner_tokens(hub, to_them="token-for-hub")
    hub.versions_url = ocpi_peer.url("/versions")  # calls go only to the partner's registered hosts
    hub.save()
    client_connection = PartnerConnection.objects.get(party__party_id="TOT")
    OcpiClient.for_connection(client_connection, retries=0, timeout=5).get(ocpi_peer.url("/locations"))
    request = ocpi_peer.requests[-1]
    assert request.header("Authorization") == authorization_header("token-for-hub")
    assert (request.header("OCPI-from-country-code"), request.header("OCPI-from-party-id")) == ("BE", "MBP")
    assert (request.header("OCPI-to-country-code"), request.header("OCPI-to-party-id")) == ("FR", "TOT")


def test_our_calls_straight_to_a_hub_say_to_hub_on_functional_modules_only(ocpi, ocpi_peer, hub):
    ocpi_peer.route("GET", r"/locations", lambda r: ok([]))
    ocpi_peer.route("GET", r"/versions", lambda r: ok([{"version": "2.2.1", "url": ocpi_peer.url("/2.2.1")}]))
    services.store_partner_tokens(hub, to_them="token-for-hub")
    hub.versions_url = ocpi_peer.url("/versions")
    hub.save()

    # GET all locations from the hub: FROM=us, TO=the hub.
    OcpiClient.for_connection(hub, retries=0, timeout=5).get(ocpi_peer.url("/locations"))
    get_all = ocpi_peer.requests[-1]
    assert (get_all.header("OCPI-from-country-code"), get_all.header("OCPI-from-party-id")) == ("BE", "MBP")
    assert (get_all.header("OCPI-to-country-code"), get_all.header("OCPI-to-party-id")) == ("DE", "HBJ")

    # Configuration modules carry none, whether we ask for the hub or for one of its clients.
    client_connection = PartnerConnection.objects.get(party__party_id="TOT")
    OcpiClient.for_connection(client_connection, routing=False, retries=0, timeout=5).get(ocpi_peer.url("/versions"))
    assert services.check_connection(hub).ok and services.check_connection(client_connection).ok
    for request in ocpi_peer.requests[1:]:
        assert request.header("Authorization") == authorization_header("token-for-hub")
        assert not [name for name in request.headers if name.lower().startswith("ocpi-")]


def test_direct_partner_gets_no_routing_headers(ocpi, ocpi_peer, partner):
    ocpi_peer.route("GET", r"/locations", lambda r: ok([]))
    services.store_partner_tokens(partner, to_them="token-for-partner")
    partner.versions_url = ocpi_peer.url("/versions")  # calls go only to the partner's registered hosts
    partner.save()
    OcpiClient.for_connection(partner, retries=0, timeout=5).get(ocpi_peer.url("/locations"))
    assert not [name for name in ocpi_peer.requests[-1].headers if name.lower().startswith("ocpi-")]


def contact_writes(queries: CaptureQueriesContext) -> list[str]:
    sqls = [query["sql"] for query in queries.captured_queries]
    return [sql for sql in sqls if sql.startswith("UPDATE") and "last_contact_at" in sql]


def test_incoming_call_records_contact_at_most_once_a_minute(ocpi, partner):
    assert partner.last_contact_at is None
    updated_at, history_rows = partner.updated_at, partner.history.count()

    with CaptureQueriesContext(db_connection) as first:
        assert ocpi("GET", PROBE_URL, token="partner-token").status_code == 200
    partner.refresh_from_db()
    contact = partner.last_contact_at
    assert contact is not None and len(contact_writes(first)) == 1
    # A bare timestamp: the connection itself did not change (no cache invalidation, no history row).
    assert partner.updated_at == updated_at and partner.history.count() == history_rows

    with CaptureQueriesContext(db_connection) as second:
        assert ocpi("GET", PROBE_URL, token="partner-token").status_code == 200
        assert ocpi("GET", "/ocpi/versions", token="partner-token").status_code == 200
    assert contact_writes(second) == []
    partner.refresh_from_db()
    assert partner.last_contact_at == contact


def test_refused_calls_record_no_contact(ocpi, partner):
    assert ocpi("GET", PROBE_URL, token="wrong-token").status_code == 401
    partner.status = PartnerConnection.Status.SUSPENDED
    partner.save()
    assert ocpi("GET", PROBE_URL, token="partner-token").status_code == 403
    partner.refresh_from_db()
    assert partner.last_contact_at is None


def test_a_call_through_a_hub_is_contact_with_the_hub(ocpi, hub):
    assert ocpi("GET", PROBE_URL, token="hub-token", routing=hub_from("FR", "TOT")).status_code == 200
    hub.refresh_from_db()
    assert hub.last_contact_at is not None


def test_record_contact_for_outgoing_calls(partner):
    updated_at = partner.updated_at
    with CaptureQueriesContext(db_connection) as queries:
        services.record_contact(partner.pk)
    assert len(queries.captured_queries) == 1 and len(contact_writes(queries)) == 1
    partner.refresh_from_db()
    assert partner.last_contact_at is not None and partner.updated_at == updated_at


def test_agreement_changes_take_effect_on_the_next_call(ocpi, partner):
    assert ocpi("GET", PROBE_URL, token="partner-token").status_code == 200
    agreement = RoamingAgreement.objects.get(partner=partner.party)
    agreement.valid_until = timezone.localdate() - dt.timedelta(days=1)
    agreement.status = RoamingAgreement.Status.ENDED
    agreement.save()
    assert ocpi("GET", PROBE_URL, token="partner-token").status_code == 403
