"""Property: no OCPI endpoint answers mutated spec examples with a 500, and a refusal changes nothing stored.

For every OCPI endpoint of our URLconfs, hypothesis takes the spec's example payloads for it (built from the
spec's shape where the spec ships none: LocationReferences, StartSession, StopSession, CommandResult,
ClientInfo) and mutates them: values replaced by NaN, Infinity, huge numbers, NUL-bearing strings, lone
surrogates, wrong types, nested structures, impossible or future dates, explicit nulls; required fields
dropped. GET endpoints get mutated query parameters and URL segments. Each answer must be below 500 and an
OCPI envelope; when it is not a success (status_code 1000), a snapshot of every table OCPI writes
(locations, EVSEs, connectors, sessions, CDRs, tokens, commands, parties, connections, tariffs) must be unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.urls import URLResolver, get_resolver, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charging.models import CDR
from tests.ocpi_input_world import (
    HUB_TOKEN,
    PARTNER_TOKEN,
    REGISTRATION_TOKEN,
    UNREACHABLE_VERSIONS_URL,
    World,
    as_partner,
    build_world,
    example,
    our_cdr_token,
    snapshot,
)

pytestmark = pytest.mark.django_db

OCPI_TOKEN = PARTNER_TOKEN  # the partner of tests/ocpi_input_world.py

# Bounded so the module runs in about a minute; OCPI_PROPERTY_EXAMPLES=500 for a deeper search.
BODY_EXAMPLES = int(os.environ.get("OCPI_PROPERTY_EXAMPLES", "25"))
QUERY_EXAMPLES = 2 * BODY_EXAMPLES
PROPERTY_SETTINGS = settings(
    max_examples=BODY_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

IMPOSSIBLE_DATES = [
    "2020-13-01T10:00:00Z",
    "2021-02-30T10:00:00Z",
    "0000-01-01T00:00:00Z",
    "2020-01-01T00:00:00+25:00",
    "0001-01-01T00:00:00+03:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59Z",  # exists, but far in the future
    "0001-01-01T00:00:00Z",  # exists: partners do send year 1
    "2020-01-01T24:00:00Z",
    "2020-01-01T00:00:00.1234567890123Z",
]


def _nested(depth: int) -> Any:
    value: Any = 1
    for index in range(depth):
        value = [value] if index % 2 else {"n": value}
    return value


BAD_VALUES = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e300, -1e300, 10**30, -(10**30), 2**31, 2**63, 1e8, 99_999_999.99999, -1]
    ),
    st.sampled_from([None, True, False, 0, "", "NaN", "Infinity", "1e400", "-0"]),
    # A new empty list or object each time: a sampled one would be the same object in every draw, and a bad key
    # added inside it would make documents refer to themselves.
    st.builds(list),
    st.builds(dict),
    st.sampled_from(IMPOSSIBLE_DATES),
    st.text(max_size=8).map(lambda s: s + "\x00"),
    st.text(max_size=8).map(lambda s: "\ud800" + s),
    st.text(max_size=8).map(lambda s: s + "\udfff"),
    st.text(min_size=37, max_size=300),
    st.integers(),
    st.floats(),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
        max_leaves=8,
    ),
    st.integers(min_value=30, max_value=200).map(_nested),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a JSON document (not the root itself)."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(child, (*prefix, index)))
    return found


def _parent(document: Any, path: tuple) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


@st.composite
def mutated(draw, document: Any) -> Any:
    """The document with one to three places replaced by a bad value, dropped, or a bad extra key added."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = _paths(document)
        kind = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if not places or kind == "add":
            objects = [()] if isinstance(document, dict) else []
            objects += [p for p in places if isinstance(_parent(document, (*p, None)), dict)]
            if objects:
                container = _parent(document, (*draw(st.sampled_from(objects)), None))
                key = draw(st.sampled_from(["extra", "\x00key", "\ud800", "last_updated", "id", "party_id"]))
                container[key] = draw(BAD_VALUES)
            continue
        place = draw(st.sampled_from(places))
        parent = _parent(document, place)
        if kind == "drop":
            del parent[place[-1]]
        else:
            parent[place[-1]] = draw(BAD_VALUES)
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        return draw(BAD_VALUES)  # not an object at all
    return document


