"""The staff console for roaming: partners, their connections and agreements, feed health, history."""

from __future__ import annotations

import dataclasses

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin
from simple_history.template_utils import HistoricalRecordContextHelper

from mobilityplus.task_queue import QUEUE_ERRORS
from roaming import selectors, services
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi.credentials import encrypt_token
from roaming.ocpi.destinations import RefusedDestination


class RoamingAgreementInline(admin.TabularInline):
    model = RoamingAgreement
    fk_name = "partner"
    extra = 0
    fields = ("direction", "status", "valid_from", "valid_until", "hub", "notes")
    show_change_link = True


def versions_url_we_call(url: str) -> str:
    """A staff-entered versions URL, refused with the reason when our calls may not go there."""
    if url:
        try:
            services.check_versions_url(url)
        except RefusedDestination as error:
            raise forms.ValidationError(f"We do not call this URL: {error}") from error
    return url


class PartnerConnectionForm(forms.ModelForm):
    def clean_versions_url(self) -> str:
        return versions_url_we_call(self.cleaned_data["versions_url"])


class PartnerConnectionInline(admin.StackedInline):
    model = PartnerConnection
    form = PartnerConnectionForm
    fk_name = "party"
    extra = 0
    max_num = 1
    can_delete = False
    fields = (
        "status",
        "via_hub",
        "versions_url",
        "version",
        "accepts_raw_token",
        "location_pull_interval_minutes",
        "hub_client_status",
        "staff_confirmation",
        "needs_attention",
        "platform_parties",
        "last_contact_at",
        "last_error",
        "last_error_at",
        "handshake_steps",
    )
    readonly_fields = (
        "version",
        "hub_client_status",
        "staff_confirmation",
        "needs_attention",
        "platform_parties",
        "last_contact_at",
        "last_error",
        "last_error_at",
        "handshake_steps",
    )

    @admin.display(description="Latest handshake")
    def handshake_steps(self, connection: PartnerConnection) -> str:
        return handshake_steps(connection)

    @admin.display(description="Hub client confirmed by staff")
    def staff_confirmation(self, connection: PartnerConnection) -> str:
        return staff_confirmation(connection)

    @admin.display(description="Other parties on this platform")
    def platform_parties(self, connection: PartnerConnection) -> str:
        return platform_parties(connection)


def platform_parties(connection: PartnerConnection) -> str:
    """Parties their credentials list besides the token's own: each needs its own agreement before it may call."""
    if not connection.pk:
        return "-"
    parties = list(connection.platform_parties.order_by("country_code", "party_id"))
    if not parties:
        return "-"
    refused = "no agreement in force: its calls get HTTP 403"
    return ", ".join(
        f"{party.ocpi_id} ({party.name}; {'agreement in force' if selectors.agreement_in_force(party) else refused})"
        for party in parties
    )


def staff_confirmation(connection: PartnerConnection) -> str:
    """Whether the hub may act for this client, and the way to confirm it: an agreement through that hub."""
    if not connection.pk or not connection.via_hub_id:
        return "-"
    hub = connection.via_hub.party
    if selectors.hub_client_confirmed(connection):
        return f"Confirmed: an agreement with {connection.party.ocpi_id} through {hub.name} is in force."
    add_url = reverse("admin:roaming_roamingagreement_add")
    return format_html(
        "<strong>Not confirmed</strong>: {} may not act for {} (its calls get HTTP 403) until an agreement "
        "with this party through the hub is in force{}. "
        '<a href="{}?partner={}&amp;hub={}&amp;status=active">Confirm: add an agreement through {}</a>',
        hub.name,
        connection.party.ocpi_id,
        "" if connection.status == PartnerConnection.Status.CONNECTED else "; then Resume the connection",
        add_url,
        connection.party_id,
        hub.pk,
        hub.name,
    )


def handshake_steps(connection: PartnerConnection) -> str:
    if not connection.handshake_log:
        return "-"
    return format_html(
        "<ol class='handshake-log'>{}</ol>",
        format_html_join(
            "",
            "<li>{} <strong>{}</strong> {} <small>{}</small></li>",
            (
                ("✔" if step.get("ok") else "✘", step.get("step"), step.get("detail", ""), step.get("at", ""))
                for step in connection.handshake_log
            ),
        ),
    )


