"""The status inbox: status-only EVSE PATCHes answered in one statement, applied in batches.

With `STATUS_INBOX` on (PostgreSQL), a clean status-only PATCH (`stations.ocpi_locations.parse_status_patch`)
is one INSERT ... SELECT that finds the partner's EVSE and queues the change (`stations.PendingStatus`); the
partner gets 1000 once it is committed, so nothing answered is lost. `apply_pending_statuses` then applies the
queue in arrival order, hundreds of changes in one transaction and one statement per table: the EVSEs, their
history rows (`record_status_changes`), the locations' map summaries and the cells' dirty list, exactly what the
one-by-one fast path (`stations.services.apply_evse_status`) writes for each. Run it as one long-lived process
(`manage.py apply_status_inbox`); beat also drains the queue every `STATUS_INBOX_SWEEP_SECONDS` as a safety net.
With the inbox off (the default, and always on SQLite) every PATCH is applied as it arrives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db import connection as db
from django.db.backends.postgresql.base import CursorDebugWrapper, ServerBindingCursor
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from stations.map_cache import note_changed_places
from stations.models import EvseStatus
from stations.ocpi_locations import StatusPatch
from stations.services import (
    StatusChange,
    apply_evse_status,
    dirty_insert,
    execute_together,
    json_column,
    record_status_changes,
    status_summary,
)

logger = logging.getLogger(__name__)

_LOCK_ID = 604_207  # PostgreSQL advisory lock: one applier at a time, so changes apply in arrival order

# The EVSE by the partner's ids, exactly as the fast path finds it (a removed location or EVSE is not found:
# the general path decides), and the change queued, in one statement. Prepared once per database connection
# (`_prepared_cursor`): planning this join anew took half of PostgreSQL's CPU per PATCH (docs/scaling.md).
_ACCEPT_SQL = (
    "INSERT INTO stations_pendingstatus (evse_id, status, status_schedule, last_updated) "
    "SELECT e.id, %s, %s::jsonb, %s FROM stations_location l JOIN stations_evse e ON e.location_id = l.id "
    "WHERE l.party_id = %s AND l.ocpi_id = %s AND e.uid = %s AND l.removed_at IS NULL AND e.status <> 'REMOVED' "
    "RETURNING id"
)
# Django turns psycopg's prepared statements off (prepare_threshold None, for connection poolers); a threshold no
# statement reaches turns them on only for statements asked to be prepared. Django's own cursors bind on the client
# side and are never prepared.
_PREPARE_ONLY_WHEN_ASKED = 2**31


class _PreparedCursor(ServerBindingCursor):
    """Django's server-side binding cursor, each statement prepared on its first run on the connection."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


class _PreparedDebugCursor(CursorDebugWrapper):
    """Django's query log (DEBUG, tests) for `_PreparedCursor`: the statement as written, its values bound apart."""

    def execute(self, sql, params=None):
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)  # not the debug wrapper's: it would log it again


def _prepared_cursor():
    """A cursor of this thread's connection whose statements are prepared (at protocol level, which PgBouncer
    1.21 and later keeps across transaction pooling), wrapped as Django wraps its own (query log, wrappers)."""
    db.ensure_connection()
    if db.connection.prepare_threshold is None:
        db.connection.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
    cursor = _PreparedCursor(db.connection)
    return _PreparedDebugCursor(cursor, db) if db.queries_logged else db.make_cursor(cursor)


_TAKE_SQL = (
    "DELETE FROM stations_pendingstatus WHERE id IN (SELECT id FROM stations_pendingstatus ORDER BY id LIMIT %s) "
    "RETURNING id, evse_id, status, status_schedule, last_updated"
)
# The locations of these EVSEs, locked in id order (the general path locks one location at a time: no
# deadlock), with all their EVSEs: the map summary depends on every EVSE of a location.
_LOCATIONS_SQL = (
    "SELECT e.id, e.location_id, e.status, e.status_schedule, e.status_changed_at, e.last_updated, "
    "l.removed_at, l.latitude, l.longitude FROM stations_location l JOIN stations_evse e ON e.location_id = l.id "
    "WHERE l.id IN (SELECT location_id FROM stations_evse WHERE id = ANY(%s)) ORDER BY l.id FOR UPDATE OF l"
)
_EVSES_SQL = (
    "UPDATE stations_evse e SET status = v.status, status_schedule = v.schedule::jsonb, "
    "status_changed_at = v.changed_at, last_updated = GREATEST(e.last_updated, v.stamp) "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[]) "
    "AS v(id, status, schedule, changed_at, stamp) WHERE e.id = v.id"
)
_SUMMARIES_SQL = (
    "UPDATE stations_location l SET map_status = v.map_status, available_evse_count = v.available, "
    "status_updated_at = v.updated_at, content_hash = '' "
    "FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::timestamptz[]) AS v(id, map_status, available, updated_at) "
    "WHERE l.id = v.id"
)


def inbox_in_use() -> bool:
    """Whether status PATCHes are queued (STATUS_INBOX, PostgreSQL only) rather than applied as they arrive."""
    return settings.STATUS_INBOX and db.vendor == "postgresql"


def accept_evse_status(party_id: int, location_id: str, evse_uid: str, patch: StatusPatch) -> bool:
    """Take a clean status-only PATCH: queued in one statement, or applied now with the inbox off.

    False when the general path must decide (an unknown or removed location or EVSE).
    """
    if not inbox_in_use():
        return apply_evse_status(party_id, location_id, evse_uid, patch)
    schedule = None if patch.status_schedule is None else json.dumps(patch.status_schedule)
    params = [patch.status, schedule, patch.last_updated, party_id, location_id, evse_uid]
    try:
        return _queue_change(params)
    except DatabaseError as error:
        # "prepared statement does not exist": dropped behind psycopg's back (a pooler's DISCARD ALL), and psycopg
        # would name it again on this connection: run it once more on a new one. Not inside a caller's transaction,
        # which the failed statement aborted (that caller fails as it would on any error; the next call heals).
        if getattr(error.__cause__, "sqlstate", None) != "26000" or not db.get_autocommit():
            raise
        db.close()
        return _queue_change(params)


