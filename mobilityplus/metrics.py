"""GET /metrics: Prometheus metrics for the operations team's alerts.

Counted where things happen (cards.metrics: authorizations, real-time calls to eMSPs; stations.metrics: status
changes received), added up across processes when PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets it for its
workers); computed from the database at scrape time for what workers of every kind write (feed runs and rejects,
outgoing deliveries waiting or failed), so those are right whichever process did the work.

Protected: "Authorization: Bearer <METRICS_TOKEN>" (compared in constant time), or a logged-in staff session.
"""

from __future__ import annotations

import hmac
import logging
import os

from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from cards import metrics as card_metrics
from console.selectors import outgoing_deliveries_by_partner
from roaming.models import Party
from stations import metrics as station_metrics
from stations.models import SyncRun
from stations.selectors import status_inbox_backlog

logger = logging.getLogger(__name__)
# Imported so their metrics exist in this process (and are listed even before the first event).
METRIC_MODULES = (card_metrics, station_metrics)


class DatabaseFigures:
    """Figures read from the database at scrape time (a few grouped queries, one row per partner and status)."""

    def collect(self):
        ocpi_ids = {pk: f"{cc}*{pid}" for pk, cc, pid in Party.objects.values_list("pk", "country_code", "party_id")}
        runs = CounterMetricFamily(
            "mobilityplus_feed_runs",
            "Location feed sync runs, by partner and status (running, succeeded, failed).",
            labels=["partner", "status"],
        )
        rejected = CounterMetricFamily(
            "mobilityplus_feed_rejected_objects",
            "Feed objects rejected (failed validation), by partner.",
            labels=["partner"],
        )
        rows = (
            SyncRun.objects.order_by()
            .values("connection__party_id", "status")
            .annotate(n=Count("pk"), rejected=Sum("rejected"))
        )
        rejected_by_partner: dict[str, int] = {}
        for row in rows:
            partner = ocpi_ids.get(row["connection__party_id"], "unknown")
            runs.add_metric([partner, row["status"]], row["n"])
            rejected_by_partner[partner] = rejected_by_partner.get(partner, 0) + (row["rejected"] or 0)
        for partner, count in sorted(rejected_by_partner.items()):
            rejected.add_metric([partner], count)
        yield runs
        yield rejected

        deliveries = GaugeMetricFamily(
            "mobilityplus_outgoing_deliveries",
            "Outgoing OCPI deliveries to partners not yet through, by partner and state "
            "(waiting: queued or being retried; failed: given up).",
            labels=["partner", "state"],
        )
        for party_id, backlog in sorted(outgoing_deliveries_by_partner().items()):
            partner = ocpi_ids.get(party_id, "unknown")
            deliveries.add_metric([partner, "waiting"], backlog.waiting)
            deliveries.add_metric([partner, "failed"], backlog.failed)
        yield deliveries

        waiting, oldest_s = status_inbox_backlog()
        inbox = GaugeMetricFamily(
            "mobilityplus_status_inbox_waiting",
            "Status PATCHes answered but not yet applied (STATUS_INBOX); alert when it keeps growing.",
        )
        inbox.add_metric([], waiting)
        yield inbox
        age = GaugeMetricFamily(
            "mobilityplus_status_inbox_oldest_seconds",
            "Age of the oldest status PATCH not yet applied (0 when none): the applier's lag.",
        )
        age.add_metric([], oldest_s)
        yield age


def registry() -> CollectorRegistry:
    """This scrape's registry: every process's counters (multi-process mode) or this one's, plus the database's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        scrape = CollectorRegistry()
        MultiProcessCollector(scrape)
    else:
        scrape = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # the in-process metrics (and process/platform ones)
            scrape.register(collector)
    scrape.register(DatabaseFigures())
    return scrape


def authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    if settings.METRICS_TOKEN and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer ") :].encode(), settings.METRICS_TOKEN.encode())
    return request.user.is_authenticated and request.user.is_staff


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not authorized(request):
        response = HttpResponse("Metrics need a bearer token (METRICS_TOKEN) or a staff login.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
