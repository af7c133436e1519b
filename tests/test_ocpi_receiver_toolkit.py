"""The OCPI receiver toolkit in roaming/ocpi, tested directly and through every receiver and sender.

- explicit nulls: an optional field sent as `null` is absent in every module; a required one is still refused;
- ownership: one rule (403 + OCPI 2000-series) for locations, tokens, sessions and CDRs; a hub writes for a
  confirmed client with or without routing headers; nobody writes as us;
- an unknown /ocpi/ path answers the OCPI envelope;
- the locations receiver's GET answers what the CPO sent, PATCHes applied at every level;
- paging: our two senders (tokens, locations) answer the same headers and cursor Links;
- one Token serializer, one DateTime field: the same words for the same mistake everywhere.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import inspect
import json
from pathlib import Path

import pytest
from rest_framework import serializers

from cards.authorization import card_directory
from cards.decision_log import decision_log
from cards.models import Card, ForeignToken
from charging.models import CDR, Session
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.envelope import OcpiError, validated
from roaming.ocpi.fields import OcpiObjectSerializer
from roaming.ocpi.ownership import check_owner
from roaming.selectors import own_party
from roaming.serializers import CredentialsSerializer
from stations.models import Location
from tests.conftest import make_ocpi_partner, ocpi_call
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

pytestmark = pytest.mark.django_db

EXAMPLES = Path("/work/shared/ocpi/examples")


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def owned_by(body: dict, party: Party) -> dict:
    return {**copy.deepcopy(body), "country_code": party.country_code, "party_id": party.party_id}


# --- explicit nulls ------------------------------------------------------------------------------------------------


def test_every_serializer_of_partner_input_drops_optional_nulls():
    """Every serializer of an OCPI object partners send uses the toolkit's base (so nulls are handled once)."""
    modules = ["cards.serializers", "charging.serializers", "roaming.serializers", "roaming.ocpi.fields"]
    found = []
    for name in modules:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, serializers.Serializer) and cls.__module__ == name:
                found.append(cls)
                assert issubclass(cls, OcpiObjectSerializer), f"{name}.{cls.__name__}"
    assert len(found) >= 15  # tokens, sessions, CDRs, commands, credentials, ClientInfo and their parts


def test_credentials_with_null_website_and_logo_are_valid_and_a_null_name_is_not():
    body = example("credentials_example.json")
    for role in body["roles"]:
        role["business_details"].update(website=None, logo=None)
    data = validated(CredentialsSerializer, body)
    assert "website" not in data["roles"][0]["business_details"]

    body["roles"][0]["business_details"]["name"] = None
    with pytest.raises(OcpiError) as refused:
        validated(CredentialsSerializer, body)
    assert refused.value.status_code == 2001 and "name" in refused.value.message


def test_session_with_null_optionals_is_stored_and_a_null_required_field_refused(ocpi):
    cpo = make_ocpi_partner(country_code="NL", party_id="STK")
    body = example("session_example_1_simple_start.json")
    body.update(end_date_time=None, authorization_reference=None, meter_id=None, total_cost=None)
    body["charging_periods"] = [
        {
            "start_date_time": "2020-03-09T10:17:09Z",
            "dimensions": [{"type": "ENERGY", "volume": 1.5}],
            "tariff_id": None,
        }
    ]
    url = "/ocpi/emsp/2.2.1/sessions/NL/STK/101"
    created = ocpi("PUT", url, body, partner=cpo)
    assert created.status_code == 201, created.content
    session = Session.objects.get(party=cpo.party, ocpi_id="101")
    assert session.end_date_time is None and len(session.charging_periods) == 1

    patched = ocpi("PATCH", url, {"meter_id": None, "last_updated": "2020-03-09T10:18:00Z"}, partner=cpo)
    assert patched.status_code == 200 and patched.envelope["status_code"] == 1000

    refused = ocpi("PATCH", url, {"kwh": None, "last_updated": "2020-03-09T10:19:00Z"}, partner=cpo)
    assert refused.status_code == 400 and refused.envelope["status_code"] == 2001
    assert refused.envelope["status_message"].startswith("kwh")
    assert ocpi("PUT", url, {**body, "currency": None}, partner=cpo).envelope["status_code"] == 2001


