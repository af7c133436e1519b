"""Staff console for cards: search, filters, lifecycle actions, CSV import, delivery status."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from cards import services
from cards.models import AuthorizationDecision, Card, CardStatusChange, Driver, ForeignToken
from cards.selectors import token_pushes


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry"

    def lookups(self, request, model_admin):
        return [("past", "Past validity"), ("30d", "Expires within 30 days"), ("none", "No end date")]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        if self.value() == "past":
            return queryset.filter(valid_until__lt=today)
        if self.value() == "30d":
            return queryset.filter(valid_until__gte=today, valid_until__lte=today + dt.timedelta(days=30))
        if self.value() == "none":
            return queryset.filter(valid_until__isnull=True)
        return queryset


class StatusChangeInline(admin.TabularInline):
    model = CardStatusChange
    extra = 0
    can_delete = False
    fields = ("changed_at", "old_status", "new_status", "changed_by", "reason")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class CsvImportForm(forms.Form):
    file = forms.FileField(help_text="UTF-8 CSV with a header row.")


class ReplaceForm(forms.Form):
    new_uid = forms.CharField(label="UID of the new card", max_length=64)
    reason = forms.CharField(max_length=255, initial="Replaced")


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=255)


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
    list_display = ("uid", "contract_id", "visual_number", "driver", "type", "whitelist", "status", "valid_until")
    list_filter = ("status", ExpiryFilter, "type", "whitelist")
    search_fields = (
        "uid",
        "contract_id",
        "visual_number",
        "driver__user__username",
        "driver__user__email",
        "driver__user__last_name",
    )
    list_select_related = ("driver__user",)
    autocomplete_fields = ("driver",)
    readonly_fields = ("status", "replaced_by", "last_updated", "created_at", "issuer_party", "token_pushed_to_cpos")
    inlines = [StatusChangeInline]
    actions = ["block_cards", "unblock_cards", "report_lost", "replace_cards"]
    change_list_template = "admin/cards/card/change_list.html"

    @admin.display(description="Token pushed to CPOs")
    def token_pushed_to_cpos(self, card: Card) -> str:
        """The latest push of this card to each CPO (the outbox; per partner in Roaming > Outbox messages)."""
        pushes = token_pushes(card) if card.pk else []
        if not pushes:
            return "Not pushed to any CPO"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((m.partner, m.get_status_display(), m.attempts, m.delivered_at or "", m.last_error) for m in pushes),
        )
        return format_html(
            "<table><tr><th>CPO</th><th>status</th><th>attempts</th><th>delivered</th><th>last error</th></tr>"
            "{}</table>",
            rows,
        )

    def save_model(self, request, obj, form, change) -> None:
        # Edited Token fields must reach the CPOs like a status change does.
        services.save_card_details(obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Cards are never deleted: their history and the CPOs' copies must stay consistent.
        return False

    def has_add_permission(self, request) -> bool:
        return False  # new cards come through the CSV import (or replace), both validated as a whole

    def get_urls(self):
        return [
            path("import/", self.admin_site.admin_view(self.import_csv), name="cards_card_import"),
            *super().get_urls(),
        ]

    def import_csv(self, request: HttpRequest) -> HttpResponse:
        if not self.has_change_permission(request):
            return redirect("admin:index")
        errors: list[str] = []
        form = CsvImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            raw = form.cleaned_data["file"].read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                errors = ["the file is not UTF-8 text"]
            else:
                result = services.import_cards_csv(text, by=request.user)
                errors = result.errors
                if not errors:
                    self.message_user(request, f"Imported {len(result.created)} cards.", messages.SUCCESS)
                    return redirect("admin:cards_card_changelist")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "errors": errors,
            "columns": services.CSV_COLUMNS,
            "opts": self.model._meta,
            "title": "Import cards",
        }
        return render(request, "admin/cards/card/import_csv.html", context)

    def _apply(self, request, queryset, change, done: str, reason: str) -> None:
        ok, refused = services.change_cards(queryset, change, by=request.user, reason=reason)
        for card, error in refused:
            self.message_user(request, f"{card}: {error}", messages.WARNING)
        if ok:
            self.message_user(request, f"{ok} card(s) {done}.", messages.SUCCESS)

    @admin.action(description="Block selected cards")
    def block_cards(self, request, queryset):
        self._apply(request, queryset, services.block_card, "blocked", f"Blocked by staff ({request.user})")

    @admin.action(description="Unblock selected cards")
    def unblock_cards(self, request, queryset):
        self._apply(request, queryset, services.unblock_card, "unblocked", f"Unblocked by staff ({request.user})")

    @admin.action(description="Report selected cards lost (blocks them at once)")
    def report_lost(self, request, queryset):
        self._apply(request, queryset, services.report_lost, "reported lost", f"Reported lost to {request.user}")

    @admin.action(description="Replace a card (issue a new one, block the old)")
    def replace_cards(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Replace one card at a time.", messages.WARNING)
            return None
        card = queryset.get()
        form = ReplaceForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                new = services.replace_card(
                    card, new_uid=form.cleaned_data["new_uid"], by=request.user, reason=form.cleaned_data["reason"]
                )
            except services.CardError as error:
                form.add_error("new_uid", str(error))
            else:
                self.message_user(request, f"{card} replaced by {new}.", messages.SUCCESS)
                return None
        context = {**self.admin_site.each_context(request), "form": form, "card": card, "opts": self.model._meta}
        return render(request, "admin/cards/card/replace.html", context)


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "phone", "created_at")
    search_fields = ("user__username", "user__email", "user__first_name", "user__last_name")
    list_select_related = ("user",)


@admin.register(ForeignToken)
class ForeignTokenAdmin(admin.ModelAdmin):
    list_display = ("uid", "type", "party", "contract_id", "valid", "whitelist", "last_updated")
    list_filter = ("valid", "whitelist", "type", "party")
    search_fields = ("uid", "contract_id", "visual_number")
    list_select_related = ("party",)
    readonly_fields = [f.name for f in ForeignToken._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuthorizationDecision)
class AuthorizationDecisionAdmin(admin.ModelAdmin):
    list_display = ("decided_at", "direction", "partner", "token_uid", "result", "path", "reason", "elapsed_ms")
    list_filter = ("direction", "result", "path")
    search_fields = ("token_uid", "partner", "authorization_reference", "location_id")
    date_hierarchy = "decided_at"
    readonly_fields = [f.name for f in AuthorizationDecision._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
