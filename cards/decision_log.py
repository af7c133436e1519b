"""The authorization decision log, written off the request path.

Each process keeps the decisions it made in memory and a daemon thread writes them in bulk
(one INSERT of many rows every CARDS_DECISION_LOG_FLUSH_S), so an authorization never waits
for a commit. The price: decisions of a process killed with SIGKILL in the last flush interval
are lost (a normal exit flushes). With the interval set to 0 every decision is inserted at once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections import deque
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from cards.models import AuthorizationDecision

logger = logging.getLogger(__name__)

# Bounded so a database outage cannot eat the worker's memory; beyond it the oldest rows go (and are counted).
MAX_PENDING = 200_000
FLUSH_BATCH = 5_000


class DecisionLog:
    def __init__(self) -> None:
        self._pending: deque[AuthorizationDecision] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.written = 0
        self.dropped = 0

    def record(self, **fields: Any) -> None:
        """Store one decision (fields of AuthorizationDecision; decided_at defaults to now)."""
        fields.setdefault("decided_at", dt.datetime.now(dt.UTC))
        row = AuthorizationDecision(**fields)
        if settings.CARDS_DECISION_LOG_FLUSH_S <= 0:
            row.save()
            self.written += 1
            return
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
            AuthorizationDecision.objects.bulk_create(rows, batch_size=2000)
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