@dataclass
class Case:
    """One OCPI endpoint and method, with the example documents a partner would send to it."""

    name: str
    method: str
    path: str
    examples: list[Any] = field(default_factory=list)
    token: str = PARTNER_TOKEN
    paths_per_example: list[str] | None = None  # when the URL names the object in the example

    def __str__(self) -> str:
        return self.name


def _location(name: str = "location_example.json") -> dict:
    return as_partner(example(name))


def _now() -> str:
    from django.utils import timezone

    from roaming.ocpi.envelope import format_datetime

    return format_datetime(timezone.now())


LOCATIONS = [
    "location_example.json",
    "location_example_parking_garage_opening_hours.json",
    "location_example_uc2_destination_charger.json",
    "location_example_uc4_limited_visibility.json",
    "location_example_uc5_home_charge_point.json",
]
RECEIVER = "/ocpi/emsp/2.2.1/locations/BE/BEC"
COMMAND_RESULT_PATH = "/ocpi/emsp/2.2.1/commands/START_SESSION/00000000-0000-4000-8000-000000000000"


def body_cases() -> list[Case]:
    evse = example("location_example.json")["evses"][0]
    token_examples = [as_partner(example(n)) for n in ("token_put_example.json", "token_example_2_full_rfid.json")]
    start = {
        "response_url": "http://127.0.0.1:9/ocpi/emsp/2.2.1/commands/START_SESSION/1",
        "token": {
            **our_cdr_token(),
            "issuer": "MobilityPlus",
            "valid": True,
            "whitelist": "ALLOWED",
            "last_updated": "2020-01-01T00:00:00Z",
        },
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
        "connector_id": "1",
        "authorization_reference": "REF1",
    }
    credentials = [{**example(n), "url": UNREACHABLE_VERSIONS_URL} for n in ("credentials_example.json",)]
    for body in credentials:
        for role in body["roles"]:
            role.update(country_code="NL", party_id="EXA")
    return [
        Case(
            "location PUT",
            "PUT",
            "",
            [_location(n) for n in LOCATIONS],
            paths_per_example=[f"{RECEIVER}/{_location(n)['id']}" for n in LOCATIONS],
        ),
        Case(
            "location PATCH",
            "PATCH",
            f"{RECEIVER}/LOC1",
            [example(n) for n in ("location_patch_example_location.json", "location_patch_example_status.json")],
        ),
        Case(
            "EVSE PUT",
            "PUT",
            f"{RECEIVER}/LOC1/3256",
            [evse, example("location_put_example_add_evse.json")],
        ),
        Case("EVSE PATCH", "PATCH", f"{RECEIVER}/LOC1/3256", [example("location_patch_example_status.json")]),
        Case("connector PUT", "PUT", f"{RECEIVER}/LOC1/3256/1", [evse["connectors"][0]]),
        Case("connector PATCH", "PATCH", f"{RECEIVER}/LOC1/3256/1", [example("location_patch_example_tariff.json")]),
        Case(
            "session PUT",
            "PUT",
            "/ocpi/emsp/2.2.1/sessions/BE/BEC/101",
            [
                as_partner(example(n))
                for n in ("session_example_1_simple_start.json", "session_example_2_short_finished.json")
            ],
        ),
        Case(
            "session PATCH",
            "PATCH",
            "/ocpi/emsp/2.2.1/sessions/BE/BEC/101",
            [
                example(n)
                for n in ("session_patch_example_charging_period.json", "session_patch_example_total_cost.json")
            ],
        ),
        Case("CDR POST", "POST", "/ocpi/emsp/2.2.1/cdrs", [as_partner(example("cdr_example.json"), id="P-1")]),
        Case(
            "tariff PUT",
            "PUT",
            "/ocpi/emsp/2.2.1/tariffs/BE/BEC/12",
            [
                as_partner(example(n), id="12")
                for n in ("tariff_4_complex.json", "tariff_6_025kwh_start_max_price.json", "tariff_2_alt_text.json")
            ],
        ),
        Case(
            "token PUT",
            "PUT",
            "",
            token_examples,
            paths_per_example=[f"/ocpi/cpo/2.2.1/tokens/BE/BEC/{t['uid']}?type={t['type']}" for t in token_examples],
        ),
        Case("token PATCH", "PATCH", "/ocpi/cpo/2.2.1/tokens/BE/BEC/012345678", [example("token_patch_example.json")]),
        Case(
            "authorize POST",
            "POST",
            "/ocpi/emsp/2.2.1/tokens/123ABC/authorize?type=RFID",
            [{"location_id": "LOC1", "evse_uids": ["3256", "3257"]}],
        ),
        Case("START_SESSION POST", "POST", "/ocpi/cpo/2.2.1/commands/START_SESSION", [start]),
        Case(
            "STOP_SESSION POST",
            "POST",
            "/ocpi/cpo/2.2.1/commands/STOP_SESSION",
            [{"response_url": "http://127.0.0.1:9/ocpi/emsp/2.2.1/commands/STOP_SESSION/1", "session_id": "101"}],
        ),
        Case(
            "CommandResult POST",
            "POST",
            COMMAND_RESULT_PATH,
            [{"result": "ACCEPTED", "message": [{"language": "en", "text": "ok"}]}],
        ),
        Case("credentials POST", "POST", "/ocpi/2.2.1/credentials", credentials, token=REGISTRATION_TOKEN),
        Case("credentials PUT", "PUT", "/ocpi/2.2.1/credentials", credentials),
        Case(
            "hubclientinfo PUT",
            "PUT",
            "/ocpi/2.2.1/hubclientinfo/BE/BEC",
            [
                {
                    "country_code": "BE",
                    "party_id": "BEC",
                    "role": "CPO",
                    "status": "CONNECTED",
                    "last_updated": "2020-01-01T00:00:00Z",
                }
            ],
            token=HUB_TOKEN,
        ),
    ]


