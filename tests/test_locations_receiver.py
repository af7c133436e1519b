"""CPOs push their locations to us: PUT/PATCH/GET /ocpi/emsp/2.2.1/locations/{cc}/{pid}/{id}[/{evse}[/{conn}]]."""

from __future__ import annotations

import pytest
import requests

from roaming.ocpi.envelope import parse_datetime
from stations.models import EVSE, Connector, EvseStatusChange, Location
from tests.conftest import make_ocpi_partner
from tests.feeds_fixtures import example, location, stamp

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/ocpi/emsp/2.2.1/locations"
OCPI_TOKEN = "bec-token"


@pytest.fixture
def cpo():
    """BE*BEC, the party of the spec's location examples, connected with its own token."""
    return make_ocpi_partner(country_code="BE", party_id="BEC", token=OCPI_TOKEN, tokens__to_them="to-bec").connection


def test_put_a_new_location_then_get_it_back(ocpi_live, cpo):
    response = ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))

    assert (response.status_code, response.envelope["status_code"]) == (201, 1000)
    stored = Location.objects.get(party=cpo.party, ocpi_id="LOC1")
    assert (stored.map_status, stored.evse_count, stored.source) == ("available", 2, cpo)
    response = ocpi_live("GET", BASE + "/BE/BEC/LOC1")
    assert response.status_code == 200 and response.data["id"] == "LOC1"
    assert [e["uid"] for e in response.data["evses"]] == ["3256", "3257"]
    response = ocpi_live("GET", BASE + "/BE/BEC/LOC1/3257/1")
    assert response.data["standard"] == "IEC_62196_T2" and response.data["max_amperage"] == 16

    response = ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    assert (response.status_code, response.envelope["status_code"]) == (200, 1000)  # a replace, not a second one
    assert Location.objects.count() == 1


def test_a_status_patch_is_on_the_map_at_once_with_history_and_bumps_the_location(ocpi_live, cpo):
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    patch = example("location_patch_example_status.json")  # {"status": "CHARGING", "last_updated": ...}
    ocpi_live("PATCH", BASE + "/BE/BEC/LOC1/3256", {"status": "OUTOFORDER", "last_updated": stamp()})

    response = ocpi_live("PATCH", BASE + "/BE/BEC/LOC1/3257", patch)

    assert (response.status_code, response.envelope["status_code"]) == (200, 1000)
    loc = Location.objects.get()
    assert (loc.map_status, loc.available_evse_count) == ("in_use", 0)
    evse = EVSE.objects.get(uid="3257")
    assert evse.status == patch["status"]
    # The parent's last_updated follows its EVSE, as the CPO reads it back (the fast path rewrites the location's
    # row in place, leaving its indexed last_updated column alone).
    stored = ocpi_live("GET", BASE + "/BE/BEC/LOC1").envelope["data"]
    assert parse_datetime(stored["last_updated"]) >= evse.last_updated
    assert list(EvseStatusChange.objects.filter(evse__uid="3256").values_list("status", flat=True)) == [
        "OUTOFORDER",
        "AVAILABLE",
    ]


def test_put_an_evse_and_a_connector_into_an_existing_location(ocpi_live, cpo):
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    evse = example("location_example.json")["evses"][0] | {"uid": "3258", "status": "AVAILABLE"}
    evse["last_updated"] = stamp()
    assert ocpi_live("PUT", BASE + "/BE/BEC/LOC1/3258", evse).status_code == 200
    connector = evse["connectors"][0] | {"id": "9", "standard": "IEC_62196_T2_COMBO", "power_type": "DC"}
    connector |= {"max_voltage": 500, "max_amperage": 300, "max_electric_power": 150000, "last_updated": stamp()}

    response = ocpi_live("PUT", BASE + "/BE/BEC/LOC1/3258/9", connector)

    assert (response.status_code, response.envelope["status_code"]) == (200, 1000)
    loc = Location.objects.get()
    assert loc.evse_count == 3 and loc.max_power_kw == 150
    assert loc.connector_standards == ",IEC_62196_T2,IEC_62196_T2_COMBO,"
    assert Connector.objects.filter(evse__uid="3258").count() == 3


