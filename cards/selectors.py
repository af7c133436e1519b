"""Reads about drivers and cards."""

from __future__ import annotations

from django.db.models import QuerySet

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


def token_push_targets() -> list:
    """Connected CPO partners whose agreement takes our cards today and who have a tokens RECEIVER endpoint."""
    from roaming.selectors import connected_connections, party_ids_accepting_our_cards

    covered = party_ids_accepting_our_cards()
    return [
        connection
        for connection in connected_connections()
        if connection.party_id in covered
        and connection.party.acts_as_cpo
        and connection.endpoint_url("tokens", "RECEIVER")
    ]


def tokens_visible_to(party) -> QuerySet[Card]:
    """Our tokens a CPO may cache: all of them when an agreement takes our cards at its stations, else none."""
    from cards.authorization import card_directory

    cards = Card.objects.filter(issuer_party__is_self=True).select_related("issuer_party")
    return cards if card_directory.covers(party) else cards.none()


def foreign_token_for(uid: str, token_type: str):
    """The cached foreign token with this UID (newest when two eMSPs share one), or None."""
    from cards.models import ForeignToken

    return (
        ForeignToken.objects.select_related("party").filter(uid=uid, type=token_type).order_by("-last_updated").first()
    )


def cards_of_driver(user) -> QuerySet[Card]:
    return Card.objects.filter(driver__user=user).select_related("replaced_by").order_by("-created_at")
