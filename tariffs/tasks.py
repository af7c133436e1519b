"""Celery tasks of tariffs: thin wrappers around tariffs.pull."""

from __future__ import annotations

import logging

from celery import shared_task

from tariffs import pull

logger = logging.getLogger(__name__)


@shared_task(name="tariffs.tasks.pull_tariffs")
def pull_tariffs(connection_id: int, full: bool = False) -> dict:
    """Pull one partner's tariffs; a pull already running for that partner makes this one a no-op."""
    try:
        run = pull.pull_tariffs(connection_id, full=full)
    except pull.PullBusy as busy:
        logger.info("%s", busy)
        return {"status": "busy"}
    except pull.PullNotPossible as error:
        logger.warning("%s", error)
        return {"status": "not_possible", "error": str(error)}
    return {
        "status": run.status,
        "tariff_pull": run.pk,
        "pages": run.pages,
        "stored": run.stored,
        "unchanged": run.unchanged,
        "rejected": run.rejected,
        "skipped": run.skipped,
        "removed": run.removed,
        "error": run.error,
    }


@shared_task(name="tariffs.tasks.dispatch_tariff_pulls")
def dispatch_tariff_pulls() -> list[int]:
    """Beat's entry point: queue a pull for each partner whose tariffs are due."""
    due = pull.connections_due()
    for connection_id, full in due:
        pull_tariffs.delay(connection_id, full=full)
    return [connection_id for connection_id, _ in due]