def test_the_spec_bad_evse_example_is_refused_and_nothing_changes(ocpi_live, cpo):
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    before = Location.objects.get()

    body = ocpi_live("PUT", BASE + "/BE/BEC/LOC1/3256", example("location_put_example_add_evse.json")).envelope

    assert body["status_code"] == 2001 and "connectors[0]" in body["status_message"]
    after = Location.objects.get()
    assert (after.raw, after.content_hash, after.last_updated) == (before.raw, before.content_hash, before.last_updated)
    assert EVSE.objects.get(uid="3256").evse_id == "BE*BEC*E041503001"


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "message"),
    [
        ("PATCH", "/BE/BEC/LOC1/3256", {"status": "CHARGING"}, 2001, "last_updated: required"),
        ("PATCH", "/BE/BEC/LOC1/3256", {"status": "BROKEN", "last_updated": "2026-01-01T00:00:00Z"}, 2001, "status"),
        ("PATCH", "/BE/BEC/NOPE", {"name": "x", "last_updated": "2026-01-01T00:00:00Z"}, 2003, "Unknown location"),
        ("PATCH", "/BE/BEC/LOC1/NOPE", {"status": "CHARGING", "last_updated": "2026-01-01T00:00:00Z"}, 2003, "EVSE"),
        ("PUT", "/BE/BEC/OTHER", None, 2001, "id: must be 'OTHER'"),
        ("PUT", "/BE/BEC/LOC1/3256", {"uid": "999"}, 2001, "uid: must be '3256'"),
    ],
    ids=["patch-without-last-updated", "unknown-status", "unknown-location", "unknown-evse", "id-mismatch", "uid"],
)
def test_bad_pushes_are_refused_in_ocpi_form(ocpi_live, cpo, method, path, body, code, message):
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    before = Location.objects.get().content_hash
    if body is None:
        body = example("location_example.json")

    answer = ocpi_live(method, BASE + path, body).envelope

    assert answer["status_code"] == code and message in answer["status_message"], answer
    assert Location.objects.get().content_hash == before
    assert Location.objects.count() == 1


def test_invalid_json_is_http_400(ocpi_live, cpo):
    response = ocpi_live("PUT", BASE + "/BE/BEC/LOC1", raw=b"{not json")
    assert response.status_code == 400 and response.envelope["status_code"] == 2001


def test_a_partner_may_write_and_read_only_its_own_locations(ocpi_live, cpo):
    other = make_ocpi_partner(country_code="NL", party_id="ALL", token="t-all")
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))

    response = ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"), partner=other)
    assert (response.status_code, response.envelope["status_code"]) == (403, 2000)
    response = ocpi_live("PATCH", BASE + "/BE/BEC/LOC1/3256", {"status": "OUTOFORDER", "last_updated": stamp()})
    assert response.status_code == 200
    assert ocpi_live("GET", BASE + "/BE/BEC/LOC1", partner=other).status_code == 403
    assert ocpi_live("GET", BASE + "/BE/BEC/LOC1", token="not-a-token").status_code == 401
    # A location under the other party's own code is its own.
    mine = location("X1", country_code="NL", party_id="ALL", updated=stamp())
    assert ocpi_live("PUT", BASE + "/NL/ALL/X1", mine, partner=other).status_code == 201
    assert Location.objects.get(ocpi_id="X1").party == other.party


def test_a_hub_pushes_for_its_confirmed_client_with_or_without_routing_headers(ocpi_live, cpo):
    client = make_ocpi_partner(country_code="NL", party_id="FST", via_hub=True, token="hub-token")
    body = location("F1", country_code="NL", party_id="FST", updated=stamp())

    assert ocpi_live("PUT", BASE + "/NL/FST/F1", body, partner=client).status_code == 201
    # Without routing headers too (roaming.ocpi.ownership): the URL names a client it may act for.
    assert ocpi_live("PUT", BASE + "/NL/FST/F1", body, partner=client, routing=False).status_code == 200
    assert ocpi_live("PUT", BASE + "/DE/HBX/F1", body, partner=client).status_code == 403
    assert Location.objects.get(ocpi_id="F1").party.party_id == "FST"


def test_a_status_patch_reaches_the_drivers_map_api_at_once(live_server, ocpi_live, cpo):
    """The map caches its answers; a CPO's status push must not wait for that cache to expire."""
    ocpi_live("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json"))
    loc = Location.objects.get()
    streets = {"bbox": f"{loc.longitude - 0.01},{loc.latitude - 0.01},{loc.longitude + 0.01},{loc.latitude + 0.01}"}
    streets["zoom"] = 17

    def map_status() -> str:
        features = requests.get(live_server.url + "/api/v1/stations", params=streets, timeout=10).json()["features"]
        return features[0]["properties"]["status"]

    assert map_status() == "available"
    assert map_status() == "available"  # now served from the cache
    for uid in ("3256", "3257"):
        ocpi_live("PATCH", BASE + f"/BE/BEC/LOC1/{uid}", {"status": "OUTOFORDER", "last_updated": stamp()})
    assert map_status() == "faulty"
