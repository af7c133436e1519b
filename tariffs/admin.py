"""Staff views of tariffs: partners' tariffs (read only), ours (edited here, pushed to eMSPs, with a preview of
typical sessions' cost), tariff pulls, and the CDR price checks ("price differs", filterable)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from roaming.selectors import own_party
from stations.models import Connector
from tariffs import selectors, services
from tariffs.models import CdrPriceCheck, OwnTariff, Tariff, TariffPull
from tariffs.serializers import TARIFF_TYPES

# The sessions the preview prices: (kWh, power in kW, what it stands for).
PREVIEW_SESSIONS = (
    (Decimal(10), Decimal("7.4"), "10 kWh at home-like 7.4 kW"),
    (Decimal(20), Decimal(22), "20 kWh at 22 kW (AC)"),
    (Decimal(40), Decimal(50), "40 kWh at 50 kW (DC)"),
    (Decimal(60), Decimal(150), "60 kWh at 150 kW (fast DC)"),
)


def describe(tariff: Tariff) -> str:
    from tariffs import engine

    try:
        return engine.describe_tariff(tariff.document, "en")
    except Exception as error:  # a partner's tariff the engine cannot read is shown as such, never a 500
        return f"(cannot be described: {error.__class__.__name__})"


@admin.register(Tariff)
class PartnerTariffAdmin(admin.ModelAdmin):
    """Partners' tariffs as they sent them (pushes and pulls): read only."""

    list_display = (
        "ocpi_id",
        "party",
        "type",
        "currency",
        "in_words",
        "start_date_time",
        "end_date_time",
        "last_updated",
    )
    list_filter = ("party", "type", "currency")
    search_fields = ("ocpi_id", "party__name", "party__party_id")
    list_select_related = ("party",)
    readonly_fields = (
        "party",
        "ocpi_id",
        "currency",
        "type",
        "start_date_time",
        "end_date_time",
        "last_updated",
        "source",
        "in_words",
        "pretty_document",
    )
    exclude = ("document",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(party__is_self=False)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # the partner owns it: it deletes it (push) or drops it from its feed (full pull)

    @admin.display(description="In words")
    def in_words(self, tariff: Tariff) -> str:
        return describe(tariff)

    @admin.display(description="OCPI Tariff")
    def pretty_document(self, tariff: Tariff) -> str:
        return format_html("<pre>{}</pre>", json.dumps(tariff.document, indent=2, ensure_ascii=False))


class JsonListField(forms.JSONField):
    """A JSON list typed by staff (elements, alt texts), shown indented."""

    def prepare_value(self, value):
        if isinstance(value, list | dict):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return super().prepare_value(value)


ELEMENTS_HELP = (
    'OCPI TariffElements, e.g. [{"price_components": [{"type": "ENERGY", "price": 0.35, "vat": 21, "step_size": 1}]},'
    ' {"price_components": [{"type": "PARKING_TIME", "price": 6, "vat": 21, "step_size": 60}], '
    '"restrictions": {"start_time": "08:00", "end_time": "20:00"}}]. Prices excl. VAT; vat in %.'
)


class OwnTariffForm(forms.ModelForm):
    """Our tariff as fields; the OCPI document is built from them and checked like any partner's (2001 rules)."""

    type = forms.ChoiceField(choices=[("", "(any use)"), *[(t, t) for t in TARIFF_TYPES]], required=False)
    elements = JsonListField(help_text=ELEMENTS_HELP)
    tariff_alt_text = JsonListField(
        required=False, help_text='[{"language": "en", "text": "€0.35/kWh"}, {"language": "nl", "text": "..."}]'
    )
    tariff_alt_url = forms.URLField(required=False, max_length=255, assume_scheme="https")
    min_price_excl_vat = forms.DecimalField(required=False, min_value=0, decimal_places=4)
    min_price_incl_vat = forms.DecimalField(required=False, min_value=0, decimal_places=4)
    max_price_excl_vat = forms.DecimalField(required=False, min_value=0, decimal_places=4)
    max_price_incl_vat = forms.DecimalField(required=False, min_value=0, decimal_places=4)
    connectors = forms.ModelMultipleChoiceField(
        queryset=Connector.objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 10}),
        help_text="Our connectors charging by this tariff (their tariff_ids; partners see it in our locations).",
    )

    class Meta:
        model = OwnTariff
        fields = ("ocpi_id", "currency", "type", "start_date_time", "end_date_time")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        me = own_party()
        self.fields["connectors"].queryset = (
            Connector.objects.filter(evse__location__party=me)
            .select_related("evse__location")
            .order_by("evse__location__name", "evse__uid", "connector_id")
        )
        self.fields["connectors"].label_from_instance = lambda c: (
            f"{c.evse.location.name or c.evse.location.ocpi_id} · {c.evse.evse_id or c.evse.uid} · "
            f"{c.standard} {c.connector_id} ({c.power_kw:g} kW)"
        )
        document = self.instance.document if self.instance.pk else {}
        self.initial.setdefault("currency", "EUR")
        for name in ("elements", "tariff_alt_text", "tariff_alt_url"):
            if name in document:
                self.initial[name] = document[name]
        for bound in ("min_price", "max_price"):
            for part in ("excl_vat", "incl_vat"):
                if part in (document.get(bound) or {}):
                    self.initial[f"{bound}_{part}"] = document[bound][part]
        if self.instance.pk:
            self.initial["connectors"] = [
                c.pk
                for c in self.fields["connectors"].queryset
                if any(str(t).upper() == self.instance.ocpi_id.upper() for t in c.tariff_ids or [])
            ]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        fields = dict(cleaned)
        fields.setdefault("ocpi_id", self.instance.ocpi_id)  # the id is fixed once partners know it
        taken = OwnTariff.objects.filter(party=own_party(), ocpi_id__iexact=fields["ocpi_id"])
        if taken.exclude(pk=self.instance.pk).exists():
            self.add_error("ocpi_id" if "ocpi_id" in self.fields else None, "We already have a tariff with this id.")
            return cleaned
        for bound in ("min_price", "max_price"):
            excl, incl = cleaned.get(f"{bound}_excl_vat"), cleaned.get(f"{bound}_incl_vat")
            if excl is None and incl is not None:
                self.add_error(f"{bound}_excl_vat", "Give the price excl. VAT too.")
            if excl is not None:
                fields[bound] = {"excl_vat": float(excl), **({"incl_vat": float(incl)} if incl is not None else {})}
        self.instance.party = own_party()
        self.document = services.own_tariff_document(self.instance, fields)
        try:
            services.check_tariff(self.document)
        except services.InvalidTariff as error:
            raise forms.ValidationError(str(error)) from error
        return cleaned


