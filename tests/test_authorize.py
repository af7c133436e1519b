"""Our authorize endpoint: a CPO asks whether one of our cards may charge (OCPI 2.2.1, eMSP side)."""

import datetime as dt
import json

import pytest
from django.utils import timezone

from cards import services
from cards.authorization import card_directory
from cards.decision_log import decision_log
from cards.models import AuthorizationDecision, Card
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from tests.factories import CardFactory, PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory

URL = "/ocpi/emsp/2.2.1/tokens/{uid}/authorize"


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.CARDS_DECISION_LOG_FLUSH_S = 0  # each decision inserted at once, inside the test's transaction
    card_directory.clear()
    yield
    decision_log.discard()  # nothing buffered outlives the test's database
    card_directory.clear()


@pytest.fixture
def cpo(db):
    connection = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo-token")
    RoamingAgreementFactory(partner=connection.party, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    return connection


def authorize(client, uid, body=None, token="cpo-token", query="?type=RFID", **headers):
    return client.post(
        URL.format(uid=uid) + query,
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        HTTP_AUTHORIZATION=authorization_header(token),
        **headers,
    )


def test_active_card_is_allowed_with_token_reference_and_display_text(client, cpo):
    card = CardFactory(uid="04A1B2C3D4E5F6", language="nl")
    body = {"location_id": "LOC1", "evse_uids": ["EVSE1", "EVSE2"]}
    first = authorize(client, "04a1b2c3d4e5f6", body, HTTP_X_REQUEST_ID="req-1", HTTP_X_CORRELATION_ID="corr-1")
    second = authorize(client, "04A1B2C3D4E5F6", body)
    assert first.status_code == 200 and first["X-Request-ID"] == "req-1" and first["X-Correlation-ID"] == "corr-1"
    data = first.json()["data"]
    assert first.json()["status_code"] == 1000
    assert data["allowed"] == "ALLOWED"
    assert data["location"] == body
    assert data["info"]["language"] == "nl" and data["info"]["text"]
    assert data["token"]["uid"] == card.uid and data["token"]["contract_id"] == card.contract_id
    assert data["token"]["valid"] is True and data["token"]["whitelist"] == "ALLOWED_OFFLINE"
    assert data["authorization_reference"] != second.json()["data"]["authorization_reference"]
    logged = AuthorizationDecision.objects.filter(token_uid="04A1B2C3D4E5F6").order_by("decided_at")
    assert [d.result for d in logged] == ["ALLOWED", "ALLOWED"]
    assert logged[0].partner == cpo.party.ocpi_id and logged[0].location_id == "LOC1"
    assert logged[0].authorization_reference == data["authorization_reference"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Card.Status.BLOCKED, "BLOCKED"),
        (Card.Status.LOST, "BLOCKED"),
        (Card.Status.STOLEN, "BLOCKED"),
        (Card.Status.REPLACED, "BLOCKED"),
        (Card.Status.EXPIRED, "EXPIRED"),
    ],
)
def test_card_status_decides_with_http_200_and_a_reason(client, cpo, status, expected):
    card = CardFactory(status=status)
    response = authorize(client, card.uid)
    assert response.status_code == 200 and response.json()["status_code"] == 1000
    data = response.json()["data"]
    assert data["allowed"] == expected and data["token"]["valid"] is False and data["info"]["text"]
    assert "location" not in data


def test_validity_dates_expire_and_not_yet_valid(client, cpo):
    today = timezone.localdate()
    past = CardFactory(valid_until=today - dt.timedelta(days=1))
    future = CardFactory(valid_from=today + dt.timedelta(days=3))
    assert authorize(client, past.uid).json()["data"]["allowed"] == "EXPIRED"
    response = authorize(client, future.uid).json()["data"]
    assert response["allowed"] == "NOT_ALLOWED" and "valid from" in response["info"]["text"]


