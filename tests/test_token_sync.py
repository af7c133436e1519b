"""Tokens between partners: CPOs list ours (paginated, per agreement); eMSPs push theirs to our CPO side."""

import json

import pytest

from cards.authorization import card_directory
from cards.models import Card, ForeignToken
from roaming.models import Party, RoamingAgreement
from tests.factories import CardFactory, PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory

LIST_URL = "/ocpi/emsp/2.2.1/tokens"
OCPI_TOKEN = "emsp"  # the eMSP pushing tokens (fixture `emsp`)


@pytest.fixture(autouse=True)
def _fresh_cache():
    card_directory.clear()
    yield
    card_directory.clear()


def test_cpo_with_agreement_pages_through_our_tokens(ocpi, db, django_assert_max_num_queries):
    cpo = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo")
    RoamingAgreementFactory(partner=cpo.party, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    cards = CardFactory.create_batch(7)
    Card.objects.filter(pk=cards[0].pk).update(status=Card.Status.BLOCKED)
    ocpi("GET", LIST_URL, token="cpo")  # caches the caller and the agreements
    with django_assert_max_num_queries(3):
        first = ocpi("GET", LIST_URL, token="cpo", limit=3)
    assert first.status_code == 200 and first.json()["status_code"] == 1000
    assert first["X-Total-Count"] == "7" and first["X-Limit"] == "1000"
    assert [t["uid"] for t in first.json()["data"]] == [c.uid for c in cards[:3]]
    assert first.json()["data"][0]["valid"] is False and first.json()["data"][1]["valid"] is True
    assert first.json()["data"][0]["country_code"] == "BE" and first.json()["data"][0]["party_id"] == "MBP"
    next_url = first["Link"].split(";")[0].strip("<>")
    assert "cursor=" in next_url and "offset=" not in next_url and "limit=3" in next_url
    second = ocpi("GET", next_url, token="cpo")
    third = ocpi("GET", second["Link"].split(";")[0].strip("<>"), token="cpo")
    assert [t["uid"] for t in second.json()["data"] + third.json()["data"]] == [c.uid for c in cards[3:]]
    assert "Link" not in third


def test_date_filters_and_bad_parameters(ocpi, db):
    cpo = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo")
    RoamingAgreementFactory(partner=cpo.party)
    old, new = CardFactory(), CardFactory()
    Card.objects.filter(pk=old.pk).update(last_updated="2020-01-01T00:00:00Z")
    recent = ocpi("GET", LIST_URL, token="cpo", date_from="2021-01-01T00:00:00Z")
    assert [t["uid"] for t in recent.json()["data"]] == [new.uid]
    older = ocpi("GET", LIST_URL, token="cpo", date_to="2021-01-01T00:00:00")
    assert [t["uid"] for t in older.json()["data"]] == [old.uid]
    bad = ocpi("GET", LIST_URL, token="cpo", offset="x")
    assert bad.json()["status_code"] == 2001 and bad.json()["status_message"].startswith("offset")
    assert ocpi("GET", LIST_URL, token="cpo", date_from="yesterday").json()["status_code"] == 2001


def test_partner_without_agreement_sees_no_tokens_and_strangers_get_401(ocpi, db):
    PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="no-deal")
    wrong_way = PartnerConnectionFactory(party__role=Party.Role.EMSP, tokens__from_them="emsp")
    RoamingAgreementFactory(partner=wrong_way.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    CardFactory.create_batch(3)
    # No agreement in force: refused by the OCPI gate.
    refused = ocpi("GET", LIST_URL, token="no-deal")
    assert refused.status_code == 403 and "data" not in refused.json()
    # An agreement that does not cover our cards at their stations: an empty list.
    response = ocpi("GET", LIST_URL, token="emsp")
    assert response.json()["data"] == [] and response["X-Total-Count"] == "0"
    assert ocpi("GET", LIST_URL, token="guess").status_code == 401


# -- CPO side: eMSPs push their tokens to us ------------------------------------------------------------


def token_body(party, uid="12345678905880", **changes):
    body = {
        "country_code": party.country_code,
        "party_id": party.party_id,
        "uid": uid,
        "type": "RFID",
        "contract_id": "DE8ACC12E46L89",
        "visual_number": "DF000-2001-8999-1",
        "issuer": "TheNewMotion",
        "group_id": "DF000-2001-8999",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": "2015-06-29T22:39:09Z",
    }
    body.update(changes)
    return body


def token_url(party, uid):
    return f"/ocpi/cpo/2.2.1/tokens/{party.country_code}/{party.party_id}/{uid}"


@pytest.fixture
def emsp(db):
    connection = PartnerConnectionFactory(party__role=Party.Role.EMSP, tokens__from_them="emsp")
    RoamingAgreementFactory(partner=connection.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    return connection.party


def example(name):
    with open(f"/work/shared/ocpi/examples/{name}.json") as handle:
        return json.load(handle)


def test_spec_examples_put_then_patch_then_get(ocpi, emsp):
    body = {**example("token_put_example"), "country_code": emsp.country_code, "party_id": emsp.party_id}
    created = ocpi("PUT", token_url(emsp, "012345678"), body)
    assert created.status_code == 201 and created.json()["status_code"] == 1000
    replaced = ocpi("PUT", token_url(emsp, "012345678"), {**body, "whitelist": "ALLOWED"})
    assert replaced.status_code == 200
    patched = ocpi("PATCH", token_url(emsp, "012345678"), example("token_patch_example"))
    assert patched.status_code == 200 and patched.json()["status_code"] == 1000
    token = ForeignToken.objects.get(party=emsp)
    assert token.uid == "012345678" and token.whitelist == "ALLOWED" and token.valid is False
    assert token.data["valid"] is False and token.data["group_id"] == "DF000-2001-8999"
    got = ocpi("GET", token_url(emsp, "012345678"), token="emsp")
    assert got.json()["data"]["valid"] is False and got.json()["data"]["last_updated"] == "2019-06-19T02:11:11Z"


@pytest.mark.parametrize("name", ["token_example_1_app_user", "token_example_2_full_rfid"])
def test_the_specs_token_examples_are_accepted(ocpi, emsp, name):
    body = {**example(name), "country_code": emsp.country_code, "party_id": emsp.party_id}
    response = ocpi("PUT", token_url(emsp, body["uid"]), body, type=body["type"])
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    stored = ForeignToken.objects.get(party=emsp)
    assert stored.type == body["type"] and stored.uid == body["uid"].upper()
    assert stored.data == body  # extra fields (energy_contract, default_profile_type) are kept


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"whitelist": "SOMETIMES"}, "whitelist"),
        ({"valid": None}, "valid"),
        ({"contract_id": None}, "contract_id"),
        ({"last_updated": "29-06-2015"}, "last_updated"),
        ({"uid": "OTHER"}, "uid"),
        ({"type": "APP_USER"}, "type"),
        ({"party_id": "XYZ"}, "party_id"),
    ],
)
def test_bad_put_is_2001_naming_the_field_and_stores_nothing(ocpi, emsp, field, changes):
    ocpi("PUT", token_url(emsp, "AA11"), token_body(emsp, uid="AA11"))
    body = {**token_body(emsp, uid="AA11", whitelist="NEVER"), **changes}
    response = ocpi("PUT", token_url(emsp, "AA11"), body)
    assert response.json()["status_code"] == 2001
    assert field in response.json()["status_message"]
    assert ForeignToken.objects.get(party=emsp).whitelist == "ALLOWED"  # the stored token is untouched


