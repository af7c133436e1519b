"""Bad partner input on every OCPI endpoint: each kind seen in the wild, over real HTTP (live_server).

What a partner sees: a 4xx with an OCPI envelope, 2001 naming the field (413 for an oversized body), and
nothing stored or changed. Valid but harmful input is refused the same way: a timestamp from the future,
identity fields that differ from the URL or the stored object, negative totals on a normal CDR, values
beyond what a column holds. Odd but legal input is accepted: year 1 in UTC, a foreign RFID uid that is
not hexadecimal.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import requests
from django.utils import timezone

from cards.models import ForeignToken
from charging.models import CDR, Session
from roaming.ocpi.envelope import format_datetime
from stations.models import Location
from tests.ocpi_input_world import (
    HUB_TOKEN,
    PARTNER_TOKEN,
    World,
    as_partner,
    build_world,
    example,
    our_cdr_token,
    snapshot,
)

pytestmark = pytest.mark.django_db(transaction=True)

SESSION_URL = "/ocpi/emsp/2.2.1/sessions/BE/BEC/101"
LOCATION_URL = "/ocpi/emsp/2.2.1/locations/BE/BEC/LOC1"
CDRS_URL = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def world(live_server) -> World:
    return build_world()


OCPI_TOKEN = PARTNER_TOKEN


def refused(response, field: str, http_status: int = 400) -> dict:
    """A refusal as the partner sees it: the HTTP status, the envelope, 2001 naming the field."""
    assert response.status_code == http_status, response.text[:300]
    body = response.json()
    assert body["status_code"] == 2001, body
    assert field in body["status_message"], body["status_message"]
    assert "timestamp" in body
    return body


def session(**changes) -> dict:
    body = as_partner(example("session_example_1_simple_start.json"), cdr_token=our_cdr_token())
    body.update(changes)
    return body


def location(**changes) -> dict:
    body = as_partner(example("location_example.json"))
    body.update(changes)
    return body


def cdr(**changes) -> dict:
    body = as_partner(example("cdr_example.json"))
    body.update(changes)
    return body


def test_a_body_over_the_upload_limit_is_413_in_the_envelope(ocpi_live, world, settings):
    before = snapshot()
    body = location(name="x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    response = ocpi_live("PUT", LOCATION_URL, body)
    refused(response, "body", http_status=413)
    assert snapshot() == before


def test_json_nested_10000_deep_is_2001_not_a_crash(ocpi_live, world):
    before = snapshot()
    refused(ocpi_live("PUT", LOCATION_URL, raw="[" * 10_000 + "]" * 10_000), "body")
    refused(ocpi_live("POST", CDRS_URL, raw='{"a":' * 10_000 + "1" + "}" * 10_000), "body")
    # Deep enough to pass the parser, too deep to store: named where it goes too deep.
    nested: dict = {}
    for _ in range(40):
        nested = {"x": nested}
    refused(ocpi_live("PUT", LOCATION_URL, location(opening_times=nested)), "opening_times.x.x")
    assert snapshot() == before


@pytest.mark.parametrize(
    "stamp",
    [
        "2020-13-01T10:00:00Z",  # month 13
        "2021-02-30T10:00:00Z",  # 30 February
        "0000-01-01T00:00:00Z",  # year 0
        "2020-01-01T00:00:00+25:00",  # offset beyond a day
        "0001-01-01T00:00:00+03:00",  # before the first instant UTC can hold
        "2020-01-01T24:00:00Z",
    ],
)
def test_dates_that_match_the_pattern_but_do_not_exist_are_2001(ocpi_live, live_server, world, stamp):
    before = snapshot()
    refused(ocpi_live("PUT", SESSION_URL, session(start_date_time=stamp)), "start_date_time")
    refused(ocpi_live("PUT", LOCATION_URL, location(last_updated=stamp)), "last_updated")
    refused(ocpi_live("POST", CDRS_URL, cdr(end_date_time=stamp)), "end_date_time")
    answer = requests.get(
        f"{live_server.url}/ocpi/cpo/2.2.1/locations", params={"date_from": stamp}, headers=World.headers()
    )
    refused(answer, "date_from")
    assert snapshot() == before


def test_year_1_in_utc_is_a_real_date_and_is_kept(ocpi_live, world):
    response = ocpi_live("PUT", SESSION_URL, session(start_date_time="0001-01-01T00:00:00Z"))
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    got = ocpi_live("GET", SESSION_URL).json()["data"]
    assert got["start_date_time"] == "0001-01-01T00:00:00Z"


def test_nul_bytes_in_ids_query_strings_and_text_are_2001(ocpi_live, world):
    before = snapshot()
    refused(ocpi_live("PUT", "/ocpi/emsp/2.2.1/locations/BE/BEC/LOC%001", location(id="LOC\x001")), "location_id")
    refused(ocpi_live("GET", "/ocpi/cpo/2.2.1/tokens/BE/BEC/AB%00CD"), "token_uid")
    refused(ocpi_live("GET", "/ocpi/cpo/2.2.1/locations?date_from=2020%00"), "date_from")
    refused(ocpi_live("GET", "/ocpi/emsp/2.2.1/tokens?offset=1%002"), "offset")
    refused(ocpi_live("PUT", LOCATION_URL, location(name="Gent\x00Zuid")), "name")
    refused(ocpi_live("PUT", LOCATION_URL, location(facilities=["HOTEL\x00"])), "facilities[0]")
    refused(ocpi_live("POST", CDRS_URL, cdr(remark="ok\x00")), "remark")
    assert snapshot() == before


def test_lone_surrogates_are_2001(ocpi_live, world):
    before = snapshot()
    # json.dumps writes "\ud800" as the escape a partner's encoder would send.
    refused(ocpi_live("PUT", LOCATION_URL, location(name="Gent \ud800")), "name")
    refused(ocpi_live("PUT", SESSION_URL, session(meter_id="\udfff")), "meter_id")
    refused(ocpi_live("POST", CDRS_URL, cdr(tariffs=[{"\ud83d": 1}])), "tariffs[0]")
    refused(
        ocpi_live("POST", "/ocpi/emsp/2.2.1/tokens/123ABC/authorize", {"location_id": "\ud800"}),
        "location_id",
    )
    assert snapshot() == before


def test_numbers_beyond_what_the_columns_hold_are_2001(ocpi_live, world):
    before = snapshot()
    body = location()
    body["evses"] = body["evses"][:1]  # a location's other, valid EVSEs would be kept without this one (issue 13)
    body["evses"][0]["connectors"][0]["max_electric_power"] = 2**31
    refused(ocpi_live("PUT", LOCATION_URL, body), "evses[0].connectors[0].max_electric_power")
    refused(ocpi_live("PUT", SESSION_URL, session(kwh=1e8)), "kwh")
    refused(ocpi_live("PUT", SESSION_URL, session(kwh=99_999_999.99999)), "kwh")  # rounds to 1e8
    refused(ocpi_live("POST", CDRS_URL, cdr(total_cost={"excl_vat": 1e8})), "total_cost.excl_vat")
    refused(ocpi_live("POST", CDRS_URL, cdr(total_energy=10**30)), "total_energy")
    refused(ocpi_live("GET", f"/ocpi/cpo/2.2.1/locations?offset={10**30}"), "offset")
    refused(ocpi_live("GET", f"/ocpi/emsp/2.2.1/tokens?limit={10**30}"), "limit")
    assert snapshot() == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_not_numbers(ocpi_live, world, literal):
    before = snapshot()
    text = json.dumps(session()).replace('"kwh": 0.0', f'"kwh": {literal}')
    assert literal in text
    refused(ocpi_live("PUT", SESSION_URL, raw=text), "kwh")
    assert snapshot() == before


def test_cdr_coordinates_nan_and_a_period_volume_of_1e300_are_refused(ocpi_live, world):
    before = snapshot()
    body = cdr()
    body["cdr_location"]["coordinates"]["latitude"] = "NaN"
    refused(ocpi_live("POST", CDRS_URL, body), "cdr_location.coordinates.latitude")
    body = cdr()
    body["charging_periods"][0]["dimensions"][0]["volume"] = 1e300
    refused(ocpi_live("POST", CDRS_URL, body), "charging_periods[0].dimensions[0].volume")
    assert snapshot() == before
    assert not CDR.objects.exists()


def test_negative_totals_only_on_a_credit_cdr(ocpi_live, world):
    refused(ocpi_live("POST", CDRS_URL, cdr(total_energy=-15.342)), "total_energy")
    refused(ocpi_live("POST", CDRS_URL, cdr(total_cost={"excl_vat": -4.0})), "total_cost.excl_vat")
    assert not CDR.objects.exists()
    assert ocpi_live("POST", CDRS_URL, cdr()).status_code == 201
    credit = cdr(
        id="12345-C", credit=True, credit_reference_id="12345", total_cost={"excl_vat": -4.0}, total_energy=-15.342
    )
    response = ocpi_live("POST", CDRS_URL, credit)
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    assert CDR.objects.get(ocpi_id="12345-C").credited_cdr == CDR.objects.get(ocpi_id="12345")


def test_a_foreign_rfid_uid_need_not_be_hexadecimal(ocpi_live, world):
    """Another eMSP's uid is any case-insensitive text up to 36 characters: kept as sent; only our cards are hex."""
    uid = "Tnm-Card.7zz"  # not hexadecimal, with a separator an RFID normaliser would drop
    body = as_partner(example("token_example_2_full_rfid.json"), uid=uid)
    response = ocpi_live("PUT", f"/ocpi/cpo/2.2.1/tokens/BE/BEC/{uid}?type=RFID", body)
    assert response.status_code == 201 and response.json()["status_code"] == 1000
    stored = ForeignToken.objects.get(party=world.partner)
    assert stored.uid == uid.upper() and stored.data["uid"] == uid
    got = ocpi_live("GET", f"/ocpi/cpo/2.2.1/tokens/BE/BEC/{uid.lower()}?type=RFID")
    assert got.status_code == 200 and got.json()["data"]["uid"] == uid
    patch = {"valid": False, "last_updated": format_datetime(timezone.now())}
    assert ocpi_live("PATCH", f"/ocpi/cpo/2.2.1/tokens/BE/BEC/{uid}?type=RFID", patch).status_code == 200
    assert ForeignToken.objects.get(party=world.partner).valid is False


