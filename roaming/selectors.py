"""Reads about parties, connections and agreements."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from mobilityplus.db_outage import DATABASE_ERRORS, bounded_queries
from roaming.data_version import partner_data_changed, partner_data_version
from roaming.models import PartnerConnection, Party, RepairCount, RoamingAgreement
from roaming.ocpi.repairs import KIND_LABELS

OUR_CARDS = (RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, RoamingAgreement.Direction.BOTH)
THEIR_CARDS = (RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS, RoamingAgreement.Direction.BOTH)

logger = logging.getLogger(__name__)


def own_party() -> Party:
    """MobilityPlus itself, as configured by OCPI_COUNTRY_CODE / OCPI_PARTY_ID."""
    party, _ = Party.objects.get_or_create(
        country_code=settings.OCPI_COUNTRY_CODE.upper(),
        party_id=settings.OCPI_PARTY_ID.upper(),
        defaults={
            "role": Party.Role.CPO_EMSP,
            "name": settings.OCPI_BUSINESS_NAME,
            "website": settings.OCPI_BUSINESS_WEBSITE,
            "is_self": True,
        },
    )
    return party


def active_agreements(*, on: dt.date | None = None, our_cards: bool | None = None):
    """Agreements in force on a date; `our_cards` narrows to one direction of use.

    The single rule both authorization and the station map read: an agreement covers a
    partner when it is ACTIVE and the date lies within valid_from..valid_until.
    """
    on = on or timezone.localdate()
    agreements = RoamingAgreement.objects.filter(status=RoamingAgreement.Status.ACTIVE, valid_from__lte=on).filter(
        Q(valid_until__isnull=True) | Q(valid_until__gte=on)
    )
    if our_cards is True:
        agreements = agreements.filter(direction__in=OUR_CARDS)
    elif our_cards is False:
        agreements = agreements.filter(direction__in=THEIR_CARDS)
    return agreements


def party_ids_accepting_our_cards(on: dt.date | None = None) -> set[int]:
    """Ids of partner parties whose stations take MobilityPlus cards (our own party included)."""
    ids = set(active_agreements(on=on, our_cards=True).values_list("partner_id", flat=True))
    ids.add(own_party().pk)
    return ids


def party_ids_a_hub_feed_may_carry(hub: PartnerConnection, on: dt.date | None = None) -> set[int]:
    """Parties whose stations a hub's location feed may bring: those staff confirmed through that very hub.

    An agreement in force taking our cards whose `hub` is this hub, with a party that is not us and is
    reached through this hub or not connected at all. A party we reach directly, through another hub, or
    whose connection is suspended, keeps its stations to itself: a hub's copy of them is skipped.
    """
    ids = active_agreements(on=on, our_cards=True).filter(hub=hub.party).values_list("partner_id", flat=True)
    return set(
        Party.objects.filter(pk__in=ids, is_self=False)
        .filter(Q(connection__isnull=True) | Q(connection__via_hub=hub))
        .exclude(connection__status__in=CLOSED_STATUSES)
        .values_list("pk", flat=True)
    )


def party_ids_whose_cards_we_accept(on: dt.date | None = None) -> set[int]:
    return set(active_agreements(on=on, our_cards=False).values_list("partner_id", flat=True))


def agreement_covers(partner: Party, *, our_cards: bool, on: dt.date | None = None) -> bool:
    return active_agreements(on=on, our_cards=our_cards).filter(partner=partner).exists()


# Rows changed behind the ORM's back (SQL by hand) bump no counter: reload at least this often anyway.
AGREEMENTS_MAX_AGE_S = 30.0


class AgreementsInForce:
    """This process's copy of which partners have an agreement in force today.

    Every partner call reads it (the OCPI gate, real-time authorization), so it lives in memory:
    a change noted in this process clears it at once, a change made by another process is seen
    through roaming's change counter (`data_version`, read at most every ROAMING_CHANGES_CHECK_S),
    and a new day reloads it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._loaded_at = 0.0
        self._in_force: frozenset[int] = frozenset()
        self._through_hub: frozenset[tuple[int, int]] = frozenset()
        self._accepting_our_cards: frozenset[int] = frozenset()

    def clear(self) -> None:
        self._key = None

    def party_in_force(self, party: Party) -> bool:
        """Whether a partner may use functional modules itself: an agreement in force with it, or naming it as hub.

        Never MobilityPlus itself: no call from outside may act as our own party.
        """
        self._refresh_if_due()
        return party.pk in self._in_force

    def party_in_force_through_hub(self, party: Party, hub: Party) -> bool:
        """Whether a hub may speak for `party`: staff agreed with that party through that very hub."""
        self._refresh_if_due()
        return (party.pk, hub.pk) in self._through_hub

    def accepting_our_cards(self) -> frozenset[int]:
        """Ids of parties whose stations take our cards today (our own party included)."""
        self._refresh_if_due()
        return self._accepting_our_cards

    def _refresh_if_due(self) -> None:
        now = time.monotonic()
        key = (timezone.localdate(), partner_data_version.current())
        if key == self._key and now - self._loaded_at < AGREEMENTS_MAX_AGE_S:
            return
        with self._lock:
            try:
                with bounded_queries():
                    rows = list(active_agreements(on=key[0]).values_list("partner_id", "hub_id", "direction"))
                    me = own_party().pk
            except DATABASE_ERRORS as error:
                if not self._loaded_at:
                    raise  # never loaded: nothing to answer from
                # Database stalled or down: keep the copy we have (nobody can change agreements meanwhile).
                logger.warning("Reloading agreements in force failed (%s); the copy in memory is kept", error)
                self._key, self._loaded_at = key, now - AGREEMENTS_MAX_AGE_S + 2.0  # try again in 2 s
                return
            self._in_force = frozenset({partner for partner, _, _ in rows} | {hub for _, hub, _ in rows if hub}) - {me}
            self._through_hub = frozenset((partner, hub) for partner, hub, _ in rows if hub and partner != me)
            self._accepting_our_cards = frozenset(
                {partner for partner, _, direction in rows if direction in OUR_CARDS} | {me}
            )
            self._key = key
            self._loaded_at = now


