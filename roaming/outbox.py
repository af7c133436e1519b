"""The durable outbox: every outgoing OCPI push (tokens, locations, sessions, CDRs, tariffs) to a partner's RECEIVER.

`enqueue()` writes the call in the caller's transaction; after commit the partner's *lane* (one Celery task
`roaming.deliver_outbox` per partner, holding a PostgreSQL advisory lock, so one sender per partner) sends its
messages in order per (partner, module, object_id) until each is answered OCPI 1000. Rules (docs/outbox.md):

- a retryable failure (unreachable, timeout, HTTP 5xx, 401/403, OCPI 3xxx, garbage) backs the message off
  (OUTBOX_BACKOFF_S doubling up to OUTBOX_BACKOFF_MAX_S); a transport failure, or OUTBOX_DOWN_AFTER failures in a
  row, marks the *partner* down: its lane stops at once (a worker is never held by it) and one message probes it
  every OUTBOX_PROBE_S; the first success marks it up and makes its whole backlog due at once;
- an OCPI 2xxx answer is a refusal: the message is `failed` with the partner's words, staff may resend it;
- a CDR POST whose outcome is unknown (timeout, connection dropped, worker killed mid-call) is never POSTed again
  blindly: the lane first GETs `{cdrs receiver}/{cdr id}`; found: delivered; a 404 with an OCPI envelope: POSTed
  again; anything else: `failed` ("outcome unknown"), for staff to check with the partner.
- a worker killed mid-delivery leaves its messages pending; its advisory lock dies with its database connection,
  and the beat sweeper (`roaming.sweep_outbox`, every OUTBOX_SWEEP_S) kicks every lane with due messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from mobilityplus.task_queue import QUEUE_ERRORS
from roaming.models import Party
from roaming.outbox_lane import KICK_KEY, LaneResult, deliver, lane_lock, register_send_guard  # noqa: F401
from roaming.outbox_models import OutboxLane, OutboxMessage

logger = logging.getLogger(__name__)

MODULES = ("tokens", "locations", "sessions", "cdrs", "tariffs")
METHODS = ("POST", "PUT", "PATCH", "DELETE")

# -- writing ----------------------------------------------------------------------------------------------------------


def enqueue(
    partner: Party,
    *,
    module: str,
    object_id: str,
    method: str,
    path: str = "",
    body: dict | list | None = None,
    coalesce: bool = False,
) -> OutboxMessage:
    """Write one outgoing OCPI call to `partner`'s RECEIVER of `module` ("tokens", "locations", "sessions",
    "cdrs", "tariffs") in the caller's transaction; delivered after commit, in order per (partner, module,
    object_id), retried until the partner answers OCPI 1000. coalesce=True replaces a not-yet-sent message
    for the same (partner, module, object_id, method) by this one (only the latest status is sent)."""
    (message,) = enqueue_to_many(
        [partner], module=module, object_id=object_id, method=method, path=path, body=body, coalesce=coalesce
    )
    return message


def enqueue_to_many(
    partners: list[Party],
    *,
    module: str,
    object_id: str,
    method: str,
    path: str = "",
    body: dict | list | None = None,
    coalesce: bool = False,
) -> list[OutboxMessage]:
    """The same call to several partners (a broadcast: a Token to every CPO, a status to every eMSP), as `enqueue`
    writes it to each, in two queries whatever their number."""
    if module not in MODULES:
        raise ValueError(f"unknown OCPI module {module!r} (one of {', '.join(MODULES)})")
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    if not partners:
        return []
    object_id = str(object_id)
    now = timezone.now()
    # No savepoint of its own: inside the caller's transaction a failure here fails the caller's change too.
    with transaction.atomic(savepoint=False):
        if coalesce:
            # Not one being sent right now (sending_since set): that one goes, and this one after it.
            OutboxMessage.objects.filter(
                partner__in=partners,
                module=module,
                object_id=object_id,
                method=method,
                status=OutboxMessage.Status.PENDING,
                sending_since__isnull=True,
            ).delete()
        messages = OutboxMessage.objects.bulk_create(
            [
                OutboxMessage(
                    partner=partner,
                    module=module,
                    object_id=object_id,
                    method=method,
                    path=path,
                    body=body,
                    next_attempt_at=now,
                )
                for partner in partners
            ]
        )
    for partner in partners:
        _kick_after_commit(partner.pk)
    return messages


_pending_kicks = threading.local()


class _KicksAfterCommit:
    """The partners whose lanes one transaction's commit must kick (one on-commit callback per transaction)."""

    def __init__(self) -> None:
        self.partners: set[int] = set()
        self.done = False

    def __call__(self) -> None:
        self.done = True
        for pid in sorted(self.partners):
            kick(pid)


