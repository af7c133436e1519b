"""Staff views of sessions, CDRs and commands: filter by partner, status, and CDRs that match nothing."""

from django.contrib import admin

from charging.models import CDR, Command, Session
from tariffs.admin import PriceDiffersFilter


class CdrInline(admin.TabularInline):
    model = CDR
    fields = ("ocpi_id", "total_energy", "total_cost_excl_vat", "total_cost_incl_vat", "currency", "credit")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("ocpi_id", "party", "status", "start_date_time", "end_date_time", "kwh", "card", "location")
    list_filter = ("status", "party", "auth_method")
    search_fields = ("ocpi_id", "location_ocpi_id", "evse_uid", "card__contract_id", "card__uid")
    list_select_related = ("party", "card", "location")
    raw_id_fields = ("card", "location", "evse")
    readonly_fields = ("created_at", "updated_at")
    date_hierarchy = "start_date_time"
    inlines = [CdrInline]


class MatchFilter(admin.SimpleListFilter):
    title = "match"
    parameter_name = "match"

    def lookups(self, request, model_admin):
        return [
            ("no_session", "Without matching session"),
            ("no_token", "Token not one of our cards"),
            ("flagged", "Any flag"),
            ("matched", "Matched"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "no_session":
            return queryset.filter(unknown_session=True)
        if value == "no_token":
            return queryset.filter(unknown_token=True)
        if value == "flagged":
            return queryset.filter(unknown_session=True) | queryset.filter(unknown_token=True)
        if value == "matched":
            return queryset.filter(unknown_session=False, unknown_token=False)
        return queryset


@admin.register(CDR)
class CdrAdmin(admin.ModelAdmin):
    list_display = (
        "ocpi_id",
        "party",
        "session",
        "end_date_time",
        "total_energy",
        "total_cost_excl_vat",
        "currency",
        "credit",
        "unknown_session",
        "unknown_token",
    )
    list_filter = (MatchFilter, PriceDiffersFilter, "party", "credit", "currency")
    search_fields = ("ocpi_id", "session_ocpi_id", "card__contract_id")
    list_select_related = ("party", "session")
    raw_id_fields = ("session", "card", "location", "evse", "credited_cdr")
    readonly_fields = ("received_at",)
    date_hierarchy = "end_date_time"


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    list_display = (
        "uid",
        "type",
        "direction",
        "partner",
        "status",
        "response_result",
        "result",
        "driver",
        "created_at",
    )
    list_filter = ("status", "type", "direction", "partner")
    search_fields = ("uid", "idempotency_key", "driver__user__username", "card__contract_id")
    list_select_related = ("partner", "driver__user")
    raw_id_fields = ("driver", "card", "location", "evse", "session")
    readonly_fields = (
        "uid",
        "created_at",
        "send_started_at",
        "responded_at",
        "deadline_at",
        "result_at",
        "result_reported_at",
    )
