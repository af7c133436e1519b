"""Tariffs (OCPI 2.2.1 Tariffs module): partners' prices at their stations and ours at our own stations,
and the check of each CDR's total against the tariff it was billed with."""

from __future__ import annotations

from django.db import models
from django.db.models import F
from django.db.models.functions import Upper
from django.db.models.signals import post_delete, post_save
from simple_history.models import HistoricalRecords

from roaming.models import PartnerConnection, Party

# Kept at hand: saves and deletes through the OwnTariff proxy (the admin's) are recorded by it too (below).
TARIFF_HISTORY = HistoricalRecords(excluded_fields=["created_at"])


class Tariff(models.Model):
    """One OCPI Tariff, keyed by its owner (the CPO party) and its id (case-insensitive, as OCPI ids are).

    `document` is the Tariff object as on the wire (partners': as they sent it, optional nulls left out; ours:
    built and checked by the staff form). The columns beside it are copies for queries. History is kept so a
    CDR is checked against the tariff as it was when its session started.
    """

    party = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="tariffs", db_index=False)
    ocpi_id = models.CharField("tariff id", max_length=36)
    currency = models.CharField(max_length=3)
    type = models.CharField(max_length=16, blank=True, help_text="OCPI TariffType; empty = any use.")
    start_date_time = models.DateTimeField(null=True, blank=True, help_text="Valid from (empty: always).")
    end_date_time = models.DateTimeField(null=True, blank=True, help_text="Valid until (empty: open-ended).")
    last_updated = models.DateTimeField()
    document = models.JSONField(help_text="The OCPI Tariff object.")
    source = models.ForeignKey(
        PartnerConnection,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tariffs",
        help_text="The connection (partner or hub) that sent it; empty for our own tariffs.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    history = TARIFF_HISTORY

    class Meta:
        ordering = ["party__name", "ocpi_id"]
        constraints = [models.UniqueConstraint(F("party"), Upper("ocpi_id"), name="tariff_unique_per_party")]
        indexes = [models.Index(fields=["party", "last_updated"], name="tariff_party_updated")]

    def __str__(self) -> str:
        return f"{self.party.ocpi_id} tariff {self.ocpi_id}"

    @property
    def is_ours(self) -> bool:
        return self.party.is_self


class OwnTariff(Tariff):
    """Our own tariffs, as staff manage them in the admin (a proxy: same table)."""

    class Meta:
        proxy = True
        verbose_name = "our tariff"
        verbose_name_plural = "our tariffs"


# Django sends a proxy's own class as the signal's sender; simple_history listens for Tariff's only.
post_save.connect(TARIFF_HISTORY.post_save, sender=OwnTariff, weak=False, dispatch_uid="own-tariff-history-save")
post_delete.connect(TARIFF_HISTORY.post_delete, sender=OwnTariff, weak=False, dispatch_uid="own-tariff-history-delete")


class TariffPull(models.Model):
    """One pull of a partner's Tariffs SENDER."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(PartnerConnection, on_delete=models.CASCADE, related_name="tariff_pulls")
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    date_from = models.DateTimeField(null=True, blank=True)
    date_to = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0, help_text="Created or updated.")
    unchanged = models.PositiveIntegerField(default=0, help_text="Not newer than what we hold.")
    rejected = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Of owners we have no agreement with (hub feeds).")
    removed = models.PositiveIntegerField(default=0, help_text="Full pulls: ours from this feed it no longer lists.")
    rejects = models.JSONField(default=list, blank=True, help_text="[{id, error}] of rejected objects (first 100).")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["connection", "-started_at"], name="tariffpull_recent")]

    def __str__(self) -> str:
        kind = "Full" if self.full else "Delta"
        return f"{kind} tariff pull of {self.connection.party.name} at {self.started_at:%Y-%m-%d %H:%M}"


class CdrPriceCheck(models.Model):
    """A CDR's total recomputed from its tariff: "price differs" when off by more than 1 cent and 1 %."""

    class Outcome(models.TextChoices):
        MATCHES = "matches", "Price matches"
        DIFFERS = "differs", "Price differs"
        NO_TARIFF = "no_tariff", "No tariff to check against"
        NOT_CHECKED = "not_checked", "Not checked"

    cdr = models.OneToOneField("charging.CDR", on_delete=models.CASCADE, related_name="price_check")
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    tariff = models.ForeignKey(Tariff, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdr_checks")
    tariff_ocpi_id = models.CharField(max_length=36, blank=True)
    tariff_source = models.CharField(
        max_length=16, blank=True, help_text="cdr (embedded in it), stored (the id it names), connector (at start)."
    )
    currency = models.CharField(max_length=3, blank=True)
    stated_excl_vat = models.DecimalField(max_digits=12, decimal_places=4)
    stated_incl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    computed_excl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    computed_incl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    detail = models.TextField(blank=True, help_text="Why, or what was compared.")
    checked_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "CDR price check"
        indexes = [models.Index(fields=["outcome"], name="cdrpricecheck_outcome")]

    def __str__(self) -> str:
        return f"{self.cdr}: {self.get_outcome_display()}"

    @property
    def differs(self) -> bool:
        return self.outcome == self.Outcome.DIFFERS
