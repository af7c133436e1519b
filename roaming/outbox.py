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

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.cache import cache
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Case, CharField, Exists, F, OuterRef, Value, When
from django.utils import timezone

from mobilityplus.task_queue import QUEUE_ERRORS
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url
from roaming.outbox_models import OutboxLane, OutboxMessage

logger = logging.getLogger(__name__)

MODULES = ("tokens", "locations", "sessions", "cdrs", "tariffs")
METHODS = ("POST", "PUT", "PATCH", "DELETE")
KICK_KEY = "roaming:outbox:kicked:{}"
UNKNOWN_OUTCOME = "outcome unknown"

# Per module, a check run before each send: "" lets the message go, a reason stops it (marked failed, "Stopped: ...").
# The cards app registers the token-push rule (a CPO no longer covered by an agreement gets no more Tokens).
SEND_GUARDS: dict[str, Callable[[PartnerConnection], str]] = {}


def register_send_guard(module: str, guard: Callable[[PartnerConnection], str]) -> None:
    SEND_GUARDS[module] = guard


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
    if module not in MODULES:
        raise ValueError(f"unknown OCPI module {module!r} (one of {', '.join(MODULES)})")
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (one of {', '.join(METHODS)})")
    object_id = str(object_id)
    # No savepoint of its own: inside the caller's transaction a failure here fails the caller's change too.
    with transaction.atomic(savepoint=False):
        if coalesce:
            # Not one being sent right now (sending_since set): that one goes, and this one after it.
            OutboxMessage.objects.filter(
                partner=partner,
                module=module,
                object_id=object_id,
                method=method,
                status=OutboxMessage.Status.PENDING,
                sending_since__isnull=True,
            ).delete()
        message = OutboxMessage.objects.create(
            partner=partner,
            module=module,
            object_id=object_id,
            method=method,
            path=path,
            body=body,
            next_attempt_at=timezone.now(),
        )
    _kick_after_commit(partner.pk)
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
    with transaction.atomic(savepoint=False):
        if coalesce:
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


# -- the lane ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def lane_lock(partner_id: int) -> Iterator[bool]:
    """The partner's lane, held by one worker at a time: a PostgreSQL session advisory lock.

    A worker killed mid-delivery loses its database connection, and PostgreSQL releases the lock with it: the next
    lane run takes over at once, with no timeout to wait out. (SQLite, the in-process demo: one process, no lock.)
    """
    if db_connection.vendor != "postgresql":
        yield True
        return
    key = LOCK_NAMESPACE + partner_id
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s::bigint)", [key])
        got = cursor.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with db_connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s::bigint)", [key])


LOCK_NAMESPACE = 0x6F62780000000000  # "obx" in the high bytes: the outbox's advisory lock keys


@dataclass
class LaneResult:
    status: str  # drained, busy, down, held, sliced
    delivered: int = 0
    failed: int = 0
    retried: int = 0

    def as_dict(self) -> dict:
        return {"status": self.status, "delivered": self.delivered, "failed": self.failed, "retried": self.retried}


def deliver(partner_id: int) -> LaneResult:
    """Run the partner's lane: drain its due messages in order, then look again for any committed meanwhile."""
    cache.delete(KICK_KEY.format(partner_id))  # from now on a new message needs a new kick
    total = LaneResult("drained")
    for _round in range(3):
        with lane_lock(partner_id) as got:
            if not got:
                return LaneResult("busy")
            result = _drain(partner_id)
        total.delivered += result.delivered
        total.failed += result.failed
        total.retried += result.retried
        total.status = result.status
        if result.status == "sliced":
            kick(partner_id)  # back of the queue: other partners' lanes get their turn
            break
        if result.status != "drained" or not _due(partner_id).exists():
            break
    return total


def _due(partner_id: int, now: dt.datetime | None = None):
    now = now or timezone.now()
    return OutboxMessage.objects.filter(
        partner_id=partner_id, status=OutboxMessage.Status.PENDING, next_attempt_at__lte=now
    )


def _sendable(partner_id: int):
    """Pending messages with no older pending message about the same object (order per object)."""
    older = OutboxMessage.objects.filter(
        partner_id=partner_id,
        module=OuterRef("module"),
        object_id=OuterRef("object_id"),
        status=OutboxMessage.Status.PENDING,
        id__lt=OuterRef("id"),
    )
    return OutboxMessage.objects.filter(partner_id=partner_id, status=OutboxMessage.Status.PENDING).filter(
        ~Exists(older)
    )


