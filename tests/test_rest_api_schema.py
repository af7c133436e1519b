"""The REST API (/api/v1) answers every request, good or bad, as its OpenAPI schema says (schemathesis),
and each kind of bad input it was found to mishandle now gets a DRF error (example tests below)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.test import Client
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from cards.authorization import card_directory
from cards.models import AuthorizationDecision, Card
from roaming.models import RoamingAgreement
from roaming.selectors import own_party
from stations.map_cells import refresh_map_cells
from stations.models import Location
from stations.selectors import bump_map_cache_version
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    MapLocationFactory,
    RoamingAgreementFactory,
    UserFactory,
)

SERVICE_TOKEN = "backend-secret-for-schema-tests"
AUTHORIZATIONS = "/api/v1/authorizations"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # input the schema forbids is refused with a 4xx
]
# Bounded for a busy 2-core machine: a few dozen cases per operation, positive and negative, no shrinking.
RUN = hypothesis_settings(
    max_examples=15,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


def generated_schema() -> dict:
    """The schema /api/schema/ serves, made without a request (collection happens before any server runs)."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


def api_schema(**include) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_dict(SERVED).include(**include)
    # Each caller's credentials are sent by the test, not generated (a random session cookie tests nothing).
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], with_security_parameters=False
    )
    return loaded


SERVED = generated_schema()
schema = api_schema(path_regex=r"^/api/v1/")
authorizations_schema = api_schema(path=AUTHORIZATIONS)


@pytest.fixture
def api_data(transactional_db, settings):
    """What the live server answers from: a partner station on the map in Brussels, our EVSE and card."""
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    bump_map_cache_version()
    partner = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
    ConnectorFactory(evse__location=MapLocationFactory(party=partner, name="Grand-Place"))
    EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GRAND-PLACE", uid="BE*MBP*E0001")
    CardFactory(uid="04A1B2C3")
    yield
    card_directory.clear()


def session_cookie(user) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {name: morsel.value for name, morsel in client.cookies.items()}


@pytest.fixture
def driver_cookies(api_data) -> dict[str, str]:
    return session_cookie(DriverFactory().user)


@pytest.fixture
def staff_credentials(api_data) -> tuple[dict[str, str], dict[str, str]]:
    """A staff member's session, with the CSRF token DRF asks of a session POST: (cookies, headers)."""
    csrf = get_random_string(32)
    cookies = {**session_cookie(UserFactory(is_staff=True)), "csrftoken": csrf}
    return cookies, {"X-CSRFToken": csrf}


def stored() -> tuple[int, int, int]:
    return AuthorizationDecision.objects.count(), Card.objects.count(), Location.objects.count()


def call_and_validate(case, live_server, **credentials):
    before = stored()
    response = case.call_and_validate(checks=CHECKS, base_url=live_server.url, timeout=10, **credentials)
    if response.status_code >= 400:
        assert stored() == before, f"a refused request stored nothing ({case.method} {case.formatted_path})"
    return response