agreements_in_force = AgreementsInForce()


def _agreements_changed(**_: object) -> None:
    agreements_in_force.clear()


partner_data_changed.connect(_agreements_changed, dispatch_uid="roaming-agreements-in-force")


def agreement_in_force(party: Party) -> bool:
    """Whether a partner may use functional modules itself: an agreement in force with it, or naming it as hub."""
    return agreements_in_force.party_in_force(party)


def agreement_in_force_through_hub(party: Party, hub: Party) -> bool:
    """Whether a hub may speak for one of its clients: an agreement in force with the client through that hub.

    This is staff's confirmation of a hub client: a party a hub introduced by ClientInfo is recorded,
    but the hub may act for it only once staff have agreed with that party through that hub.
    """
    return agreements_in_force.party_in_force_through_hub(party, hub)


def is_our_party(country_code: str, party_id: str) -> bool:
    """Whether an OCPI id is MobilityPlus's own (OCPI_COUNTRY_CODE / OCPI_PARTY_ID)."""
    ours = (settings.OCPI_COUNTRY_CODE.upper(), settings.OCPI_PARTY_ID.upper())
    return (country_code.strip().upper(), party_id.strip().upper()) == ours


def hub_client_confirmed(connection: PartnerConnection) -> bool | None:
    """For a client reached through a hub: whether staff confirmed it (agreement in force through that hub).

    None for a connection not through a hub. Needs `connection.party` and `connection.via_hub.party` loaded.
    """
    if not connection.via_hub_id:
        return None
    return agreement_in_force_through_hub(connection.party, connection.via_hub.party)


def hub_client_for_writes(hub: PartnerConnection, country_code: str, party_id: str) -> PartnerConnection | None:
    """A hub's client it may act for now: attached to this hub, not us, not suspended or disconnected,
    with an agreement in force through this hub. None otherwise."""
    if is_our_party(country_code, party_id):
        return None
    client = hub_client(hub, country_code, party_id)
    if client is None or client.party.is_self or client.status in CLOSED_STATUSES:
        return None
    return client if agreement_in_force_through_hub(client.party, hub.party) else None