BODY_CASES = body_cases()


@pytest.fixture
def world(ocpi, settings) -> World:
    """The partner has already pushed a location, a session, a CDR and a token: mutations attack stored data."""
    settings.OCPI_HTTP_RETRIES = 0  # a handshake calling the unreachable versions URL fails at once
    # Authorization decisions inserted at once, inside the test's transaction: a background flush would commit
    # them on its own connection and leave them to later tests (tests/test_rest_api_schema.py counts them).
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    world = build_world()
    seeds = [
        ("PUT", f"{RECEIVER}/LOC1", _location()),
        ("PUT", "/ocpi/emsp/2.2.1/sessions/BE/BEC/101", as_partner(example("session_example_1_simple_start.json"))),
        ("POST", "/ocpi/emsp/2.2.1/cdrs", as_partner(example("cdr_example.json"))),
        ("PUT", "/ocpi/cpo/2.2.1/tokens/BE/BEC/012345678", as_partner(example("token_put_example.json"))),
    ]
    for method, path, body in seeds:
        response = ocpi(method, path, json.dumps(body))
        assert response.status_code == 201, response.content
    return world


def check_answer(response, before: dict, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.content[:300]!r}"
    body = response.json()
    assert isinstance(body.get("status_code"), int) and "timestamp" in body, f"{what}: not an envelope: {body}"
    if body["status_code"] != 1000:
        # Bad input is a 4xx; only a server-side failure (3xxx, e.g. a partner's versions URL unreachable) is not.
        assert response.status_code >= 400 or body["status_code"] >= 3000, f"{what}: {body} HTTP {response.status_code}"
        assert snapshot() == before, f"{what}: refused ({body['status_message']}) but stored data changed"


@pytest.mark.parametrize("case", BODY_CASES, ids=str)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_spec_examples_never_500_and_refusals_change_nothing(ocpi, world, case, data):
    index = data.draw(st.integers(min_value=0, max_value=len(case.examples) - 1), label="example")
    body = data.draw(mutated(case.examples[index]), label="body")
    path = case.paths_per_example[index] if case.paths_per_example else case.path
    if path == COMMAND_RESULT_PATH:  # our response_url for the command the partner is answering
        path = f"/ocpi/emsp/2.2.1/commands/START_SESSION/{world.command.uid}"
    text = json.dumps(body)  # NaN and Infinity become the non-JSON literals a careless encoder sends
    before = snapshot()
    check_answer(ocpi(case.method, path, text, token=case.token), before, f"{case} {text[:300]}")


