"""Charging locations, their EVSEs and connectors, as OCPI 2.2.1 describes them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from roaming.models import PartnerConnection, Party


class EvseStatus(models.TextChoices):
    AVAILABLE = "AVAILABLE"
    BLOCKED = "BLOCKED"
    CHARGING = "CHARGING"
    INOPERATIVE = "INOPERATIVE"
    OUTOFORDER = "OUTOFORDER"
    PLANNED = "PLANNED"
    REMOVED = "REMOVED"
    RESERVED = "RESERVED"
    UNKNOWN = "UNKNOWN"


class MapStatus(models.TextChoices):
    """What a driver sees on the map, summarised over a location's EVSEs."""

    AVAILABLE = "available", "Available"
    IN_USE = "in_use", "In use"
    FAULTY = "faulty", "Faulty / out of order"
    UNKNOWN = "unknown", "Unknown"


def is_published_to_our_drivers(publish: bool, publish_allowed_to: list | None) -> bool:
    """Whether our drivers may see a location: published, or an unpublished one whose allowed list names us.

    OCPI lets a CPO show an unpublished site to some tokens only; an entry with our cards' issuer
    (`OCPI_BUSINESS_NAME`) admits all our drivers. Entries naming single tokens are not matched.
    """
    if publish:
        return True
    ours = settings.OCPI_BUSINESS_NAME.casefold()
    entries = [entry for entry in publish_allowed_to or [] if isinstance(entry, dict)]
    return any(str(entry.get("issuer", "")).casefold() == ours for entry in entries)


class Location(models.Model):
    """A charging site, keyed by its owner (party) and its OCPI id."""

    # Indexes that a composite index or unique constraint below already leads with are not made twice:
    # every index costs each feed write (550,000 locations, 1.6 million connectors).
    party = models.ForeignKey(Party, on_delete=models.PROTECT, related_name="locations", db_index=False)
    source = models.ForeignKey(
        PartnerConnection,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="locations",
        help_text="The connection (partner or hub) whose feed delivered it; empty for our own stations.",
    )
    ocpi_id = models.CharField(max_length=36)
    publish = models.BooleanField(default=True)
    publish_allowed_to = models.JSONField(default=list, blank=True)
    published_to_our_drivers = models.BooleanField(
        default=True,
        db_default=True,
        help_text="Published, or unpublished but `publish_allowed_to` names our cards' issuer (shown with a lock).",
    )
    name = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=255)
    city = models.CharField(max_length=45)
    postal_code = models.CharField(max_length=10, blank=True)
    state = models.CharField(max_length=45, blank=True)
    country = models.CharField(max_length=3)
    latitude = models.FloatField()
    longitude = models.FloatField()
    parking_type = models.CharField(max_length=32, blank=True)
    operator = models.JSONField(null=True, blank=True)
    suboperator = models.JSONField(null=True, blank=True)
    owner = models.JSONField(null=True, blank=True)
    facilities = models.JSONField(default=list, blank=True)
    time_zone = models.CharField(max_length=255, blank=True)
    opening_times = models.JSONField(null=True, blank=True)
    charging_when_closed = models.BooleanField(null=True, blank=True)
    last_updated = models.DateTimeField()  # paged by (party, last_updated): location_party_updated
    # Everything the partner sent, as sent: fields we do not model (or a hub's own) are kept here.
    raw = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(
        max_length=64, blank=True, help_text="Digest of the content, to skip no-op updates."
    )
    removed_at = models.DateTimeField(null=True, blank=True, help_text="Gone from the partner's full feed.")

    # Limited accessibility (derived from the OCPI data) and the staff override.
    limited_access = models.BooleanField(default=False)
    limited_access_reasons = models.JSONField(default=list, blank=True)
    limited_access_override = models.BooleanField(
        null=True, blank=True, help_text="Staff decision; empty = use the derived flag."
    )

    # Summaries kept for the map, recomputed whenever EVSEs change.
    map_status = models.CharField(max_length=10, choices=MapStatus.choices, default=MapStatus.UNKNOWN)
    status_updated_at = models.DateTimeField(null=True, blank=True)
    max_power_kw = models.FloatField(default=0)
    connector_standards = models.CharField(
        max_length=255, blank=True, help_text="Comma-delimited (leading and trailing comma) for quick filtering."
    )
    evse_count = models.PositiveIntegerField(default=0)
    available_evse_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["party", "ocpi_id"], name="location_unique_per_party")]
        indexes = [
            models.Index(fields=["latitude", "longitude"], name="location_lat_lon"),
            models.Index(fields=["longitude", "latitude"], name="location_lon_lat"),
            models.Index(fields=["party", "last_updated"], name="location_party_updated"),
            models.Index(fields=["city"], name="location_city"),
            models.Index(fields=["postal_code"], name="location_postal_code"),
        ]

    def __str__(self) -> str:
        return f"{self.name or self.ocpi_id} ({self.city})"

    def save(self, *args, **kwargs) -> None:
        # Rows written one by one (admin, demo data, our own stations) keep the flag the feeds compute in bulk.
        self.published_to_our_drivers = is_published_to_our_drivers(self.publish, self.publish_allowed_to)
        super().save(*args, **kwargs)

    @property
    def is_limited_access(self) -> bool:
        return self.limited_access if self.limited_access_override is None else self.limited_access_override


