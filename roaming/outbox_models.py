"""The durable outbox's tables: every outgoing OCPI push, and each partner's delivery lane (roaming/outbox.py)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class OutboxMessage(models.Model):
    """One outgoing OCPI call to a partner's RECEIVER, written in the transaction of the change that causes it.

    Delivered in `id` order per (partner, module, object_id); kept until the partner answers OCPI 1000.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Refused (staff may resend)"

    id = models.BigAutoField(primary_key=True)  # the creation order, which is the delivery order per object
    partner = models.ForeignKey("roaming.Party", on_delete=models.CASCADE, related_name="outbox_messages")
    module = models.CharField(max_length=16, help_text="OCPI module: tokens, locations, sessions, cdrs, tariffs")
    object_id = models.CharField(max_length=128, help_text="The object the call is about (order is kept per object)")
    method = models.CharField(max_length=6)
    path = models.CharField(max_length=512, blank=True, help_text="Joined to the RECEIVER URL (may end in ?query)")
    body = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(help_text="Not sent before this time (per-message backoff)")
    sending_since = models.DateTimeField(
        null=True, blank=True, help_text="Set while a worker sends it; left set if that worker died mid-call"
    )
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    reply_location = models.URLField(max_length=512, blank=True, help_text="The Location the partner answered")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The lane's next messages: a partner's due pending ones, in order.
            models.Index(
                fields=["partner", "next_attempt_at", "id"],
                name="outbox_due",
                condition=Q(status="pending"),
            ),
            # "Is an older message for this object still waiting?" and coalescing.
            models.Index(
                fields=["partner", "module", "object_id", "id"],
                name="outbox_pending_object",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["partner", "status", "-id"], name="outbox_partner_status"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.module} {self.object_id} to {self.partner_id}: {self.status}"

    @property
    def is_cdr_post(self) -> bool:
        return self.module == "cdrs" and self.method == "POST"


class OutboxLane(models.Model):
    """A partner's delivery lane: whether it answers, and when a down partner is probed next."""

    partner = models.OneToOneField("roaming.Party", on_delete=models.CASCADE, related_name="outbox_lane")
    down_since = models.DateTimeField(null=True, blank=True, help_text="Empty while the partner answers")
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_probe_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Outbox lane of {self.partner_id}: {'down' if self.down_since else 'up'}"
