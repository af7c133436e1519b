"""Reads about drivers and cards."""

from __future__ import annotations

from django.db.models import QuerySet

from cards.identifiers import foreign_uid_lookups
from cards.models import Card
from roaming.ocpi.envelope import format_datetime


def token_payload(card: Card) -> dict:
    """The OCPI 2.2.1 Token object for one of our cards (issuer party must be loaded)."""
    payload = {
        "country_code": card.issuer_party.country_code,
        "party_id": card.issuer_party.party_id,
        "uid": card.uid,
        "type": card.type,
        "contract_id": card.contract_id,
        "issuer": card.issuer,
        "valid": card.valid,
        "whitelist": card.whitelist,
        "last_updated": format_datetime(card.last_updated),
    }
    for field in ("visual_number", "group_id", "language"):
        if getattr(card, field):
            payload[field] = getattr(card, field)
    return payload


def token_push_refusal(connection, covered: set[int] | None = None, *, any_status: bool = False) -> str:
    """Why our Tokens may not be pushed over this connection now; "" when they may.

    The one rule for choosing push targets and for stopping a retry chain, so the two never disagree.
    `covered` (party ids whose agreement takes our cards) may be passed in when checking many connections.
    """
    from roaming.models import PartnerConnection
    from roaming.selectors import party_ids_accepting_our_cards

    if connection is None:
        return "We have no connection to this partner"
    if not any_status and connection.status != PartnerConnection.Status.CONNECTED:
        return f"The connection is {connection.get_status_display().lower()}"
    if not connection.party.acts_as_cpo:
        return "The partner is not a CPO"
    if connection.party_id not in (party_ids_accepting_our_cards() if covered is None else covered):
        return "No agreement in force takes our cards at this partner's stations"
    if not connection.endpoint_url("tokens", "RECEIVER"):
        return "The partner has no tokens RECEIVER endpoint"
    return ""


def token_push_targets(*, suspended: bool = False) -> list:
    """Connected CPO partners whose agreement takes our cards today and who have a tokens RECEIVER endpoint.

    `suspended=True` adds suspended connections otherwise eligible: a card change is written for them too, kept by
    the outbox while they are suspended and delivered once they are resumed (only each card's latest state).
    """
    from roaming.models import PartnerConnection
    from roaming.selectors import party_ids_accepting_our_cards

    statuses = [PartnerConnection.Status.CONNECTED] + ([PartnerConnection.Status.SUSPENDED] if suspended else [])
    covered = party_ids_accepting_our_cards()
    connections = PartnerConnection.objects.filter(status__in=statuses).select_related("party", "via_hub")
    return [c for c in connections if not token_push_refusal(c, covered, any_status=suspended)]


def token_object_id(card: Card) -> str:
    """The outbox's object id of a card's Token: order and coalescing are per token (uid and type)."""
    return f"{card.uid}/{card.type}"


def token_path(card: Card) -> str:
    """Where the Token goes under a CPO's tokens RECEIVER: /{country_code}/{party_id}/{uid}?type={type}."""
    return f"/{card.issuer_party.country_code}/{card.issuer_party.party_id}/{card.uid}?type={card.type}"


def token_pushes(card: Card) -> list:
    """Per CPO, the latest push of this card's Token (the outbox message), newest first: what staff see per card."""
    from roaming.models import OutboxMessage

    latest: dict[int, OutboxMessage] = {}
    messages = (
        OutboxMessage.objects.filter(module="tokens", object_id=token_object_id(card))
        .select_related("partner")
        .order_by("-id")
    )
    for message in messages[:200]:
        latest.setdefault(message.partner_id, message)
    return list(latest.values())


def tokens_visible_to(party) -> QuerySet[Card]:
    """Our tokens a CPO may cache: all of them when an agreement takes our cards at its stations, else none."""
    from cards.authorization import card_directory

    cards = Card.objects.filter(issuer_party__is_self=True).select_related("issuer_party")
    return cards if card_directory.covers(party) else cards.none()


def foreign_token_for(uid: str, token_type: str):
    """The cached foreign token with this UID (newest when two eMSPs share one), or None."""
    from cards.models import ForeignToken

    return (
        ForeignToken.objects.select_related("party")
        .filter(uid__in=foreign_uid_lookups(uid, token_type), type=token_type)
        .order_by("-last_updated")
        .first()
    )


def cards_of_driver(user) -> QuerySet[Card]:
    return Card.objects.filter(driver__user=user).select_related("replaced_by").order_by("-created_at")