def test_cpo_without_agreement_in_force_is_refused_and_the_wrong_direction_is_not_allowed(client, db):
    PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="stranger")
    ended = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="ended")
    RoamingAgreementFactory(partner=ended.party, valid_until=timezone.localdate() - dt.timedelta(days=1))
    wrong_way = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="wrong-way")
    RoamingAgreementFactory(partner=wrong_way.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    card = CardFactory()
    # No agreement in force at all: the OCPI gate refuses the call, and nothing about the card is said.
    for token in ("stranger", "ended"):
        response = authorize(client, card.uid, token=token)
        assert response.status_code == 403 and response.json()["status_code"] == 2000, token
        assert "data" not in response.json() and card.uid not in response.content.decode()
    # An agreement in force, but not for our cards at their stations: the driver is told why.
    data = authorize(client, card.uid, token="wrong-way").json()["data"]
    assert data["allowed"] == "NOT_ALLOWED" and "operator" in data["info"]["text"]


def test_through_a_hub_the_agreement_of_the_named_cpo_counts(client, db):
    hub = PartnerConnectionFactory(party__role=Party.Role.HUB, tokens__from_them="hub-token")
    covered = PartnerConnectionFactory(party__role=Party.Role.CPO, via_hub=hub)
    RoamingAgreementFactory(partner=covered.party, hub=hub.party)  # agreed through this hub
    uncovered = PartnerConnectionFactory(party__role=Party.Role.CPO, via_hub=hub)
    RoamingAgreementFactory(
        partner=uncovered.party, hub=hub.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
    )
    card = CardFactory()

    def via_hub(party):
        return authorize(
            client,
            card.uid,
            token="hub-token",
            HTTP_OCPI_FROM_COUNTRY_CODE=party.country_code,
            HTTP_OCPI_FROM_PARTY_ID=party.party_id,
        )

    assert via_hub(covered.party).json()["data"]["allowed"] == "ALLOWED"
    assert via_hub(uncovered.party).json()["data"]["allowed"] == "NOT_ALLOWED"
    assert AuthorizationDecision.objects.filter(partner=covered.party.ocpi_id).exists()
    stranger = PartyFactory(role=Party.Role.CPO)  # not one of the hub's clients
    assert via_hub(stranger).status_code == 403
    covered.status = covered.Status.SUSPENDED
    covered.save()
    assert via_hub(covered.party).status_code == 403  # the cached hub client is forgotten at once


def test_unknown_token_is_404_with_2004_and_logged(client, cpo):
    CardFactory(uid="04AA")
    response = authorize(client, "04BB")
    assert response.status_code == 404
    assert response.json()["status_code"] == 2004 and "data" not in response.json()
    assert authorize(client, "04AA", query="?type=APP_USER").status_code == 404  # same uid, other type
    assert AuthorizationDecision.objects.filter(token_uid="04BB", result="UNKNOWN").count() == 1


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_credentials_are_401_and_reveal_nothing(client, cpo, token):
    card = CardFactory()
    headers = {"HTTP_AUTHORIZATION": authorization_header(token)} if token else {}
    response = client.post(URL.format(uid=card.uid), data="", content_type="application/json", **headers)
    assert response.status_code == 401
    assert card.uid not in response.content.decode() and card.contract_id not in response.content.decode()
    assert "data" not in response.json()
    assert not AuthorizationDecision.objects.exists()


def test_suspended_connection_is_refused(client, cpo):
    card = CardFactory()
    cpo.status = cpo.Status.SUSPENDED
    cpo.save()
    assert authorize(client, card.uid).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"evse_uids": ["E1"]}, "location_id"),
        ({"location_id": ""}, "location_id"),
        ({"location_id": "L" * 37}, "location_id"),
        ({"location_id": "L1", "evse_uids": "E1"}, "evse_uids"),
        ({"location_id": "L1", "evse_uids": ["E1", 7]}, "evse_uids[1]"),
        (["L1"], "body"),
    ],
)
def test_malformed_location_references_are_2001_naming_the_field(client, cpo, body, field):
    card = CardFactory()
    response = authorize(client, card.uid, body)
    assert response.json()["status_code"] == 2001
    assert response.json()["status_message"].startswith(field)
    assert not AuthorizationDecision.objects.exists()