def roaming_partners_for_drivers():
    """Partners whose stations take our cards today, with how many of their stations are on the map."""
    from stations.models import Location

    stations = (
        Location.objects.filter(party=OuterRef("pk"), removed_at__isnull=True, published_to_our_drivers=True)
        .order_by()
        .values("party")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Party.objects.filter(pk__in=active_agreements(our_cards=True).values("partner_id"), is_self=False)
        .annotate(station_count=Coalesce(Subquery(stations, output_field=IntegerField()), 0))
        .order_by("name")
    )


CLOSED_STATUSES = (PartnerConnection.Status.SUSPENDED, PartnerConnection.Status.DISCONNECTED)


def connected_connections():
    return PartnerConnection.objects.filter(status=PartnerConnection.Status.CONNECTED).select_related(
        "party", "via_hub"
    )


def hub_client(hub: PartnerConnection, country_code: str, party_id: str) -> PartnerConnection | None:
    """A party's connection through this hub, by its OCPI id."""
    return (
        PartnerConnection.objects.select_related("party")
        .filter(via_hub=hub, party__country_code=country_code.upper(), party__party_id=party_id.upper())
        .first()
    )


def platform_party(connection: PartnerConnection, country_code: str, party_id: str) -> Party | None:
    """A party a platform hosts, recorded as reached through this (direct) connection; never us, never a hub's."""
    if connection.via_hub_id or is_our_party(country_code, party_id):
        return None
    return Party.objects.filter(
        reached_through=connection, country_code=country_code.upper(), party_id=party_id.upper(), is_self=False
    ).first()


# --- Staff console ---------------------------------------------------------------------------------------------------


def partners_for_console(queryset=None):
    """Parties with what the partners list shows, in one query: connection, stations, last sync, open errors."""
    from stations.models import Location, SyncRun

    queryset = queryset if queryset is not None else Party.objects.all()
    stations = (
        Location.objects.filter(party=OuterRef("pk"), removed_at__isnull=True)
        .order_by()
        .values("party")
        .annotate(n=Count("pk"))
        .values("n")
    )
    runs = SyncRun.objects.filter(connection__party=OuterRef("pk"))
    latest_run = runs.order_by("-started_at", "-pk")
    return queryset.select_related("connection", "connection__via_hub__party").annotate(
        station_count=Coalesce(Subquery(stations, output_field=IntegerField()), 0),
        last_sync_at=Subquery(
            runs.filter(status=SyncRun.Status.SUCCEEDED).order_by("-finished_at").values("finished_at")[:1]
        ),
        last_run_status=Subquery(latest_run.values("status")[:1]),
        last_run_rejected=Coalesce(Subquery(latest_run.values("rejected")[:1]), 0),
    )


@dataclass
class RepairSummary:
    """One kind of repair a partner's objects needed in the last REPAIR_DAYS days, with the latest example."""

    kind: str
    label: str
    objects: int
    example: dict


REPAIR_DAYS = 7  # the window of the data-quality page's repair list
REPAIRS_SHOWN = 3