def test_cdr_with_null_optionals_is_stored(ocpi):
    cpo = make_ocpi_partner(country_code="BE", party_id="BEC")
    body = example("cdr_example.json")
    body.update(
        session_id=None,
        authorization_reference=None,
        meter_id=None,
        tariffs=None,
        total_fixed_cost=None,
        total_energy_cost=None,
        total_parking_time=None,
        total_parking_cost=None,
        total_reservation_cost=None,
        remark=None,
        invoice_reference_id=None,
        credit=None,
        credit_reference_id=None,
        home_charging_compensation=None,
    )
    body["cdr_location"].update(name=None, postal_code=None, state=None)
    body["charging_periods"][0]["tariff_id"] = None
    body["total_cost"]["incl_vat"] = None
    response = ocpi("POST", "/ocpi/emsp/2.2.1/cdrs", body, partner=cpo)
    assert response.status_code == 201, response.content
    assert CDR.objects.filter(party=cpo.party).count() == 1

    refused = ocpi("POST", "/ocpi/emsp/2.2.1/cdrs", {**body, "id": "other", "total_time": None}, partner=cpo)
    assert refused.status_code == 400 and refused.envelope["status_message"].startswith("total_time")


def test_token_with_null_optionals_is_stored_and_answered_as_sent(ocpi):
    emsp = make_ocpi_partner(country_code="NL", party_id="TNM", role=Party.Role.EMSP)
    body = example("token_put_example.json")
    body.update(visual_number=None, group_id=None, language=None, default_profile_type=None, energy_contract=None)
    url = "/ocpi/cpo/2.2.1/tokens/NL/TNM/012345678"
    assert ocpi("PUT", url, body, partner=emsp, type="RFID").status_code == 201
    assert ocpi("GET", url, partner=emsp, type="RFID").data == body
    with_contract = {**body, "energy_contract": {"supplier_name": "Greenchoice", "contract_id": None}}
    assert ocpi("PUT", url, with_contract, partner=emsp, type="RFID").status_code == 200
    assert ForeignToken.objects.get(party=emsp.party).valid is True

    refused = ocpi("PUT", url, {**body, "whitelist": None}, partner=emsp, type="RFID")
    assert refused.status_code == 400 and refused.envelope["status_message"].startswith("whitelist")


def test_start_session_with_null_optionals_is_accepted(ocpi, ocpi_peer):
    emsp = make_ocpi_partner(
        country_code="NL", party_id="SHL", role=Party.Role.EMSP, versions_url=ocpi_peer.url("/ocpi/versions")
    )
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT")
    EVSEFactory(location=location, uid="MBP-GENT-1")
    token = owned_by(example("token_put_example.json"), emsp.party)
    token.update(visual_number=None, group_id=None, energy_contract=None)
    body = {
        "response_url": ocpi_peer.url("/ocpi/emsp/2.2.1/commands/START_SESSION/abc-1"),
        "token": token,
        "location_id": "MBP-GENT",
        "evse_uid": None,
        "connector_id": None,
        "authorization_reference": None,
    }
    response = ocpi("POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", body, partner=emsp)
    assert response.status_code == 200 and response.envelope["status_code"] == 1000, response.content
    assert response.data["result"] in {"ACCEPTED", "REJECTED"}

    refused = ocpi("POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", {**body, "location_id": None}, partner=emsp)
    assert refused.envelope["status_code"] == 2001 and refused.envelope["status_message"].startswith("location_id")


