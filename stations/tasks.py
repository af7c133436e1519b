"""Celery tasks of stations: thin wrappers around stations.feeds."""

from __future__ import annotations

import logging

from celery import shared_task

from stations import feeds, pull_lock

logger = logging.getLogger(__name__)


@shared_task(name="stations.tasks.pull_locations")
def pull_locations(connection_id: int, full: bool = False) -> dict:
    """Pull one partner's location feed; a pull already running for that partner makes this one a no-op."""
    try:
        run = feeds.pull_locations(connection_id, full=full)
    except feeds.LockUnavailable as error:
        return {"status": "skipped", "error": str(error)}
    except feeds.PullBusy as busy:
        logger.info("%s", busy)
        return {"status": "busy"}
    except feeds.PullNotPossible as error:
        logger.warning("%s", error)
        return {"status": "not_possible", "error": str(error)}
    return {
        "status": run.status,
        "sync_run": run.pk,
        "pages": run.pages,
        "created": run.created,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "removed": run.removed,
        "rejected": run.rejected,
        "skipped": run.skipped,
        "error": run.error,
    }


@shared_task(name="stations.tasks.dispatch_location_pulls")
def dispatch_location_pulls() -> list[int]:
    """Beat's entry point: close runs whose worker died, then enqueue a pull for each connection that is due."""
    closed = pull_lock.close_dead_runs()
    if closed:
        logger.warning("Closed location pulls whose worker died: %s", closed)
    due = feeds.connections_due()
    for connection_id, full in due:
        pull_locations.delay(connection_id, full=full)
    return [connection_id for connection_id, _ in due]
