"""Charging sessions, CDRs and remote commands (OCPI 2.2.1 Sessions, CDRs and Commands modules)."""

from __future__ import annotations

import uuid

from django.db import models

from cards.models import Card, Driver
from roaming.models import Party
from stations.models import EVSE, Location


class AuthMethod(models.TextChoices):
    AUTH_REQUEST = "AUTH_REQUEST"
    COMMAND = "COMMAND"
    WHITELIST = "WHITELIST"


class Session(models.Model):
    """A charging session as the CPO reports it, keyed by the CPO party and its session id."""

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Charging"
        COMPLETED = "COMPLETED", "Ended"
        INVALID = "INVALID", "Invalid"
        PENDING = "PENDING", "Starting"
        RESERVATION = "RESERVATION", "Reserved"

    LIVE_STATUSES = (Status.PENDING, Status.ACTIVE, Status.RESERVATION)

    party = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="sessions", help_text="The CPO.")
    ocpi_id = models.CharField(max_length=36, help_text="Session.id, unique per CPO party.")
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(null=True, blank=True)
    kwh = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    cdr_token = models.JSONField(default=dict)
    card = models.ForeignKey(
        Card, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions", help_text="When ours."
    )
    auth_method = models.CharField(max_length=12, choices=AuthMethod.choices)
    authorization_reference = models.CharField(max_length=36, blank=True)
    location_ocpi_id = models.CharField(max_length=36)
    evse_uid = models.CharField(max_length=36)
    connector_id = models.CharField(max_length=36)
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    evse = models.ForeignKey(EVSE, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    meter_id = models.CharField(max_length=255, blank=True)
    currency = models.CharField(max_length=3)
    charging_periods = models.JSONField(default=list, blank=True)
    total_cost_excl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    total_cost_incl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices)
    last_updated = models.DateTimeField(db_index=True)
    # The last full object as we understand it (PUT body merged with later PATCHes), as the partner sent it.
    raw = models.JSONField(default=dict, blank=True)
    # At our own stations (we are the CPO, party = us): the driver's eMSP, and what it has been sent so far.
    emsp = models.ForeignKey(
        Party,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sessions_at_our_stations",
        help_text="At our stations: the party that issued the driver's token (ourselves for our own cards).",
    )
    metered_at = models.DateTimeField(
        null=True, blank=True, help_text="At our stations: time of the latest meter value (older ones never win)."
    )
    pushed_at = models.DateTimeField(null=True, blank=True, help_text="Last PUT/PATCH queued for the eMSP.")
    push_due = models.BooleanField(default=False, help_text="A change the eMSP has not been sent yet (throttled).")
    periods_pushed = models.PositiveIntegerField(default=0, help_text="charging_periods the eMSP already has.")
    period_started_at = models.DateTimeField(
        null=True, blank=True, help_text="At our stations: start of the charging period not yet closed."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start_date_time"]
        constraints = [models.UniqueConstraint(fields=["party", "ocpi_id"], name="session_unique_per_party")]
        indexes = [
            models.Index(fields=["card", "-start_date_time"], name="session_card_recent"),
            models.Index(fields=["status", "last_updated"], name="session_status_updated"),
            models.Index(fields=["emsp", "last_updated"], name="session_emsp_updated"),
            models.Index(fields=["push_due", "pushed_at"], name="session_push_due"),
        ]

    def __str__(self) -> str:
        return f"Session {self.party.ocpi_id}/{self.ocpi_id} ({self.status})"


class CDR(models.Model):
    """A Charge Detail Record: the CPO's final bill for a session. Stored even when it matches nothing of ours."""

    party = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="cdrs", help_text="The CPO.")
    ocpi_id = models.CharField(max_length=39, help_text="CDR.id, unique per CPO party.")
    session_ocpi_id = models.CharField(max_length=36, blank=True)
    session = models.ForeignKey(Session, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs")
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField()
    cdr_token = models.JSONField(default=dict)
    card = models.ForeignKey(Card, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs")
    auth_method = models.CharField(max_length=12, choices=AuthMethod.choices)
    authorization_reference = models.CharField(max_length=36, blank=True)
    cdr_location = models.JSONField(default=dict)
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs")
    evse = models.ForeignKey(EVSE, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs")
    currency = models.CharField(max_length=3)
    total_cost_excl_vat = models.DecimalField(max_digits=12, decimal_places=4)
    total_cost_incl_vat = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    total_energy = models.DecimalField(max_digits=12, decimal_places=4, help_text="kWh")
    total_time = models.DecimalField(max_digits=12, decimal_places=4, help_text="hours")
    total_parking_time = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    credit = models.BooleanField(default=False)
    credit_reference_id = models.CharField(max_length=39, blank=True)
    credited_cdr = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="credits", help_text="For a credit CDR."
    )
    remark = models.CharField(max_length=255, blank=True)
    last_updated = models.DateTimeField(db_index=True)
    raw = models.JSONField(default=dict)
    unknown_session = models.BooleanField(default=False, help_text="No session of this CPO with this session_id.")
    unknown_token = models.BooleanField(default=False, help_text="The token is not one of our cards.")
    emsp = models.ForeignKey(
        Party,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cdrs_at_our_stations",
        help_text="Our own CDR (we are the CPO): the party that issued the driver's token.",
    )
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "CDR"
        ordering = ["-end_date_time"]
        constraints = [models.UniqueConstraint(fields=["party", "ocpi_id"], name="cdr_unique_per_party")]
        indexes = [
            models.Index(fields=["card", "-end_date_time"], name="cdr_card_recent"),
            models.Index(fields=["party", "session_ocpi_id"], name="cdr_party_session"),
            models.Index(fields=["emsp", "last_updated"], name="cdr_emsp_updated"),
        ]

    def __str__(self) -> str:
        return f"CDR {self.party.ocpi_id}/{self.ocpi_id}"

    @property
    def flagged(self) -> bool:
        return self.unknown_session or self.unknown_token


class MeterSample(models.Model):
    """A meter value our charge-point backend reported for a session at one of our stations."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="meter_samples")
    at = models.DateTimeField()
    kwh = models.DecimalField(max_digits=12, decimal_places=4, help_text="Energy since the session started.")
    power_kw = models.DecimalField(max_digits=9, decimal_places=3, null=True, blank=True)

    class Meta:
        ordering = ["session", "at"]
        constraints = [models.UniqueConstraint(fields=["session", "at"], name="meter_sample_unique")]

    def __str__(self) -> str:
        return f"{self.session_id} {self.at:%H:%M:%S} {self.kwh} kWh"


class Command(models.Model):
    """One OCPI command: ours to a CPO (a driver's button press) or a partner's to our own stations."""

    class Type(models.TextChoices):
        START_SESSION = "START_SESSION"
        STOP_SESSION = "STOP_SESSION"

    class Direction(models.TextChoices):
        OUTGOING = "outgoing", "We send it (eMSP)"
        INCOMING = "incoming", "A partner sends it to our stations (CPO)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"  # created, not yet answered by the CPO
        SENT = "sent", "Waiting for the station"  # CPO answered ACCEPTED, result not yet in
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"

    OPEN_STATUSES = (Status.PENDING, Status.SENT)

    # CommandResponse.result (synchronous) and CommandResult.result (asynchronous) values.
    RESPONSE_RESULTS = ("ACCEPTED", "NOT_SUPPORTED", "REJECTED", "UNKNOWN_SESSION")
    RESULT_VALUES = (
        "ACCEPTED",
        "CANCELED_RESERVATION",
        "EVSE_OCCUPIED",
        "EVSE_INOPERATIVE",
        "FAILED",
        "NOT_SUPPORTED",
        "REJECTED",
        "TIMEOUT",
        "UNKNOWN_RESERVATION",
    )

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="Makes our response_url unique.")
    type = models.CharField(max_length=16, choices=Type.choices)
    direction = models.CharField(max_length=8, choices=Direction.choices, default=Direction.OUTGOING)
    partner = models.ForeignKey(
        Party,
        on_delete=models.PROTECT,
        related_name="commands",
        help_text="Outgoing: the CPO it is sent to (ourselves for our own stations). Incoming: the eMSP sending it.",
    )
    driver = models.ForeignKey(Driver, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    card = models.ForeignKey(Card, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    evse = models.ForeignKey(EVSE, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    session = models.ForeignKey(Session, null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    idempotency_key = models.CharField(
        max_length=64, null=True, blank=True, unique=True, help_text="One button press sends at most one command."
    )
    request_payload = models.JSONField(default=dict, blank=True)
    response_url = models.URLField(
        max_length=255, blank=True, help_text="Incoming: where the partner wants the result."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    response_result = models.CharField(max_length=16, blank=True, help_text="CommandResponse.result")
    response_message = models.JSONField(default=list, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="CommandResponse.timeout")
    result = models.CharField(max_length=24, blank=True, help_text="CommandResult.result")
    result_message = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    maybe_delivered = models.BooleanField(
        default=False,
        help_text="Failed after the request may have reached the CPO (no usable answer): it may still act on it.",
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    send_started_at = models.DateTimeField(null=True, blank=True)
    responded_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="No result by then: timed out.")
    result_at = models.DateTimeField(null=True, blank=True)
    result_reported_at = models.DateTimeField(null=True, blank=True, help_text="Incoming: result posted back.")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "deadline_at"], name="command_open_deadline"),
            models.Index(fields=["driver", "-created_at"], name="command_driver_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.uid} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES
