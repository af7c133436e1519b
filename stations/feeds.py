"""Pulling a partner's location feed: OCPI pagination, per-page upserts, removal after a full sync.

One run = one `SyncRun`. Memory stays flat: a page is parsed, stored in one transaction and dropped;
what a full run has seen is kept as a bitmap of location primary keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db import connection as db
from django.db.models import Q
from django.utils import timezone

from roaming.feed_owners import FeedOwners, ForeignObject
from roaming.models import PartnerConnection
from roaming.ocpi.client import OcpiClient, OcpiClientError, OcpiReply
from roaming.ocpi.envelope import format_datetime
from roaming.ocpi.repairs import RepairTally
from roaming.services import record_contact
from stations.models import Location, SyncRun
from stations.ocpi_locations import InvalidObject, ParsedLocation, parse_location
from stations.pull_lock import LOCK_UNAVAILABLE, WORKER_DIED, LockUnavailable, PullBusy, PullLock, PullTakenOver
from stations.services import (
    StoreResult,
    analyze_station_tables,
    mark_locations_removed,
    record_repairs,
    reject_object,
    store_locations,
)
from stations.storable import MAX_DEPTH, shallower_json

logger = logging.getLogger(__name__)


class PullNotPossible(Exception):
    """The connection has no Locations SENDER endpoint (or is not connected)."""


# ---------------------------------------------------------------------------------------------
# Owners: whose locations a feed may carry


class Owners(FeedOwners):
    """The feed-owner rule (roaming.feed_owners) for a parsed location."""

    def resolve_location(self, item: ParsedLocation) -> int | None:
        """Our Party pk for the location; None when it is skipped; raises InvalidObject when not allowed."""
        try:
            owner = self.resolve(item.country_code, item.party_code)
        except ForeignObject as error:
            raise InvalidObject(str(error)) from error
        return owner.pk if owner is not None else None


def feed_party_ids(connection: PartnerConnection) -> Q:
    """The locations a full sync of this connection is the truth for."""
    return Q(source=connection)


# ---------------------------------------------------------------------------------------------
# The run


class SeenBitmap:
    """Location primary keys seen in a run: one bit each, so 550,000 locations take ~70 kB."""

    def __init__(self) -> None:
        self.bits = bytearray()

    def add(self, pk: int) -> None:
        byte = pk >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte - len(self.bits) + 1 + 4096))
        self.bits[byte] |= 1 << (pk & 7)

    def __contains__(self, pk: int) -> bool:
        byte = pk >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (pk & 7)))


def read_ahead(replies: Iterator[OcpiReply]) -> Iterator[OcpiReply]:
    """The next page downloads and decodes while this one is written (one page ahead, no more)."""
    slot: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def fetch() -> None:
        try:
            for reply in replies:
                while not stop.is_set():
                    try:
                        slot.put(reply, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slot.put(done)
        except BaseException as error:  # handed to the consumer, raised there
            slot.put(error)

    thread = threading.Thread(target=fetch, name="feed-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = slot.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def last_successful_start(connection: PartnerConnection) -> dt.datetime | None:
    """Where the next delta starts: the start of the last run that read its whole window.

    A run whose window shifted under it (offset pages of a changing list may skip an object) does not
    count: the next run reads from where that run started reading.
    """
    runs = connection.sync_runs.filter(status=SyncRun.Status.SUCCEEDED).order_by("-started_at")
    run = runs.first()
    if run is None:
        return None
    if run.window_shifted:
        return run.date_from
    return run.started_at


def pull_locations(
    connection_id: int,
    full: bool = False,
    *,
    on_page: Callable[[SyncRun, int | None], None] | None = None,
    client: OcpiClient | None = None,
) -> SyncRun:
    """Pull one partner's locations; raises PullBusy when a run for the partner is in progress.

    Incremental runs ask for `date_from` = the start of the last successful run (so a failed run is
    simply redone from there; unchanged objects cost no writes). `date_to` is fixed at this run's
    start, so objects updated during the crawl are left for the next run instead of shifting pages.
    `on_page(run, total_count)` is called after each stored page (progress bars).
    """
    connection = PartnerConnection.objects.select_related("party", "via_hub").get(pk=connection_id)
    url = connection.endpoint_url("locations", "SENDER")
    if not url:
        raise PullNotPossible(f"{connection}: no locations SENDER endpoint")
    lock = PullLock(connection.pk)
    try:
        acquired = lock.acquire()
    except LockUnavailable as error:
        # Recorded, so staff see in the feed's runs why nothing was pulled (and the scheduler tries at the next tick).
        now = timezone.now()
        SyncRun.objects.create(
            connection=connection,
            full=full,
            status=SyncRun.Status.FAILED,
            started_at=now,
            finished_at=now,
            error=f"{error}; skipped, pulled again once it is back",
        )
        logger.warning("Location pull of %s skipped: %s", connection.party.ocpi_id, error)
        raise
    if not acquired:
        raise PullBusy(f"A location pull for {connection.party.ocpi_id} is already running")
    try:
        with fewer_gc_passes():
            return _run(connection, url, full, lock, on_page, client)
    finally:
        lock.release()


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Rarer cyclic GC during a pull: a page allocates millions of short-lived objects, freed by reference
    counting, and each default GC pass re-walks every live object (a tenth of the worker's CPU)."""
    before = gc.get_threshold()
    gc.set_threshold(200_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


# What each stored page updates on its run: staff follow a running pull through these (console's progress panel).
PROGRESS_FIELDS = ["pages", "created", "updated", "unchanged", "rejected", "repaired", "skipped", "expected_objects"]


def _run(connection, url, full, lock, on_page, client) -> SyncRun:
    started = timezone.now()
    date_from = None if full else last_successful_start(connection)
    run = SyncRun.objects.create(
        connection=connection, full=date_from is None, started_at=started, date_from=date_from, date_to=started
    )
    lock.attach(run.pk)
    # We hold the lock, so any other run of this partner still marked running lost its worker.
    SyncRun.objects.filter(connection=connection, status=SyncRun.Status.RUNNING).exclude(pk=run.pk).update(
        status=SyncRun.Status.FAILED,
        error=f"{WORKER_DIED}: its lock was gone when run {run.pk} started",
        finished_at=timezone.now(),
    )
    client = client or FeedClient.for_connection(
        connection, retries=settings.FEEDS_PAGE_RETRIES, backoff=settings.FEEDS_RETRY_BACKOFF_S
    )
    params = {"limit": settings.FEEDS_PAGE_LIMIT, "date_to": format_datetime(started)}
    if date_from:
        params["date_from"] = format_datetime(date_from)
    owners = Owners(connection)
    seen = SeenBitmap()
    first_total = None
    writer = PageWriter(connection, run) if settings.FEEDS_WRITE_BEHIND and db.vendor == "postgresql" else None

    statistics = StatisticsRefresh()

    def stored(result: StoreResult) -> None:
        run.pages += 1
        run.created += result.created
        run.updated += result.updated
        run.unchanged += result.unchanged
        run.rejected += result.rejected
        for pk in result.stored_ids:
            seen.add(pk)
        statistics.after(run.created)

    try:
        try:
            for reply in read_ahead(client.pages(url, params=params, retry_all=True)):
                if first_total is None:
                    first_total = reply.total_count
                    run.expected_objects = first_total  # for the progress staff see (pages, rate, time left)
                elif reply.total_count is not None and reply.total_count < first_total:
                    # With date_to fixed nothing can enter the window; an object that left it shifted the offsets.
                    run.window_shifted = True
                parsed = _checked_page(run, connection, owners, reply.data)
                if writer:
                    for result in writer.submit(parsed):
                        stored(result)
                else:
                    stored(store_page(parsed, source=connection, sync_run=run))
                run.save(update_fields=PROGRESS_FIELDS)
                lock.refresh()
                if on_page:
                    on_page(run, reply.total_count)
        finally:
            # Pages handed to the writer are stored (or its error raised) before the run ends.
            if writer:
                for result in writer.finish():
                    stored(result)
                if on_page:
                    on_page(run, None)
        if run.full:
            run.removed = _remove_unseen(connection, seen, run)
        run.status = SyncRun.Status.SUCCEEDED
        record_contact(connection.pk)
        if run.window_shifted:
            run.error = "The feed changed during the crawl (X-Total-Count fell); the next run reads this window again."
            if run.deferred_removals:
                run.error += (
                    f" {len(run.deferred_removals)} location(s) missing from it stay on the map until a second "
                    "full sync misses them too."
                )
    except PullTakenOver as error:
        # Our heartbeat went stale and a newer run took over (and closed this one as failed): stop, write nothing.
        logger.warning("Location pull of %s stopped after %d pages: %s", connection, run.pages, error)
        run.refresh_from_db()
        if run.status == SyncRun.Status.RUNNING:  # nobody closed it (the lock expired rather than taken over)
            run.status = SyncRun.Status.FAILED
            run.error = f"stopped: {error}"
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "error", "finished_at"])
        return run
    except (OcpiClientError, FeedPageError) as error:
        # Pages already stored stay stored; the next incremental run starts from the last successful one.
        logger.warning("Location pull of %s failed after %d pages: %s", connection, run.pages, error)
        run.status = SyncRun.Status.FAILED
        run.error = str(error)
    except Exception as error:
        run.status = SyncRun.Status.FAILED
        run.error = f"{error.__class__.__name__}: {error}"
        run.finished_at = timezone.now()
        run.save()
        raise
    run.finished_at = timezone.now()
    run.save()
    return run