def test_client_info_keeps_every_field_required(ocpi):
    hub = make_ocpi_partner(country_code="DE", party_id="HBX", role=Party.Role.HUB)
    body = {"country_code": "FR", "party_id": "TOT", "role": "CPO", "status": None, "last_updated": None}
    refused = ocpi("PUT", "/ocpi/2.2.1/hubclientinfo/FR/TOT", body, partner=hub)
    assert refused.status_code == 400 and refused.envelope["status_code"] == 2001
    assert "status" in refused.envelope["status_message"] and "last_updated" in refused.envelope["status_message"]
    accepted = ocpi(
        "PUT",
        "/ocpi/2.2.1/hubclientinfo/FR/TOT",
        {**body, "status": "CONNECTED", "last_updated": "2026-01-01T10:00:00Z"},
        partner=hub,
    )
    assert accepted.status_code == 201


def test_same_datetime_rule_and_words_for_client_info_and_sessions(ocpi):
    hub = make_ocpi_partner(country_code="DE", party_id="HBX", role=Party.Role.HUB)
    info = {"country_code": "FR", "party_id": "TOT", "role": "CPO", "status": "CONNECTED"}
    bad_info = ocpi(
        "PUT", "/ocpi/2.2.1/hubclientinfo/FR/TOT", {**info, "last_updated": "2026-02-30T10:00:00Z"}, partner=hub
    )
    cpo = make_ocpi_partner(country_code="NL", party_id="STK")
    session = {**example("session_example_1_simple_start.json"), "last_updated": "2026-02-30T10:00:00Z"}
    bad_session = ocpi("PUT", "/ocpi/emsp/2.2.1/sessions/NL/STK/101", session, partner=cpo)
    assert bad_info.envelope["status_message"] == bad_session.envelope["status_message"]
    assert bad_info.envelope["status_message"].startswith("last_updated: not a valid date and time")
    future = ocpi(
        "PUT", "/ocpi/2.2.1/hubclientinfo/FR/TOT", {**info, "last_updated": "2099-01-01T00:00:00Z"}, partner=hub
    )
    assert future.status_code == 400 and "in the future" in future.envelope["status_message"]


def test_authorize_location_references_with_null_evse_uids(ocpi, settings):
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    try:
        cpo = make_ocpi_partner(role=Party.Role.CPO)
        card = CardFactory()
        url = f"/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize"
        response = ocpi("POST", url, {"location_id": "LOC1", "evse_uids": None}, partner=cpo, type="RFID")
        assert response.status_code == 200 and response.data["allowed"] == "ALLOWED", response.content
        refused = ocpi("POST", url, {"location_id": None}, partner=cpo, type="RFID")
        assert refused.status_code == 400 and refused.envelope["status_message"].startswith("location_id")
    finally:
        decision_log.discard()
        card_directory.clear()


# --- ownership -----------------------------------------------------------------------------------------------------


def put_location(ocpi, owner: Party, **kwargs):
    body = owned_by(example("location_example.json"), owner)
    return ocpi("PUT", f"/ocpi/emsp/2.2.1/locations/{owner.country_code}/{owner.party_id}/LOC1", body, **kwargs)


def put_token(ocpi, owner: Party, **kwargs):
    body = owned_by(example("token_put_example.json"), owner)
    url = f"/ocpi/cpo/2.2.1/tokens/{owner.country_code}/{owner.party_id}/012345678"
    return ocpi("PUT", url, body, type="RFID", **kwargs)


def put_session(ocpi, owner: Party, **kwargs):
    body = owned_by(example("session_example_1_simple_start.json"), owner)
    return ocpi("PUT", f"/ocpi/emsp/2.2.1/sessions/{owner.country_code}/{owner.party_id}/101", body, **kwargs)


def post_cdr(ocpi, owner: Party, **kwargs):
    return ocpi("POST", "/ocpi/emsp/2.2.1/cdrs", owned_by(example("cdr_example.json"), owner), **kwargs)


WRITERS = {
    "locations": (put_location, Location),
    "tokens": (put_token, ForeignToken),
    "sessions": (put_session, Session),
    "cdrs": (post_cdr, CDR),
}


def assert_forbidden(response) -> None:
    assert response.status_code == 403, response.content
    assert 2000 <= response.envelope["status_code"] < 3000