def _drain(partner_id: int) -> LaneResult:
    partner = Party.objects.filter(pk=partner_id).first()
    if partner is None:
        return LaneResult("held")
    connection = (
        PartnerConnection.objects.select_related("party", "via_hub", "via_hub__party").filter(party=partner).first()
    )
    lane, _ = OutboxLane.objects.get_or_create(partner=partner)
    if connection is None or connection.status != PartnerConnection.Status.CONNECTED:
        # Kept, not sent: the messages wait for the connection to be resumed (the sweeper kicks the lane then).
        why = "no connection" if connection is None else f"connection {connection.get_status_display().lower()}"
        OutboxLane.objects.filter(pk=lane.pk).update(last_error=f"Held: {why}")
        return LaneResult("held")
    now = timezone.now()
    probing = lane.down_since is not None
    if probing and lane.next_probe_at and lane.next_probe_at > now:
        return LaneResult("down")
    client = OcpiClient.for_connection(connection, retries=0, timeout=settings.OUTBOX_HTTP_TIMEOUT_S)
    guards: dict[str, str] = {}
    result = LaneResult("drained")
    started = time.monotonic()
    failures = lane.consecutive_failures
    lane_error = lane.last_error
    last_failed = False
    while True:
        now = timezone.now()
        sendable = _sendable(partner_id)
        if probing:
            # One message probes a down partner, whatever its own backoff: the oldest, so the backlog keeps its
            # order; every OUTBOX_PROBE_ROTATE-th probe the least backed-off one instead, so a message the partner
            # chokes on (a 500 for that one only) does not keep the partner down for good.
            rotate = failures % settings.OUTBOX_PROBE_ROTATE == settings.OUTBOX_PROBE_ROTATE - 1
            batch = list(sendable.order_by(*(("next_attempt_at", "id") if rotate else ("id",)))[:1])
        else:
            batch = list(sendable.filter(next_attempt_at__lte=now).order_by("id")[: settings.OUTBOX_BATCH_SIZE])
        if not batch:
            if last_failed:
                # The last message(s) failed and nothing since succeeded: treat the partner as down and probe it,
                # rather than leave its messages to their own backoff (up to OUTBOX_BACKOFF_MAX_S).
                _lane_down(lane, failures, lane_error)
                result.status = "down"
                return result
            if probing:
                _lane_up(lane, partner_id)
            _schedule_soonest(partner_id)
            return result
        # A message claimed before (sending_since set) by a lane that never recorded its outcome: a worker died.
        uncertain = {m.pk for m in batch if m.sending_since is not None}
        claimed = _claim(batch)
        deliveries = _Deliveries()
        stop = None
        for index, message in enumerate(batch):
            if message.pk not in claimed:
                continue  # replaced by a newer message meanwhile (coalesce)
            outcome, error = _deliver_one(client, connection, message, guards, deliveries, message.pk in uncertain)
            if outcome == "delivered":
                result.delivered += 1
                failures, last_failed = 0, False
                if probing:
                    probing = False
                    deliveries.flush()
                    _lane_up(lane, partner_id)
            elif outcome == "failed":
                result.failed += 1
                failures, last_failed = 0, False
                if probing:
                    probing = False
                    _lane_up(lane, partner_id)
            elif outcome == "skipped":
                continue
            else:  # retry
                result.retried += 1
                failures, last_failed = failures + 1, True
                guards.clear()  # checked again before the retry: staff may have ended the agreement meanwhile
                lane_error = error
                if probing or outcome == "unreachable" or failures >= settings.OUTBOX_DOWN_AFTER:
                    stop = "down"
            if stop is None and time.monotonic() - started > settings.OUTBOX_LANE_SLICE_S:
                stop = "sliced"
            if stop:
                deliveries.flush()
                _unclaim([m for m in batch[index + 1 :] if m.pk in claimed], uncertain)
                if stop == "down":
                    _lane_down(lane, failures, lane_error)
                result.status = stop
                return result
        deliveries.flush()


