"""Reads about partners' station feeds for staff: stations per partner, sync runs, data quality."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from roaming import selectors
from roaming.models import PartnerConnection, Party
from stations.models import EVSE, EvseStatus, EvseStatusChange, Location, SyncRun


def with_feed_figures(queryset: QuerySet[Party]) -> QuerySet[Party]:
    """Parties annotated, in the same query, with their stations, last successful sync and the latest run's outcome."""
    stations = (
        Location.objects.filter(party=OuterRef("pk"), removed_at__isnull=True)
        .order_by()
        .values("party")
        .annotate(n=Count("pk"))
        .values("n")
    )
    runs = SyncRun.objects.filter(connection__party=OuterRef("pk"))
    return with_latest_run(queryset).annotate(
        station_count=Coalesce(Subquery(stations, output_field=IntegerField()), 0),
        last_sync_at=Subquery(
            runs.filter(status=SyncRun.Status.SUCCEEDED).order_by("-finished_at").values("finished_at")[:1]
        ),
    )


def with_latest_run(queryset: QuerySet[Party]) -> QuerySet[Party]:
    """Parties annotated with their latest feed run's status and rejects (the overview needs no station count)."""
    latest_run = SyncRun.objects.filter(connection__party=OuterRef("pk")).order_by("-started_at", "-pk")
    return queryset.annotate(
        last_run_status=Subquery(latest_run.values("status")[:1]),
        last_run_rejected=Coalesce(Subquery(latest_run.values("rejected")[:1]), 0),
    )


@dataclass
class PartnerQuality:
    """How complete and fresh one partner's station data is; shares are 0..1."""

    party: Party
    stations: int
    with_address: float
    with_live_status: float
    status_fresh: float
    with_access_data: float
    rejected_share: float
    rejected_last_sync: int
    repaired_share: float = 0.0
    repaired_last_sync: int = 0
    repairs: list[selectors.RepairSummary] = field(default_factory=list)  # most frequent first (pulls and pushes)
    trend: list[FeedDay] = field(default_factory=list)  # the feed's last TREND_DAYS days, oldest first

    @property
    def has_data(self) -> bool:
        """A partner without stations is not "0 % good": it has no station data yet, and is not ranked."""
        return self.stations > 0

    @property
    def trend_points(self) -> str:
        """SVG polyline points of the share of objects rejected per day (x: 4 px a day; y: 0-20 px, 100 % on top)."""
        return " ".join(f"{index * 4},{20 - round(day.rejected_share * 20, 1)}" for index, day in enumerate(self.trend))

    @property
    def trend_rejected(self) -> int:
        return sum(day.rejected for day in self.trend)

    @property
    def trend_objects(self) -> int:
        return sum(day.objects for day in self.trend)

    @property
    def shares(self) -> tuple[float, float, float, float]:
        return (self.with_address, self.with_live_status, self.status_fresh, self.with_access_data)

    @property
    def score(self) -> float:
        """Mean of the four presence shares, reduced by the share of rejected objects in the last sync."""
        if not self.stations:
            return 0.0
        presence = (self.with_address + self.with_live_status + self.status_fresh + self.with_access_data) / 4
        return presence * (1 - self.rejected_share)


MISSING_ADDRESSES = ("", "#NA", "-")


