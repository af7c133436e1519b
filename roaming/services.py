"""Writes about parties, connections and agreements."""

from __future__ import annotations

from roaming.models import PartnerConnection
from roaming.ocpi import credentials


def store_partner_tokens(
    connection: PartnerConnection, *, from_them: str | None = None, to_them: str | None = None
) -> PartnerConnection:
    """Keep the token they call us with (hashed) and the token we call them with (encrypted)."""
    fields = []
    if from_them is not None:
        connection.token_from_them_hash = credentials.hash_token(from_them) if from_them else ""
        fields.append("token_from_them_hash")
    if to_them is not None:
        connection.token_to_them_encrypted = credentials.encrypt_token(to_them) if to_them else ""
        fields.append("token_to_them_encrypted")
    if fields:
        connection.save(update_fields=[*fields, "updated_at"])
    return connection