class _Deliveries:
    """Messages delivered in this batch: recorded in one UPDATE, before the next batch is read or the lane stops.

    A worker killed before that leaves them claimed: the next lane run sends them again (idempotent PUT/PATCH) or,
    for a CDR POST, asks the partner first (`_check_cdr`).
    """

    def __init__(self) -> None:
        self.rows: list[tuple[int, str]] = []

    def add(self, message: OutboxMessage, location: str) -> None:
        self.rows.append((message.pk, location[:512]))

    def flush(self) -> None:
        if not self.rows:
            return
        now = timezone.now()
        fields = {
            "status": OutboxMessage.Status.DELIVERED,
            "attempts": F("attempts") + 1,
            "last_attempt_at": now,
            "delivered_at": now,
            "sending_since": None,
            "last_error": "",
        }
        located = [(pk, location) for pk, location in self.rows if location]
        if located:
            whens = [When(pk=pk, then=Value(location)) for pk, location in located]
            fields["reply_location"] = Case(*whens, default=Value(""), output_field=CharField())
        OutboxMessage.objects.filter(pk__in=[pk for pk, _ in self.rows], status=OutboxMessage.Status.PENDING).update(
            **fields
        )
        self.rows.clear()


def _claim(batch: list[OutboxMessage]) -> set[int]:
    """Mark the batch as being sent (one UPDATE, committed before anything is sent); returns the ids still pending."""
    ids = [m.pk for m in batch]
    now = timezone.now()
    pending = OutboxMessage.objects.filter(pk__in=ids, status=OutboxMessage.Status.PENDING)
    if pending.update(sending_since=now) == len(ids):
        return set(ids)
    return set(pending.filter(sending_since=now).values_list("pk", flat=True))


def _unclaim(messages: list[OutboxMessage], uncertain: set[int]) -> None:
    """Claimed but not sent (the lane stopped): free again, except those whose earlier outcome is still unknown."""
    ids = [m.pk for m in messages if m.pk not in uncertain]
    if ids:
        OutboxMessage.objects.filter(pk__in=ids, status=OutboxMessage.Status.PENDING).update(sending_since=None)


def _lane_up(lane: OutboxLane, partner_id: int) -> None:
    """The partner answers again: its backlog is due now, not at each message's backoff."""
    now = timezone.now()
    if lane.down_since is not None:
        logger.info("Outbox: partner %s answers again after being down since %s", partner_id, lane.down_since)
        OutboxMessage.objects.filter(
            partner_id=partner_id, status=OutboxMessage.Status.PENDING, next_attempt_at__gt=now
        ).update(next_attempt_at=now)
    OutboxLane.objects.filter(pk=lane.pk).update(
        down_since=None, next_probe_at=None, consecutive_failures=0, last_delivery_at=now
    )
    lane.down_since = None


def _lane_down(lane: OutboxLane, failures: int, error: str) -> None:
    now = timezone.now()
    probe_at = now + dt.timedelta(seconds=settings.OUTBOX_PROBE_S)
    OutboxLane.objects.filter(pk=lane.pk).update(
        down_since=lane.down_since or now,
        consecutive_failures=failures,
        next_probe_at=probe_at,
        last_error=error[:2000],
    )
    if lane.down_since is None:
        logger.warning("Outbox: partner %s is down (%s); probing it", lane.partner_id, error)
    _schedule(lane.partner_id, settings.OUTBOX_PROBE_S)


def _schedule_soonest(partner_id: int) -> None:
    """A message backed off for a short while gets its own lane run then; longer backoffs are the sweeper's."""
    soonest = _sendable(partner_id).order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
    if soonest is not None:
        delay = max((soonest - timezone.now()).total_seconds(), 0.0)
        if delay <= settings.OUTBOX_SWEEP_S:
            _schedule(partner_id, delay)


def _schedule(partner_id: int, delay_s: float) -> None:
    """A lane run later (a down partner's next probe); the sweeper does it when this is lost."""
    from mobilityplus.celery import app
    from roaming.tasks import deliver_outbox

    if app.conf.task_always_eager:
        return  # in-process: nothing runs "later"; the sweeper (called by hand in tests) does it
    try:
        deliver_outbox.apply_async((partner_id,), countdown=delay_s)
    except QUEUE_ERRORS as error:
        logger.error("Outbox probe of partner %s not scheduled (the sweeper will): %s", partner_id, error)


def _deliver_one(
    client: OcpiClient,
    connection: PartnerConnection,
    message: OutboxMessage,
    guards: dict,
    deliveries: _Deliveries,
    uncertain: bool,
) -> tuple[str, str]:
    """Send one claimed message; returns (outcome, error): delivered, failed, retry, unreachable or skipped."""
    if message.module not in guards:
        guard = SEND_GUARDS.get(message.module)
        guards[message.module] = guard(connection) if guard else ""
    if guards[message.module]:
        _record_failed(message, f"Stopped: {guards[message.module]}", attempted=False)
        return "skipped", ""
    base = connection.endpoint_url(message.module, "RECEIVER")
    if not base:
        _record_failed(message, f"The partner has no {message.module} RECEIVER endpoint", attempted=False)
        return "skipped", ""
    url = join_url(base, message.path) if message.path else base
    if message.is_cdr_post and uncertain:
        verdict = _check_cdr(client, url, message, deliveries)
        if verdict != "absent":
            return verdict
    try:
        reply = client.request(message.method, url, body=message.body)
    except OcpiClientError as error:
        return _record_error(message, error)
    deliveries.add(message, reply.headers.get("Location", ""))
    return "delivered", ""


