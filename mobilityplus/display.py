"""The one formatter of the driver pages: statuses in words, durations and times, each time labelled with its zone.

`static/js/format.js` is its twin for what the browser draws (the same words, the same shapes); a browser test
checks they agree. Codes never reach a driver: an unknown code becomes "Status unknown", not "Outoforder".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from django.conf import settings
from django.utils import timezone

# OCPI EVSE statuses as a driver reads them.
EVSE_STATUS_TEXT = {
    "AVAILABLE": "Available",
    "CHARGING": "In use",
    "BLOCKED": "Blocked (parking spot taken)",
    "RESERVED": "Reserved",
    "INOPERATIVE": "Temporarily unavailable",
    "OUTOFORDER": "Out of order",
    "PLANNED": "Not in service yet",
    "REMOVED": "Removed",
    "UNKNOWN": "Status unknown",
}
# The map's summary of a station.
MAP_STATUS_TEXT = {
    "available": "Available",
    "in_use": "In use",
    "faulty": "Out of order",
    "unknown": "Status unknown",
}
# Our charging sessions (OCPI SessionStatus).
SESSION_STATUS_TEXT = {
    "PENDING": "Starting",
    "ACTIVE": "Charging",
    "RESERVATION": "Reserved",
    "COMPLETED": "Ended",
    "INVALID": "Not valid",
}
# A driver's start/stop request (charging.models.Command.Status). "sent" means the operator accepted the request
# and the charge point has not answered yet: never "Pending" next to "the operator accepted".
COMMAND_STATUS_TEXT = {
    "pending": "Sending",
    "sent": "Waiting for the charge point",
    "accepted": "Accepted",
    "rejected": "Rejected",
    "failed": "Failed",
    "timed_out": "No answer",
}
# Which map status (and so which colour and shape) an EVSE status belongs to.
EVSE_MAP_STATUS = {
    "AVAILABLE": "available",
    "CHARGING": "in_use",
    "RESERVED": "in_use",
    "BLOCKED": "in_use",
    "INOPERATIVE": "faulty",
    "OUTOFORDER": "faulty",
}


def map_status_of_evse(code: str | None) -> str:
    return EVSE_MAP_STATUS.get(str(code or ""), "unknown")


STATUS_TEXT = {
    "evse": EVSE_STATUS_TEXT,
    "map": MAP_STATUS_TEXT,
    "session": SESSION_STATUS_TEXT,
    "command": COMMAND_STATUS_TEXT,
}
UNKNOWN_STATUS = "Status unknown"


def status_text(kind: str, code: str | None) -> str:
    """A status code of one kind ("evse", "map", "session", "command") in words."""
    return STATUS_TEXT[kind].get(str(code or ""), UNKNOWN_STATUS)


def duration_text(seconds: float) -> str:
    """'45 s', '12 min', '1 h 05 min', '2 days 3 h'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h"


def zone(time_zone: str | None) -> zoneinfo.ZoneInfo | dt.tzinfo:
    """The station's zone (its OCPI time_zone) when valid, else ours (settings.TIME_ZONE)."""
    if time_zone:
        try:
            return zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.get_default_timezone()


def zone_label(tz: dt.tzinfo) -> str:
    """'Europe/Brussels time', or 'UTC'."""
    name = getattr(tz, "key", None) or str(tz)
    return "UTC" if name in ("UTC", "Etc/UTC") else f"{name} time"


def time_text(value: dt.datetime | None, time_zone: str | None = None, *, date: bool = True) -> str:
    """'4 Dec 2026, 14:05 (Europe/Brussels time)': the clock at the station, and which clock it is."""
    if value is None:
        return ""
    tz = zone(time_zone)
    local = value.astimezone(tz)
    shown = f"{local.day} {local:%b %Y}, {local:%H:%M}" if date else f"{local:%H:%M}"
    return f"{shown} ({zone_label(tz)})"


def default_time_zone() -> str:
    return settings.TIME_ZONE
