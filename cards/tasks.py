"""Celery tasks of the cards app: thin, they call services and selectors."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from cards import selectors, services
from cards.models import Card, TokenDelivery
from roaming.models import Party
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url

logger = logging.getLogger(__name__)


# ignore_result: nobody reads it, and publishing then touches only the broker (a result store that is down as well
# would otherwise hold the request in its reconnect loop and end in a RuntimeError).
@shared_task(ignore_result=True)
def push_card_token(card_id: int) -> list[int]:
    """Send the card's current Token to every connected CPO whose agreement covers it (one task each)."""
    card = Card.objects.select_related("issuer_party").filter(pk=card_id).first()
    if card is None:
        return []
    partner_ids = []
    for connection in selectors.token_push_targets():
        services.record_delivery(card, connection.party, status=TokenDelivery.Status.PENDING)
        deliver_card_token.delay(card_id, connection.party_id)
        partner_ids.append(connection.party_id)
    return partner_ids


@shared_task(bind=True, acks_late=True)
def deliver_card_token(self, card_id: int, partner_id: int) -> object:
    """PUT the card's current Token to one CPO; retried with exponential backoff until delivered."""
    card = Card.objects.select_related("issuer_party").filter(pk=card_id).first()
    partner = Party.objects.select_related("connection").filter(pk=partner_id).first()
    if card is None or partner is None:
        return "gone"
    connection = getattr(partner, "connection", None)
    # Checked on every run, retries included: a partner suspended or out of agreement since the push
    # began gets nothing more; the beat's requeue sends the card's current state if it comes back.
    refusal = selectors.token_push_refusal(connection)
    if refusal:
        services.record_delivery(
            card, partner, status=TokenDelivery.Status.GAVE_UP, error=f"Stopped: {refusal}", attempted=False
        )
        logger.warning("Token push of card %s to %s stopped: %s", card_id, partner.ocpi_id, refusal)
        return "stopped"
    url = connection.endpoint_url("tokens", "RECEIVER")
    target = join_url(url, card.issuer_party.country_code, card.issuer_party.party_id, card.uid)
    try:
        # One attempt per task run: the task's own retries carry the backoff, so a worker is never held.
        client = OcpiClient.for_connection(connection, retries=0, timeout=10)
        client.request("PUT", target, params={"type": card.type}, body=selectors.token_payload(card))
    except (OcpiClientError, ValueError) as error:
        retries = self.request.retries or 0
        # In-process mode (no broker) retries run inline, without backoff: keep them few.
        max_retries = min(3, settings.CARDS_TOKEN_PUSH_MAX_RETRIES) if self.request.is_eager else None
        max_retries = settings.CARDS_TOKEN_PUSH_MAX_RETRIES if max_retries is None else max_retries
        # A URL we refuse to call (roaming.ocpi.destinations) is not retried: the beat's requeue tries again later.
        final = retries >= max_retries or (isinstance(error, OcpiClientError) and error.refused)
        services.record_delivery(
            card,
            partner,
            status=TokenDelivery.Status.GAVE_UP if final else TokenDelivery.Status.FAILED,
            error=str(error),
        )
        if final:
            logger.error("Token of card %s never reached %s: %s", card_id, partner.ocpi_id, error)
            return "gave up"
        countdown = min(settings.CARDS_TOKEN_PUSH_BACKOFF_S * 2**retries, 600)
        if self.request.is_eager:
            # Celery re-applies a returned Retry inline; raised, it would escape into the caller.
            return self.retry(countdown=countdown, max_retries=max_retries, throw=False)
        raise self.retry(countdown=countdown, max_retries=max_retries) from error
    services.record_delivery(card, partner, status=TokenDelivery.Status.DELIVERED)
    return "delivered"


@shared_task
def requeue_token_deliveries() -> int:
    """Beat: send again each Token a CPO should still get but whose retry chain gave up or was lost."""
    deliveries = services.requeue_token_deliveries()
    for delivery in deliveries:
        deliver_card_token.delay(delivery.card_id, delivery.partner_id)
    return len(deliveries)


@shared_task
def expire_cards() -> int:
    return services.expire_cards()
