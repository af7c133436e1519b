"""Background work on partner connections: handshakes run here, never in a staff request."""

from __future__ import annotations

from celery import shared_task

from roaming import services
from roaming.ocpi.credentials import decrypt_token


def _outcome(connection) -> dict:
    return {"connection_id": connection.pk, "status": connection.status, "last_error": connection.last_error}


@shared_task(name="roaming.connect_partner")
def connect_partner(connection_id: int, versions_url: str, token_a_encrypted: str) -> dict:
    """Register us at the partner's versions URL with the token A they gave us (passed encrypted through the broker)."""
    return _outcome(services.connect_to_partner(connection_id, versions_url, decrypt_token(token_a_encrypted)))


@shared_task(name="roaming.rotate_partner_tokens")
def rotate_partner_tokens(connection_id: int) -> dict:
    return _outcome(services.rotate_tokens_at_partner(connection_id))


@shared_task(name="roaming.unregister_partner")
def unregister_partner(connection_id: int) -> dict:
    return _outcome(services.unregister_at_partner(connection_id))


@shared_task(name="roaming.reread_partner_endpoints")
def reread_partner_endpoints(connection_id: int) -> dict:
    return _outcome(services.reread_partner_endpoints(connection_id))


# acks_late (settings): a worker killed mid-lane leaves the message unacked; the broker hands it out again, and the
# sweeper kicks the lane meanwhile. ignore_result: nobody reads it.
@shared_task(name="roaming.deliver_outbox", ignore_result=True)
def deliver_outbox(partner_id: int) -> dict:
    """One partner's outbox lane: its due messages, in order (roaming/outbox.py)."""
    from roaming import outbox

    return outbox.deliver(partner_id).as_dict()


@shared_task(name="roaming.sweep_outbox", ignore_result=True)
def sweep_outbox() -> list[int]:
    """Beat: kick every partner's lane that has messages due."""
    from roaming import outbox

    return outbox.sweep()


@shared_task(name="roaming.purge_outbox", ignore_result=True)
def purge_outbox() -> int:
    """Beat: forget delivered messages past their keeping time."""
    from roaming import outbox

    return outbox.purge_delivered()
