"""A real Celery worker (a `celery -A mobilityplus worker` process) killed with SIGKILL in the middle of a pull.

The feed is a slow OCPI server on 127.0.0.1 (a second a page); the worker processes use the test database and
the test Redis, with a short broker visibility timeout so the lost message comes back within the test.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.db import connection as db_connection
from django.utils import timezone

from mobilityplus.celery import app as celery_app
from stations.models import Location, SyncRun
from stations.pull_lock import WORKER_DIED
from tests.conftest import TEST_REDIS_URL
from tests.feeds_fixtures import LocationFeed, cpo_connection, location

ROOT = Path(__file__).resolve().parent.parent
VISIBILITY_TIMEOUT_S = 8  # longer than a whole pull of the slow feed (5 s), so a live pull is not handed out twice


def database_url() -> str:
    """The test database (test_...), which the worker processes must use to see this test's rows."""
    s = db_connection.settings_dict
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{s['USER']}{password}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Worker:
    """`celery -A mobilityplus worker` (prefork, one child) in its own process group, as a container runs it."""

    def __init__(self, name: str, log_dir: Path):
        self.log = log_dir / f"{name}.log"
        env = dict(
            os.environ,
            DATABASE_URL=database_url(),
            REDIS_URL=TEST_REDIS_URL,
            BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
            FEEDS_PAGE_LIMIT="10",
        )
        command = [sys.executable, "-m", "celery", "-A", "mobilityplus", "worker", "--pool=prefork"]
        command += ["--concurrency=1", "--without-gossip", "--without-mingle", "--loglevel=INFO", "-n", f"{name}@%h"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        """SIGKILL to the worker and its pool child at once: nothing gets to ack, release or clean up."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for(condition, timeout: float, what: str, workers=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(f"--- {w.log.name}\n{w.output()}" for w in workers)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


# The cache the worker processes share (their REDIS_URL), whatever cache this test process was given.
worker_cache = RedisCache(TEST_REDIS_URL, {})


def forget_queued_tasks() -> None:
    """Messages of earlier tests, queued or left unacked by a killed worker, in the test broker."""
    redis.Redis.from_url(TEST_REDIS_URL).delete("celery", "unacked", "unacked_index", "unacked_mutex")


@pytest.fixture
def workers(transactional_db, tmp_path):
    started: list[Worker] = []
    forget_queued_tasks()
    celery_app.conf.task_always_eager = False
    try:
        yield lambda name: started.append(Worker(name, tmp_path)) or started[-1]
    finally:
        celery_app.conf.task_always_eager = True
        for worker in started:
            worker.kill()
        forget_queued_tasks()


def test_a_pull_whose_worker_is_killed_is_closed_taken_over_and_redelivered(ocpi_peer, workers):
    from stations.tasks import pull_locations

    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i:02d}") for i in range(50)], max_limit=10)
    feed.on_page = lambda page: time.sleep(1)  # five pages, a second each
    started = time.monotonic()

    first_worker = workers("feeds-first")
    first = pull_locations.delay(conn.pk)
    killed_run = wait_for(
        lambda: SyncRun.objects.filter(connection=conn, pages__gte=1).first(),
        timeout=30,
        what="the first page to be stored",
        workers=[first_worker],
    )
    first_worker.kill()
    assert killed_run.status == "running"  # a dead worker's run stays "running" unless someone closes it

    second_worker = workers("feeds-second")
    second = pull_locations.delay(conn.pk)  # queued right after the restart: not dropped as "busy"

    result = second.get(timeout=40)
    assert result["status"] == "succeeded", (result, second_worker.output())
    killed_run.refresh_from_db()
    assert killed_run.status == "failed" and killed_run.error.startswith(WORKER_DIED), killed_run.error
    assert killed_run.finished_at is not None

    # The killed worker's message was never acked: the broker hands it out again, and it runs to the end.
    redelivered = first.get(timeout=40)
    assert redelivered["status"] == "succeeded", (redelivered, second_worker.output())
    assert redelivered["sync_run"] not in (killed_run.pk, result["sync_run"])

    assert Location.objects.filter(source=conn).count() == 50  # the feed is fully stored
    statuses = sorted(SyncRun.objects.filter(connection=conn).values_list("status", flat=True))
    assert statuses == ["failed", "succeeded", "succeeded"]
    assert time.monotonic() - started < 60


def test_a_silent_lock_holder_is_taken_over_and_stops_when_it_wakes_up(ocpi_peer, settings, transactional_db):
    from stations import feeds
    from stations.pull_lock import PullLock, PullTakenOver

    cache.clear()
    settings.FEEDS_LOCK_STALE_S = 1
    conn = cpo_connection(ocpi_peer)
    LocationFeed(ocpi_peer, [location("L1"), location("L2")])
    stuck = SyncRun.objects.create(connection=conn, full=True, started_at=timezone.now())
    silent = PullLock(conn.pk)  # a worker that is alive (this process) but stored no page for too long
    assert silent.acquire()
    silent.attach(stuck.pk)

    with pytest.raises(feeds.PullBusy):
        feeds.pull_locations(conn.pk)  # its heartbeat is fresh: a second run waits its turn
    time.sleep(1.2)
    run = feeds.pull_locations(conn.pk)

    assert (run.status, run.created) == ("succeeded", 2)
    stuck.refresh_from_db()
    assert stuck.status == "failed"
    assert stuck.error.startswith(f"{WORKER_DIED}: no heartbeat from ") and stuck.error.endswith(" s")
    with pytest.raises(PullTakenOver):
        silent.refresh()  # the old run wakes up: it stops instead of writing over the newer run


def test_beat_closes_a_run_whose_worker_died_and_pulls_again_at_the_next_tick(ocpi_peer, transactional_db):
    from stations.tasks import dispatch_location_pulls

    cache.clear()
    conn = cpo_connection(ocpi_peer)
    assert conn.location_pull_interval_minutes >= 15
    LocationFeed(ocpi_peer, [location("L1")])
    # What a killed worker leaves once its lock has expired: a run "running" for ever, started a minute ago.
    dead = SyncRun.objects.create(connection=conn, full=True, started_at=timezone.now() - dt.timedelta(minutes=1))

    assert dispatch_location_pulls.delay().get() == [conn.pk]  # not an interval later

    dead.refresh_from_db()
    assert (dead.status, dead.error) == ("failed", f"{WORKER_DIED}: its lock is gone (no heartbeat for 300 s)")
    latest = SyncRun.objects.exclude(pk=dead.pk).get()
    assert (latest.status, latest.full) == ("succeeded", True)
    assert dispatch_location_pulls.delay().get() == []  # and then the interval counts again


def test_a_pool_process_killed_mid_pull_is_requeued_at_once_and_takes_its_own_lock_over(ocpi_peer, workers):
    """The OOM killer's case: only the process running the task dies; the worker requeues the task at once."""
    from stations.pull_lock import LOCK_KEY
    from stations.tasks import pull_locations

    conn = cpo_connection(ocpi_peer)
    feed = LocationFeed(ocpi_peer, [location(f"L{i:02d}") for i in range(50)], max_limit=10)
    feed.on_page = lambda page: time.sleep(1)
    worker = workers("feeds-pool")
    sent = pull_locations.delay(conn.pk)
    killed_run = wait_for(
        lambda: SyncRun.objects.filter(connection=conn, pages__gte=1).first(),
        timeout=30,
        what="the first page to be stored",
        workers=[worker],
    )
    holder = worker_cache.get(LOCK_KEY.format(conn.pk))
    assert holder["run"] == killed_run.pk and holder["pid"] != worker.process.pid  # the pool child holds it
    os.kill(holder["pid"], signal.SIGKILL)

    result = sent.get(timeout=40)  # the same message, run again by a new pool process: no visibility wait

    assert result["status"] == "succeeded", (result, worker.output())
    killed_run.refresh_from_db()
    assert killed_run.status == "failed"
    assert killed_run.error == f"{WORKER_DIED}: process {holder['host']} pid {holder['pid']} no longer exists"
    assert Location.objects.filter(source=conn).count() == 50