class StatisticsRefresh:
    """ANALYZE the station tables each time a run has doubled the locations it created.

    The planner picks its plan for "these 1,000 ids of this party" from table statistics; on tables
    that grew from nothing without them it scans every location of the party for each page (0.6 s a
    page at 550,000). Doubling keeps it to about ten passes of a bounded sample in a first full pull.
    """

    def __init__(self) -> None:
        self.next_at = 1

    def after(self, created: int) -> None:
        if created >= self.next_at:
            analyze_station_tables()
            self.next_at = created * 2


class FeedPageError(Exception):
    """A page whose data is not a list of objects."""


class FeedClient(OcpiClient):
    """Reads feed pages even when one object in them is nested too deep for the JSON parser."""

    def decode(self, response):
        try:
            return super().decode(response)
        except RecursionError:
            # Only the over-deep parts are cut (to `null`): the object holding one is still deeper than
            # MAX_DEPTH and is rejected alone; its neighbours on the page are stored.
            return json.loads(shallower_json(response.text, MAX_DEPTH + 45))


def _checked_page(run: SyncRun, connection, owners: Owners, data) -> list[ParsedLocation]:
    """The page's objects we store; invalid ones are rejected (kept with their error), others' skipped."""
    if not isinstance(data, list):
        raise FeedPageError(f"page {run.pages + 1}: data is not a list")
    parsed: list[ParsedLocation] = []
    repairs = RepairTally("locations", "pull")  # written once for the page, and only if anything was repaired
    for obj in data:
        object_id = obj.get("id", "") if isinstance(obj, dict) else ""
        try:
            item = parse_location(obj, now=run.started_at)
            party_pk = owners.resolve_location(item)
        except InvalidObject as error:
            reject_object(connection, obj, str(error), sync_run=run, object_id=object_id)
            run.rejected += 1
            continue
        except Exception as error:
            # A check that broke on input nobody foresaw: this object is rejected, the feed goes on.
            logger.exception("Checking object %r of %s failed", object_id, connection)
            reject_object(
                connection,
                obj,
                f"could not be checked: {error.__class__.__name__}: {error}",
                sync_run=run,
                object_id=object_id,
            )
            run.rejected += 1
            continue
        if party_pk is None:
            run.skipped += 1
            continue
        item.party_id = party_pk
        if item.repairs:
            record_repairs(repairs, connection, item, sync_run=run)
        parsed.append(item)
    run.repaired += repairs.repaired_objects
    repairs.save()
    return parsed