def partner_repairs(party_ids: list[int], today: dt.date | None = None) -> dict[int, list[RepairSummary]]:
    """Per party, its most frequent repairs of the last REPAIR_DAYS days (every module and channel)."""
    today = today or timezone.localdate()
    rows = RepairCount.objects.filter(party_id__in=party_ids, day__gt=today - dt.timedelta(days=REPAIR_DAYS))
    found: dict[tuple[int, str], RepairSummary] = {}
    for party_id, kind, repaired, example in rows.order_by("-day", "-pk").values_list(
        "party_id", "kind", "repaired", "example"
    ):
        summary = found.get((party_id, kind))
        if summary is None:  # the newest row of a kind gives its example
            found[(party_id, kind)] = RepairSummary(kind, KIND_LABELS.get(kind, kind), repaired, example)
        else:
            summary.objects += repaired
    result: dict[int, list[RepairSummary]] = {}
    for (party_id, _kind), summary in found.items():
        result.setdefault(party_id, []).append(summary)
    for summaries in result.values():
        summaries.sort(key=lambda summary: (-summary.objects, summary.kind))
        del summaries[REPAIRS_SHOWN:]
    return result


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
    repairs: list[RepairSummary] = field(default_factory=list)  # most frequent first (pulls and pushes)
    cdrs_price_differs: int = 0  # tariffs: CDRs of the last 30 days whose total differs from their tariff's

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
    from stations.models import EVSE, EvseStatus, Location, SyncRun

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
    repairs = partner_repairs([party.pk for party in parties])
    from tariffs.selectors import price_differs_per_party  # the tariffs capability checks CDR totals

    price_differs = price_differs_per_party()
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
                cdrs_price_differs=price_differs.get(party.pk, 0),
            )
        )
    result.sort(key=lambda quality: (quality.score, quality.party.name))
    return result


# --- Pushes to partners (the durable outbox, roaming/outbox.py) --------------------------------------------------


def emsps_served_by_our_stations(module: str) -> list[Party]:
    """Connected eMSPs (or hubs) with a RECEIVER for `module` whose agreement lets their cards charge at our stations.

    Broadcasts (our EVSE statuses, locations, tariffs) go to each of them once: a hub gets one copy for all its clients
    (an agreement through it, or with the hub itself, covers them), so a client reached through a hub is not listed.
    """
    agreements = active_agreements(our_cards=False)
    covered = set(agreements.values_list("partner_id", flat=True))
    hubs_covering = set(agreements.filter(hub__isnull=False).values_list("hub_id", flat=True))
    parties = []
    for connection in connected_connections().filter(via_hub__isnull=True).order_by("party__name", "pk"):
        party = connection.party
        if party.is_self or not connection.endpoint_url(module, "RECEIVER"):
            continue
        if party.role == Party.Role.HUB:
            if party.pk in covered or party.pk in hubs_covering:
                parties.append(party)
        elif party.acts_as_emsp and party.pk in covered:
            parties.append(party)
    return parties


@dataclass
class PartnerBacklog:
    """One partner's outbox: what waits, what it refused, what it got, and whether it answers."""

    partner: Party
    waiting: int
    failed: int
    delivered: int
    oldest_waiting_at: dt.datetime | None
    down_since: dt.datetime | None
    last_error: str


def outbox_backlog_by_partner() -> list[PartnerBacklog]:
    """Every partner with outbox messages, largest backlog first (two queries)."""
    from django.db.models import Min

    from roaming.models import OutboxLane, OutboxMessage

    counts = (
        OutboxMessage.objects.order_by()
        .values("partner_id")
        .annotate(
            waiting=Count("pk", filter=Q(status=OutboxMessage.Status.PENDING)),
            failed=Count("pk", filter=Q(status=OutboxMessage.Status.FAILED)),
            delivered=Count("pk", filter=Q(status=OutboxMessage.Status.DELIVERED)),
            oldest=Min("created_at", filter=Q(status=OutboxMessage.Status.PENDING)),
        )
    )
    rows = {row["partner_id"]: row for row in counts}
    lanes = {lane.partner_id: lane for lane in OutboxLane.objects.filter(partner_id__in=rows).select_related("partner")}
    parties = {p.pk: p for p in Party.objects.filter(pk__in=[pid for pid in rows if pid not in lanes])}
    backlog = []
    for partner_id, row in rows.items():
        lane = lanes.get(partner_id)
        backlog.append(
            PartnerBacklog(
                partner=lane.partner if lane else parties[partner_id],
                waiting=row["waiting"],
                failed=row["failed"],
                delivered=row["delivered"],
                oldest_waiting_at=row["oldest"],
                down_since=lane.down_since if lane else None,
                last_error=lane.last_error if lane else "",
            )
        )
    return sorted(backlog, key=lambda b: (-b.waiting, -b.failed, b.partner.name))
