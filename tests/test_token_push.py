"""A changed card is pushed (PUT Token) to every connected CPO whose agreement covers it, retried until delivered."""

import datetime as dt
import time

import pytest
from django.db import connections
from django.utils import timezone

from cards import services
from cards.models import Card, TokenDelivery
from cards.tasks import push_card_token, requeue_token_deliveries
from roaming import services as roaming_services
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.envelope import format_datetime
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


class FlakyCpo:
    """Answers every Token PUT with HTTP 503 until it recovers."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, request):
        return PeerResponse(raw=b"<html>maintenance</html>", status=503) if self.down else ok()


def test_a_push_given_up_is_sent_again_by_the_beat_once_the_cpo_recovers(
    ocpi_peer, admin_client, db, settings, django_capture_on_commit_callbacks
):
    settings.CARDS_TOKEN_PUSH_MAX_RETRIES = 1
    cpo_at(ocpi_peer)
    cpo = FlakyCpo()
    ocpi_peer.route("PUT", r"/cpo/tokens/.*", cpo)
    card = CardFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.block_card(card, reason="Stolen wallet")
    delivery = TokenDelivery.objects.get(card=card)
    assert delivery.status == TokenDelivery.Status.GAVE_UP and len(ocpi_peer.requests) == 2

    cpo.down = False
    assert requeue_token_deliveries.delay().get() == 1
    card.refresh_from_db()
    sent = ocpi_peer.requests[-1].json()
    assert len(ocpi_peer.requests) == 3 and sent["valid"] is False
    assert sent["last_updated"] == format_datetime(card.last_updated)
    delivery.refresh_from_db()
    assert delivery.status == TokenDelivery.Status.DELIVERED and delivery.attempts == 3
    assert delivery.card_last_updated == card.last_updated and delivery.last_error == ""

    assert requeue_token_deliveries.delay().get() == 0  # delivered: never sent again
    assert len(ocpi_peer.requests) == 3
    page = admin_client.get(f"/admin/cards/card/{card.pk}/change/").content.decode()
    assert "Token pushed to CPOs" in page and "Delivered" in page


def test_the_beat_leaves_alone_a_newer_change_on_its_way_and_partners_no_longer_targets(
    ocpi_peer, db, settings, django_capture_on_commit_callbacks
):
    settings.CARDS_TOKEN_PUSH_MAX_RETRIES = 0
    cpo_at(ocpi_peer, path="/a")
    suspended = cpo_at(ocpi_peer, path="/b")
    cpo = FlakyCpo()
    ocpi_peer.route("PUT", r"/\w/tokens/.*", cpo)
    blocked, changed = CardFactory(), CardFactory()
    with django_capture_on_commit_callbacks(execute=True):
        services.block_card(blocked, reason="Payment overdue")
        services.block_card(changed, reason="Payment overdue")
    assert TokenDelivery.objects.filter(status=TokenDelivery.Status.GAVE_UP).count() == 4
    roaming_services.suspend_connection(suspended)
    # The newer change's own push is still queued (its on-commit callback has not run).
    services.unblock_card(changed, reason="Paid")
    cpo.down = False
    ocpi_peer.requests.clear()

    assert requeue_token_deliveries.delay().get() == 1
    assert [r.path for r in ocpi_peer.requests] == [f"/a/tokens/BE/MBP/{blocked.uid}"]
    assert set(TokenDelivery.objects.filter(card=changed).values_list("status", flat=True)) == {"gave_up"}
    assert TokenDelivery.objects.get(card=blocked, partner=suspended.party).status == TokenDelivery.Status.GAVE_UP

    # Resumed, the partner gets what it missed.
    roaming_services.resume_connection(suspended)
    ocpi_peer.requests.clear()
    assert requeue_token_deliveries.delay().get() == 1
    assert [r.path for r in ocpi_peer.requests] == [f"/b/tokens/BE/MBP/{blocked.uid}"]
    assert ocpi_peer.requests[0].json()["valid"] is False


def _suspend_the_connection(connection) -> None:
    roaming_services.suspend_connection(connection)


def _end_the_agreement(connection) -> None:
    agreement = RoamingAgreement.objects.get(partner=connection.party)
    agreement.status = RoamingAgreement.Status.ENDED
    agreement.save()


@pytest.mark.parametrize(
    ("meanwhile", "why"),
    [
        (_suspend_the_connection, "Stopped: The connection is suspended"),
        (_end_the_agreement, "Stopped: No agreement in force takes our cards at this partner's stations"),
    ],
)
def test_retries_stop_once_the_partner_is_no_longer_a_target(ocpi_peer, transactional_db, meanwhile, why):
    connection = cpo_at(ocpi_peer)
    calls = []

    def failing_while_staff_act(request):
        calls.append(request)
        try:
            meanwhile(connection)  # staff act while the CPO is failing, before our retry runs
        finally:
            connections.close_all()  # this server thread's own database connection
        return PeerResponse(raw=b"down", status=503)

    ocpi_peer.route("PUT", r"/cpo/tokens/.*", failing_while_staff_act)
    card = CardFactory(status=Card.Status.BLOCKED)
    push_card_token.delay(card.pk)
    assert len(calls) == 1  # the retry sent nothing
    delivery = TokenDelivery.objects.get(card=card)
    assert delivery.status == TokenDelivery.Status.GAVE_UP and delivery.last_error == why
    assert delivery.attempts == 1
    assert requeue_token_deliveries.delay().get() == 0  # not a target: the beat leaves it too


def test_the_beat_resends_a_failed_push_whose_retries_were_lost_but_not_one_still_retrying(ocpi_peer, db):
    connection = cpo_at(ocpi_peer)
    ocpi_peer.route("PUT", r"/cpo/tokens/.*", lambda r: ok())
    lost, retrying = CardFactory(status=Card.Status.LOST), CardFactory(status=Card.Status.BLOCKED)
    for card in (lost, retrying):
        services.record_delivery(card, connection.party, status=TokenDelivery.Status.FAILED, error="HTTP 503")
    # The worker holding the first card's next retry was restarted 20 minutes ago and the retry never came.
    TokenDelivery.objects.filter(card=lost).update(last_attempt_at=timezone.now() - dt.timedelta(minutes=20))

    assert requeue_token_deliveries.delay().get() == 1
    assert [r.path for r in ocpi_peer.requests] == [f"/cpo/tokens/BE/MBP/{lost.uid}"]
    assert TokenDelivery.objects.get(card=lost).status == TokenDelivery.Status.DELIVERED
    assert TokenDelivery.objects.get(card=retrying).status == TokenDelivery.Status.FAILED