class EVSE(models.Model):
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="evses", db_index=False)
    uid = models.CharField(max_length=36)
    evse_id = models.CharField(max_length=48, blank=True)
    status = models.CharField(max_length=12, choices=EvseStatus.choices, default=EvseStatus.UNKNOWN)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_schedule = models.JSONField(default=list, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    floor_level = models.CharField(max_length=4, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    physical_reference = models.CharField(max_length=16, blank=True)
    directions = models.JSONField(default=list, blank=True)
    parking_restrictions = models.JSONField(default=list, blank=True)
    images = models.JSONField(default=list, blank=True)
    last_updated = models.DateTimeField()

    class Meta:
        verbose_name = "EVSE"
        constraints = [models.UniqueConstraint(fields=["location", "uid"], name="evse_unique_per_location")]

    def __str__(self) -> str:
        return self.evse_id or self.uid


class Connector(models.Model):
    evse = models.ForeignKey(EVSE, on_delete=models.CASCADE, related_name="connectors", db_index=False)
    connector_id = models.CharField(max_length=36)
    standard = models.CharField(max_length=40)
    format = models.CharField(max_length=6)
    power_type = models.CharField(max_length=16)
    # Empty when a partner sent only max_electric_power (what a driver relies on) and neither figure.
    max_voltage = models.PositiveIntegerField(null=True, blank=True)
    max_amperage = models.PositiveIntegerField(null=True, blank=True)
    max_electric_power = models.PositiveIntegerField(null=True, blank=True, help_text="Watts")
    tariff_ids = models.JSONField(default=list, blank=True)
    terms_and_conditions = models.URLField(max_length=255, blank=True)
    last_updated = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["evse", "connector_id"], name="connector_unique_per_evse")]

    def __str__(self) -> str:
        return f"{self.standard} {self.connector_id}"

    @property
    def power_kw(self) -> float:
        if self.max_electric_power:
            return self.max_electric_power / 1000
        if self.max_voltage is None or self.max_amperage is None:
            return 0.0
        phases = 3 if self.power_type == "AC_3_PHASE" else 1
        if self.power_type == "DC":
            return self.max_voltage * self.max_amperage / 1000
        # AC three-phase: line-to-neutral voltage times current times phases
        return self.max_voltage * self.max_amperage * phases / 1000


class EvseStatusChange(models.Model):
    """Each status an EVSE took, and when: how long a point has been faulty."""

    evse = models.ForeignKey(EVSE, on_delete=models.CASCADE, related_name="status_changes", db_index=False)
    status = models.CharField(max_length=12, choices=EvseStatus.choices)
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["-changed_at"]
        indexes = [models.Index(fields=["evse", "-changed_at"], name="evse_status_change_recent")]

    def __str__(self) -> str:
        return f"{self.evse}: {self.status} at {self.changed_at:%Y-%m-%d %H:%M}"


class SyncRun(models.Model):
    """One pull of a partner's location feed."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    connection = models.ForeignKey(PartnerConnection, on_delete=models.CASCADE, related_name="sync_runs")
    full = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    date_from = models.DateTimeField(null=True, blank=True)
    date_to = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    repaired = models.PositiveIntegerField(
        default=0, help_text="Objects kept after a repair (see the partner data-quality page for which)."
    )
    skipped = models.PositiveIntegerField(
        default=0, help_text="Objects of owners we have no agreement with (hub feeds)."
    )
    expected_objects = models.PositiveIntegerField(
        null=True, blank=True, help_text="X-Total-Count of the feed's first page: how many objects this run will read."
    )
    window_shifted = models.BooleanField(
        default=False,
        help_text="X-Total-Count fell during the crawl: objects left the window and offsets shifted, so the "
        "next run reads this window again.",
    )
    deferred_removals = models.JSONField(
        default=list,
        blank=True,
        help_text="Locations this full sync missed while its window shifted: removed only if the next full sync "
        "misses them too (a shift can skip an object that is still there).",
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["connection", "-started_at"], name="syncrun_recent")]

    def __str__(self) -> str:
        kind = "Full" if self.full else "Delta"
        return f"{kind} sync of {self.connection.party.name} at {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def kind(self) -> str:
        """ "full" (the whole feed, removals included) or "delta" (changes since the last successful run)."""
        return "full" if self.full else "delta"


class RejectedObject(models.Model):
    """An object from a partner's feed that failed validation: its error and payload, kept for staff."""

    sync_run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.CASCADE, related_name="rejects")
    connection = models.ForeignKey(PartnerConnection, on_delete=models.CASCADE, related_name="rejected_objects")
    object_id = models.CharField(max_length=64, blank=True)
    error = models.TextField()
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Rejected {self.object_id or 'object'}: {self.error[:60]}"


