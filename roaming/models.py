"""Who our roaming partners are, how we are connected to them, and what we agreed."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from roaming.data_version import PartnerDataQuerySet


class Party(models.Model):
    """An OCPI party: identified on the wire by country code and party id."""

    class Role(models.TextChoices):
        CPO = "CPO", "Charge point operator"
        EMSP = "EMSP", "e-Mobility service provider"
        CPO_EMSP = "CPO_EMSP", "CPO and eMSP"
        HUB = "HUB", "Roaming hub"
        NSP = "NSP", "Navigation service provider"
        OTHER = "OTHER", "Other"

    CPO_ROLES = (Role.CPO, Role.CPO_EMSP)
    EMSP_ROLES = (Role.EMSP, Role.CPO_EMSP)

    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    role = models.CharField(max_length=8, choices=Role.choices)
    name = models.CharField(max_length=100)
    website = models.URLField(blank=True)
    logo_url = models.URLField(blank=True)
    is_self = models.BooleanField(default=False, help_text="MobilityPlus itself (see OCPI_* settings).")
    reached_through = models.ForeignKey(
        "PartnerConnection",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="platform_parties",
        help_text="A platform hosting several parties: the connection (another party's) whose token speaks for it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    objects = PartnerDataQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "parties"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["country_code", "party_id"], name="party_unique_ocpi_id"),
            models.UniqueConstraint(fields=["is_self"], condition=Q(is_self=True), name="party_single_self"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.ocpi_id})"

    def save(self, *args, **kwargs) -> None:
        # OCPI ids are case-insensitive; we store them upper-case so lookups are exact matches.
        self.country_code = self.country_code.upper()
        self.party_id = self.party_id.upper()
        super().save(*args, **kwargs)

    @property
    def ocpi_id(self) -> str:
        return f"{self.country_code}*{self.party_id}"

    @property
    def acts_as_cpo(self) -> bool:
        return self.role in self.CPO_ROLES

    @property
    def acts_as_emsp(self) -> bool:
        return self.role in self.EMSP_ROLES


def credentials_endpoint(endpoints: list[dict]) -> str | None:
    """The credentials URL in a list of endpoints: SENDER, RECEIVER or anything else, the first one listed."""
    for endpoint in endpoints:
        if endpoint.get("identifier") == "credentials" and endpoint.get("url"):
            return endpoint["url"]
    return None


class PartnerConnection(models.Model):
    """How we talk to a party: directly, or through a hub's connection."""

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        CONNECTED = "connected", "Connected"
        SUSPENDED = "suspended", "Suspended"
        DISCONNECTED = "disconnected", "Disconnected"

    party = models.OneToOneField(Party, on_delete=models.PROTECT, related_name="connection")
    via_hub = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="hub_clients",
        help_text="Set when we reach this party through a hub; the hub's connection carries the tokens.",
    )
    versions_url = models.URLField(max_length=255, blank=True)
    version = models.CharField(max_length=10, blank=True)
    endpoints = models.JSONField(
        default=list, blank=True, help_text="Their endpoints: [{identifier, role, url}] for the negotiated version."
    )
    # Token we send when calling them (Fernet-encrypted: we must be able to send it).
    token_to_them_encrypted = models.TextField(blank=True)
    # Token they send when calling us: only a SHA-256 digest, we just verify it.
    token_from_them_hash = models.CharField(max_length=64, blank=True, db_index=True)
    # During a rotation whose answer we lost: the token they called us with before it. Either is accepted
    # until they call us with one of them; the other is then retired (services.settle_rotation).
    previous_token_from_them_hash = models.CharField(max_length=64, blank=True, db_index=True)
    # Token A we handed out for registration: valid only on versions/credentials until used.
    registration_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    accepts_raw_token = models.BooleanField(
        default=False, help_text="Partner sends/expects the token unencoded (pre-2.2.1 habit)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PLANNED)
    hub_client_status = models.CharField(
        max_length=16, blank=True, help_text="ConnectionStatus reported by the hub through hubclientinfo."
    )
    hub_client_updated_at = models.DateTimeField(
        null=True, blank=True, help_text="`last_updated` of the hub's latest ClientInfo for this party."
    )
    handshake_log = models.JSONField(
        default=list,
        blank=True,
        help_text="Steps of the latest credentials handshake: [{step, ok, detail, at}].",
    )
    needs_attention = models.TextField(
        blank=True,
        help_text="A handshake the partner accepted but whose answer we could not fully use: what staff must finish.",
    )
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    location_pull_interval_minutes = models.PositiveIntegerField(
        default=60, help_text="How often beat pulls their locations (0 = never)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["last_contact_at", "updated_at", "handshake_log"])

    objects = PartnerDataQuerySet.as_manager()

    class Meta:
        ordering = ["party__name"]

    def __str__(self) -> str:
        hub = f" via {self.via_hub.party.name}" if self.via_hub_id else ""
        return f"Connection to {self.party.name}{hub}"

    @property
    def transport(self) -> PartnerConnection:
        """The connection whose URLs and tokens carry our calls (the hub's, when routed)."""
        return self.via_hub if self.via_hub_id else self

    @property
    def credentials_url(self) -> str | None:
        """Their credentials endpoint, whatever role they list it with (2.2.1: the role is to be disregarded)."""
        return credentials_endpoint(self.transport.endpoints)

    def endpoint_url(self, module: str, role: str) -> str | None:
        for endpoint in self.transport.endpoints:
            if endpoint.get("identifier") == module and endpoint.get("role") == role:
                return endpoint.get("url")
        return None


class RoamingAgreement(models.Model):
    """A commercial agreement between MobilityPlus and one partner party."""

    class Direction(models.TextChoices):
        OUR_CARDS_AT_THEIR_STATIONS = "our_cards", "Our cards at their stations"
        THEIR_CARDS_AT_OUR_STATIONS = "their_cards", "Their cards at our stations"
        BOTH = "both", "Both ways"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        ENDED = "ended", "Ended"

    partner = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="agreements")
    direction = models.CharField(max_length=12, choices=Direction.choices)
    valid_from = models.DateField()
    valid_until = models.DateField(null=True, blank=True, help_text="Last day of validity; empty = open-ended.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    hub = models.ForeignKey(
        Party,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="hub_agreements",
        limit_choices_to={"role": Party.Role.HUB},
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    objects = PartnerDataQuerySet.as_manager()

    class Meta:
        ordering = ["partner__name", "-valid_from"]
        indexes = [models.Index(fields=["partner", "status"])]

    def __str__(self) -> str:
        return f"{self.partner.name}: {self.get_direction_display()} ({self.get_status_display()})"


class PartnerDataVersion(models.Model):
    """One row counting committed changes to parties, connections and agreements (see roaming/data_version.py).

    Every process caches those three tables and compares this number at most every ROAMING_CHANGES_CHECK_S.
    """

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"Partner data version {self.value}"


class RepairCount(models.Model):
    """How many of a partner's objects needed one kind of repair on one day, with the latest example.

    Written in bulk by roaming.ocpi.repairs.RepairTally (one upsert per feed page or push); read by the
    data-quality page. `party` is the object's owner (for a hub's feed, the CPO behind the hub).
    """

    party = models.ForeignKey(Party, on_delete=models.CASCADE, related_name="repair_counts", db_index=False)
    module = models.CharField(max_length=32, help_text="OCPI module, e.g. locations")
    channel = models.CharField(max_length=8, help_text="pull (feed) or push")
    day = models.DateField()
    kind = models.CharField(max_length=64)
    repaired = models.PositiveIntegerField(default=0, help_text="Objects with this repair that day")
    example = models.JSONField(default=dict, help_text="The latest: object id, field, what was sent, what we kept")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["party", "module", "channel", "day", "kind"], name="repaircount_unique")
        ]

    def __str__(self) -> str:
        return f"{self.party}: {self.kind} x{self.repaired} on {self.day}"


# The durable outbox's tables live in their own module (roaming/outbox.py is its service).
from roaming.outbox_models import OutboxLane, OutboxMessage  # noqa: E402, F401
