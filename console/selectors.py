"""The staff console's pages, composed from each app's own figures (this is the only place that reads them all)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from cards import selectors as cards
from charging import selectors as charging
from console.charts import FeedChart, feed_chart
from console.models import StaffJob
from roaming import selectors as roaming
from roaming.models import PartnerConnection, Party
from roaming.selectors import DeliveryBacklog
from stations import feed_health

# --- figures owned by parts not built yet: one function each, swapped in one place when they land -------------


def outgoing_deliveries_by_partner(party_ids: list[int] | None = None) -> dict[int, DeliveryBacklog]:
    """Outgoing OCPI deliveries (token, status, tariff, session and CDR pushes) not yet through, per partner id."""
    return roaming.outbox_backlog_counts(party_ids)


def price_mismatches_by_partner(party_ids: list[int] | None = None) -> dict[int, int]:
    """CDRs of the last 30 days whose stated total differs from their tariff's, per partner id (tariffs' check)."""
    from tariffs.selectors import price_differs_per_party

    counts = price_differs_per_party()
    return counts if party_ids is None else {pk: n for pk, n in counts.items() if pk in set(party_ids)}


# --- a partner's page ----------------------------------------------------------------------------------------


@dataclass
class PartnerDashboard:
    party: Party
    roaming: roaming.PartnerRoaming
    last_contact_at: dt.datetime | None
    last_contact_what: str
    stations: feed_health.StationFigures
    sync: feed_health.SyncProgress | None  # running, or the latest run's outcome
    runs: list
    chart: FeedChart | None
    authorizations: cards.AuthorizationFigures
    authorizations_since: dt.datetime
    deliveries: DeliveryBacklog
    price_mismatches: int
    charging: dict[str, int]
    month_start: dt.datetime
    jobs: list[StaffJob]
    refusals: dict[str, str] = field(default_factory=dict)  # action -> why it cannot run now ("" = it can)


def month_start(now: dt.datetime) -> dt.datetime:
    local = timezone.localtime(now)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def partner_dashboard(party: Party, now: dt.datetime | None = None) -> PartnerDashboard:
    """Everything a partner's page shows above its form; a bounded number of queries whatever the partner's size."""
    now = now or timezone.now()
    partner = roaming.partner_roaming(party)
    connection = partner.connection
    runs = feed_health.recent_sync_runs(connection.pk) if connection else []
    sync = feed_health.latest_sync_progress(connection.pk) if connection else None
    last_contact, what = last_contact_of(connection, runs)
    since = now - dt.timedelta(hours=24)
    started = month_start(now)
    chart = None
    if connection and runs:
        chart = feed_chart(feed_health.feed_days([connection.pk], days=30)[connection.pk])
    return PartnerDashboard(
        party=party,
        roaming=partner,
        last_contact_at=last_contact,
        last_contact_what=what,
        stations=feed_health.partner_station_figures(party, now),
        sync=sync,
        runs=runs,
        chart=chart,
        authorizations=cards.partner_authorizations(party, since),
        authorizations_since=since,
        deliveries=outgoing_deliveries_by_partner([party.pk]).get(party.pk, DeliveryBacklog()),
        price_mismatches=price_mismatches_by_partner([party.pk]).get(party.pk, 0),
        charging=charging.partner_charging(party, started),
        month_start=started,
        jobs=list(StaffJob.objects.filter(party=party).select_related("requested_by")[:6]),
        refusals={
            "pull": feed_health.pull_refusal(connection),
            "reread": roaming.credentials_action_refusal(connection, "reread"),
            "rotate": roaming.credentials_action_refusal(connection, "rotate"),
            "unregister": roaming.credentials_action_refusal(connection, "unregister"),
        },
    )


def last_contact_of(connection: PartnerConnection | None, runs: list) -> tuple[dt.datetime | None, str]:
    """The latest moment they answered us or called us: the connection's record, or a successful sync after it."""
    if connection is None:
        return None, ""
    candidates = []
    if connection.last_contact_at:
        candidates.append((connection.last_contact_at, "an OCPI call"))
    synced = [run.finished_at for run in runs if run.status == "succeeded" and run.finished_at]
    if synced:
        candidates.append((max(synced), "a feed sync"))
    if connection.via_hub_id and connection.via_hub.last_contact_at:
        candidates.append((connection.via_hub.last_contact_at, f"through {connection.via_hub.party.name}"))
    if not candidates:
        return None, ""
    return max(candidates, key=lambda candidate: candidate[0])


# --- the staff overview ------------------------------------------------------------------------------------------


@dataclass
class Attention:
    party: Party
    reasons: list[str]


@dataclass
class StaffOverview:
    attention: list[Attention]
    authorizations: dict[str, int]
    sessions: dict[str, int]
    day_start: dt.datetime
    running_syncs: int
    jobs: list[StaffJob]


def partners_needing_attention() -> list[Attention]:
    """Partners with a connection error or a handshake to finish, a failed latest sync, deliveries waiting or failed,
    or price mismatches; a fixed number of queries."""
    parties = list(
        feed_health.with_latest_run(roaming.partners_for_console(Party.objects.filter(is_self=False))).order_by("name")
    )
    ids = [party.pk for party in parties]
    deliveries = outgoing_deliveries_by_partner(ids)
    mismatches = price_mismatches_by_partner(ids)
    found = []
    for party in parties:
        reasons = []
        connection = getattr(party, "connection", None)  # RelatedObjectDoesNotExist is an AttributeError
        if connection is not None:
            if connection.last_error:
                reasons.append(f"connection error: {connection.last_error}")
            if connection.needs_attention:
                reasons.append(connection.needs_attention)
        if party.last_run_status == "failed":
            reasons.append("latest feed sync failed")
        if party.last_run_rejected:
            reasons.append(f"{party.last_run_rejected} object(s) rejected in the latest sync")
        backlog = deliveries.get(party.pk)
        if backlog and backlog.failed:
            reasons.append(f"outgoing deliveries failed: {backlog.failed}")
        if backlog and backlog.waiting:
            reasons.append(f"outgoing deliveries waiting: {backlog.waiting}")
        if mismatches.get(party.pk):
            reasons.append(f"CDR price mismatches: {mismatches[party.pk]}")
        if reasons:
            found.append(Attention(party, reasons))
    return found


def staff_overview(now: dt.datetime | None = None) -> StaffOverview:
    now = now or timezone.now()
    day_start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return StaffOverview(
        attention=partners_needing_attention(),
        authorizations=cards.authorizations_since(day_start),
        sessions=charging.sessions_since(day_start),
        day_start=day_start,
        running_syncs=feed_health.running_syncs_count(),
        jobs=list(StaffJob.objects.select_related("party", "requested_by")[:8]),
    )
