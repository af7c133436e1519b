"""`manage.py apply_status_inbox`: the one process that applies queued status PATCHes (STATUS_INBOX), forever."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from stations.status_inbox import drain_status_inbox


class Command(BaseCommand):
    help = "Apply the queued EVSE status PATCHes in batches, as they come (STATUS_INBOX; docs/scaling.md)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--until-empty", action="store_true", help="Stop once the queue is empty")

    def handle(self, *args, until_empty: bool, **options) -> None:
        while True:
            drain_status_inbox()
            if until_empty:
                return
            # The queue was empty (or another applier holds the lock): a change waits at most this long.
            time.sleep(settings.STATUS_INBOX_POLL_SECONDS)
