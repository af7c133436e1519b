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