@pytest.mark.parametrize("module", WRITERS)
def test_another_partys_objects_and_ours_are_403_everywhere(ocpi, module):
    write, model = WRITERS[module]
    caller = make_ocpi_partner(country_code="NL", party_id="AAA", role=Party.Role.CPO_EMSP)
    victim = PartyFactory(country_code="NL", party_id="VIC", role=Party.Role.CPO_EMSP)
    RoamingAgreementFactory(partner=victim)
    assert_forbidden(write(ocpi, victim, partner=caller))
    assert_forbidden(write(ocpi, own_party(), partner=caller))
    assert not model.objects.exists()
    created = write(ocpi, caller.party, partner=caller)
    assert created.status_code == 201 and model.objects.get().party == caller.party


@pytest.mark.parametrize("module", WRITERS)
def test_a_hub_writes_for_a_confirmed_client_with_or_without_routing_headers(ocpi, module):
    write, model = WRITERS[module]
    client = make_ocpi_partner(country_code="FR", party_id="TOT", role=Party.Role.CPO_EMSP, via_hub=True)
    # Without routing headers: the object names the client.
    assert write(ocpi, client.party, partner=client, routing=False).status_code == 201
    assert model.objects.get().party == client.party
    model.objects.all().delete()
    # With them: the same.
    assert write(ocpi, client.party, partner=client).status_code == 201
    assert model.objects.get().party == client.party
    model.objects.all().delete()

    # A second client of the same hub, not confirmed by staff (no agreement through the hub): never.
    unconfirmed = PartyFactory(country_code="FR", party_id="UNC", role=Party.Role.CPO_EMSP)
    PartnerConnectionFactory(party=unconfirmed, via_hub=client.connection)
    assert_forbidden(write(ocpi, unconfirmed, partner=client, routing=False))
    # Routing headers name who the message is from: that client writes only its own objects.
    confirmed = PartyFactory(country_code="FR", party_id="CON", role=Party.Role.CPO_EMSP)
    PartnerConnectionFactory(party=confirmed, via_hub=client.connection)
    RoamingAgreementFactory(partner=confirmed, hub=client.hub)
    assert_forbidden(write(ocpi, confirmed, partner=client))
    # Us: never, with or without headers.
    assert_forbidden(write(ocpi, own_party(), partner=client, routing=False))
    assert not model.objects.exists()
    assert write(ocpi, confirmed, partner=client, routing=False).status_code == 201


@pytest.mark.parametrize(
    "ocpi_partner", [{"role": "CPO"}, {"role": "CPO", "via_hub": True}], indirect=True, ids=["direct", "via-hub"]
)
def test_the_kit_partner_writes_its_own_objects_directly_or_through_its_hub(ocpi, ocpi_partner):
    """The shared kit's partner: its calls are attributed to it, with the hub's routing headers when via a hub."""
    response = put_session(ocpi, ocpi_partner.party, partner=ocpi_partner)
    assert response.status_code == 201 and Session.objects.get().party == ocpi_partner.party
    assert (ocpi_partner.hub is not None) == ("OCPI-to-country-code" in response)  # routing headers swapped back


def test_check_owner_directly(rf):
    from roaming.ocpi.endpoint import PartnerContext

    client = make_ocpi_partner(country_code="FR", party_id="TOT", via_hub=True)
    hub_party = client.connection.party
    as_hub = PartnerContext(request=rf.get("/"), connection=client.connection, party=hub_party)
    assert check_owner(as_hub, "fr", "tot") == client.party
    with pytest.raises(OcpiError) as refused:
        check_owner(as_hub, "FR", "XXX")
    assert refused.value.http_status == 403 and refused.value.status_code == 2000
    me = own_party()
    with pytest.raises(OcpiError):
        check_owner(as_hub, me.country_code, me.party_id)
    as_client = PartnerContext(request=rf.get("/"), connection=client.connection, party=client.party)
    assert check_owner(as_client, "FR", "TOT") == client.party
    with pytest.raises(OcpiError):
        check_owner(as_client, hub_party.country_code, hub_party.party_id)


