"""Reads about parties, connections and agreements."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q
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


# --- Staff console ---------------------------------------------------------------------------------------------------


def partners_for_console(queryset=None):
    """Parties with their connection and its hub loaded (each app annotates its own figures on top)."""
    queryset = queryset if queryset is not None else Party.objects.all()
    return queryset.select_related("connection", "connection__via_hub__party")


@dataclass
class HubClient:
    """A party a hub introduced (ClientInfo), with what the hub says of it and whether staff confirmed it."""

    party: Party
    connection: PartnerConnection
    client_info_status: str  # the hub's ConnectionStatus for it ("" when it never said)
    client_info_at: dt.datetime | None
    confirmed: bool  # an agreement in force with it through this hub: the hub may act for it


def hub_clients(hub: PartnerConnection) -> list[HubClient]:
    """The parties reached through this hub, by name, with their ClientInfo status and staff's confirmation."""
    confirmed = set(active_agreements().filter(hub=hub.party).values_list("partner_id", flat=True))
    connections = PartnerConnection.objects.filter(via_hub=hub).select_related("party").order_by("party__name")
    return [
        HubClient(
            party=client.party,
            connection=client,
            client_info_status=client.hub_client_status,
            client_info_at=client.hub_client_updated_at,
            confirmed=client.party_id in confirmed,
        )
        for client in connections
    ]


@dataclass
class PartnerRoaming:
    """What roaming knows about one partner: how we are connected, what they offer, what we agreed."""

    connection: PartnerConnection | None
    endpoints: list[dict]  # their modules and roles (the hub's when routed)
    agreements_in_force: list[RoamingAgreement]
    other_agreements: list[RoamingAgreement]  # drafts, suspended, ended, not yet or no longer valid
    hub_clients: list[HubClient]
    confirmed_by_staff: bool | None  # for a hub client: may the hub act for it (None when not through a hub)


def partner_roaming(party: Party) -> PartnerRoaming:
    """Connection, endpoints, agreements and (for a hub) its clients, in a few queries."""
    connection = PartnerConnection.objects.select_related("via_hub__party").filter(party=party).first()
    agreements = list(party.agreements.select_related("hub").order_by("-valid_from", "-pk"))
    in_force = set(active_agreements().filter(partner=party).values_list("pk", flat=True))
    endpoints = connection.transport.endpoints if connection else []
    return PartnerRoaming(
        connection=connection,
        endpoints=sorted(endpoints, key=lambda e: (e.get("identifier", ""), e.get("role", ""))),
        agreements_in_force=[a for a in agreements if a.pk in in_force],
        other_agreements=[a for a in agreements if a.pk not in in_force],
        hub_clients=hub_clients(connection) if connection and party.role == Party.Role.HUB else [],
        confirmed_by_staff=(
            active_agreements().filter(partner=party, hub=connection.via_hub.party).exists()
            if connection and connection.via_hub_id
            else None
        ),
    )


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


def credentials_action_refusal(connection: PartnerConnection | None, action: str) -> str:
    """Why a credentials action ("reread", "rotate", "unregister") cannot run for this connection; "" when it can.

    The conditions roaming.services checks when the job runs, checked before staff queue it.
    """
    if connection is None:
        return "no connection yet"
    if connection.via_hub_id:
        return f"reached through {connection.via_hub.party.name}: the tokens are the hub's (act on the hub)"
    if not connection.token_to_them_encrypted:
        return "not registered directly with this partner: we hold no token for their side (Connect first)"
    if action == "reread" and not connection.versions_url:
        return "no versions URL on record: nothing to re-read"
    if action in ("rotate", "unregister") and not connection.credentials_url:
        return "they list no credentials endpoint: nothing to call (re-read their endpoints first)"
    return ""


@dataclass
class DeliveryBacklog:
    """Outgoing OCPI calls to one partner not yet through."""

    waiting: int = 0  # in the outbox, being delivered or retried
    failed: int = 0  # refused by the partner: staff must look (and may resend)


def outbox_backlog_counts(party_ids: list[int] | None = None) -> dict[int, DeliveryBacklog]:
    """Waiting and refused outbox messages per partner id (one query); partners with none are absent."""
    from roaming.outbox_models import OutboxMessage

    rows = OutboxMessage.objects.exclude(status=OutboxMessage.Status.DELIVERED)
    if party_ids is not None:
        rows = rows.filter(partner_id__in=party_ids)
    result: dict[int, DeliveryBacklog] = {}
    for partner_id, status, count in (
        rows.order_by().values("partner_id", "status").annotate(n=Count("pk")).values_list("partner_id", "status", "n")
    ):
        backlog = result.setdefault(partner_id, DeliveryBacklog())
        if status == OutboxMessage.Status.FAILED:
            backlog.failed += count
        else:
            backlog.waiting += count
    return result
