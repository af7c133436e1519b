"""Prometheus metrics of the station data we receive (served by /metrics, mobilityplus.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

STATUS_CHANGES = Counter(
    "mobilityplus_evse_status_changes",
    "EVSE status changes received (pushed by partners, pulled from feeds, or set by staff); "
    "per minute: rate(mobilityplus_evse_status_changes_total[5m]) * 60.",
)
