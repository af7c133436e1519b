"""The authorization decision log, written off the request path.

Each process keeps the decisions it made in memory and a daemon thread writes them in bulk
(one INSERT of many rows every CARDS_DECISION_LOG_FLUSH_S), so an authorization never waits
for a commit. The price: decisions of a process killed with SIGKILL in the last flush interval
are lost (a normal exit flushes). With the interval set to 0 every decision is inserted at once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from cards.metrics import observe_decision
from cards.models import AuthorizationDecision

logger = logging.getLogger(__name__)

# Bounded so a database outage cannot eat the worker's memory; beyond it the oldest rows go (and are counted).
MAX_PENDING = 200_000
FLUSH_BATCH = 5_000


COLUMNS = (
    "direction",
    "partner",
    "token_uid",
    "token_type",
    "location_id",
    "evse_uids",
    "result",
    "reason",
    "path",
    "authorization_reference",
    "elapsed_ms",
    "decided_at",
)
DEFAULTS: dict[str, Any] = {"location_id": "", "evse_uids": [], "authorization_reference": ""}


def _write(rows: list[tuple]) -> None:
    """Insert many decisions at once: COPY on PostgreSQL (the cheapest way in), bulk_create elsewhere."""
    if connection.vendor == "postgresql":
        table = AuthorizationDecision._meta.db_table
        with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row[:5] + (json.dumps(row[5]),) + row[6:])
        return
    AuthorizationDecision.objects.bulk_create(
        [AuthorizationDecision(**dict(zip(COLUMNS, row, strict=True))) for row in rows], batch_size=2000
    )


class DecisionLog:
    def __init__(self) -> None:
        self._pending: deque[tuple] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.written = 0
        self.dropped = 0

    def record(self, **fields: Any) -> None:
        """Store one decision (fields of AuthorizationDecision; decided_at defaults to now)."""
        fields.setdefault("decided_at", dt.datetime.now(dt.UTC))
        observe_decision(
            fields["direction"], fields.get("partner", ""), fields["result"], fields["path"], fields.get("elapsed_ms")
        )
        if settings.CARDS_DECISION_LOG_FLUSH_S <= 0:
            AuthorizationDecision.objects.create(**fields)
            self.written += 1
            return
        # A plain tuple: building model instances per request costs more than the decision itself.
        row = tuple(fields.get(name, DEFAULTS.get(name)) for name in COLUMNS)
        self._ensure_thread()
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(row)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write everything buffered now, in this thread; returns how many rows were written."""
        with self._lock:
            rows = list(self._pending)
            self._pending.clear()
        if not rows:
            return 0
        try:
            _write(rows)
        except Exception:
            logger.exception("Writing %d authorization decisions failed; kept for the next flush", len(rows))
            with self._lock:
                self._pending.extendleft(reversed(rows))
            raise
        self.written += len(rows)
        return len(rows)

    def discard(self) -> int:
        """Drop what is buffered without writing it (tests whose database is going away)."""
        with self._lock:
            count = len(self._pending)
            self._pending.clear()
        return count

    def _ensure_thread(self) -> None:
        # After a fork (gunicorn workers) the parent's thread does not exist in the child.
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            # Short ticks, so a changed interval or a burst (FLUSH_BATCH rows) is acted on quickly.
            time.sleep(0.02)
            if time.monotonic() - last < settings.CARDS_DECISION_LOG_FLUSH_S and len(self._pending) < FLUSH_BATCH:
                continue
            last = time.monotonic()
            try:
                close_old_connections()
                if not self.flush():
                    connection.close()  # idle: hold no database session
            except Exception:  # logged in flush; try again next round with a fresh connection
                connection.close()


decision_log = DecisionLog()


@atexit.register
def _flush_at_exit() -> None:
    if decision_log.pending:
        try:
            decision_log.flush()
        except Exception:
            logger.exception("Authorization decisions lost at exit")
