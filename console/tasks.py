"""Runs a staff job: the app's own task, called in this worker, with its outcome written on the job in words."""

from __future__ import annotations

import logging

from celery import current_app, shared_task
from django.utils import timezone

from console.models import StaffJob

logger = logging.getLogger(__name__)


def describe_outcome(kind: str, result: dict) -> tuple[bool, str]:
    """(succeeded, what happened) from an app task's result dict."""
    if kind in ("pull", "full_pull"):
        status = result.get("status")
        if status in ("succeeded", "failed"):
            objects = sum(result.get(key, 0) for key in ("created", "updated", "unchanged"))
            text = (
                f"{status}: {result.get('pages', 0)} page(s), {objects} object(s) stored "
                f"({result.get('created', 0)} new, {result.get('updated', 0)} changed), "
                f"{result.get('removed', 0)} removed, {result.get('rejected', 0)} rejected"
            )
            if result.get("error"):
                text += f"; {result['error']}"
            return status == "succeeded", text
        if status == "busy":
            return False, "not run: a pull of this partner was already running"
        return False, f"not run: {result.get('error') or status}"
    if kind == "pull_tariffs":  # tariffs.tasks.pull_tariffs
        status = result.get("status")
        if status in ("succeeded", "failed"):
            text = (
                f"{status}: {result.get('pages', 0)} page(s), {result.get('stored', 0)} tariff(s) stored, "
                f"{result.get('unchanged', 0)} unchanged, {result.get('removed', 0)} removed, "
                f"{result.get('rejected', 0)} rejected"
            )
            return status == "succeeded", text + (f"; {result['error']}" if result.get("error") else "")
        return False, f"not run: {result.get('error') or status}"
    # roaming's credentials tasks: the connection's status and its last error after the job
    if result.get("last_error"):
        return False, f"failed: {result['last_error']} (connection {result.get('status')})"
    return True, f"done: connection {result.get('status')}"


@shared_task(name="console.run_staff_job")
def run_staff_job(job_id: int, task_name: str, *args, **kwargs) -> dict:
    """Run `task_name` (an app's registered task) here, recording its start, end and outcome on the job."""
    StaffJob.objects.filter(pk=job_id).update(status=StaffJob.Status.RUNNING, started_at=timezone.now())
    job = StaffJob.objects.get(pk=job_id)
    try:
        result = current_app.tasks[task_name](*args, **kwargs)  # the task's body, in this process
        ok, outcome = describe_outcome(job.kind, result if isinstance(result, dict) else {})
    except Exception as error:
        logger.exception("Staff job %s (%s) failed", job_id, task_name)
        result, ok, outcome = {}, False, f"failed: {error.__class__.__name__}: {error}"
    StaffJob.objects.filter(pk=job_id).update(
        status=StaffJob.Status.SUCCEEDED if ok else StaffJob.Status.FAILED,
        outcome=outcome[:2000],
        finished_at=timezone.now(),
    )
    return {"job": job_id, "ok": ok, "outcome": outcome}