# --- unknown paths -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ocpi/emsp/2.2.1/parking",  # unknown module
        "/ocpi/cpo/2.2.1/tariffs/NL/AAA/T1",  # a module we do not serve
        "/ocpi/emsp/2.2.1/sessions/NL/AAA/a%2Fb/c",  # an encoded slash making a segment too many
        "/ocpi/emsp/2.2.1/locations/NL/AAA/L%2F1/E1/C1",
        "/ocpi/2.1.1/versions",
        "/ocpi/",
    ],
)
def test_an_unknown_ocpi_path_answers_the_envelope(live_server, path):
    partner = make_ocpi_partner(party_id="AAA")
    for token in (partner.token, None):
        response = ocpi_call(live_server.url, "GET", path, token=token)
        assert response.status_code == 404, (path, response.text[:200])
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.envelope["status_code"] == 2000 and "timestamp" in response.envelope


def test_an_encoded_slash_in_a_known_route_answers_the_envelope(live_server):
    """`LOC%2F1` reaches the EVSE route as LOC + 1: an unknown location, in the envelope, not Django's page."""
    partner = make_ocpi_partner(party_id="AAA")
    response = ocpi_call(live_server.url, "GET", "/ocpi/emsp/2.2.1/locations/NL/AAA/LOC%2F1", partner=partner)
    assert response.status_code == 404 and response.envelope["status_code"] == 2003


# --- the locations receiver's GET ---------------------------------------------------------------------------------


def test_locations_receiver_get_answers_what_was_sent_with_patches_applied(ocpi):
    cpo = make_ocpi_partner(country_code="BE", party_id="BEC")
    sent = example("location_example.json")
    # Fields we keep no column for: the receiver still answers them as sent.
    sent.update(
        energy_mix=example("location_energymix_example_complete.json")["energy_mix"],
        related_locations=[{"latitude": "51.047", "longitude": "3.729", "name": {"language": "nl", "text": "Ingang"}}],
        directions=[{"language": "en", "text": "Go left"}],
        images=[{"url": "https://bec.example/1.jpg", "category": "LOCATION", "type": "jpeg"}],
    )
    sent["evses"][0]["directions"] = [{"language": "nl", "text": "Achteraan"}]
    sent["evses"][0]["connectors"][0]["terms_and_conditions"] = "https://bec.example/terms"
    url = "/ocpi/emsp/2.2.1/locations/BE/BEC/LOC1"
    assert ocpi("PUT", url, sent, partner=cpo).status_code == 201
    assert ocpi("GET", url, partner=cpo).data == sent

    moved = [{"language": "en", "text": "Entrance moved to the back"}]
    ocpi("PATCH", url, {"directions": moved, "last_updated": "2015-06-30T00:00:00Z"}, partner=cpo)
    ocpi("PATCH", url, {"name": "Gent Zuid 2", "last_updated": "2015-07-01T00:00:00Z"}, partner=cpo)
    ocpi("PATCH", f"{url}/3256", {"status": "CHARGING", "last_updated": "2015-07-02T00:00:00Z"}, partner=cpo)
    ocpi("PATCH", f"{url}/3256/1", {"tariff_ids": ["99"], "last_updated": "2015-07-03T00:00:00Z"}, partner=cpo)

    expected = copy.deepcopy(sent)
    expected.update(name="Gent Zuid 2", directions=moved, last_updated="2015-07-03T00:00:00Z")
    expected["evses"][0].update(status="CHARGING", last_updated="2015-07-03T00:00:00Z")
    expected["evses"][0]["connectors"][0].update(tariff_ids=["99"], last_updated="2015-07-03T00:00:00Z")
    assert ocpi("GET", url, partner=cpo).data == expected
    assert ocpi("GET", f"{url}/3256", partner=cpo).data == expected["evses"][0]
    assert ocpi("GET", f"{url}/3256/1", partner=cpo).data == expected["evses"][0]["connectors"][0]
    assert ocpi("GET", f"{url}/3256/9", partner=cpo).status_code == 404
    assert ocpi("GET", f"{url}/NOPE", partner=cpo).envelope["status_code"] == 2003
    # Our columns follow the PATCHes too.
    assert Location.objects.get(ocpi_id="LOC1").name == "Gent Zuid 2"
    # A location stored before raw copies were kept is answered from our columns.
    LocationFactory(party=cpo.party, ocpi_id="OLD1", name="Older")
    older = ocpi("GET", "/ocpi/emsp/2.2.1/locations/BE/BEC/OLD1", partner=cpo).data
    assert older["id"] == "OLD1" and older["name"] == "Older"