@admin.register(OwnTariff)
class OwnTariffAdmin(admin.ModelAdmin):
    """Our own tariffs: each save or delete is pushed to every eMSP whose cards charge at our stations."""

    form = OwnTariffForm
    list_display = ("ocpi_id", "type", "currency", "in_words", "start_date_time", "end_date_time", "last_updated")
    search_fields = ("ocpi_id",)
    readonly_fields = ("preview", "last_updated")
    fieldsets = (
        (None, {"fields": ("ocpi_id", "currency", "type", "elements")}),
        ("Validity", {"fields": ("start_date_time", "end_date_time")}),
        ("For drivers", {"fields": ("tariff_alt_text", "tariff_alt_url")}),
        (
            "Bounds (per session)",
            {"fields": ("min_price_excl_vat", "min_price_incl_vat", "max_price_excl_vat", "max_price_incl_vat")},
        ),
        ("Where it applies", {"fields": ("connectors",)}),
        ("Preview", {"fields": ("preview", "last_updated")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(party__is_self=True)

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        # Partners key it by its id: a new id is a new tariff (and the old one a DELETE), never a rename.
        return (*self.readonly_fields, "ocpi_id") if obj is not None else self.readonly_fields

    @admin.display(description="In words")
    def in_words(self, tariff: Tariff) -> str:
        return describe(tariff)

    @admin.display(description="Typical sessions, starting now")
    def preview(self, tariff: Tariff) -> str:
        if not tariff.pk:
            return "Save the tariff to see what typical sessions cost."
        rows = preview_rows(tariff)
        return format_html(
            '<p>{}</p><table class="tariff-preview"><tr><th>Session</th><th>Excl. VAT</th><th>Incl. VAT</th></tr>{}'
            "</table>",
            describe(tariff),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    def save_model(self, request: HttpRequest, obj: OwnTariff, form: OwnTariffForm, change: bool) -> None:
        told = services.save_own_tariff(obj, form.document)
        attached, detached = services.attach_own_tariff(obj, list(form.cleaned_data.get("connectors") or []))
        self.message_user(
            request,
            f"Tariff {obj.ocpi_id} saved and pushed to {told} eMSP(s); connectors: {attached} attached, "
            f"{detached} detached.",
            messages.SUCCESS,
        )

    def save_related(self, request, form, formsets, change) -> None:
        pass  # no many-to-many of the model: connectors are attached in save_model

    def delete_model(self, request: HttpRequest, obj: OwnTariff) -> None:
        services.delete_own_tariff(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for tariff in queryset:
            services.delete_own_tariff(tariff)


def preview_rows(tariff: Tariff, now: dt.datetime | None = None) -> list[tuple[str, str, str]]:
    """(session, excl. VAT, incl. VAT) of each PREVIEW_SESSIONS session starting now, in our own time zone."""
    from tariffs import engine

    now = now or timezone.now()
    rows = []
    for kwh, power, label in PREVIEW_SESSIONS:
        cost = engine.estimate_session(
            tariff.document, kwh=kwh, power_kw=power, start=now, time_zone=timezone.get_current_timezone_name()
        )
        incl = selectors.money(cost.total.incl_vat, tariff.currency) or "VAT not given"
        rows.append((label, selectors.money(cost.total.excl_vat, tariff.currency), incl))
    return rows


@admin.register(TariffPull)
class TariffPullAdmin(admin.ModelAdmin):
    list_display = (
        "connection",
        "full",
        "status",
        "started_at",
        "pages",
        "stored",
        "unchanged",
        "rejected",
        "skipped",
        "removed",
    )
    list_filter = ("status", "full", "connection__party")
    list_select_related = ("connection__party",)
    readonly_fields = [f.name for f in TariffPull._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class PriceDiffersFilter(admin.SimpleListFilter):
    """For the CDR list: CDRs whose total differs from their tariff's (by more than 1 cent and 1 %)."""

    title = "price check"
    parameter_name = "price"

    def lookups(self, request, model_admin):
        return [(value, label) for value, label in CdrPriceCheck.Outcome.choices]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(price_check__outcome=self.value())
        return queryset


@admin.register(CdrPriceCheck)
class CdrPriceCheckAdmin(admin.ModelAdmin):
    list_display = ("cdr", "party", "outcome", "stated", "computed", "tariff_ocpi_id", "tariff_source", "checked_at")
    list_filter = ("outcome", ("cdr__party", admin.RelatedOnlyFieldListFilter), "tariff_source")
    search_fields = ("cdr__ocpi_id", "tariff_ocpi_id", "cdr__party__name")
    list_select_related = ("cdr__party",)
    readonly_fields = [f.name for f in CdrPriceCheck._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Partner", ordering="cdr__party__name")
    def party(self, check: CdrPriceCheck) -> str:
        return check.cdr.party.name

    @admin.display(description="CDR total (excl. / incl. VAT)")
    def stated(self, check: CdrPriceCheck) -> str:
        return _pair(check.stated_excl_vat, check.stated_incl_vat, check.currency)

    @admin.display(description="From the tariff (excl. / incl. VAT)")
    def computed(self, check: CdrPriceCheck) -> str:
        if check.computed_excl_vat is None:
            return "—"
        return _pair(check.computed_excl_vat, check.computed_incl_vat, check.currency)


def _pair(excl, incl, currency: str) -> str:
    with_vat = selectors.money(Decimal(incl), currency) if incl is not None else "—"
    return f"{selectors.money(Decimal(excl), currency)} / {with_vat}"
