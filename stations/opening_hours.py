"""Opening hours for drivers: OCPI `opening_times` as text, and whether a station is open now.

OCPI 2.2.1 Hours: `twentyfourseven`, `regular_hours` (weekday 1 = Monday .. 7, "HH:MM" in the location's
`time_zone`; an end at or before the begin runs past midnight into the next day), `exceptional_openings`
and `exceptional_closings` (UTC date-times). Closings win over regular hours and openings.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
HOUR_MINUTE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")
# How far ahead the cue looks for the next opening from regular hours (a week, and a day to spare).
HORIZON = dt.timedelta(days=8)
Interval = tuple[dt.datetime, dt.datetime]


def opening_hours_text(opening_times: dict | None) -> str | None:
    """The opening times as a line of text; None when the partner gave none (the panel then says nothing)."""
    if not isinstance(opening_times, dict):
        return None
    if opening_times.get("twentyfourseven") is True:
        return "Open 24/7"
    periods = []
    for period in opening_times.get("regular_hours") or []:
        if not isinstance(period, dict):
            continue
        day = period.get("weekday")
        name = WEEKDAYS[day - 1] if isinstance(day, int) and 1 <= day <= 7 else "?"
        periods.append(f"{name} {period.get('period_begin', '?')}–{period.get('period_end', '?')}")
    return "; ".join(periods) or None


def opening_cue(opening_times: dict | None, time_zone: str, now: dt.datetime) -> str | None:
    """The cue: "Open now", "Open now, closes 18:00 (Europe/Brussels time)", "Closed now, opens 07:00 (...)".

    None when the partner said nothing we can use: no opening times, none of the three kinds of periods,
    or regular hours without a valid time zone (a wrong hour would be worse than none).
    """
    if not isinstance(opening_times, dict):
        return None
    always = opening_times.get("twentyfourseven") is True
    regular = _regular_periods(opening_times.get("regular_hours"))
    openings = _exceptional_periods(opening_times.get("exceptional_openings"))
    closings = _exceptional_periods(opening_times.get("exceptional_closings"))
    if not (always or regular or openings):
        return None
    zone = _zone(time_zone)
    if zone is None:
        if regular and not always:
            return None
        zone = dt.UTC  # exceptional periods are in UTC; shown as such when the location gives no zone
    now = now.astimezone(dt.UTC)

    intervals = [(now - HORIZON, now + HORIZON)] if always else _regular_intervals(regular, zone, now)
    intervals = _merge(_without(intervals + openings, closings))

    label = f"({_zone_name(zone)} time)"
    for begin, end in intervals:
        if begin <= now < end:
            if end - now <= dt.timedelta(hours=24):
                return f"Open now, closes {_when(end, zone, now)} {label}"
            return "Open now"
    upcoming = [begin for begin, _ in intervals if begin > now]
    if not upcoming:
        return "Closed now"
    return f"Closed now, opens {_when(min(upcoming), zone, now)} {label}"


def _zone(name: str) -> dt.tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _zone_name(zone: dt.tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else "UTC"


def _when(moment: dt.datetime, zone: dt.tzinfo, now: dt.datetime) -> str:
    """07:00 today, Tue 07:00 within the week, else 25 Dec 07:00: all in the location's time."""
    local, today = moment.astimezone(zone), now.astimezone(zone).date()
    days = (local.date() - today).days
    if days == 0:
        return local.strftime("%H:%M")
    if 0 < days < 7:
        return f"{WEEKDAYS[local.weekday()]} {local:%H:%M}"
    return f"{local.day} {local:%b %H:%M}"


def _regular_periods(value: object) -> list[tuple[int, dt.time, dt.time | None]]:
    """(weekday, begin, end) with end None for 24:00; periods we cannot read are left out."""
    periods = []
    for period in value if isinstance(value, list) else []:
        if not isinstance(period, dict):
            continue
        day, begin, end = period.get("weekday"), period.get("period_begin"), period.get("period_end")
        if not (isinstance(day, int) and 1 <= day <= 7 and isinstance(begin, str) and isinstance(end, str)):
            continue
        if not (HOUR_MINUTE.match(begin) and HOUR_MINUTE.match(end)) or begin == "24:00":
            continue
        periods.append((day, dt.time.fromisoformat(begin), None if end == "24:00" else dt.time.fromisoformat(end)))
    return periods


def _regular_intervals(periods: list, zone: dt.tzinfo, now: dt.datetime) -> list[Interval]:
    today = now.astimezone(zone).date()
    intervals = []
    # From yesterday (a period past midnight may still be running) to the horizon.
    for offset in range(-1, HORIZON.days + 1):
        day = today + dt.timedelta(days=offset)
        for weekday, begin, end in periods:
            if weekday != day.isoweekday():
                continue
            # An end at or before the begin (22:00–02:00, or 00:00–00:00) lies on the next day.
            end_day = day if end is not None and end > begin else day + dt.timedelta(days=1)
            start = dt.datetime.combine(day, begin, tzinfo=zone)
            stop = dt.datetime.combine(end_day, end or dt.time(0), tzinfo=zone)
            intervals.append((start.astimezone(dt.UTC), stop.astimezone(dt.UTC)))
    return intervals


def _exceptional_periods(value: object) -> list[Interval]:
    periods = []
    for period in value if isinstance(value, list) else []:
        if not isinstance(period, dict):
            continue
        try:
            begin = dt.datetime.fromisoformat(str(period.get("period_begin")))
            end = dt.datetime.fromisoformat(str(period.get("period_end")))
        except ValueError:
            continue
        # OCPI date-times are UTC; one sent without a zone is read as UTC.
        begin, end = (t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (begin, end))
        if begin < end:
            periods.append((begin.astimezone(dt.UTC), end.astimezone(dt.UTC)))
    return periods


def _without(intervals: list[Interval], closings: list[Interval]) -> list[Interval]:
    for close_begin, close_end in closings:
        cut = []
        for begin, end in intervals:
            if close_end <= begin or end <= close_begin:
                cut.append((begin, end))
                continue
            if begin < close_begin:
                cut.append((begin, close_begin))
            if close_end < end:
                cut.append((close_end, end))
        intervals = cut
    return intervals


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for begin, end in sorted(intervals):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged
