"""The EVSE status history (stations.EvseStatusChange): daily partitions on PostgreSQL, retention, bounded reads.

At Europe's stream the history grows by about 11 million rows a day. On PostgreSQL the table is
partitioned by range of `changed_at`, one partition per UTC day (`stations_evsestatuschange_pYYYYMMDD`),
plus a default partition for rows outside every day partition (a partner's old `last_updated`). The beat
task `stations.history_tasks.maintain_status_history` makes the partitions of the next
STATUS_HISTORY_DAYS_AHEAD days and drops those older than STATUS_HISTORY_RETENTION_DAYS: dropping a
partition is instant and leaves no dead rows, where a DELETE of 11 million rows a day would not.
Elsewhere (SQLite in development) the table is a plain one and retention is a DELETE.

Readers ask for a bounded range (`recent_status_changes`), so PostgreSQL reads only the partitions of
that range.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from stations.models import EvseStatusChange

logger = logging.getLogger(__name__)

TABLE = "stations_evsestatuschange"
DEFAULT_PARTITION = f"{TABLE}_default"
_DAY_PARTITION = re.compile(rf"^{TABLE}_p(\d{{8}})$")


def is_partitioned() -> bool:
    """Whether the history table is a partitioned one (PostgreSQL, after migration stations.0011)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass", [TABLE])
        return cursor.fetchone() is not None


def partition_days(cursor) -> list[dt.date]:
    """The days that have a partition, oldest first."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        [TABLE],
    )
    days = []
    for (name,) in cursor.fetchall():
        match = _DAY_PARTITION.match(name)
        if match:
            days.append(dt.datetime.strptime(match.group(1), "%Y%m%d").date())
    return sorted(days)


def _bounds(day: dt.date) -> tuple[str, str]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start.isoformat(), (start + dt.timedelta(days=1)).isoformat()


def create_day_partition(cursor, day: dt.date) -> bool:
    """Make the partition of one UTC day (moving its rows out of the default partition); False if it exists."""
    name = f"{TABLE}_p{day:%Y%m%d}"
    cursor.execute("SELECT to_regclass(%s)", [name])
    if cursor.fetchone()[0] is not None:
        return False
    low, high = _bounds(day)
    # Rows of that day already in the default partition would make ATTACH fail: move them in first.
    cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE changed_at >= %s AND changed_at < %s RETURNING *) "  # noqa: S608
        f"INSERT INTO {name} (id, status, changed_at, evse_id) SELECT id, status, changed_at, evse_id FROM moved",
        [low, high],
    )
    cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [low, high])
    return True


def ensure_partitions(cursor, today: dt.date | None = None, ahead: int | None = None) -> list[dt.date]:
    """Partitions for yesterday, today and the next `ahead` days (STATUS_HISTORY_DAYS_AHEAD); returns those made."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    ahead = settings.STATUS_HISTORY_DAYS_AHEAD if ahead is None else ahead
    made = []
    for offset in range(-1, ahead + 1):
        day = today + dt.timedelta(days=offset)
        if create_day_partition(cursor, day):
            made.append(day)
    return made


def drop_old_partitions(cursor, today: dt.date | None = None, retention_days: int | None = None) -> list[dt.date]:
    """Drop the day partitions wholly older than the retention, and older default rows; returns the days dropped."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    keep = settings.STATUS_HISTORY_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = today - dt.timedelta(days=keep)
    dropped = []
    for day in partition_days(cursor):
        if day < cutoff:
            cursor.execute(f"DROP TABLE {TABLE}_p{day:%Y%m%d}")
            dropped.append(day)
    cursor.execute(f"DELETE FROM {DEFAULT_PARTITION} WHERE changed_at < %s", [_bounds(cutoff)[0]])  # noqa: S608
    return dropped


def maintain(today: dt.date | None = None) -> dict:
    """Make the coming days' partitions and apply the retention (the beat task's work)."""
    today = today or timezone.now().astimezone(dt.UTC).date()
    if not is_partitioned():
        cutoff = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC) - dt.timedelta(
            days=settings.STATUS_HISTORY_RETENTION_DAYS
        )
        deleted, _ = EvseStatusChange.objects.filter(changed_at__lt=cutoff).delete()
        return {"partitioned": False, "deleted": deleted}
    with transaction.atomic(), connection.cursor() as cursor:
        # Short lock waits: DDL on the parent queues behind readers; better to retry at the next run.
        cursor.execute("SET LOCAL lock_timeout = '5s'")
        # Rows written earlier in this transaction (a caller's) would keep a partition busy with their checks.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        made = ensure_partitions(cursor, today)
        dropped = drop_old_partitions(cursor, today)
    if made or dropped:
        logger.info("Status history: partitions made %s, dropped %s", made, dropped)
    return {"partitioned": True, "made": [str(d) for d in made], "dropped": [str(d) for d in dropped]}


def recent_status_changes(evse_ids: list[int], *, days: int | None = None, now: dt.datetime | None = None):
    """The status changes of these EVSEs in the last `days` (STATUS_HISTORY_SHOWN_DAYS), newest first."""
    days = settings.STATUS_HISTORY_SHOWN_DAYS if days is None else days
    since = (now or timezone.now()) - dt.timedelta(days=days)
    return EvseStatusChange.objects.filter(evse_id__in=evse_ids, changed_at__gte=since).order_by("-changed_at")