# --- paging --------------------------------------------------------------------------------------------------------


def follow(ocpi, url: str, partner, **query) -> tuple[list[str], list]:
    """Every object id across the pages, and each page's response."""
    ids, pages = [], []
    response = ocpi("GET", url, partner=partner, **query)
    while True:
        assert response.status_code == 200 and response.envelope["status_code"] == 1000
        pages.append(response)
        ids += [item.get("uid") or item.get("id") for item in response.data]
        link = response.headers.get("Link")
        if not link:
            return ids, pages
        assert link.endswith('>; rel="next"') and "cursor=" in link and "offset=" not in link
        response = ocpi("GET", link[link.index("<") + 1 : link.index(">")].split("testserver", 1)[1], partner=partner)


def test_both_senders_page_with_the_same_headers_and_cursor_links(ocpi, settings):
    settings.FEEDS_SENDER_MAX_LIMIT = 4
    emsp = make_ocpi_partner(role=Party.Role.CPO_EMSP)
    RoamingAgreement.objects.filter(partner=emsp.party).update(direction=RoamingAgreement.Direction.BOTH)
    stamp = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    cards, stations = [], []
    for i in range(10):
        card = CardFactory()
        Card.objects.filter(pk=card.pk).update(last_updated=stamp + dt.timedelta(minutes=i // 3))  # ties on the id
        cards.append(card.uid)
        location = LocationFactory(
            party=own_party(), ocpi_id=f"MBP{i:02d}", last_updated=stamp + dt.timedelta(minutes=i // 3)
        )
        ConnectorFactory(evse=EVSEFactory(location=location, uid=f"MBP{i:02d}-1"))
        stations.append(location.ocpi_id)

    token_ids, token_pages = follow(ocpi, "/ocpi/emsp/2.2.1/tokens", emsp, limit="4")
    location_ids, location_pages = follow(ocpi, "/ocpi/cpo/2.2.1/locations", emsp, limit="400")
    assert token_ids == cards and location_ids == stations  # oldest first, each once
    assert [len(p.data) for p in token_pages] == [4, 4, 2] == [len(p.data) for p in location_pages]
    assert {p["X-Total-Count"] for p in token_pages + location_pages} == {"10"}
    assert {p["X-Limit"] for p in token_pages} == {"1000"} and {p["X-Limit"] for p in location_pages} == {"4"}

    window = {"date_from": "2026-03-01T12:01:00Z", "date_to": "2026-03-01T12:03:00Z"}
    tokens = ocpi("GET", "/ocpi/emsp/2.2.1/tokens", partner=emsp, **window)
    locations = ocpi("GET", "/ocpi/cpo/2.2.1/locations", partner=emsp, **window)
    assert [t["uid"] for t in tokens.data] == cards[3:9] and tokens["X-Total-Count"] == "6"
    assert locations["X-Total-Count"] == "6" and "cursor=" in locations["Link"] and "date_from=" in locations["Link"]
    for url in ("/ocpi/emsp/2.2.1/tokens", "/ocpi/cpo/2.2.1/locations"):
        bad = ocpi("GET", url, partner=emsp, cursor="bm90IG91cnM")
        assert bad.status_code == 400 and bad.envelope["status_message"].startswith("cursor:")
        offset = ocpi("GET", url, partner=emsp, offset="8", limit="4")
        assert len(offset.data) == 2 and "Link" not in offset