def store_page(parsed: list[ParsedLocation], *, source: PartnerConnection, sync_run: SyncRun) -> StoreResult:
    """Store a checked page in one write; if the database still refuses it, store its objects one by one.

    Validation should catch every value the database refuses; this is the safety net for what it misses: each
    object then goes in its own transaction, and only the ones the database refuses are rejected (with the
    database's reason), so one object can never stop a feed. A lost or broken database connection is not an
    object's fault and fails the page as before.
    """
    try:
        return store_locations(parsed, source=source, durable=False)
    except (OperationalError, InterfaceError):
        raise
    except Exception as error:
        logger.warning(
            "Page %d of %s refused by the database (%s); storing its objects one by one",
            sync_run.pages + 1,
            source,
            error,
        )
    result = StoreResult()
    for item in parsed:
        try:
            one = store_locations([item], source=source, durable=False)
        except (OperationalError, InterfaceError):
            raise
        except Exception as error:
            reject_object(
                source,
                item.location["raw"],
                f"could not be stored: {error.__class__.__name__}: {error}",
                sync_run=sync_run,
                object_id=item.location["ocpi_id"],
            )
            result.rejected += 1
            continue
        result.created += one.created
        result.updated += one.updated
        result.unchanged += one.unchanged
        result.stored_ids.extend(one.stored_ids)
        result.changed_ids.extend(one.changed_ids)
    return result