def _queue_change(params: list) -> bool:
    with _prepared_cursor() as cursor:
        cursor.execute(_ACCEPT_SQL, params)
        return cursor.fetchone() is not None


@dataclass
class _Evse:
    """An EVSE's columns as the batch changes them."""

    location_id: int
    status: str
    schedule: list
    changed_at: dt.datetime | None
    last_updated: dt.datetime
    live: bool
    touched: bool = False


def apply_pending_statuses(limit: int | None = None) -> int:
    """Apply the oldest queued status changes (at most `limit`) in one transaction; how many were taken.

    0 when the queue is empty or another applier holds the lock. Each change is applied as the fast path
    would have applied it on arrival: a repeated status moves only the EVSE's last_updated (never back), a new
    one writes the EVSE, a history row and its location's map summary. A change of an EVSE or location removed
    since it was answered is dropped.
    """
    limit = limit or settings.STATUS_INBOX_BATCH
    with transaction.atomic(), db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(_TAKE_SQL, [limit])
        pending = sorted(cursor.fetchall())
        if not pending:
            return 0
        cursor.execute(_LOCATIONS_SQL, [sorted({row[1] for row in pending})])
        evses, places = {}, {}
        for evse_id, location_id, status, schedule, changed_at, stamp, removed_at, lat, lon in cursor.fetchall():
            live = removed_at is None and status != EvseStatus.REMOVED
            evses[evse_id] = _Evse(location_id, status, json_column(schedule), changed_at, stamp, live)
            places[location_id] = (lat, lon)
        changes = _apply_in_order(pending, evses)
        _write(evses, changes, places)
    return len(pending)


def _apply_in_order(pending: list[tuple], evses: dict[int, _Evse]) -> list[StatusChange]:
    """Lay the queued changes over the EVSEs in arrival order; the status changes they make."""
    now = timezone.now()
    changes = []
    for _id, evse_id, status, schedule, stamp in pending:
        evse = evses.get(evse_id)
        if evse is None or not evse.live:
            continue  # removed (or deleted) since the PATCH was answered: nothing to show it on
        schedule = json_column(schedule)
        evse.touched = True
        evse.last_updated = max(evse.last_updated, stamp)
        if schedule is not None:
            evse.schedule = schedule
        if status != evse.status:
            changed_at = min(stamp, now)
            changes.append(StatusChange(evse_id, evse.location_id, status, changed_at, evse.status))
            evse.status, evse.changed_at = status, changed_at
    return changes


def _write(evses: dict[int, _Evse], changes: list[StatusChange], places: dict[int, tuple]) -> None:
    """The batch's writes: one statement per table."""
    touched = [(pk, evse) for pk, evse in evses.items() if evse.touched]
    statements = [
        (
            _EVSES_SQL,
            [
                [pk for pk, _ in touched],
                [evse.status for _, evse in touched],
                [json.dumps(evse.schedule) for _, evse in touched],
                [evse.changed_at for _, evse in touched],
                [evse.last_updated for _, evse in touched],
            ],
        )
    ]
    changed_locations = sorted({change.location_id for change in changes})
    if changed_locations:
        live: dict[int, list[tuple[str, dt.datetime | None]]] = {}
        for evse in evses.values():
            if evse.live:
                live.setdefault(evse.location_id, []).append((evse.status, evse.changed_at))
        summaries = [status_summary(live.get(pk, [])) for pk in changed_locations]
        map_statuses, available, updated_at = (list(column) for column in zip(*summaries, strict=True))
        statements.append((_SUMMARIES_SQL, [changed_locations, map_statuses, available, updated_at]))
        statements.append(dirty_insert(changed_locations))
    execute_together(statements)
    record_status_changes(changes)
    note_changed_places([places[pk] for pk in changed_locations])


def drain_status_inbox() -> int:
    """Apply batches until the queue is empty (or another applier holds the lock); how many changes.

    A batch that fails is taken again one change at a time, and a change that fails alone is set aside (logged
    with its EVSE): one bad row must not stop every partner's statuses behind it.
    """
    applied = 0
    while True:
        try:
            taken = apply_pending_statuses()
        except DatabaseError:
            logger.exception("status inbox: a batch failed; taking it one change at a time")
            taken = _apply_one_at_a_time(settings.STATUS_INBOX_BATCH)
        if not taken:
            return applied
        applied += taken


def _apply_one_at_a_time(count: int) -> int:
    """Apply up to `count` of the oldest changes one by one, setting aside any that fails; how many were taken."""
    taken = 0
    while taken < count:
        try:
            one = apply_pending_statuses(limit=1)
        except DatabaseError:
            logger.exception("status inbox: a change cannot be applied")
            one = _set_aside_oldest()
        if not one:
            break
        taken += one
    return taken


def _set_aside_oldest() -> int:
    """Remove the oldest queued change, which cannot be applied, logging what it was; 1, or 0 when none is left."""
    with transaction.atomic(), db.cursor() as cursor:
        cursor.execute(
            "DELETE FROM stations_pendingstatus WHERE id = (SELECT min(id) FROM stations_pendingstatus) "
            "RETURNING id, evse_id, status, last_updated::text"
        )
        row = cursor.fetchone()
    if row is not None:
        logger.error("status inbox: change %s (EVSE %s to %s, last_updated %s) set aside, not applied", *row)
    return 0 if row is None else 1