@schema.parametrize()
@RUN
def test_rest_api_answers_drivers_and_the_backend_as_its_schema_says(case, live_server, driver_cookies):
    """The map as a logged-in driver uses it; authorizations as our charge-point backend (bearer)."""
    if case.path == AUTHORIZATIONS:
        call_and_validate(case, live_server, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
    else:
        call_and_validate(case, live_server, cookies=driver_cookies)


@authorizations_schema.parametrize()
@hypothesis_settings(RUN, max_examples=10)
def test_authorizations_answer_staff_sessions_as_the_schema_says(case, live_server, staff_credentials):
    cookies, headers = staff_credentials
    call_and_validate(case, live_server, cookies=cookies, headers=headers)


def test_good_requests_get_answers_of_the_documented_shape(
    live_server, api_data, driver_cookies, staff_credentials, settings
):
    """Random input rarely hits a station: these do, so every 200 shape is held to the schema too."""
    refresh_map_cells()
    station = Location.objects.get(name="Grand-Place")
    good = [
        ("/api/v1/stations", {"query": {"bbox": "4.30,50.80,4.40,50.90", "zoom": 17}}),
        ("/api/v1/stations/nearby", {"query": {"lat": 50.85, "lon": 4.35}}),
        ("/api/v1/stations/search", {"query": {"q": "Brus"}}),
        ("/api/v1/stations/search", {"query": {"q": "Grand"}}),
        ("/api/v1/stations/{id}", {"path_parameters": {"id": station.pk}}),
        ("/api/v1/stations", {"query": {"bbox": "-25,34,45,72", "zoom": 3}}),  # clustered: see MAP_MAX_STATIONS
    ]
    answers = []
    for path, data in good:
        settings.MAP_MAX_STATIONS = 0 if data.get("query", {}).get("zoom") == 3 else 500
        case = schema[path]["GET"].Case(**data)
        answers.append(call_and_validate(case, live_server, cookies=driver_cookies).json())
    assert [len(answer.get("features", answer.get("results", [answer]))) for answer in answers] == [1] * 6
    assert answers[0]["meta"]["clustered"] is False and answers[5]["meta"]["clustered"] is True
    assert answers[1]["features"][0]["properties"]["distance_km"] == 0
    assert answers[4]["properties"]["evses"][0]["connectors"]
    good_card = {"uid": "04A1B2C3", "location_id": "BE-GRAND-PLACE", "evse_uid": "BE*MBP*E0001"}
    cookies, headers = staff_credentials
    for credentials in [
        {"headers": {"Authorization": f"Bearer {SERVICE_TOKEN}"}},
        {"cookies": cookies, "headers": headers},
    ]:
        case = schema[AUTHORIZATIONS]["POST"].Case(body=good_card, media_type="application/json")
        assert call_and_validate(case, live_server, **credentials).json()["allowed"] == "ALLOWED"


# --- Each kind of bad input the run found, as a user sees it ---


def backend_post(client, body, content_type="application/json", token=SERVICE_TOKEN):
    return client.post(AUTHORIZATIONS, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def backend(db, settings):
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GRAND-PLACE", uid="BE*MBP*E0001")
    CardFactory(uid="04A1B2C3")
    yield
    card_directory.clear()


def assert_drf_detail(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.django_db
def test_unknown_station_id_answers_json_404(client):
    body = assert_drf_detail(client.get("/api/v1/stations/987654"), 404)
    assert body == {"detail": "No such station on the map."}


@pytest.mark.django_db
@pytest.mark.parametrize("station_id", ["abc", "-1", "1.5", "null,null", "99999999999999999999999", "%00"])
def test_station_id_that_is_not_a_number_on_the_map_answers_json_404(client, station_id):
    assert_drf_detail(client.get(f"/api/v1/stations/{station_id}"), 404)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
@pytest.mark.parametrize("path", ["/api/v1/nothing-here", "/api/v2/stations", "/api/", "/api/v1/stations/1/evses"])
def test_unknown_path_under_api_answers_json_404_whatever_the_method(client, method, path):
    assert_drf_detail(getattr(client, method)(path), 404)


@pytest.mark.django_db
def test_api_pages_asked_without_their_slash_are_still_redirected(client):
    response = client.get("/api/schema?format=json")
    assert response.status_code == 301 and response["Location"] == "/api/schema/?format=json"
    assert client.get("/api/docs")["Location"] == "/api/docs/"


@pytest.mark.django_db
def test_pages_outside_the_api_keep_the_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


VIEWPORT = {"bbox": "4.30,50.80,4.40,50.90", "zoom": "12"}
NEARBY = {"lat": "50.85", "lon": "4.35"}
BAD_QUERIES = [
    ("/api/v1/stations", VIEWPORT, "bbox", "nan,50.8,4.4,50.9"),
    ("/api/v1/stations", VIEWPORT, "bbox", "4.3,50.8,inf,50.9"),
    ("/api/v1/stations", VIEWPORT, "bbox", "1e400,50.8,4.4,50.9"),
    ("/api/v1/stations", VIEWPORT, "bbox", "4.3,50.8,4.4,50.9\x00"),
    ("/api/v1/stations", VIEWPORT, "bbox", "4.3,50.8,4.4"),
    ("/api/v1/stations", VIEWPORT, "bbox", "9" * 2000 + ",50.8,4.4,50.9"),
    ("/api/v1/stations", VIEWPORT, "zoom", "nan"),
    ("/api/v1/stations", VIEWPORT, "zoom", "99999999999999999999999999"),
    ("/api/v1/stations", VIEWPORT, "zoom", "1\x00"),
    ("/api/v1/stations", VIEWPORT, "min_power_kw", "nan"),
    ("/api/v1/stations", VIEWPORT, "standard", "IEC_62196_T2\x00"),
    ("/api/v1/stations", VIEWPORT, "operator", "NL*ALL\x00"),
    ("/api/v1/stations", VIEWPORT, "available", "\x00"),
    ("/api/v1/stations/nearby", NEARBY, "lat", "NaN"),
    ("/api/v1/stations/nearby", NEARBY, "lat", "1e400"),
    ("/api/v1/stations/nearby", NEARBY, "lat", "50.85\x00"),
    ("/api/v1/stations/nearby", NEARBY, "lon", "-inf"),
    ("/api/v1/stations/nearby", NEARBY, "lon", "9" * 400),
    ("/api/v1/stations/nearby", NEARBY, "radius_km", "nan"),
    ("/api/v1/stations/nearby", NEARBY, "limit", "1e3"),
    ("/api/v1/stations/search", {"q": "Brussel"}, "q", "Bru\x00ssel"),
    ("/api/v1/stations/search", {"q": "Brussel"}, "q", "x" * 61),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "good", "name", "value"), BAD_QUERIES)
def test_bad_map_query_parameter_answers_400_naming_it(client, path, good, name, value):
    response = client.get(path, {**good, name: value})
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == [name] and all(isinstance(m, str) for m in response.json()[name])


@pytest.mark.django_db
def test_good_map_queries_answer_200(client):
    """The bad inputs above differ from these in one parameter only."""
    for path, good in [
        ("/api/v1/stations", VIEWPORT),
        ("/api/v1/stations/nearby", NEARBY),
        ("/api/v1/stations/search", {"q": "Brussel"}),
    ]:
        assert client.get(path, good).status_code == 200


GOOD_AUTHORIZATION = {"uid": "04A1B2C3", "location_id": "BE-GRAND-PLACE", "evse_uid": "BE*MBP*E0001"}


def test_authorization_body_that_is_not_json_answers_400_and_stores_nothing(client, backend):
    response = backend_post(client, '{"uid": "04A1B2C3",', content_type="application/json")
    assert_drf_detail(response, 400)
    assert response.json()["detail"].startswith("JSON parse error")
    assert AuthorizationDecision.objects.count() == 0


def test_authorization_body_of_unsupported_type_answers_415_and_stores_nothing(client, backend):
    response = backend_post(client, "uid=04A1B2C3", content_type="text/plain")
    assert_drf_detail(response, 415)
    assert AuthorizationDecision.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uid", "04A1\x00B2C3"),
        ("location_id", "BE-GRAND\x00PLACE"),
        ("evse_uid", "BE*MBP*E0001\x00"),
        ("uid", ""),
        ("uid", 4),
        ("evse_uid", ["BE*MBP*E0001"]),
        ("type", "rfid\x00"),
    ],
)
def test_authorization_field_with_nul_byte_blank_or_not_a_string_answers_400_naming_it(client, backend, field, value):
    response = backend_post(client, {**GOOD_AUTHORIZATION, field: value})
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert AuthorizationDecision.objects.count() == 0


