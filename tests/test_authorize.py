"""Our authorize endpoint: a CPO asks whether one of our cards may charge (OCPI 2.2.1, eMSP side)."""

import datetime as dt

import pytest
from django.utils import timezone

from cards import services
from cards.authorization import card_directory
from cards.decision_log import decision_log
from cards.models import AuthorizationDecision, Card
from roaming.models import Party, RoamingAgreement
from tests.factories import CardFactory, PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory

OCPI_TOKEN = "cpo-token"  # the CPO asking (fixture `cpo`)
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


def authorize(ocpi, uid, body=None, type="RFID", **kwargs):
    """A CPO's real-time authorization request for one of our tokens (through the shared `ocpi` call)."""
    return ocpi("POST", URL.format(uid=uid), body, type=type, **kwargs)


def test_active_card_is_allowed_with_token_reference_and_display_text(ocpi, cpo):
    card = CardFactory(uid="04A1B2C3D4E5F6", language="nl")
    body = {"location_id": "LOC1", "evse_uids": ["EVSE1", "EVSE2"]}
    first = authorize(ocpi, "04a1b2c3d4e5f6", body, headers={"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"})
    second = authorize(ocpi, "04A1B2C3D4E5F6", body)
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
def test_card_status_decides_with_http_200_and_a_reason(ocpi, cpo, status, expected):
    card = CardFactory(status=status)
    response = authorize(ocpi, card.uid)
    assert response.status_code == 200 and response.json()["status_code"] == 1000
    data = response.json()["data"]
    assert data["allowed"] == expected and data["token"]["valid"] is False and data["info"]["text"]
    assert "location" not in data


def test_validity_dates_expire_and_not_yet_valid(ocpi, cpo):
    today = timezone.localdate()
    past = CardFactory(valid_until=today - dt.timedelta(days=1))
    future = CardFactory(valid_from=today + dt.timedelta(days=3))
    assert authorize(ocpi, past.uid).json()["data"]["allowed"] == "EXPIRED"
    response = authorize(ocpi, future.uid).json()["data"]
    assert response["allowed"] == "NOT_ALLOWED" and "valid from" in response["info"]["text"]


