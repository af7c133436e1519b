"""Beat's safety net for the status inbox: drain what the applier process (`apply_status_inbox`) left."""

from __future__ import annotations

from celery import shared_task

from stations.status_inbox import drain_status_inbox as drain


@shared_task(ignore_result=True)
def drain_status_inbox() -> int:
    return drain()
