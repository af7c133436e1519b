"""A changed card is pushed (PUT Token) to every connected CPO whose agreement covers it, retried until delivered."""

import time

import pytest

from cards import services
from cards.models import Card, TokenDelivery
from cards.tasks import push_card_token
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from tests.factories import CardFactory, PartnerConnectionFactory, RoamingAgreementFactory
from tests.ocpi_peer import PeerResponse, ok


def cpo_at(peer, *, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, token="to-cpo", path="/cpo"):
    connection = PartnerConnectionFactory(
        party__role=Party.Role.CPO,
        endpoints=[
            {"identifier": "tokens", "role": "RECEIVER", "url": peer.url(f"{path}/tokens")},
            {"identifier": "locations", "role": "SENDER", "url": peer.url(f"{path}/locations")},
        ],
        tokens__to_them=token,
    )
    if direction:
        RoamingAgreementFactory(partner=connection.party, direction=direction)
    return connection


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    settings.CARDS_TOKEN_PUSH_BACKOFF_S = 0.05


def test_blocking_a_card_pushes_the_token_to_covered_cpos_only(ocpi_peer, db, django_capture_on_commit_callbacks):
    covered = cpo_at(ocpi_peer, path="/a")
    cpo_at(ocpi_peer, path="/b", direction=None)  # no agreement: never told
    cpo_at(ocpi_peer, path="/c", direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    ocpi_peer.route("PUT", r"/\w/tokens/BE/MBP/(\w+)", lambda r: ok())
    card = CardFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.block_card(card, reason="Driver called")
    assert [r.path for r in ocpi_peer.requests] == [f"/a/tokens/BE/MBP/{card.uid}"]
    sent = ocpi_peer.requests[0]
    assert sent.method == "PUT" and sent.query == {"type": "RFID"}
    assert sent.header("Authorization") == authorization_header("to-cpo")
    assert sent.json()["valid"] is False and sent.json()["uid"] == card.uid
    assert sent.json()["contract_id"] == card.contract_id and sent.json()["whitelist"] == "ALLOWED_OFFLINE"
    delivery = TokenDelivery.objects.get(card=card)
    assert delivery.partner == covered.party and delivery.status == TokenDelivery.Status.DELIVERED
    assert delivery.attempts == 1 and delivery.delivered_at is not None


def test_a_partner_that_fails_first_gets_it_on_a_retry(ocpi_peer, db):
    cpo_at(ocpi_peer)
    answers = iter(
        [
            PeerResponse(raw=b"<html>down</html>", status=503),
            PeerResponse({"status_code": 3000, "status_message": "busy"}, status=500),
        ]
    )
    ocpi_peer.route("PUT", r"/cpo/tokens/.*", lambda r: next(answers, ok()))
    card = CardFactory(status=Card.Status.LOST)
    push_card_token.delay(card.pk)
    assert len(ocpi_peer.requests) == 3
    delivery = TokenDelivery.objects.get(card=card)
    assert delivery.status == TokenDelivery.Status.DELIVERED and delivery.attempts == 3
    assert ocpi_peer.requests[-1].json()["valid"] is False


def test_a_partner_that_never_answers_is_given_up_with_the_error_kept(ocpi_peer, db, settings):
    settings.CARDS_TOKEN_PUSH_MAX_RETRIES = 2
    cpo_at(ocpi_peer)
    ocpi_peer.route("PUT", r"/cpo/tokens/.*", lambda r: PeerResponse({"status_code": 2001, "status_message": "no"}))
    card = CardFactory()
    push_card_token.delay(card.pk)
    delivery = TokenDelivery.objects.get(card=card)
    assert delivery.status == TokenDelivery.Status.GAVE_UP and delivery.attempts == 3
    assert "2001" in delivery.last_error


def test_staff_see_per_card_where_its_last_change_went(ocpi_peer, admin_client, db):
    cpo_at(ocpi_peer)
    ocpi_peer.route("PUT", r"/cpo/tokens/.*", lambda r: ok())
    card = CardFactory()
    push_card_token.delay(card.pk)
    page = admin_client.get(f"/admin/cards/card/{card.pk}/change/").content.decode()
    assert "Token pushed to CPOs" in page and "Delivered" in page


def test_through_the_real_worker_a_flaky_partner_gets_the_token(ocpi_peer, redis_celery_worker):
    cpo_at(ocpi_peer)
    calls = []

    def flaky(request):
        calls.append(request)
        return PeerResponse(raw=b"oops", status=502) if len(calls) == 1 else ok()

    ocpi_peer.route("PUT", r"/cpo/tokens/.*", flaky)
    card = CardFactory()
    services.report_lost(card, reason="Lost at the gym")  # on_commit: autocommit here, so sent at once
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        delivery = TokenDelivery.objects.filter(card=card).first()
        if delivery and delivery.status == TokenDelivery.Status.DELIVERED:
            break
        time.sleep(0.1)
    assert delivery.status == TokenDelivery.Status.DELIVERED and delivery.attempts == 2
    assert len(calls) == 2 and calls[-1].json()["valid"] is False
