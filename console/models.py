"""What the staff console keeps: the jobs staff queued from it, and each staff member's time zone."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.db import models

from roaming.models import Party


class StaffJob(models.Model):
    """A background job a staff member started from the admin, with what they were told and what it did."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        NOT_QUEUED = "not_queued", "Not queued"

    party = models.ForeignKey(Party, on_delete=models.CASCADE, related_name="staff_jobs")
    kind = models.CharField(max_length=16, help_text="pull, full_pull, connect, reread, rotate, unregister")
    promise = models.CharField(max_length=255, help_text="What staff were told would happen.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    outcome = models.TextField(blank=True, help_text="What the job did, in words.")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-pk"]
        indexes = [models.Index(fields=["party", "-queued_at"], name="staffjob_party_recent")]

    def __str__(self) -> str:
        return f"{self.party.name}: {self.kind} ({self.status})"


def time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(zoneinfo.available_timezones()) if "/" in name and "Etc" not in name]


class StaffPreference(models.Model):
    """A staff member's own settings: the zone the admin shows times in (STAFF_TIME_ZONE when unset)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="staff_preference")
    time_zone = models.CharField(max_length=64, choices=time_zone_choices)

    def __str__(self) -> str:
        return f"{self.user}: {self.time_zone}"