class ReachedFilter(admin.SimpleListFilter):
    title = "reached"
    parameter_name = "reached"

    def lookups(self, request, model_admin):
        return (("direct", "Directly"), ("hub", "Through a hub"), ("none", "No connection"))

    def queryset(self, request, queryset):
        if self.value() == "direct":
            return queryset.filter(connection__isnull=False, connection__via_hub__isnull=True)
        if self.value() == "hub":
            return queryset.filter(connection__via_hub__isnull=False)
        if self.value() == "none":
            return queryset.filter(connection__isnull=True)
        return queryset


def _queue(model_admin: admin.ModelAdmin, request: HttpRequest, task, *args, **kwargs) -> bool:
    """Send a task; a broker that is down becomes an error message, not a server error."""
    try:
        task.delay(*args, **kwargs)
    except (*QUEUE_ERRORS, RuntimeError) as error:  # RuntimeError: Celery gave up reconnecting to the result store
        model_admin.message_user(request, f"Could not queue the job (broker unavailable: {error}).", messages.ERROR)
        return False
    return True


class ConnectionStatusFilter(admin.SimpleListFilter):
    title = "connection status"
    parameter_name = "connection_status"

    def lookups(self, request, model_admin):
        return PartnerConnection.Status.choices

    def queryset(self, request, queryset):
        return queryset.filter(connection__status=self.value()) if self.value() else queryset


class AgreementStatusFilter(admin.SimpleListFilter):
    title = "agreement status"
    parameter_name = "agreement_status"

    def lookups(self, request, model_admin):
        return RoamingAgreement.Status.choices

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        return queryset.filter(pk__in=RoamingAgreement.objects.filter(status=self.value()).values("partner_id"))


class ConnectForm(forms.Form):
    versions_url = forms.URLField(max_length=255, assume_scheme="https", help_text="The partner's OCPI versions URL.")
    token_a = forms.CharField(
        max_length=64,
        label="Their token A",
        widget=forms.PasswordInput(render_value=False),
        help_text="The registration token the partner gave us. It is used once and never stored.",
    )

    def clean_versions_url(self) -> str:
        return versions_url_we_call(self.cleaned_data["versions_url"])


