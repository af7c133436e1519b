"""Reads about drivers and cards."""

from __future__ import annotations

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