def test_authorization_without_the_bearer_answers_401_asking_for_it(client, backend):
    anonymous = client.post(AUTHORIZATIONS, GOOD_AUTHORIZATION, content_type="application/json")
    assert_drf_detail(anonymous, 401)
    assert anonymous["WWW-Authenticate"] == "Bearer"
    assert_drf_detail(backend_post(client, GOOD_AUTHORIZATION, token="not-the-token"), 401)
    assert AuthorizationDecision.objects.count() == 0


def test_driver_session_on_authorizations_answers_403(client, backend):
    client.force_login(UserFactory())
    assert_drf_detail(client.post(AUTHORIZATIONS, GOOD_AUTHORIZATION, content_type="application/json"), 403)
    assert AuthorizationDecision.objects.count() == 0


def test_good_authorization_answers_200_and_is_logged(client, backend):
    """The refusals above differ from this request in one thing only."""
    response = backend_post(client, GOOD_AUTHORIZATION)
    assert response.status_code == 200 and response.json()["allowed"] == "ALLOWED"
    assert AuthorizationDecision.objects.count() == 1


@pytest.mark.django_db
def test_served_schema_is_the_one_the_run_tests(client):
    assert client.get("/api/schema/?format=json").json() == generated_schema()


def test_authorization_body_nested_too_deeply_answers_400_not_500(client, backend):
    response = backend_post(client, "[" * 100_000, content_type="application/json")
    assert_drf_detail(response, 400)
    assert response.json() == {"detail": "JSON parse error - nested too deeply."}
    assert AuthorizationDecision.objects.count() == 0


