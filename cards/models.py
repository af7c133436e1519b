"""Drivers and the charge cards we issue (OCPI Tokens, eMSP side)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from roaming.models import Party


class Driver(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="driver")
    phone = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.user.get_full_name() or self.user.get_username()


class Card(models.Model):
    """A charge card or app token; its OCPI `valid` is derived from the lifecycle status."""

    class Type(models.TextChoices):
        RFID = "RFID"
        APP_USER = "APP_USER"
        AD_HOC_USER = "AD_HOC_USER"
        OTHER = "OTHER"

    class Whitelist(models.TextChoices):
        ALWAYS = "ALWAYS"
        ALLOWED = "ALLOWED"
        ALLOWED_OFFLINE = "ALLOWED_OFFLINE"
        NEVER = "NEVER"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        BLOCKED = "blocked", "Blocked"
        LOST = "lost", "Lost"
        STOLEN = "stolen", "Stolen"
        EXPIRED = "expired", "Expired"
        REPLACED = "replaced", "Replaced"

    issuer_party = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="cards")
    driver = models.ForeignKey(Driver, null=True, blank=True, on_delete=models.SET_NULL, related_name="cards")
    uid = models.CharField(max_length=36, help_text="Normalised: upper-case hex without separators for RFID.")
    type = models.CharField(max_length=12, choices=Type.choices, default=Type.RFID)
    contract_id = models.CharField(max_length=36, help_text="eMAID, e.g. BE-MBP-C12345678-9")
    visual_number = models.CharField(max_length=64, blank=True)
    issuer = models.CharField(max_length=64, default="MobilityPlus")
    group_id = models.CharField(max_length=36, blank=True)
    whitelist = models.CharField(max_length=16, choices=Whitelist.choices)
    language = models.CharField(max_length=2, blank=True)
    valid_from = models.DateField(null=True, blank=True)
    valid_until = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    replaced_by = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )
    last_updated = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer_party", "uid", "type"], name="card_unique_uid_per_issuer"),
            models.UniqueConstraint(fields=["contract_id"], name="card_unique_contract_id"),
        ]
        indexes = [models.Index(fields=["status", "valid_until"], name="card_status_expiry")]

    def __str__(self) -> str:
        return f"{self.visual_number or self.contract_id} ({self.get_status_display()})"

    @property
    def valid(self) -> bool:
        return self.status == self.Status.ACTIVE

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from cards.identifiers import InvalidIdentifier, normalise_contract_id, normalise_uid

        errors = {}
        try:
            self.uid = normalise_uid(self.uid, self.type)
        except InvalidIdentifier as exc:
            errors["uid"] = str(exc)
        try:
            self.contract_id = normalise_contract_id(self.contract_id)
        except InvalidIdentifier as exc:
            errors["contract_id"] = str(exc)
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            errors["valid_until"] = "must not be before valid_from"
        if errors:
            raise ValidationError(errors)


class CardStatusChange(models.Model):
    """Every change of a card's status: who, when and why."""

    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=10, choices=Card.Status.choices, blank=True)
    new_status = models.CharField(max_length=10, choices=Card.Status.choices)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.CharField(max_length=255)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self) -> str:
        return f"{self.card}: {self.old_status or '-'} -> {self.new_status}"


class ForeignToken(models.Model):
    """A token of another eMSP, pushed to our CPO side (or learnt), kept to authorize at our stations."""

    party = models.ForeignKey(Party, on_delete=models.CASCADE, related_name="foreign_tokens")
    uid = models.CharField(max_length=36, help_text="Upper-case (OCPI CiString), separators removed for RFID.")
    type = models.CharField(max_length=12, choices=Card.Type.choices, default=Card.Type.RFID)
    contract_id = models.CharField(max_length=36)
    visual_number = models.CharField(max_length=64, blank=True)
    issuer = models.CharField(max_length=64)
    group_id = models.CharField(max_length=36, blank=True)
    valid = models.BooleanField()
    whitelist = models.CharField(max_length=16, choices=Card.Whitelist.choices)
    language = models.CharField(max_length=2, blank=True)
    data = models.JSONField(help_text="The Token as the eMSP sent it (extra fields kept).")
    last_updated = models.DateTimeField(db_index=True)
    received_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["party", "uid", "type"], name="foreign_token_unique")]
        indexes = [models.Index(fields=["uid", "type"], name="foreign_token_uid")]

    def __str__(self) -> str:
        return f"{self.party.ocpi_id} {self.uid} ({self.type})"


class AuthorizationDecision(models.Model):
    """Every authorization decision, both directions; written in bulk off the request path.

    Plain values rather than foreign keys: the log outlives cards and partners, and rows can be
    written without touching the rows they describe.
    """

    class Direction(models.TextChoices):
        EMSP = "emsp", "A CPO asked us about our card"
        CPO = "cpo", "Our station asked about a card"

    class Path(models.TextChoices):
        LOCAL = "local", "Our own card, decided locally"
        CACHE = "cache", "Cached foreign token (whitelist ALWAYS)"
        REALTIME = "realtime", "Real-time call to the issuing eMSP"
        FALLBACK = "fallback", "eMSP unreachable: cached token per whitelist"
        UNKNOWN = "unknown", "Unknown token"
        AGREEMENT = "agreement", "No agreement covers the partner"

    direction = models.CharField(max_length=4, choices=Direction.choices)
    partner = models.CharField(max_length=7, help_text="CPO asking us, or eMSP issuing the card (CC*PID).")
    token_uid = models.CharField(max_length=36)
    token_type = models.CharField(max_length=12)
    location_id = models.CharField(max_length=36, blank=True)
    evse_uids = models.JSONField(default=list, blank=True)
    result = models.CharField(max_length=12)
    reason = models.CharField(max_length=255)
    path = models.CharField(max_length=10, choices=Path.choices)
    authorization_reference = models.CharField(max_length=36, blank=True)
    elapsed_ms = models.FloatField(null=True, blank=True)
    decided_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-decided_at"]
        indexes = [models.Index(fields=["token_uid", "decided_at"], name="auth_decision_token")]

    def __str__(self) -> str:
        return f"{self.decided_at:%Y-%m-%d %H:%M:%S} {self.partner} {self.token_uid}: {self.result}"
