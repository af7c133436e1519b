"""Small charts drawn on the server as SVG geometry (no JavaScript, no chart library)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 600, 150
LEFT, BOTTOM = 44, 20  # room for the axis labels
TOP_PLOT = 58  # objects: y 4..58; rejects: y 80..130
REJECT_TOP, REJECT_BOTTOM = 80, 130


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the tooltip: day and figure


@dataclass
class FeedChart:
    """Objects stored per day (top) and objects rejected per day (bottom), each on its own scale."""

    width: int
    height: int
    objects: list[Bar]
    rejects: list[Bar]
    max_objects: int
    max_rejects: int
    first_day: str
    last_day: str
    total_objects: int
    total_rejects: int
    summary: str  # the chart's text alternative


def _bars(values: list[int], days: list, top: float, bottom: float, what: str) -> tuple[list[Bar], int]:
    peak = max(values) if values and max(values) > 0 else 0
    step = (WIDTH - LEFT) / max(len(values), 1)
    bars = []
    for index, (value, day) in enumerate(zip(values, days, strict=True)):
        height = (bottom - top) * value / peak if peak else 0
        bars.append(
            Bar(
                x=round(LEFT + index * step + 1, 1),
                y=round(bottom - height, 1),
                width=round(max(step - 2, 1), 1),
                height=round(height, 1),
                label=f"{day:%d %b}: {value} {what}",
            )
        )
    return bars, peak


def feed_chart(days: list) -> FeedChart:
    """The chart for a partner's feed days (stations.feed_health.FeedDay, oldest first)."""
    dates = [day.day for day in days]
    objects, max_objects = _bars([day.objects for day in days], dates, 4, TOP_PLOT, "objects stored")
    rejects, max_rejects = _bars([day.rejected for day in days], dates, REJECT_TOP, REJECT_BOTTOM, "rejected")
    total_objects = sum(day.objects for day in days)
    total_rejects = sum(day.rejected for day in days)
    return FeedChart(
        width=WIDTH,
        height=HEIGHT,
        objects=objects,
        rejects=rejects,
        max_objects=max_objects,
        max_rejects=max_rejects,
        first_day=f"{dates[0]:%d %b}" if dates else "",
        last_day=f"{dates[-1]:%d %b}" if dates else "",
        total_objects=total_objects,
        total_rejects=total_rejects,
        summary=f"Last {len(days)} days: {total_objects} objects stored, {total_rejects} rejected",
    )