def test_a_timestamp_from_the_future_is_refused_and_cannot_freeze_a_session(ocpi_live, world, settings):
    assert settings.OCPI_MAX_CLOCK_SKEW_SECONDS == 300
    now = timezone.now()
    assert ocpi_live("PUT", SESSION_URL, session(status="ACTIVE")).status_code == 201
    before = snapshot()
    frozen = {"status": "ACTIVE", "last_updated": "9999-12-31T23:59:59Z"}
    refused(ocpi_live("PATCH", SESSION_URL, frozen), "last_updated")
    later = format_datetime(now + dt.timedelta(minutes=10))
    refused(ocpi_live("PUT", SESSION_URL, session(last_updated=later)), "last_updated")
    refused(ocpi_live("PUT", LOCATION_URL, location(last_updated=later)), "last_updated")
    refused(ocpi_live("POST", CDRS_URL, cdr(last_updated=later)), "last_updated")
    token = as_partner(example("token_put_example.json"), last_updated=later)
    refused(ocpi_live("PUT", "/ocpi/cpo/2.2.1/tokens/BE/BEC/012345678", token), "last_updated")
    assert snapshot() == before
    # A clock a minute ahead is within the skew; the CPO's real COMPLETED is then applied.
    skewed = format_datetime(now + dt.timedelta(minutes=1))
    completed = {"status": "COMPLETED", "end_date_time": format_datetime(now), "last_updated": skewed}
    response = ocpi_live("PATCH", SESSION_URL, completed)
    assert response.status_code == 200 and response.json()["status_code"] == 1000
    assert Session.objects.get().status == "COMPLETED"


def test_a_hub_report_from_the_future_is_refused(ocpi_live, world):
    before = snapshot()
    info = {"country_code": "FR", "party_id": "TOT", "role": "CPO", "status": "CONNECTED"}
    info["last_updated"] = "9999-01-01T00:00:00Z"
    response = ocpi_live("PUT", "/ocpi/2.2.1/hubclientinfo/FR/TOT", info, token=HUB_TOKEN)
    refused(response, "last_updated")
    assert snapshot() == before


def test_a_patch_may_not_move_a_location_to_another_owner(ocpi_live, world):
    assert ocpi_live("PUT", LOCATION_URL, location()).status_code == 201
    before = snapshot()
    patch = {"party_id": "XYZ", "last_updated": format_datetime(timezone.now())}
    refused(ocpi_live("PATCH", LOCATION_URL, patch), "party_id")
    refused(ocpi_live("PATCH", LOCATION_URL, {**patch, "party_id": "BEC", "country_code": "NL"}), "country_code")
    refused(ocpi_live("PATCH", LOCATION_URL, {**patch, "party_id": "BEC", "id": "LOC2"}), "id")
    assert snapshot() == before
    # The owner's correct PUT is still accepted.
    replaced = ocpi_live("PUT", LOCATION_URL, location(name="Gent Zuid 2"))
    assert replaced.status_code == 200 and replaced.json()["status_code"] == 1000
    assert Location.objects.get(ocpi_id="LOC1").raw["party_id"] == "BEC"


def test_identity_fields_must_match_the_url_and_the_stored_object(ocpi_live, world):
    assert ocpi_live("PUT", SESSION_URL, session()).status_code == 201
    body = as_partner(example("token_put_example.json"))
    assert ocpi_live("PUT", "/ocpi/cpo/2.2.1/tokens/BE/BEC/012345678", body).status_code == 201
    before = snapshot()
    stamp = format_datetime(timezone.now())
    refused(ocpi_live("PATCH", SESSION_URL, {"id": "102", "last_updated": stamp}), "id")
    refused(ocpi_live("PATCH", SESSION_URL, {"party_id": "XYZ", "last_updated": stamp}), "party_id")
    refused(ocpi_live("PUT", SESSION_URL, session(id="102")), "id")
    token_url = "/ocpi/cpo/2.2.1/tokens/BE/BEC/012345678"
    refused(ocpi_live("PATCH", token_url, {"country_code": "NL", "last_updated": stamp}), "country_code")
    refused(ocpi_live("PATCH", token_url, {"uid": "999", "last_updated": stamp}), "uid")
    assert snapshot() == before


def test_a_made_up_cursor_is_2001(ocpi_live, world):
    for text in ("2020-01-01T00:00:00|1", f"2020-01-01T00:00:00+00:00|{10**30}", "0000-01-01|1", "garbage"):
        cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        refused(ocpi_live("GET", f"/ocpi/cpo/2.2.1/locations?cursor={cursor}"), "cursor")