def test_authorization_form_with_too_many_fields_answers_json_400(client, backend, settings):
    fields = "&".join(f"f{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = backend_post(client, fields, content_type="application/x-www-form-urlencoded")
    assert_drf_detail(response, 400)
    assert response.json()["detail"].startswith("Too many query parameters or form fields")
    assert AuthorizationDecision.objects.count() == 0


@pytest.mark.django_db
def test_map_query_with_too_many_parameters_answers_json_400(client, settings):
    query = "&".join(f"standard=IEC_62196_T2&n{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS))
    assert_drf_detail(client.get(f"/api/v1/stations?bbox=4.3,50.8,4.4,50.9&zoom=12&{query}"), 400)


def test_charge_point_backend_answers_good_calls_as_the_schema_says(live_server, api_data):
    """A whole session played by our central system: every 200/201 answer is held to the schema."""
    bearer = {"headers": {"Authorization": f"Bearer {SERVICE_TOKEN}"}}
    base = "/api/v1/charge-point"
    start = {
        "session_id": "TX-SCHEMA",
        "location_id": "BE-GRAND-PLACE",
        "evse_uid": "BE*MBP*E0001",
        "started_at": "2026-01-05T10:00:00Z",
        "token_uid": "04A1B2C3",
    }
    calls = [
        (f"{base}/sessions", {}, start, 201),
        (f"{base}/sessions", {}, start, 200),
        (
            f"{base}/sessions/{{session_id}}/meter-values",
            {"session_id": "TX-SCHEMA"},
            {"at": "2026-01-05T10:10:00Z", "kwh": 3.2},
            200,
        ),
        (
            f"{base}/sessions/{{session_id}}/end",
            {"session_id": "TX-SCHEMA"},
            {"ended_at": "2026-01-05T10:30:00Z", "kwh": 9},
            200,
        ),
        (
            f"{base}/evse-status",
            {},
            {
                "location_id": "BE-GRAND-PLACE",
                "evse_uid": "BE*MBP*E0001",
                "status": "CHARGING",
                "at": "2026-01-05T10:00:00Z",
            },
            200,
        ),
    ]
    for path, parameters, body, status in calls:
        case = schema[path]["POST"].Case(path_parameters=parameters or None, body=body, media_type="application/json")
        assert call_and_validate(case, live_server, **bearer).status_code == status
