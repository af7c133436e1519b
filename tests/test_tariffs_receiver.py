"""OCPI Tariffs receiver (we are the eMSP): CPOs PUT, GET and DELETE their tariffs; connectors link to them.

Bad input and what happens to it:
- a field missing, of the wrong type or out of range -> HTTP 400, OCPI 2001 naming the field, nothing stored;
- another party's tariff (URL or body) -> HTTP 403 + 2000 (roaming.ocpi.ownership), nothing stored;
- the body's id or owner disagreeing with the URL -> 2001;
- PATCH (2.2.1 has none for tariffs) -> HTTP 405;
- an older PUT than what we hold -> accepted and ignored; a DELETE of a tariff we do not hold -> 1000.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.utils import timezone

from roaming.ocpi.envelope import format_datetime
from stations.models import Connector
from tariffs import selectors
from tariffs.models import Tariff
from tests.conftest import make_ocpi_partner
from tests.factories import ConnectorFactory, EVSEFactory, LocationFactory

pytestmark = pytest.mark.django_db

EXAMPLES = Path("/work/shared/ocpi/examples")
OCPI_TOKEN = "cpo-token-tariffs"
URL = "/ocpi/emsp/2.2.1/tariffs/DE/ALL/{}"
# Every full Tariff among the spec's examples (tariff_put_example.json has no last_updated: a bad-input case).
TARIFF_EXAMPLES = sorted(path.name for path in EXAMPLES.glob("tariff*.json") if path.name != "tariff_put_example.json")


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture
def cpo():
    return make_ocpi_partner(country_code="DE", party_id="ALL", name="Allego DE", token=OCPI_TOKEN).party


def test_every_spec_example_is_stored_and_read_back_as_sent(ocpi, cpo):
    assert len(TARIFF_EXAMPLES) == 19
    for number, name in enumerate(TARIFF_EXAMPLES):
        body = example(name)
        body["id"] = f"EX{number}"  # several examples share an id
        put = ocpi("PUT", URL.format(body["id"]), body)
        assert put.status_code == 201, (name, put.json())
        assert put.json()["status_code"] == 1000
        got = ocpi("GET", URL.format(body["id"].lower()))  # ids are case-insensitive
        assert got.status_code == 200 and got.data == body, name
    assert Tariff.objects.filter(party=cpo).count() == 19
    stored = Tariff.objects.get(
        party=cpo, ocpi_id="EX" + str(TARIFF_EXAMPLES.index("tariff_6_025kwh_start_max_price.json"))
    )
    assert stored.end_date_time is not None and stored.currency == "EUR" and stored.source is not None


def test_put_replaces_an_older_copy_and_ignores_an_older_push(ocpi, cpo):
    body = example("tariff_1_simple_2hour.json")
    assert ocpi("PUT", URL.format("12"), body).status_code == 201
    newer = copy.deepcopy(body)
    newer["elements"][0]["price_components"][0]["price"] = 2.5
    newer["last_updated"] = "2016-01-01T00:00:00Z"
    assert ocpi("PUT", URL.format("12"), newer).status_code == 200
    assert ocpi("GET", URL.format("12")).data["elements"][0]["price_components"][0]["price"] == 2.5
    late = ocpi("PUT", URL.format("12"), body)  # the older version, arriving late
    assert late.status_code == 200 and late.json()["status_code"] == 1000
    assert Tariff.objects.get().document["elements"][0]["price_components"][0]["price"] == 2.5


def test_optional_nulls_are_absent_and_enums_in_any_case_are_accepted(ocpi, cpo):
    body = example("tariff_4_complex.json")
    body.update(tariff_alt_text=None, min_price=None, type="regular")
    body["elements"][1]["restrictions"]["max_kwh"] = None
    body["elements"][2]["restrictions"]["day_of_week"] = ["monday", "Tuesday"]
    body["elements"][0]["price_components"][0]["type"] = "flat"
    assert ocpi("PUT", URL.format("14"), body).status_code == 201
    stored = Tariff.objects.get().document
    assert "tariff_alt_text" not in stored and "min_price" not in stored and stored["type"] == "REGULAR"
    assert "max_kwh" not in stored["elements"][1]["restrictions"]
    assert stored["elements"][2]["restrictions"]["day_of_week"] == ["MONDAY", "TUESDAY"]
    assert stored["elements"][0]["price_components"][0]["type"] == "FLAT"


def test_delete_removes_it_and_a_second_delete_still_succeeds(ocpi, cpo):
    assert ocpi("PUT", URL.format("12"), example("tariff_1_simple_2hour.json")).status_code == 201
    gone = ocpi("DELETE", URL.format("12"))
    assert gone.status_code == 200 and gone.json()["status_code"] == 1000
    assert not Tariff.objects.exists()
    assert ocpi("GET", URL.format("12")).status_code == 404
    again = ocpi("DELETE", URL.format("12"))  # a retry after a lost answer
    assert again.status_code == 200 and again.json()["status_code"] == 1000


def test_patch_is_not_part_of_tariffs_in_2_2_1(ocpi, cpo):
    ocpi("PUT", URL.format("12"), example("tariff_1_simple_2hour.json"))
    patched = ocpi("PATCH", URL.format("12"), {"currency": "USD", "last_updated": format_datetime(timezone.now())})
    assert patched.status_code == 405
    assert Tariff.objects.get().currency == "EUR"


def test_a_partner_writes_only_its_own_tariffs(ocpi, cpo):
    other = make_ocpi_partner(country_code="NL", party_id="OTH", token="other-token").party
    body = example("tariff_1_simple_2hour.json")
    # Another party's URL: refused before anything is read.
    refused = ocpi("PUT", "/ocpi/emsp/2.2.1/tariffs/NL/OTH/12", {**body, "country_code": "NL", "party_id": "OTH"})
    assert refused.status_code == 403 and refused.json()["status_code"] == 2000
    assert ocpi("DELETE", "/ocpi/emsp/2.2.1/tariffs/NL/OTH/12").status_code == 403
    # Its own URL, another owner in the body: 2001 naming the field.
    moved = ocpi("PUT", URL.format("12"), {**body, "party_id": "OTH"})
    assert moved.status_code == 400 and moved.json()["status_code"] == 2001
    assert "party_id" in moved.json()["status_message"]
    other_id = ocpi("PUT", URL.format("99"), body)
    assert other_id.status_code == 400 and other_id.json()["status_message"].startswith("id:")
    # Nobody writes ours.
    ours = ocpi("PUT", "/ocpi/emsp/2.2.1/tariffs/BE/MBP/12", {**body, "country_code": "BE", "party_id": "MBP"})
    assert ours.status_code == 403
    assert not Tariff.objects.exists()
    # The other partner cannot read or delete this one's tariff either.
    ocpi("PUT", URL.format("12"), body)
    assert ocpi("GET", URL.format("12"), token="other-token").status_code == 403
    assert ocpi("DELETE", URL.format("12"), token="other-token").status_code == 403
    assert Tariff.objects.filter(party=cpo).count() == 1 and not Tariff.objects.filter(party=other).exists()


def test_a_hub_pushes_for_its_client(ocpi):
    client = make_ocpi_partner(country_code="DE", party_id="ALL", via_hub=True, token="hub-token")
    body = example("tariff_8_simple_025kwh.json")
    put = ocpi("PUT", URL.format("16"), body, partner=client)
    assert put.status_code == 201
    assert Tariff.objects.get().party == client.party


def _broken(change) -> dict:
    body = example("tariff_4_complex.json")
    change(body)
    return body


BAD = [
    ("elements", lambda b: b.pop("elements")),
    ("elements", lambda b: b.update(elements=[])),
    ("elements[0].price_components", lambda b: b["elements"][0].update(price_components=[])),
    ("elements[0].price_components[0].price", lambda b: b["elements"][0]["price_components"][0].update(price="2.5")),
    ("elements[0].price_components[0].price", lambda b: b["elements"][0]["price_components"][0].update(price=-1)),
    ("elements[0].price_components[0].type", lambda b: b["elements"][0]["price_components"][0].update(type="KWH")),
    ("elements[0].price_components[0].step_size", lambda b: b["elements"][0]["price_components"][0].pop("step_size")),
    ("elements[0].price_components[0].vat", lambda b: b["elements"][0]["price_components"][0].update(vat=150)),
    ("elements[4].restrictions.start_time", lambda b: b["elements"][4]["restrictions"].update(start_time="25:00")),
    ("elements[2].restrictions.day_of_week", lambda b: b["elements"][2]["restrictions"].update(day_of_week=["FUNDAY"])),
    ("elements[1].restrictions.max_current", lambda b: b["elements"][1]["restrictions"].update(max_current=True)),
    ("elements[1].restrictions.start_date", lambda b: b["elements"][1]["restrictions"].update(start_date="2026-13-01")),
    ("currency", lambda b: b.update(currency="EURO")),
    ("last_updated", lambda b: b.update(last_updated="2099-01-01T00:00:00Z")),
    ("last_updated", lambda b: b.pop("last_updated")),
    ("end_date_time", lambda b: b.update(start_date_time="2020-01-02T00:00:00Z", end_date_time="2020-01-01T00:00:00Z")),
    ("max_price", lambda b: b.update(min_price={"excl_vat": 5}, max_price={"excl_vat": 1})),
    ("tariff_alt_text[0].language", lambda b: b.update(tariff_alt_text=[{"language": "english", "text": "x"}])),
    ("elements[0].price_components[0].price", lambda b: b["elements"][0]["price_components"][0].update(price=1e12)),
]


@pytest.mark.parametrize(("field", "change"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_input_is_2001_naming_the_field_and_stores_nothing(ocpi, cpo, field, change):
    response = ocpi("PUT", URL.format("14"), _broken(change))
    assert response.status_code == 400, response.content
    assert response.json()["status_code"] == 2001
    assert response.json()["status_message"].startswith(field), response.json()["status_message"]
    assert not Tariff.objects.exists()


def test_the_spec_put_example_lacks_last_updated_and_is_refused_by_name(ocpi, cpo):
    response = ocpi("PUT", URL.format("12"), example("tariff_put_example.json"))
    assert response.status_code == 400 and response.json()["status_message"].startswith("last_updated")


@pytest.mark.parametrize("raw", [b"[]", b"not json", b'{"id": "12\\u0000"}', b""])
def test_not_an_object_is_2001(ocpi, cpo, raw):
    response = ocpi("PUT", URL.format("12"), raw=raw)
    assert response.status_code == 400 and response.json()["status_code"] == 2001
    assert not Tariff.objects.exists()


def test_connectors_link_to_tariffs_and_say_when_theirs_is_unknown(ocpi, cpo):
    evse = EVSEFactory(location=LocationFactory(party=cpo))
    named = ConnectorFactory(evse=evse, connector_id="1", tariff_ids=["12", "AD-HOC"])
    silent = ConnectorFactory(evse=evse, connector_id="2", tariff_ids=[])
    now = timezone.now()

    def state(connector: Connector) -> str:
        known = selectors.known_tariffs(cpo.pk, connector.tariff_ids)
        return selectors.connector_tariff_state(connector, known, now)[0]

    assert state(named) == selectors.UNKNOWN and state(silent) == selectors.NOT_SHARED
    ad_hoc = {**example("tariff_2_alt_text.json"), "id": "AD-HOC"}
    ocpi("PUT", URL.format("AD-HOC"), ad_hoc)
    # Only an ad-hoc-payment tariff known: that is the price for drivers paying at the charger, not our card's.
    assert state(named) == selectors.UNKNOWN
    ocpi("PUT", URL.format("12"), {**example("tariff_1_simple_2hour.json"), "type": "REGULAR"})
    chosen = selectors.connector_tariff_state(named, selectors.known_tariffs(cpo.pk, named.tariff_ids), now)
    assert chosen[0] == selectors.PRICED and chosen[1].ocpi_id == "12"  # the regular price, not the ad-hoc one
    ocpi("DELETE", URL.format("12"))
    ocpi("DELETE", URL.format("AD-HOC"))
    assert state(named) == selectors.UNKNOWN


def test_our_version_details_list_both_tariffs_endpoints(ocpi, cpo, settings):
    details = ocpi("GET", "/ocpi/2.2.1").data
    endpoints = {(e["identifier"], e["role"]): e["url"] for e in details["endpoints"]}
    assert endpoints[("tariffs", "RECEIVER")] == settings.OCPI_BASE_URL + "/ocpi/emsp/2.2.1/tariffs"
    assert endpoints[("tariffs", "SENDER")] == settings.OCPI_BASE_URL + "/ocpi/cpo/2.2.1/tariffs"