def _nothing_sent(error: OcpiClientError) -> bool:
    """Whether the request certainly never reached the partner (refused destination, connection not made)."""
    if error.refused:
        return True
    cause = error.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.ConnectionError) and not isinstance(cause, requests.ReadTimeout):
        text = repr(cause)
        return "NewConnectionError" in text or "Connection refused" in text or "Name or service" in text
    return False


def _record_error(message: OutboxMessage, error: OcpiClientError) -> tuple[str, str]:
    text = str(error)[:2000]
    code = error.status_code if isinstance(error.status_code, int) else 0
    refusal = error.kind in ("status", "http") and 2000 <= code < 3000
    if refusal:
        _record_failed(message, text, attempted=True)
        return "failed", text
    nothing_sent = _nothing_sent(error)
    unknown = error.kind == "transport" and not nothing_sent
    if message.is_cdr_post and unknown:
        # Keep sending_since: the partner may have stored it; the next attempt checks before POSTing.
        text = f"{UNKNOWN_OUTCOME}: {text}"[:2000]
    _record_retry(message, text, keep_sending=message.is_cdr_post and unknown)
    return ("unreachable" if error.kind in ("transport", "refused") else "retry"), text


def _backoff(attempts: int) -> dt.timedelta:
    seconds = min(settings.OUTBOX_BACKOFF_S * 2 ** max(attempts - 1, 0), settings.OUTBOX_BACKOFF_MAX_S)
    return dt.timedelta(seconds=seconds)


def _record_retry(message: OutboxMessage, error: str, *, keep_sending: bool = False) -> None:
    now = timezone.now()
    attempts = message.attempts + 1
    fields = {
        "attempts": F("attempts") + 1,
        "last_error": error,
        "last_attempt_at": now,
        "next_attempt_at": now + _backoff(attempts),
    }
    if not keep_sending:
        fields["sending_since"] = None
    OutboxMessage.objects.filter(pk=message.pk, status=OutboxMessage.Status.PENDING).update(**fields)


def _record_failed(message: OutboxMessage, error: str, *, attempted: bool) -> None:
    now = timezone.now()
    fields = {"status": OutboxMessage.Status.FAILED, "last_error": error[:2000], "sending_since": None}
    if attempted:
        fields.update(attempts=F("attempts") + 1, last_attempt_at=now)
    OutboxMessage.objects.filter(pk=message.pk, status=OutboxMessage.Status.PENDING).update(**fields)
    logger.warning("Outbox message %s to partner %s refused: %s", message.pk, message.partner_id, error)


def _check_cdr(
    client: OcpiClient, post_url: str, message: OutboxMessage, deliveries: _Deliveries
) -> tuple[str, str] | str:
    """A CDR POST whose outcome is unknown: does the partner have it? "absent" lets the POST go again."""
    cdr_id = (message.body or {}).get("id") if isinstance(message.body, dict) else None
    if not cdr_id:
        _record_failed(message, f"{UNKNOWN_OUTCOME}: no CDR id to check; confirm with the partner", attempted=False)
        return "skipped", ""
    check_url = join_url(post_url, cdr_id)
    try:
        reply = client.request("GET", check_url)
    except OcpiClientError as error:
        if error.http_status == 404 and error.status_code is not None:
            return "absent"  # the partner's own OCPI answer: it does not have this CDR
        server_error = (error.http_status or 0) >= 500 or (error.status_code or 0) >= 3000
        if error.kind == "transport" or server_error:
            _record_retry(message, f"{UNKNOWN_OUTCOME}; checking: {error}"[:2000], keep_sending=True)
            return ("unreachable" if error.kind == "transport" else "retry"), str(error)
        _record_failed(
            message,
            f"{UNKNOWN_OUTCOME}: the partner may have stored this CDR and cannot be asked ({error}); "
            "confirm with them, then resend or leave it",
            attempted=False,
        )
        return "failed", str(error)
    data = reply.data if isinstance(reply.data, dict) else {}
    if data.get("id") == cdr_id:
        deliveries.add(message, check_url)
        return "delivered", ""
    return "absent"


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
