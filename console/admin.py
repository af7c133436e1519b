"""The partners' pages in the admin, composed from every app's figures and actions for a partner.

roaming's PartyAdmin (parties, connections, agreements, credentials actions) is the frame; this subclass adds
what other apps know about a partner (stations, feed runs, data quality) without roaming importing them.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from console import selectors
from console.models import StaffJob, StaffPreference
from console.tasks import run_staff_job
from console.views import TimeZoneForm
from roaming.admin import PartyAdmin, _queue
from roaming.models import PartnerConnection, Party
from stations import feed_health
from stations.feeds import last_successful_start


def dashboard_actions(dashboard: selectors.PartnerDashboard) -> list[tuple[str, str, str]]:
    """The partner page's buttons: (action, label, why it cannot run now or ""). Unregister stays in the list's
    drop-down: one click on a dashboard should not end a partnership."""
    connection = dashboard.roaming.connection
    refusals = dashboard.refusals
    none = "no connection yet" if connection is None else ""
    buttons = [
        ("pull_locations_now", "Pull locations now", refusals["pull"]),
        ("full_pull_now", "Full pull now", refusals["pull"]),
        ("test_connection", "Test connection", none),
        ("reread_endpoints", "Re-read their endpoints", refusals["reread"]),
        ("rotate_tokens", "Rotate tokens", refusals["rotate"]),
    ]
    if connection is not None and connection.status == PartnerConnection.Status.SUSPENDED:
        buttons.append(("resume", "Resume", ""))
    else:
        buttons.append(("suspend", "Suspend", none))
    return buttons


class PartnerAdmin(PartyAdmin):
    """The partners list and a partner's page: roaming's frame plus every app's figures for the partner."""

    list_display = (*PartyAdmin.list_display, "last_feed_sync", "stations", "open_errors")
    change_list_template = "admin/console/party_change_list.html"
    change_form_template = "admin/console/party_change_form.html"
    actions = (*PartyAdmin.actions, "pull_locations_now", "full_pull_now", "pull_tariffs_now")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return feed_health.with_feed_figures(super().get_queryset(request))

    def get_urls(self):
        urls = [
            path(
                "data-quality/",
                self.admin_site.admin_view(self.data_quality_view),
                name="roaming_party_data_quality",
            ),
            path(
                "<int:pk>/sync-progress/",
                self.admin_site.admin_view(self.sync_progress_view),
                name="roaming_party_sync_progress",
            ),
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

    # --- the partner's page: a dashboard above the form ---

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        party = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if party is not None:
            dashboard = selectors.partner_dashboard(party)
            extra_context["dashboard"] = dashboard
            extra_context["dashboard_actions"] = dashboard_actions(dashboard)
            extra_context["time_zone_label"] = timezone.get_current_timezone_name()
            extra_context["progress_url"] = reverse("admin:roaming_party_sync_progress", args=[party.pk])
            extra_context["action_url"] = reverse("admin:roaming_party_changelist")
            extra_context["action_checkbox_name"] = ACTION_CHECKBOX_NAME
        return super().change_view(request, object_id, form_url, extra_context)

    def sync_progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        """The running sync (or the latest run's outcome) and the partner's open jobs, polled by the partner page."""
        party = get_object_or_404(Party, pk=pk)
        if not self.has_view_permission(request, party):
            raise PermissionDenied
        connection = PartnerConnection.objects.filter(party=party).first()
        progress = feed_health.latest_sync_progress(connection.pk) if connection else None
        jobs = StaffJob.objects.filter(party=party).order_by("-queued_at", "-pk")[:6]
        return JsonResponse(
            {
                "sync": progress.as_json() if progress else None,
                "jobs": [
                    {
                        "id": job.pk,
                        "promise": job.promise,
                        "status": job.status,
                        "status_display": job.get_status_display(),
                        "outcome": job.outcome,
                    }
                    for job in jobs
                ],
                "active": bool(progress and progress.running)
                or any(job.status in (StaffJob.Status.QUEUED, StaffJob.Status.RUNNING) for job in jobs),
                "time_zone": timezone.get_current_timezone_name(),
            }
        )

    def response_action(self, request: HttpRequest, queryset: QuerySet):
        """An action started from a partner's page (its buttons) comes back to that page, not to the list."""
        response = super().response_action(request, queryset)
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if request.POST.get("_dashboard") and len(selected) == 1 and isinstance(response, HttpResponseRedirect):
            return HttpResponseRedirect(reverse("admin:roaming_party_change", args=[selected[0]]))
        return response

    # --- actions ---

    def queue_job(
        self, request: HttpRequest, connection: PartnerConnection, kind: str, task, *args, promise: str, **kwargs
    ) -> StaffJob:
        """Record the job, queue it, and say what will happen; a job that already ran (no broker: in-process) says
        what it did."""
        job = StaffJob.objects.create(
            party=connection.party, kind=kind, promise=promise[:255], requested_by=request.user
        )
        if not _queue(self, request, run_staff_job, job.pk, task.name, *args, **kwargs):
            StaffJob.objects.filter(pk=job.pk).update(
                status=StaffJob.Status.NOT_QUEUED, outcome="not queued: the task broker is unavailable"
            )
            return job
        job.refresh_from_db()
        page = reverse("admin:roaming_party_change", args=[connection.party_id])
        if job.finished_at:  # it ran in this process (development without a broker, or the test suite)
            level = messages.SUCCESS if job.status == StaffJob.Status.SUCCEEDED else messages.WARNING
            self.message_user(request, f"{promise}: {job.outcome}.", level)
        else:
            self.message_user(
                request,
                format_html(
                    '{}. Queued; its progress and outcome show <a href="{}">on the partner\'s page</a>.', promise, page
                ),
                messages.SUCCESS,
            )
        return job

    def _pull(self, request: HttpRequest, queryset: QuerySet, *, full: bool) -> None:
        from stations.tasks import pull_locations  # the feeds capability owns it

        for party in queryset:
            connection = self._connection(party)
            refusal = feed_health.pull_refusal(connection)
            if refusal:
                self.message_user(request, f"{party.name}: no pull: {refusal}. Nothing was queued.", messages.ERROR)
                continue
            running = feed_health.running_sync(connection.pk)
            if running:
                progress = feed_health.sync_progress(running)
                self.message_user(
                    request,
                    f"{party.name}: no pull queued: a {running.kind} pull is already running "
                    f"(page {progress.pages}, {progress.objects} objects so far); its progress is on the partner page.",
                    messages.WARNING,
                )
                continue
            since = None if full else last_successful_start(connection)
            if since is None:
                what = "a full pull of their locations (every location; those missing from it are removed)"
            else:
                local = timezone.localtime(since)
                what = f"a delta pull of their locations (changes since {local:%d %b %H:%M} {local:%Z})"
            self.queue_job(
                request,
                connection,
                "full_pull" if full else "pull",
                pull_locations,
                connection.pk,
                full=full,
                promise=f"{party.name}: {what}",
            )

    @admin.action(description="Pull locations now (changes since the last successful pull)")
    def pull_locations_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._pull(request, queryset, full=False)

    @admin.action(description="Full pull of locations now (every location; those missing are removed)")
    def full_pull_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._pull(request, queryset, full=True)

    @admin.action(description="Pull tariffs now (changes since the last successful tariff pull)")
    def pull_tariffs_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        from tariffs.tasks import pull_tariffs  # the tariffs capability owns it

        for party in queryset:
            connection = self._connection(party)
            if connection is None or not connection.endpoint_url("tariffs", "SENDER"):
                self.message_user(request, f"{party.name}: no tariffs SENDER to pull from.", messages.ERROR)
                continue
            self.queue_job(
                request, connection, "pull_tariffs", pull_tariffs, connection.pk, full=False,
                promise=f"{party.name}: a pull of their tariffs",
            )  # fmt: skip

    # --- data quality ---

    def data_quality_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        report = feed_health.data_quality_report()
        qualities = report.ranked
        mismatches = selectors.price_mismatches_by_partner()  # tariffs: CDRs whose price differs, 30 days
        for quality in [*qualities, *report.without_data]:
            quality.cdrs_price_differs = mismatches.get(quality.party.pk, 0)
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


@admin.register(StaffJob)
class StaffJobAdmin(admin.ModelAdmin):
    """Every job staff started from the console: what they were told, who, when, and what it did."""

    list_display = ("queued_at", "party", "kind", "promise", "requested_by", "status", "outcome", "finished_at")
    list_filter = ("status", "kind")
    search_fields = ("party__name", "promise", "outcome")
    list_select_related = ("party", "requested_by")
    readonly_fields = [f.name for f in StaffJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(StaffPreference)
class StaffPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "time_zone")


# --- the staff overview: the admin's index, above its list of apps ---

_admin_index = admin.site.index


def index_with_overview(request: HttpRequest, extra_context=None) -> HttpResponse:
    """Where staff land after login: partners needing attention, today's authorizations and sessions, with links."""
    context = dict(extra_context or {})
    if request.user.has_perm("roaming.view_party"):
        context["overview"] = selectors.staff_overview()
        context["time_zone_form"] = TimeZoneForm(initial={"time_zone": timezone.get_current_timezone_name()})
    return _admin_index(request, context)


admin.site.index = index_with_overview
admin.site.index_template = "admin/console/index.html"