def partner_data_quality(now: dt.datetime | None = None) -> list[PartnerQuality]:
    """Per partner, the share of its stations with an address, live status, a status from the last hour and
    access-restriction data, and the rejects of its last feed sync; worst partners first."""
    now = now or timezone.now()
    recent = now - dt.timedelta(hours=1)
    evses = EVSE.objects.filter(location=OuterRef("pk"))
    live = Exists(evses.exclude(status=EvseStatus.UNKNOWN))
    fresh = Q(status_updated_at__gte=recent) | Exists(evses.filter(status_changed_at__gte=recent))
    access = (
        Q(opening_times__isnull=False)
        | Q(publish=False)
        | Exists(evses.exclude(parking_restrictions=[]).exclude(parking_restrictions__isnull=True))
    )
    rows = (
        Location.objects.filter(removed_at__isnull=True, party__is_self=False)
        .order_by()
        .values("party")
        .annotate(
            total=Count("pk"),
            address=Count("pk", filter=~Q(address__in=MISSING_ADDRESSES) & ~Q(city__in=MISSING_ADDRESSES)),
            live=Count("pk", filter=Q(live)),
            fresh=Count("pk", filter=fresh),
            access=Count("pk", filter=access),
        )
    )
    counts = {row["party"]: row for row in rows}
    parties = Party.objects.filter(is_self=False).filter(
        Q(pk__in=counts.keys()) | Q(role__in=Party.CPO_ROLES, connection__status=PartnerConnection.Status.CONNECTED)
    )
    latest_run_of_party = dict(
        PartnerConnection.objects.filter(party__in=parties)
        .annotate(
            run_id=Subquery(
                SyncRun.objects.filter(connection=OuterRef("pk")).order_by("-started_at", "-pk").values("pk")[:1]
            )
        )
        .values_list("party_id", "run_id")
    )
    runs = SyncRun.objects.in_bulk([pk for pk in latest_run_of_party.values() if pk])
    repairs = selectors.partner_repairs([party.pk for party in parties])
    result = []
    for party in parties:
        row = counts.get(party.pk, {})
        total = row.get("total", 0)
        run = runs.get(latest_run_of_party.get(party.pk))
        processed = (run.created + run.updated + run.unchanged + run.rejected) if run else 0
        result.append(
            PartnerQuality(
                party=party,
                stations=total,
                with_address=row.get("address", 0) / total if total else 0.0,
                with_live_status=row.get("live", 0) / total if total else 0.0,
                status_fresh=row.get("fresh", 0) / total if total else 0.0,
                with_access_data=row.get("access", 0) / total if total else 0.0,
                rejected_share=run.rejected / processed if processed else 0.0,
                rejected_last_sync=run.rejected if run else 0,
                repaired_share=run.repaired / processed if processed else 0.0,
                repaired_last_sync=run.repaired if run else 0,
                repairs=repairs.get(party.pk, []),
            )
        )
    result.sort(key=lambda quality: (quality.score, quality.party.name))
    return result


TREND_DAYS = 30


@dataclass
class DataQualityReport:
    ranked: list[PartnerQuality]  # partners with station data, worst first
    without_data: list[PartnerQuality]  # connected CPOs with no station data yet: shown apart, not ranked


def data_quality_report(now: dt.datetime | None = None) -> DataQualityReport:
    """The data-quality page: partners ranked by score, those without station data apart, each with a 30-day trend."""
    qualities = partner_data_quality(now)
    connection_of = dict(
        PartnerConnection.objects.filter(party__in=[q.party for q in qualities]).values_list("party_id", "pk")
    )
    trends = feed_days(list(connection_of.values()), days=TREND_DAYS)
    for quality in qualities:
        quality.trend = trends.get(connection_of.get(quality.party.pk), [])
    return DataQualityReport(
        ranked=[q for q in qualities if q.has_data],
        without_data=sorted((q for q in qualities if not q.has_data), key=lambda q: q.party.name),
    )


# --- one partner's feed, for its page in the staff console --------------------------------------------------------


def pull_refusal(connection: PartnerConnection | None) -> str:
    """Why "Pull locations now" would do nothing for this connection; "" when a pull can run.

    The same conditions the pull itself stops on (stations.feeds.pull_locations), checked before anything is queued.
    """
    if connection is None:
        return "no connection yet: nothing to pull from"
    if connection.via_hub_id:
        return f"reached through {connection.via_hub.party.name}: its stations come with the hub's feed (pull the hub)"
    if connection.status != PartnerConnection.Status.CONNECTED:
        return f"the connection is {connection.get_status_display().lower()}: we hold no usable token to call them"
    if not connection.endpoint_url("locations", "SENDER"):
        return (
            "they list no locations SENDER endpoint: there is no feed to pull "
            '(if they added one since, run "Re-read their endpoints" first)'
        )
    return ""


def running_sync(connection_id: int) -> SyncRun | None:
    return (
        SyncRun.objects.filter(connection_id=connection_id, status=SyncRun.Status.RUNNING)
        .order_by("-started_at")
        .first()
    )


@dataclass
class SyncProgress:
    """A sync run as staff follow it: counts so far, the rate, and the time left when the feed said its size."""

    run_id: int
    kind: str
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    pages: int
    objects: int  # read so far: stored (created, updated, unchanged), rejected and skipped
    rejected: int
    expected: int | None
    per_second: float
    seconds_left: float | None
    error: str

    @property
    def running(self) -> bool:
        return self.status == SyncRun.Status.RUNNING

    @property
    def percent(self) -> int | None:
        if not self.expected:
            return None
        return min(100, round(100 * self.objects / self.expected))

    def as_json(self) -> dict:
        return {
            "run": self.run_id,
            "kind": self.kind,
            "status": self.status,
            "running": self.running,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "pages": self.pages,
            "objects": self.objects,
            "rejected": self.rejected,
            "expected": self.expected,
            "percent": self.percent,
            "per_second": round(self.per_second, 1),
            "seconds_left": round(self.seconds_left) if self.seconds_left is not None else None,
            "error": self.error,
        }