GET_PATHS = [
    "/ocpi/versions",
    "/ocpi/2.2.1",
    "/ocpi/2.2.1/credentials",
    "/ocpi/2.2.1/hubclientinfo/{cc}/{party}",
    "/ocpi/emsp/2.2.1/tokens",
    "/ocpi/cpo/2.2.1/tokens/{cc}/{party}/{id}",
    "/ocpi/emsp/2.2.1/locations/{cc}/{party}/{id}",
    "/ocpi/emsp/2.2.1/locations/{cc}/{party}/{id}/{id}",
    "/ocpi/emsp/2.2.1/locations/{cc}/{party}/{id}/{id}/{id}",
    "/ocpi/cpo/2.2.1/locations",
    "/ocpi/cpo/2.2.1/locations/{id}",
    "/ocpi/cpo/2.2.1/locations/{id}/{id}",
    "/ocpi/cpo/2.2.1/locations/{id}/{id}/{id}",
    "/ocpi/emsp/2.2.1/sessions/{cc}/{party}/{id}",
    "/ocpi/emsp/2.2.1/cdrs/{pk}",
    "/ocpi/emsp/2.2.1/tariffs/{cc}/{party}/{id}",
    "/ocpi/cpo/2.2.1/tariffs",
    "/ocpi/cpo/2.2.1/sessions",
    "/ocpi/cpo/2.2.1/cdrs",
]
SEGMENTS = st.one_of(
    st.sampled_from(["BE", "BEC", "LOC1", "3256", "1", "101", "012345678", "MBP-GENT", "be", "bec"]),
    st.text(min_size=1, max_size=50),
    st.text(max_size=6).map(lambda s: s + "\x00"),
    st.text(max_size=6).map(lambda s: "\ud800" + s),
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", str(10**30), str(2**31), str(2**63), "1e3", "", "RFID", "APP_USER"]),
    st.sampled_from(IMPOSSIBLE_DATES),
    st.text(max_size=40),
    st.text(max_size=6).map(lambda s: s + "\x00"),
    st.integers().map(str),
    st.binary(max_size=40).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode()),  # cursor-shaped
)


def _ocpi_url_names(patterns, prefix: str = "") -> set[str]:
    names = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^")
        if isinstance(pattern, URLResolver):
            names |= _ocpi_url_names(pattern.url_patterns, route)
        elif route.startswith("ocpi/") and pattern.name:
            names.add(pattern.name)
    return names


def test_the_properties_cover_every_ocpi_endpoint_of_the_urlconfs():
    """A new OCPI endpoint fails here until it is added to the cases above."""
    covered = {resolve((case.paths_per_example or [case.path])[0].partition("?")[0]).url_name for case in BODY_CASES}
    covered |= {resolve(path.format(cc="BE", party="BEC", id="X", pk="1")).url_name for path in GET_PATHS}
    assert covered == _ocpi_url_names(get_resolver().url_patterns)
    assert len(covered) == 23


def _quoted(segment: str) -> str:
    return quote(segment.encode("utf-8", "surrogatepass"), safe="")


@settings(PROPERTY_SETTINGS, max_examples=QUERY_EXAMPLES)
@given(data=st.data())
def test_mutated_query_parameters_and_url_segments_never_500(ocpi, world, data):
    template = data.draw(st.sampled_from(GET_PATHS), label="endpoint")
    path = template.format(
        cc=_quoted(data.draw(SEGMENTS)),
        party=_quoted(data.draw(SEGMENTS)),
        id=_quoted(data.draw(SEGMENTS)),
        pk=data.draw(st.sampled_from([str(CDR.objects.first().pk), "0", str(2**63), str(10**30)])),
    )
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["offset", "limit", "date_from", "date_to", "cursor", "type", "x\x00"]),
            QUERY_VALUES,
            max_size=4,
        ),
        label="query",
    )
    query = urlencode(
        {k.encode("utf-8", "surrogatepass"): v.encode("utf-8", "surrogatepass") for k, v in params.items()}
    )
    token = HUB_TOKEN if "hubclientinfo" in template else PARTNER_TOKEN
    before = snapshot()
    check_answer(ocpi("GET", f"{path}?{query}", token=token), before, f"GET {path}?{query}")
