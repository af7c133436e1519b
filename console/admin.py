"""The partners' pages in the admin, composed from every app's figures and actions for a partner.

roaming's PartyAdmin (parties, connections, agreements, credentials actions) is the frame; this subclass adds
what other apps know about a partner (stations, feed runs, data quality) without roaming importing them.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from roaming.admin import PartyAdmin, _queue
from roaming.models import Party
from stations import feed_health


class PartnerAdmin(PartyAdmin):
    """The partners list and a partner's page: roaming's frame plus every app's figures for the partner."""

    list_display = (*PartyAdmin.list_display, "last_feed_sync", "stations", "open_errors")
    change_list_template = "admin/console/party_change_list.html"
    actions = (*PartyAdmin.actions, "pull_locations_now")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return feed_health.with_feed_figures(super().get_queryset(request))

    def get_urls(self):
        urls = [
            path(
                "data-quality/",
                self.admin_site.admin_view(self.data_quality_view),
                name="roaming_party_data_quality",
            )
        ]
        return urls + super().get_urls()

    # --- columns ---

    @admin.display(description="Last feed sync", ordering="last_sync_at")
    def last_feed_sync(self, party: Party):
        return party.last_sync_at or "-"

    @admin.display(description="Stations", ordering="station_count")
    def stations(self, party: Party) -> int:
        return party.station_count

    @admin.display(description="Open errors")
    def open_errors(self, party: Party) -> str:
        """Rejected objects of the latest feed sync, a failed latest sync, and a connection error."""
        connection = self._connection(party)
        problems = []
        if party.last_run_rejected:
            problems.append(f"{party.last_run_rejected} rejected in last sync")
        if party.last_run_status == "failed":
            problems.append("last sync failed")
        if connection is not None and connection.last_error:
            problems.append(connection.last_error)
        failed_sync = party.last_run_status == "failed"
        count = party.last_run_rejected + failed_sync + bool(connection and connection.last_error)
        if not count:
            return "0"
        return format_html('<span class="errornote-inline" title="{}">{}</span>', "; ".join(problems), count)

    # --- actions ---

    @admin.action(description="Pull locations now")
    def pull_locations_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        from stations.tasks import pull_locations  # the feeds capability owns it

        for connection in self._connections(request, queryset):
            if _queue(self, request, pull_locations, connection.pk, full=False):
                self.message_user(request, f"{connection.party.name}: location pull queued.", messages.SUCCESS)

    # --- data quality ---

    def data_quality_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = feed_health.data_quality_report()
        qualities = report.ranked
        return TemplateResponse(
            request,
            "admin/console/data_quality.html",
            {
                **self.admin_site.each_context(request),
                "title": "Partner data quality",
                "opts": self.model._meta,
                "qualities": qualities,
                "without_data": report.without_data,
                "chart_height": 24 * len(qualities) + 10,
                "partners_url": reverse("admin:roaming_party_changelist"),
            },
        )


admin.site.unregister(Party)
admin.site.register(Party, PartnerAdmin)
