"""Periodic work on the EVSE status history (stations.status_history)."""

from __future__ import annotations

from celery import shared_task

from stations import status_history


@shared_task(ignore_result=True)
def maintain_status_history() -> dict:
    """Make the coming days' partitions and drop those past the retention."""
    return status_history.maintain()
