"""Staff views of sessions, CDRs and commands: filter by partner, status, and CDRs that match nothing.

CDRs are never edited: a wrong CDR of our stations is corrected with a credit CDR and a new one (OCPI 2.2.1),
from the CDR's page ("Credit and reissue") or the list's action "Credit the selected CDRs".
"""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from charging.cpo_delivery import CannotCredit, cdr_location_at_emsp, credit_cdr
from charging.models import CDR, Command, MeterSample, Session
from tariffs.admin import PriceDiffersFilter


class CdrInline(admin.TabularInline):
    model = CDR
    fields = ("ocpi_id", "total_energy", "total_cost_excl_vat", "total_cost_incl_vat", "currency", "credit")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class MeterSampleInline(admin.TabularInline):
    model = MeterSample
    fields = ("at", "kwh", "power_kw")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = ("ocpi_id", "party", "status", "start_date_time", "end_date_time", "kwh", "card", "location")
    list_filter = ("status", "party", "emsp", "auth_method")
    search_fields = ("ocpi_id", "location_ocpi_id", "evse_uid", "card__contract_id", "card__uid")
    list_select_related = ("party", "card", "location")
    raw_id_fields = ("card", "location", "evse")
    readonly_fields = ("created_at", "updated_at")
    date_hierarchy = "start_date_time"
    inlines = [CdrInline, MeterSampleInline]


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


class CorrectionForm(forms.Form):
    """The corrected values of a CDR of ours: the new CDR carries them, the wrong one is credited."""

    total_energy = forms.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0), label="Energy (kWh)")
    total_cost_excl_vat = forms.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0))
    total_cost_incl_vat = forms.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0), required=False)
    reason = forms.CharField(max_length=255, help_text="Why the CDR was wrong (the credit CDR's remark).")


@admin.action(description="Credit the selected CDRs of our stations (no replacement)")
def credit_selected(modeladmin, request, queryset):
    done = 0
    for cdr in queryset:
        try:
            credit_cdr(cdr, reason=f"Credited by {request.user.get_username()}")
            done += 1
        except CannotCredit as refused:
            messages.warning(request, f"{cdr.ocpi_id}: {refused}")
    if done:
        messages.success(request, f"{done} credit CDR(s) issued and queued for the eMSPs.")


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
    list_filter = (MatchFilter, PriceDiffersFilter, "party", "emsp", "credit", "currency")
    search_fields = ("ocpi_id", "session_ocpi_id", "card__contract_id")
    list_select_related = ("party", "session")
    date_hierarchy = "end_date_time"
    actions = [credit_selected]
    exclude = ("raw",)

    def get_readonly_fields(self, request, obj=None):
        # Never edited: every field is shown read-only; corrections are new CDRs.
        return [f.name for f in CDR._meta.fields if f.name != "raw"] + ["wire_object", "at_emsp", "correct"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="As sent (OCPI)")
    def wire_object(self, obj):
        import json

        return format_html("<pre>{}</pre>", json.dumps(obj.raw, indent=2))

    @admin.display(description="URL at the eMSP (its Location answer)")
    def at_emsp(self, obj):
        if obj is None or obj.emsp is None or not obj.party.is_self or obj.emsp.is_self:
            return "—"
        try:
            return cdr_location_at_emsp(obj) or "not delivered yet"
        except ImportError:
            return "—"

    @admin.display(description="Correction")
    def correct(self, obj):
        if obj is None or not obj.party.is_self or obj.credit:
            return "—"
        url = reverse("admin:charging_cdr_correct", args=[obj.pk])
        return format_html('<a href="{}">Credit and reissue with corrected values</a>', url)

    def get_urls(self):
        urls = [
            path(
                "<int:pk>/correct/",
                self.admin_site.admin_view(self.correct_view),
                name="charging_cdr_correct",
            )
        ]
        return urls + super().get_urls()

    def correct_view(self, request, pk: int):
        """Credit a wrong CDR of ours and issue the corrected one (a form with the right values)."""
        cdr = get_object_or_404(CDR.objects.select_related("party", "emsp"), pk=pk)
        if not self.has_view_permission(request, cdr) or not request.user.has_perm("charging.change_cdr"):
            messages.error(request, "You may not correct CDRs.")
            return redirect("admin:charging_cdr_change", pk)
        initial = {
            "total_energy": cdr.total_energy,
            "total_cost_excl_vat": cdr.total_cost_excl_vat,
            "total_cost_incl_vat": cdr.total_cost_incl_vat,
        }
        form = CorrectionForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            corrected = {k: data[k] for k in ("total_energy", "total_cost_excl_vat", "total_cost_incl_vat")}
            try:
                credit, new = credit_cdr(cdr, corrected=corrected, reason=data["reason"])
            except CannotCredit as refused:
                messages.error(request, str(refused))
                return redirect("admin:charging_cdr_change", pk)
            messages.success(request, f"Credit CDR {credit.ocpi_id} and new CDR {new.ocpi_id} issued and queued.")
            return redirect("admin:charging_cdr_change", new.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Correct CDR {cdr.ocpi_id}",
            "cdr": cdr,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/charging/cdr_correct.html", context)


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