class PageWriter:
    """Stores pages in a thread of its own (its own database connection), one page behind the reader.

    The database works on page N while this process checks page N+1; pages are stored in order, each in
    its own transaction. At most one page waits, so memory stays flat.
    """

    def __init__(self, source: PartnerConnection, sync_run: SyncRun):
        self.source = source
        self.sync_run = sync_run
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="feed-writer", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            while (job := self.jobs.get()) is not None:
                if self.error is None:
                    try:
                        self.results.put(store_page(job, source=self.source, sync_run=self.sync_run))
                    except BaseException as error:  # raised in the reading thread
                        self.error = error
        finally:
            db.close()

    def _done(self) -> list[StoreResult]:
        if self.error is not None:
            raise self.error
        done = []
        while not self.results.empty():
            done.append(self.results.get())
        return done

    def submit(self, parsed: list[ParsedLocation]) -> list[StoreResult]:
        """Queue a page; returns the results of pages stored since the last call."""
        done = self._done()
        self.jobs.put(parsed)
        return done

    def finish(self) -> list[StoreResult]:
        self.jobs.put(None)
        self.thread.join()
        return self._done()


def _remove_unseen(connection: PartnerConnection, seen: SeenBitmap, run: SyncRun) -> int:
    """Mark removed what a full sync did not see; when its window shifted, only what the last full sync also missed.

    An object updated during the crawl leaves the fixed window, and the offsets of the partner's pages shift:
    the object itself and an unchanged one at a page boundary can go unseen while both still exist. Such
    misses wait for a second full sync (`SyncRun.deferred_removals`); the next delta re-reads the moved ones.
    """
    candidates = (
        Location.objects.filter(feed_party_ids(connection), removed_at__isnull=True)
        .values_list("pk", flat=True)
        .order_by("pk")
    )
    missing = [pk for pk in candidates.iterator(chunk_size=10000) if pk not in seen]
    if run.window_shifted:
        previous = (
            connection.sync_runs.filter(full=True, status=SyncRun.Status.SUCCEEDED)
            .exclude(pk=run.pk)
            .order_by("-started_at")
            .values_list("deferred_removals", flat=True)
            .first()
        )
        missed_before = set(previous or [])
        run.deferred_removals = [pk for pk in missing if pk not in missed_before]
        missing = [pk for pk in missing if pk in missed_before]
    return mark_locations_removed(missing)


# ---------------------------------------------------------------------------------------------
# Scheduling


def connections_due(now: dt.datetime | None = None) -> list[tuple[int, bool]]:
    """(connection id, full) for every connection whose pull interval has passed since its last run."""
    now = now or timezone.now()
    due = []
    connections = PartnerConnection.objects.filter(
        status=PartnerConnection.Status.CONNECTED, location_pull_interval_minutes__gt=0
    ).select_related("via_hub")
    for connection in connections:
        if not connection.endpoint_url("locations", "SENDER"):
            continue
        # A run whose worker died does not count: its partner is pulled again at the next tick, not an interval later.
        last = (
            connection.sync_runs.exclude(status=SyncRun.Status.FAILED, error__startswith=WORKER_DIED)
            .exclude(status=SyncRun.Status.FAILED, error__startswith=LOCK_UNAVAILABLE)
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        if last and last + dt.timedelta(minutes=connection.location_pull_interval_minutes) > now:
            continue
        last_full = (
            connection.sync_runs.filter(full=True, status=SyncRun.Status.SUCCEEDED)
            .values_list("started_at", flat=True)
            .first()
        )
        full = last_full is None or last_full + dt.timedelta(hours=settings.FEEDS_FULL_SYNC_HOURS) <= now
        due.append((connection.pk, full))
    return due