def test_patch_needs_last_updated_and_an_existing_token(ocpi, emsp):
    ocpi("PUT", token_url(emsp, "AA11"), token_body(emsp, uid="AA11"))
    missing = ocpi("PATCH", token_url(emsp, "AA11"), {"valid": False})
    assert missing.json()["status_code"] == 2001 and "last_updated" in missing.json()["status_message"]
    unknown = ocpi("PATCH", token_url(emsp, "BB22"), {"valid": False, "last_updated": "2020-01-01T00:00:00Z"})
    assert unknown.status_code == 404 and unknown.json()["status_code"] == 2004
    bad = ocpi("PATCH", token_url(emsp, "AA11"), {"whitelist": 3, "last_updated": "2020-01-01T00:00:00Z"})
    assert bad.json()["status_code"] == 2001 and "whitelist" in bad.json()["status_message"]
    garbage = ocpi("PUT", token_url(emsp, "AA11"), "{oops")
    assert garbage.status_code == 400 and garbage.json()["status_code"] == 2001
    assert ForeignToken.objects.get(party=emsp).valid is True


def test_a_partner_writes_and_reads_only_under_its_own_ids(ocpi, emsp):
    other = PartyFactory(role=Party.Role.EMSP)
    ocpi("PUT", token_url(emsp, "AA11"), token_body(emsp, uid="AA11"))
    response = ocpi("PUT", token_url(other, "AA11"), token_body(other, uid="AA11"))
    assert response.status_code == 403 and response.json()["status_code"] == 2000
    sneaky = PartnerConnectionFactory(party=other, tokens__from_them="other")
    RoamingAgreementFactory(partner=other, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    assert sneaky.party == other
    peek = ocpi("GET", token_url(emsp, "AA11"), token="other")
    assert peek.status_code == 403 and "AA11" not in peek.content.decode()
    assert ForeignToken.objects.count() == 1
