"""Pulling a partner's Tariffs SENDER: OCPI pages (Link headers) as for locations, a delta by `date_from`, each bad
object rejected alone (kept on the run with its reason), a full pull now and then that drops what the feed no
longer lists. One run = one TariffPull.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from roaming.feed_owners import FeedOwners, ForeignObject
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError
from roaming.ocpi.envelope import format_datetime
from roaming.services import record_contact
from stations.pull_lock import WORKER_DIED
from tariffs import services
from tariffs.models import Tariff, TariffPull

logger = logging.getLogger(__name__)

MAX_REJECTS_KEPT = 100


class PullNotPossible(Exception):
    """Not connected, or no Tariffs SENDER endpoint."""


class PullBusy(Exception):
    """A pull of this partner's tariffs is already running."""


class Owners(FeedOwners):
    """The feed-owner rule (roaming.feed_owners) for a tariff object as sent."""

    def resolve_tariff(self, obj: dict) -> Party | None:
        """The owner to store it under; None when skipped; InvalidTariff when a CPO sends another's."""
        try:
            return self.resolve(str(obj.get("country_code", "")).upper(), str(obj.get("party_id", "")).upper())
        except ForeignObject as error:
            raise services.InvalidTariff(str(error)) from error


def last_successful_start(connection: PartnerConnection) -> dt.datetime | None:
    """Where the next delta starts: the start of the last pull that read its whole window."""
    return (
        connection.tariff_pulls.filter(status=TariffPull.Status.SUCCEEDED)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )


def _busy(connection: PartnerConnection, now: dt.datetime) -> bool:
    fresh = now - dt.timedelta(seconds=settings.TARIFFS_PULL_STALE_S)
    running = connection.tariff_pulls.filter(status=TariffPull.Status.RUNNING)
    # A run older than the stale limit lost its worker: closed here, so it no longer blocks anyone.
    running.filter(started_at__lt=fresh).update(
        status=TariffPull.Status.FAILED, finished_at=now, error=f"{WORKER_DIED}: still running after the stale limit"
    )
    return running.filter(started_at__gte=fresh).exists()


def pull_tariffs(connection_id: int, full: bool = False, *, client: OcpiClient | None = None) -> TariffPull:
    """Pull one partner's tariffs (a delta from the last successful pull unless `full` or the first)."""
    connection = PartnerConnection.objects.select_related("party", "via_hub").get(pk=connection_id)
    if connection.status != PartnerConnection.Status.CONNECTED:
        raise PullNotPossible(f"{connection}: not connected")
    url = connection.endpoint_url("tariffs", "SENDER")
    if not url:
        raise PullNotPossible(f"{connection}: no tariffs SENDER endpoint")
    started = timezone.now()
    if _busy(connection, started):
        raise PullBusy(f"A tariff pull for {connection.party.ocpi_id} is already running")
    date_from = None if full else last_successful_start(connection)
    run = TariffPull.objects.create(
        connection=connection, full=date_from is None, started_at=started, date_from=date_from, date_to=started
    )
    client = client or OcpiClient.for_connection(
        connection, retries=settings.FEEDS_PAGE_RETRIES, backoff=settings.FEEDS_RETRY_BACKOFF_S
    )
    params = {"limit": settings.TARIFFS_PAGE_LIMIT, "date_to": format_datetime(started)}
    if date_from:
        params["date_from"] = format_datetime(date_from)
    owners = Owners(connection)
    seen: set[int] = set()
    try:
        for reply in client.pages(url, params=params, retry_all=True):
            if not isinstance(reply.data, list):
                raise OcpiClientError("json", f"page {run.pages + 1}: data is not a list")
            for obj in reply.data:
                _one(run, connection, owners, obj, seen)
            run.pages += 1
            run.save(update_fields=["pages", "stored", "unchanged", "rejected", "skipped", "rejects"])
        if run.full:
            run.removed = _remove_unseen(connection, seen)
        run.status = TariffPull.Status.SUCCEEDED
        record_contact(connection.pk)
    except OcpiClientError as error:
        # Pages already stored stay stored; the next delta starts from the last successful pull.
        logger.warning("Tariff pull of %s failed after %d pages: %s", connection, run.pages, error)
        run.status = TariffPull.Status.FAILED
        run.error = str(error)[:2000]
    except Exception as error:
        run.status, run.error = TariffPull.Status.FAILED, f"{error.__class__.__name__}: {error}"
        run.finished_at = timezone.now()
        run.save()
        raise
    run.finished_at = timezone.now()
    run.save()
    return run


def _one(run: TariffPull, connection: PartnerConnection, owners: Owners, obj, seen: set[int]) -> None:
    """Check and store one feed object; a bad one is rejected alone (its reason kept on the run)."""
    object_id = str(obj.get("id", ""))[:36] if isinstance(obj, dict) else ""
    try:
        checked = services.check_tariff(obj)
        owner = owners.resolve_tariff(obj)
        if owner is None:
            run.skipped += 1
            return
        result = services.store_partner_tariff(owner, checked[0]["id"], obj, source=connection, checked=checked)
    except services.InvalidTariff as error:
        _reject(run, object_id, str(error))
        return
    except Exception as error:  # input nobody foresaw: this object is rejected, the feed goes on
        logger.exception("Tariff %r of %s could not be stored", object_id, connection)
        _reject(run, object_id, f"could not be stored: {error.__class__.__name__}: {error}")
        return
    seen.add(result.tariff.pk)
    if result.changed:
        run.stored += 1
    else:
        run.unchanged += 1


def _reject(run: TariffPull, object_id: str, reason: str) -> None:
    run.rejected += 1
    if len(run.rejects) < MAX_REJECTS_KEPT:
        run.rejects.append({"id": object_id, "error": reason[:500]})


def _remove_unseen(connection: PartnerConnection, seen: set[int]) -> int:
    """A full pull is the truth for the tariffs this feed delivered: those it no longer lists are gone."""
    gone = Tariff.objects.filter(source=connection).exclude(pk__in=seen).exclude(party__is_self=True)
    count = 0
    for tariff in gone:
        tariff.delete()
        count += 1
    return count


def connections_due(now: dt.datetime | None = None) -> list[tuple[int, bool]]:
    """(connection id, full) of every connected partner with a Tariffs SENDER whose pull interval has passed."""
    interval = settings.TARIFFS_PULL_INTERVAL_MINUTES
    if interval <= 0:
        return []
    now = now or timezone.now()
    due = []
    for connection in PartnerConnection.objects.filter(status=PartnerConnection.Status.CONNECTED).select_related(
        "via_hub", "party"
    ):
        if not connection.endpoint_url("tariffs", "SENDER"):
            continue
        runs = connection.tariff_pulls.exclude(Q(status=TariffPull.Status.FAILED) & Q(error__startswith=WORKER_DIED))
        last = runs.order_by("-started_at").values_list("started_at", flat=True).first()
        if last and last + dt.timedelta(minutes=interval) > now:
            continue
        last_full = (
            connection.tariff_pulls.filter(full=True, status=TariffPull.Status.SUCCEEDED)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        full = last_full is None or last_full + dt.timedelta(hours=settings.TARIFFS_FULL_PULL_HOURS) <= now
        due.append((connection.pk, full))
    return due