def _kick_after_commit(partner_id: int) -> None:
    """One kick per partner per transaction, after it commits (a burst of 10,000 messages makes a handful)."""
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        kick(partner_id)
        return
    pending = getattr(_pending_kicks, "current", None)
    # Still waiting for this transaction's commit: neither run yet nor dropped with a rolled-back savepoint.
    alive = (
        pending is not None
        and not pending.done
        and any(callback is pending for _sids, callback, _robust in conn.run_on_commit)
    )
    if not alive:
        pending = _pending_kicks.current = _KicksAfterCommit()
        transaction.on_commit(pending)
    pending.partners.add(partner_id)


def kick(partner_id: int) -> bool:
    """Queue the partner's lane unless one is already queued and not started; False when the broker is down."""
    from roaming.tasks import deliver_outbox

    if cache.add(KICK_KEY.format(partner_id), 1, timeout=settings.OUTBOX_KICK_TTL_S) is False:
        return True  # a lane task is queued and has not started: it will see this message
    try:
        deliver_outbox.delay(partner_id)
    except QUEUE_ERRORS as error:
        # The message is in the database: the beat sweeper queues the lane once the broker is back.
        cache.delete(KICK_KEY.format(partner_id))
        logger.error("Outbox lane of partner %s not queued (the sweeper will): %s", partner_id, error)
        return False
    return True


def resend(messages) -> int:
    """Staff: send refused (failed) messages again, at the end of their object's queue; returns how many.

    Only failed ones: a delivered CDR sent again would be a second CDR. A CDR whose outcome was unknown is POSTed
    without asking the partner first (staff checked with the partner that it does not have it).
    """
    now = timezone.now()
    partner_ids = set()
    count = 0
    for message in messages:
        updated = OutboxMessage.objects.filter(pk=message.pk, status=OutboxMessage.Status.FAILED).update(
            status=OutboxMessage.Status.PENDING,
            next_attempt_at=now,
            sending_since=None,
            last_error=f"Resent by staff ({message.last_error})"[:2000],
        )
        if updated:
            partner_ids.add(message.partner_id)
            count += 1
    for pid in partner_ids:
        _kick_after_commit(pid)
    return count


# -- the sweeper ------------------------------------------------------------------------------------------------------


def sweep() -> list[int]:
    """Beat: kick every lane with something due (lost kicks, a dead worker's lane, backoffs over, probes due)."""
    now = timezone.now()
    due = set(_due_partner_ids(now))
    down_probe_due = set(
        OutboxLane.objects.filter(down_since__isnull=False, next_probe_at__lte=now)
        .filter(Exists(OutboxMessage.objects.filter(partner_id=OuterRef("partner_id"), status="pending")))
        .values_list("partner_id", flat=True)
    )
    kicked = []
    for partner_id in sorted(due | down_probe_due):
        # A kick still marked queued (OUTBOX_KICK_TTL_S) is not repeated; one lost with a dead worker expires.
        if kick(partner_id):
            kicked.append(partner_id)
    return kicked


def partners_with_due_messages(now: dt.datetime | None = None) -> list[int]:
    """Ids of partners with a pending message due (what the sweeper kicks)."""
    return _due_partner_ids(now or timezone.now())


def _due_partner_ids(now: dt.datetime) -> list[int]:
    return list(
        OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING, next_attempt_at__lte=now)
        .order_by()
        .values_list("partner_id", flat=True)
        .distinct()
    )


def purge_delivered(now: dt.datetime | None = None, chunk: int = 5000) -> int:
    """Delete delivered messages older than OUTBOX_KEEP_DELIVERED_DAYS (refused and waiting ones are kept)."""
    before = (now or timezone.now()) - dt.timedelta(days=settings.OUTBOX_KEEP_DELIVERED_DAYS)
    old = OutboxMessage.objects.filter(status=OutboxMessage.Status.DELIVERED, delivered_at__lt=before)
    deleted = 0
    while ids := list(old.values_list("pk", flat=True)[:chunk]):
        deleted += OutboxMessage.objects.filter(pk__in=ids).delete()[0]
    return deleted
