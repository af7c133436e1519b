"""Staff see times in their own zone (their preference, else STAFF_TIME_ZONE); drivers and partners are untouched."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.utils import timezone


def staff_time_zone(user) -> str:
    """The zone a staff member reads times in: their own choice, else STAFF_TIME_ZONE (Europe/Brussels)."""
    try:
        return user.staff_preference.time_zone
    except Exception:  # no preference saved (RelatedObjectDoesNotExist), or the table is unreachable
        return settings.STAFF_TIME_ZONE


class StaffTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            try:
                timezone.activate(zoneinfo.ZoneInfo(staff_time_zone(user)))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                timezone.activate(zoneinfo.ZoneInfo(settings.STAFF_TIME_ZONE))
            try:
                return self.get_response(request)
            finally:
                timezone.deactivate()
        return self.get_response(request)
