"""Template helpers of the staff console: times in the staff member's zone, labelled with it; shares; durations."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()


def zone_label(value: dt.datetime) -> str:
    """The zone's abbreviation (CET, CEST, UTC), or its name when it has none ("+03")."""
    abbreviation = value.strftime("%Z")
    if abbreviation and not abbreviation.startswith(("+", "-")):
        return abbreviation
    return timezone.get_current_timezone_name()


@register.simple_tag
def when(value: dt.datetime | None) -> str:
    """A time in the active (staff member's) zone, always saying which zone."""
    if value is None:
        return "-"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}">{} {}</time>', local.isoformat(), local.strftime("%d %b %Y %H:%M"), zone_label(local)
    )


@register.filter
def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


@register.filter
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
