"""Reads about partners' station feeds for staff: stations per partner, sync runs, data quality."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from roaming import selectors
from roaming.models import PartnerConnection, Party
from stations.models import EVSE, EvseStatus, Location, SyncRun


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
    latest_run = runs.order_by("-started_at", "-pk")
    return queryset.annotate(
        station_count=Coalesce(Subquery(stations, output_field=IntegerField()), 0),
        last_sync_at=Subquery(
            runs.filter(status=SyncRun.Status.SUCCEEDED).order_by("-finished_at").values("finished_at")[:1]
        ),
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
