"""Staff views of stations: locations (with the limited-access override), EVSE history, feed runs, rejects."""

from __future__ import annotations

from django.contrib import admin

from stations.models import EVSE, Connector, EvseStatusChange, Location, RejectedObject, SyncRun
from stations.services import SUMMARY_FIELDS, record_staff_edit


class EVSEInline(admin.TabularInline):
    model = EVSE
    fields = ("uid", "evse_id", "status", "status_changed_at", "parking_restrictions", "last_updated")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = (
        "ocpi_id",
        "name",
        "city",
        "party",
        "map_status",
        "evse_count",
        "available_evse_count",
        "limited_access",
        "limited_access_override",
        "removed_at",
        "last_updated",
    )
    list_filter = ("map_status", "limited_access", "limited_access_override", "party", "source", "country")
    search_fields = ("ocpi_id", "name", "city", "postal_code", "address")
    list_select_related = ("party",)
    show_full_result_count = False  # no COUNT(*) over 550,000 rows on every page
    readonly_fields = (
        *SUMMARY_FIELDS,  # derived from the EVSEs by the feeds; staff decide only the override
        "content_hash",
        "removed_at",
        "raw",
    )
    raw_id_fields = ("party", "source")
    inlines = [EVSEInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record_staff_edit(obj.pk)  # the override and access fields reach the map at once


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0


class StatusChangeInline(admin.TabularInline):
    model = EvseStatusChange
    fields = ("status", "changed_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(EVSE)
class EVSEAdmin(admin.ModelAdmin):
    list_display = ("uid", "evse_id", "location", "status", "status_changed_at", "last_updated")
    list_filter = ("status",)
    search_fields = ("uid", "evse_id", "location__ocpi_id", "location__name")
    list_select_related = ("location",)
    raw_id_fields = ("location",)
    show_full_result_count = False
    readonly_fields = ("status_changed_at",)
    inlines = [ConnectorInline, StatusChangeInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A status set by hand is a status change like any other: history, map summary, cache.
        record_staff_edit(
            obj.location_id, evse=obj, status_changed=not change or "status" in form.changed_data, created=not change
        )


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "connection",
        "sync_kind",
        "status",
        "started_at",
        "finished_at",
        "pages",
        "created",
        "updated",
        "unchanged",
        "removed",
        "rejected",
        "skipped",
    )
    list_filter = ("status", "full", "connection")
    list_select_related = ("connection__party",)
    readonly_fields = [f.name for f in SyncRun._meta.fields]
    date_hierarchy = "started_at"

    @admin.display(description="Kind", ordering="full")
    def sync_kind(self, run: SyncRun) -> str:
        """In words: a ✗ icon for "not full" read as a failure."""
        return run.kind


@admin.register(RejectedObject)
class RejectedObjectAdmin(admin.ModelAdmin):
    list_display = ("object_id", "connection", "error", "received_at", "sync_run")
    list_filter = ("connection",)
    search_fields = ("object_id", "error")
    list_select_related = ("connection__party",)
    readonly_fields = ("sync_run", "connection", "object_id", "error", "payload", "received_at")