# --- Map-owned (driver map, issue 6) -------------------------------------------------------------
class MapCell(models.Model):
    """Station counts per grid cell and per filterable kind, so map clusters need no scan of every location.

    Rebuilt from Location by `stations.map_cells.refresh_map_cells()`; the map reads it for clusters only.
    Cell (x, y) at `level` covers longitudes [x, x+1) * 360 / 2**level - 180 and latitudes
    90 - [y, y+1) * 180 / 2**level. Three kinds of rows, from the most detailed to the smallest:
    per party (the operator filter), per filter values for the parties accepting our cards at rebuild
    time (connector, power step), and per status and limited access only (the unfiltered map).
    """

    class Kind(models.IntegerChoices):
        PARTY = 0
        FILTERS = 1
        SUMMARY = 2

    kind = models.PositiveSmallIntegerField(choices=Kind.choices)
    level = models.PositiveSmallIntegerField()
    x = models.IntegerField()
    y = models.IntegerField()
    party = models.ForeignKey(Party, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    map_status = models.CharField(max_length=10, choices=MapStatus.choices)
    limited = models.BooleanField()
    max_power_kw = models.FloatField()
    connector_standards = models.CharField(max_length=255)
    stations = models.PositiveIntegerField()
    sum_latitude = models.FloatField()
    sum_longitude = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["kind", "level", "party", "x", "y"], name="mapcell_kind_level_party_x_y")]

    def __str__(self) -> str:
        return f"cell {self.level}/{self.x}/{self.y}: {self.stations}"


class FavouriteStation(models.Model):
    """A station a driver marked with a star on the map: listed first, one tap away."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="favourite_stations")
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "location"], name="favourite_station_once")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} ★ {self.location_id}"


class MapCellMember(models.Model):
    """What one visible location adds to the cluster cells, as last counted (`stations.map_cells`).

    The incremental update subtracts this row and adds the location's new state, so a change touches only
    the cells of the locations that changed. Rebuilt with the cells; `x`, `y` are the finest level's cell.
    """

    location = models.OneToOneField(
        Location, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    x = models.IntegerField()
    y = models.IntegerField()
    party = models.ForeignKey(Party, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    map_status = models.CharField(max_length=10, choices=MapStatus.choices)
    limited = models.BooleanField()
    max_power_kw = models.FloatField(help_text="The power step the station reaches.")
    connector_standards = models.CharField(max_length=255)
    latitude = models.FloatField()
    longitude = models.FloatField()

    def __str__(self) -> str:
        return f"location {self.location_id} in cell {self.x}/{self.y}"


class MapDirtyLocation(models.Model):
    """A location whose map summary, place or visibility changed since the cells last counted it.

    Append-only (one row per change, never an upsert): the cells' update deletes exactly the rows its snapshot
    saw, so a change committed meanwhile keeps its own row for the next run.
    """

    location_id = models.BigIntegerField()

    def __str__(self) -> str:
        return f"location {self.location_id} to recount"


class PendingStatus(models.Model):
    """A status-only EVSE PATCH answered but not yet applied (`STATUS_INBOX`, stations/status_inbox.py).

    Written in the PATCH's one statement, applied in batches by `apply_pending_statuses`, in arrival order.
    `evse_id` is a plain column, not a foreign key: the PATCH's INSERT finds the EVSE itself, and an EVSE
    removed meanwhile makes the applier drop its row.
    """

    id = models.BigAutoField(primary_key=True)
    evse_id = models.BigIntegerField()
    status = models.CharField(max_length=12, choices=EvseStatus.choices)
    status_schedule = models.JSONField(null=True, blank=True, help_text="None: not sent, the stored one stays")
    last_updated = models.DateTimeField()
    received_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"EVSE {self.evse_id} to {self.status}"