def sync_progress(run: SyncRun, now: dt.datetime | None = None) -> SyncProgress:
    """Where a run is (or ended): rate = objects read per second of its run time; time left from the feed's size."""
    now = now or timezone.now()
    objects = run.created + run.updated + run.unchanged + run.rejected + run.skipped
    elapsed = max(((run.finished_at or now) - run.started_at).total_seconds(), 0.001)
    per_second = objects / elapsed
    left = None
    if run.status == SyncRun.Status.RUNNING and run.expected_objects and per_second > 0:
        left = max(run.expected_objects - objects, 0) / per_second
    return SyncProgress(
        run_id=run.pk,
        kind=run.kind,
        status=run.status,
        started_at=run.started_at,
        finished_at=run.finished_at,
        pages=run.pages,
        objects=objects,
        rejected=run.rejected,
        expected=run.expected_objects,
        per_second=per_second,
        seconds_left=left,
        error=run.error,
    )


def latest_sync_progress(connection_id: int) -> SyncProgress | None:
    """The running sync of a connection, or else its latest run (its outcome)."""
    run = (
        running_sync(connection_id)
        or SyncRun.objects.filter(connection_id=connection_id).order_by("-started_at", "-pk").first()
    )
    return sync_progress(run) if run else None


@dataclass
class StationFigures:
    visible: int  # on our drivers' map
    hidden: int  # kept, but the partner does not publish them to us
    removed: int  # gone from the partner's feed
    statuses_last_hour: int  # EVSE status changes received in the last hour


def partner_station_figures(party: Party, now: dt.datetime | None = None) -> StationFigures:
    """A partner's stations by what our drivers see, and the status changes we heard in the last hour (2 queries)."""
    now = now or timezone.now()
    counts = Location.objects.filter(party=party).aggregate(
        visible=Count("pk", filter=Q(removed_at__isnull=True, published_to_our_drivers=True)),
        hidden=Count("pk", filter=Q(removed_at__isnull=True, published_to_our_drivers=False)),
        removed=Count("pk", filter=Q(removed_at__isnull=False)),
    )
    heard = EvseStatusChange.objects.filter(
        evse__location__party=party, changed_at__gte=now - dt.timedelta(hours=1)
    ).count()
    return StationFigures(statuses_last_hour=heard, **counts)


def recent_sync_runs(connection_id: int, limit: int = 8) -> list[SyncRun]:
    return list(SyncRun.objects.filter(connection_id=connection_id).order_by("-started_at", "-pk")[:limit])


@dataclass
class FeedDay:
    day: dt.date
    runs: int = 0
    objects: int = 0  # stored: created, updated, unchanged
    rejected: int = 0

    @property
    def rejected_share(self) -> float:
        read = self.objects + self.rejected
        return self.rejected / read if read else 0.0


def feed_days(connection_ids: list[int], *, days: int = 30, today: dt.date | None = None) -> dict[int, list[FeedDay]]:
    """Per connection, each of the last `days` days (oldest first, today included): runs, objects and rejects.

    One query; days are the staff member's zone (the active time zone) days.
    """
    today = today or timezone.localdate()
    first = today - dt.timedelta(days=days - 1)
    start = timezone.make_aware(dt.datetime.combine(first, dt.time()))
    rows = (
        SyncRun.objects.filter(connection_id__in=connection_ids, started_at__gte=start)
        .annotate(day=TruncDate("started_at", tzinfo=timezone.get_current_timezone()))
        .order_by()
        .values("connection_id", "day")
        .annotate(
            runs=Count("pk"),
            objects=Sum(F("created") + F("updated") + F("unchanged")),
            rejected=Sum("rejected"),
        )
    )
    result = {pk: [FeedDay(first + dt.timedelta(days=n)) for n in range(days)] for pk in connection_ids}
    for row in rows:
        index = (row["day"] - first).days
        if 0 <= index < days:
            day = result[row["connection_id"]][index]
            day.runs, day.objects, day.rejected = row["runs"], row["objects"] or 0, row["rejected"] or 0
    return result


def running_syncs_count() -> int:
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING).count()
