"""The REST API (/api/v1) answers every request, good or bad, as its OpenAPI schema says (schemathesis)."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
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
from stations.models import Location
from stations.selectors import bump_map_cache_version
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    EVSEFactory,
    MapLocationFactory,
    RoamingAgreementFactory,
)

SERVICE_TOKEN = "backend-secret-for-schema-tests"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def generated_schema() -> dict:
    """The schema /api/schema/ serves, made without a request (collection happens before any server runs)."""
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


schema = schemathesis.openapi.from_dict(generated_schema()).include(path_regex=r"^/api/v1/")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.fixture
def api_data(transactional_db, settings):
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    bump_map_cache_version()
    partner = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
    ConnectorFactory(evse__location=MapLocationFactory(party=partner))
    EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GRAND-PLACE", uid="BE*MBP*E0001")
    CardFactory(uid="04A1B2C3")
    yield
    card_directory.clear()


def stored() -> tuple[int, int, int]:
    return AuthorizationDecision.objects.count(), Card.objects.count(), Location.objects.count()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_rest_api_answers_as_its_schema_says(case, live_server, api_data):
    before = stored()
    import sys; print("CASE", case.method, case.path, case.path_parameters, case.query, str(case.body)[:80], case.media_type, file=sys.stderr)
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"} if case.path == "/api/v1/authorizations" else {}
    response = case.call_and_validate(headers=headers, checks=CHECKS, base_url=live_server.url, timeout=10)
    print("STATUS", response.status_code, response.text[:150], file=sys.stderr)
    if response.status_code >= 400:
        assert stored() == before, "a refused request stored nothing"


def test_placeholder(live_server):
    assert requests.get(live_server.url + "/healthz", timeout=5).status_code in (200, 503)