@admin.register(Party)
class PartyAdmin(SimpleHistoryAdmin):
    """The partners list: who they are, how we are connected and how healthy their feed is."""

    list_display = (
        "name",
        "ocpi_id",
        "role",
        "connection_status",
    )
    list_filter = ("role", ConnectionStatusFilter, ReachedFilter, AgreementStatusFilter)
    search_fields = ("name", "party_id", "country_code")
    # Set by the credentials handshake (their roles), not by hand: see docs/partners.md.
    readonly_fields = ("reached_through",)
    list_per_page = 50
    inlines = (PartnerConnectionInline, RoamingAgreementInline)
    actions = (
        "issue_registration_token",
        "connect",
        "test_connection",
        "suspend",
        "resume",
        "reread_endpoints",
        "rotate_tokens",
        "unregister",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.partners_for_console(super().get_queryset(request)).select_related("reached_through__party")

    # --- columns ---

    @admin.display(description="OCPI id", ordering="party_id")
    def ocpi_id(self, party: Party) -> str:
        return party.ocpi_id

    def _connection(self, party: Party) -> PartnerConnection | None:
        try:
            return party.connection
        except PartnerConnection.DoesNotExist:
            return None

    @admin.display(description="Connection", ordering="connection__status")
    def connection_status(self, party: Party) -> str:
        connection = self._connection(party)
        if connection is None:
            if party.reached_through_id:  # one party of a platform: its calls come over another party's connection
                platform = party.reached_through
                return f"{platform.get_status_display()} through {platform.party.name}'s platform"
            return "-"
        text = connection.get_status_display()
        if connection.via_hub_id:
            text += f" via {connection.via_hub.party.name}"
            if connection.hub_client_status:
                text += f" (hub: {connection.hub_client_status})"
            text += "; confirmed" if selectors.hub_client_confirmed(connection) else "; not confirmed by staff"
        return text

    # --- actions ---

    def _connections(self, request: HttpRequest, queryset: QuerySet) -> list[PartnerConnection]:
        connections = []
        for party in queryset:
            connection = self._connection(party)
            if connection is None:
                self.message_user(request, f"{party.name}: no connection yet.", messages.WARNING)
            else:
                connections.append(connection)
        return connections

    @admin.action(description="Issue a registration token (token A) for the partner to register with us")
    def issue_registration_token(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        issued = []
        for party in queryset.filter(is_self=False):
            try:
                issued.append((party, services.issue_registration_token(party)))
            except ValueError as error:
                self.message_user(request, str(error), messages.ERROR)
        if not issued:
            return None
        # Shown on this page only: the token is stored hashed and never in a message cookie.
        return TemplateResponse(
            request,
            "admin/roaming/party/registration_token.html",
            {
                **self.admin_site.each_context(request),
                "title": "Registration tokens",
                "opts": self.model._meta,
                "issued": issued,
                "versions_url": services.our_versions_url(),
            },
        )

    @admin.action(description="Connect: register us at the partner with the token A they gave us")
    def connect(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        from roaming.tasks import connect_partner

        parties = list(queryset)
        if len(parties) != 1 or parties[0].is_self:
            self.message_user(request, "Connect one partner at a time.", messages.ERROR)
            return None
        party = parties[0]
        connection = self._connection(party)
        if connection is not None and connection.via_hub_id:
            self.message_user(request, f"{party.name} is reached through a hub: connect the hub.", messages.ERROR)
            return None
        if connection is not None and connection.status == PartnerConnection.Status.SUSPENDED:
            self.message_user(request, f"{party.name} is suspended: resume it first.", messages.ERROR)
            return None
        if "apply" in request.POST:
            form = ConnectForm(request.POST)
            if form.is_valid():
                connection = connection or PartnerConnection.objects.create(party=party)
                self.queue_job(
                    request,
                    connection,
                    "connect",
                    connect_partner,
                    connection.pk,
                    form.cleaned_data["versions_url"],
                    encrypt_token(form.cleaned_data["token_a"]),
                    promise=f"Connecting to {party.name} in the background (versions, credentials, endpoints)",
                )
                return None
        else:
            form = ConnectForm(initial={"versions_url": connection.versions_url if connection else ""})
        return TemplateResponse(
            request,
            "admin/roaming/party/connect.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Connect to {party.name}",
                "opts": self.model._meta,
                "party": party,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Test connection (calls their versions endpoint)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet) -> None:
        for connection in self._connections(request, queryset):
            check = services.check_connection(connection)
            if check.ok:
                message = f"{connection.party.name}: OK in {check.latency_ms:.0f} ms ({check.detail})"
                self.message_user(request, message, messages.SUCCESS)
            else:
                self.message_user(request, f"{connection.party.name}: failed: {check.detail}", messages.ERROR)

    @admin.action(description="Suspend: refuse their calls everywhere")
    def suspend(self, request: HttpRequest, queryset: QuerySet) -> None:
        for connection in self._connections(request, queryset):
            services.suspend_connection(connection)
            self.message_user(request, f"{connection.party.name}: suspended.", messages.SUCCESS)

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        for connection in self._connections(request, queryset):
            services.resume_connection(connection)
            self.message_user(request, f"{connection.party.name}: {connection.get_status_display()}.", messages.SUCCESS)

    @admin.action(description="Re-read their endpoints (GET their versions and details with the token we hold)")
    def reread_endpoints(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Finishes a registration whose answer was partly unusable: no token changes at either side."""
        from roaming.tasks import reread_partner_endpoints

        self._credentials_jobs(
            request,
            queryset,
            "reread",
            reread_partner_endpoints,
            "re-reading their versions and endpoints with the token we hold; tokens stay as they are",
        )

    @admin.action(description="Rotate tokens (PUT our credentials at theirs: new tokens both ways, endpoints re-read)")
    def rotate_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        from roaming.tasks import rotate_partner_tokens

        self._credentials_jobs(
            request, queryset, "rotate", rotate_partner_tokens, "rotating tokens: new ones both ways, endpoints re-read"
        )

    @admin.action(description="Unregister (DELETE our credentials at theirs)")
    def unregister(self, request: HttpRequest, queryset: QuerySet) -> None:
        from roaming.tasks import unregister_partner

        self._credentials_jobs(
            request,
            queryset,
            "unregister",
            unregister_partner,
            "unregistering: DELETE our credentials at theirs, then forget both tokens here",
        )

    def _credentials_jobs(self, request: HttpRequest, queryset: QuerySet, kind: str, task, promise: str) -> None:
        """Check each partner first (nothing queued that would stop at once), then queue one job per partner."""
        for party in queryset:
            connection = self._connection(party)
            refusal = selectors.credentials_action_refusal(connection, kind)
            if refusal:
                self.message_user(request, f"{party.name}: not done: {refusal}. Nothing was sent.", messages.ERROR)
                continue
            self.queue_job(request, connection, kind, task, connection.pk, promise=f"{party.name}: {promise}")

    def queue_job(self, request: HttpRequest, connection: PartnerConnection, kind: str, task, *args, promise: str):
        """Queue a background job for a partner and say what will happen. The console records each job and its
        outcome (console.admin overrides this); here it is only queued."""
        if _queue(self, request, task, *args):
            self.message_user(request, f"{promise}. Queued; the connection shows the outcome.", messages.SUCCESS)


SECRET_FIELDS = ("token_to_them_encrypted", "token_from_them_hash", "registration_token_hash")


class TokenMaskingContextHelper(HistoricalRecordContextHelper):
    """History says that a token changed, never its hash or ciphertext."""

    def format_delta_change(self, change):
        if change.field in SECRET_FIELDS:
            change = dataclasses.replace(
                change, old="set" if change.old else "empty", new="replaced" if change.new else "cleared"
            )
        return super().format_delta_change(change)


@admin.register(PartnerConnection)
class PartnerConnectionAdmin(SimpleHistoryAdmin):
    list_display = (
        "party",
        "status",
        "via_hub",
        "hub_client_status",
        "hub_client_confirmed",
        "version",
        "last_contact_at",
        "needs_attention",
        "last_error",
    )
    list_filter = ("status", "hub_client_status")
    list_select_related = ("party", "via_hub__party")
    search_fields = ("party__name", "party__party_id")
    exclude = (
        "token_to_them_encrypted",
        "token_from_them_hash",
        "previous_token_from_them_hash",
        "registration_token_hash",
        "handshake_log",
    )
    readonly_fields = (
        "version",
        "endpoints",
        "staff_confirmation",
        "needs_attention",
        "last_contact_at",
        "last_error",
        "last_error_at",
        "handshake_steps",
    )

    @admin.display(description="Latest handshake")
    def handshake_steps(self, connection: PartnerConnection) -> str:
        return handshake_steps(connection)

    @admin.display(description="Hub client confirmed by staff")
    def staff_confirmation(self, connection: PartnerConnection) -> str:
        return staff_confirmation(connection)

    @admin.display(description="Confirmed", boolean=True)
    def hub_client_confirmed(self, connection: PartnerConnection) -> bool | None:
        return selectors.hub_client_confirmed(connection)

    def get_historical_record_context_helper(self, request, historical_record):
        return TokenMaskingContextHelper(self.model, historical_record)


@admin.register(RoamingAgreement)
class RoamingAgreementAdmin(SimpleHistoryAdmin):
    list_display = ("partner", "direction", "status", "valid_from", "valid_until", "hub")
    list_filter = ("status", "direction", "hub")
    list_select_related = ("partner", "hub")
    search_fields = ("partner__name", "partner__party_id", "notes")


from roaming import outbox_admin  # noqa: E402, F401  (registers the outbox's pages)