def test_invalid_json_and_unknown_type(client, cpo):
    card = CardFactory()
    broken = client.post(
        URL.format(uid=card.uid),
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=authorization_header("cpo-token"),
    )
    assert broken.status_code == 400 and broken.json()["status_code"] == 2001
    wrong_type = authorize(client, card.uid, query="?type=BADGE")
    assert wrong_type.json()["status_code"] == 2001 and wrong_type.json()["status_message"].startswith("type")


def test_no_body_is_fine_and_app_tokens_are_found_by_type(client, cpo):
    app = CardFactory(uid="APP-USER-1", type=Card.Type.APP_USER, whitelist=Card.Whitelist.NEVER)
    data = authorize(client, "app-user-1", query="?type=APP_USER").json()["data"]
    assert data["allowed"] == "ALLOWED" and data["token"]["uid"] == app.uid and "location" not in data


def test_a_change_is_seen_at_once_in_this_process(client, cpo):
    card = CardFactory()
    assert authorize(client, card.uid).json()["data"]["allowed"] == "ALLOWED"
    services.block_card(card, reason="test")
    assert authorize(client, card.uid).json()["data"]["allowed"] == "BLOCKED"
    agreement = RoamingAgreement.objects.filter(partner=cpo.party).get()
    agreement.direction = RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
    agreement.save()
    services.unblock_card(card, reason="test")
    assert authorize(client, card.uid).json()["data"]["allowed"] == "NOT_ALLOWED"
    agreement.delete()  # no agreement in force at all: the OCPI gate refuses the partner
    assert authorize(client, card.uid).status_code == 403


def test_changes_made_by_another_process_are_seen_after_the_poll(client, cpo, settings):
    """Another worker changed the rows: no signal reached us, the poll of last_updated/updated_at does."""
    settings.CARDS_CACHE_POLL_S = 0
    settings.ROAMING_CHANGES_CHECK_S = 0
    card = CardFactory()
    assert authorize(client, card.uid).json()["data"]["allowed"] == "ALLOWED"
    Card.objects.filter(pk=card.pk).update(status=Card.Status.BLOCKED, last_updated=timezone.now())
    assert authorize(client, card.uid).json()["data"]["allowed"] == "BLOCKED"
    Card.objects.filter(pk=card.pk).update(status=Card.Status.ACTIVE, last_updated=timezone.now())
    RoamingAgreement.objects.filter(partner=cpo.party).update(
        direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS, updated_at=timezone.now()
    )
    assert authorize(client, card.uid).json()["data"]["allowed"] == "NOT_ALLOWED"
    RoamingAgreement.objects.filter(partner=cpo.party).update(
        status=RoamingAgreement.Status.SUSPENDED, updated_at=timezone.now()
    )
    assert authorize(client, card.uid).status_code == 403


def test_a_warm_cache_answers_without_database_queries(client, cpo, django_assert_max_num_queries, settings):
    settings.CARDS_DECISION_LOG_FLUSH_S = 60  # buffered: the log is written later, in bulk
    settings.ROAMING_CHANGES_CHECK_S = 60  # nor the look for changed connections and agreements
    cards = CardFactory.create_batch(5)
    assert card_directory.warm() == 5
    settings.CARDS_CACHE_POLL_S = 60  # the next look for changes is not due during this test
    for card in cards:  # the first look for changes re-reads the cards changed seconds ago
        authorize(client, card.uid)
    with django_assert_max_num_queries(0):
        for card in cards:
            assert authorize(client, card.uid).json()["data"]["allowed"] == "ALLOWED"
    assert decision_log.pending == 10
    assert decision_log.flush() == 10
    assert AuthorizationDecision.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_buffered_decision_log_is_written_by_the_background_thread(client, settings):
    import time

    settings.CARDS_DECISION_LOG_FLUSH_S = 0.05
    connection = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo-token")
    RoamingAgreementFactory(partner=connection.party)
    card = CardFactory()
    for _ in range(20):
        assert authorize(client, card.uid).status_code == 200
    deadline = time.monotonic() + 20  # generous: the machine may be busy
    while AuthorizationDecision.objects.count() < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert AuthorizationDecision.objects.filter(token_uid=card.uid).count() == 20
    assert decision_log.pending == 0