def test_cpo_without_agreement_in_force_is_refused_and_the_wrong_direction_is_not_allowed(ocpi, db):
    PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="stranger")
    ended = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="ended")
    RoamingAgreementFactory(partner=ended.party, valid_until=timezone.localdate() - dt.timedelta(days=1))
    wrong_way = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="wrong-way")
    RoamingAgreementFactory(partner=wrong_way.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    card = CardFactory()
    # No agreement in force at all: the OCPI gate refuses the call, and nothing about the card is said.
    for token in ("stranger", "ended"):
        response = authorize(ocpi, card.uid, token=token)
        assert response.status_code == 403 and response.json()["status_code"] == 2000, token
        assert "data" not in response.json() and card.uid not in response.content.decode()
    # An agreement in force, but not for our cards at their stations: the driver is told why.
    data = authorize(ocpi, card.uid, token="wrong-way").json()["data"]
    assert data["allowed"] == "NOT_ALLOWED" and "operator" in data["info"]["text"]


def test_through_a_hub_the_agreement_of_the_named_cpo_counts(ocpi, client, db):
    hub = PartnerConnectionFactory(party__role=Party.Role.HUB, tokens__from_them="hub-token")
    covered = PartnerConnectionFactory(party__role=Party.Role.CPO, via_hub=hub)
    RoamingAgreementFactory(partner=covered.party, hub=hub.party)  # agreed through this hub
    uncovered = PartnerConnectionFactory(party__role=Party.Role.CPO, via_hub=hub)
    RoamingAgreementFactory(
        partner=uncovered.party, hub=hub.party, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
    )
    card = CardFactory()

    def via_hub(party):
        routing = {"OCPI-from-country-code": party.country_code, "OCPI-from-party-id": party.party_id}
        return authorize(ocpi, card.uid, token="hub-token", routing=routing)

    assert via_hub(covered.party).json()["data"]["allowed"] == "ALLOWED"
    assert via_hub(uncovered.party).json()["data"]["allowed"] == "NOT_ALLOWED"
    assert AuthorizationDecision.objects.filter(partner=covered.party.ocpi_id).exists()
    stranger = PartyFactory(role=Party.Role.CPO)  # not one of the hub's clients
    assert via_hub(stranger).status_code == 403
    covered.status = covered.Status.SUSPENDED
    covered.save()
    assert via_hub(covered.party).status_code == 403  # the cached hub client is forgotten at once


def test_unknown_token_is_404_with_2004_and_logged(ocpi, cpo):
    CardFactory(uid="04AA")
    response = authorize(ocpi, "04BB")
    assert response.status_code == 404
    assert response.json()["status_code"] == 2004 and "data" not in response.json()
    assert authorize(ocpi, "04AA", type="APP_USER").status_code == 404  # same uid, other type
    assert AuthorizationDecision.objects.filter(token_uid="04BB", result="UNKNOWN").count() == 1


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_credentials_are_401_and_reveal_nothing(ocpi, cpo, token):
    card = CardFactory()
    response = ocpi("POST", URL.format(uid=card.uid), token=token or "")
    assert response.status_code == 401
    assert card.uid not in response.content.decode() and card.contract_id not in response.content.decode()
    assert "data" not in response.json()
    assert not AuthorizationDecision.objects.exists()


def test_suspended_connection_is_refused(ocpi, cpo):
    card = CardFactory()
    cpo.status = cpo.Status.SUSPENDED
    cpo.save()
    assert authorize(ocpi, card.uid).status_code == 403


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
def test_malformed_location_references_are_2001_naming_the_field(ocpi, cpo, body, field):
    card = CardFactory()
    response = authorize(ocpi, card.uid, body)
    assert response.json()["status_code"] == 2001
    assert response.json()["status_message"].startswith(field)
    assert not AuthorizationDecision.objects.exists()


def test_invalid_json_and_unknown_type(ocpi, cpo):
    card = CardFactory()
    broken = authorize(ocpi, card.uid, "{not json")
    assert broken.status_code == 400 and broken.json()["status_code"] == 2001
    wrong_type = authorize(ocpi, card.uid, type="BADGE")
    assert wrong_type.json()["status_code"] == 2001 and wrong_type.json()["status_message"].startswith("type")


def test_no_body_is_fine_and_app_tokens_are_found_by_type(ocpi, cpo):
    app = CardFactory(uid="APP-USER-1", type=Card.Type.APP_USER, whitelist=Card.Whitelist.NEVER)
    data = authorize(ocpi, "app-user-1", type="APP_USER").json()["data"]
    assert data["allowed"] == "ALLOWED" and data["token"]["uid"] == app.uid and "location" not in data


def test_a_change_is_seen_at_once_in_this_process(ocpi, cpo):
    card = CardFactory()
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "ALLOWED"
    services.block_card(card, reason="test")
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "BLOCKED"
    agreement = RoamingAgreement.objects.filter(partner=cpo.party).get()
    agreement.direction = RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
    agreement.save()
    services.unblock_card(card, reason="test")
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "NOT_ALLOWED"
    agreement.delete()  # no agreement in force at all: the OCPI gate refuses the partner
    assert authorize(ocpi, card.uid).status_code == 403


def test_changes_made_by_another_process_are_seen_after_the_poll(ocpi, cpo, settings):
    """Another worker changed the rows: no signal reached us, the poll of last_updated/updated_at does."""
    settings.CARDS_CACHE_POLL_S = 0
    settings.ROAMING_CHANGES_CHECK_S = 0
    card = CardFactory()
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "ALLOWED"
    Card.objects.filter(pk=card.pk).update(status=Card.Status.BLOCKED, last_updated=timezone.now())
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "BLOCKED"
    Card.objects.filter(pk=card.pk).update(status=Card.Status.ACTIVE, last_updated=timezone.now())
    RoamingAgreement.objects.filter(partner=cpo.party).update(
        direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS, updated_at=timezone.now()
    )
    assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "NOT_ALLOWED"
    RoamingAgreement.objects.filter(partner=cpo.party).update(
        status=RoamingAgreement.Status.SUSPENDED, updated_at=timezone.now()
    )
    assert authorize(ocpi, card.uid).status_code == 403


def test_a_warm_cache_answers_without_database_queries(ocpi, cpo, django_assert_max_num_queries, settings):
    settings.CARDS_DECISION_LOG_FLUSH_S = 60  # buffered: the log is written later, in bulk
    settings.ROAMING_CHANGES_CHECK_S = 60  # nor the look for changed connections and agreements
    cards = CardFactory.create_batch(5)
    assert card_directory.warm() == 5
    settings.CARDS_CACHE_POLL_S = 60  # the next look for changes is not due during this test
    for card in cards:  # the first look for changes re-reads the cards changed seconds ago
        authorize(ocpi, card.uid)
    with django_assert_max_num_queries(0):
        for card in cards:
            assert authorize(ocpi, card.uid).json()["data"]["allowed"] == "ALLOWED"
    assert decision_log.pending == 10
    assert decision_log.flush() == 10
    assert AuthorizationDecision.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_buffered_decision_log_is_written_by_the_background_thread(ocpi, settings):
    import time

    settings.CARDS_DECISION_LOG_FLUSH_S = 0.05
    connection = PartnerConnectionFactory(party__role=Party.Role.CPO, tokens__from_them="cpo-token")
    RoamingAgreementFactory(partner=connection.party)
    card = CardFactory()
    for _ in range(20):
        assert authorize(ocpi, card.uid).status_code == 200
    deadline = time.monotonic() + 20  # generous: the machine may be busy
    while AuthorizationDecision.objects.count() < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert AuthorizationDecision.objects.filter(token_uid=card.uid).count() == 20
    assert decision_log.pending == 0
