"""Shared fixtures: real servers only (PostgreSQL or SQLite, Redis, HTTP on 127.0.0.1)."""

from __future__ import annotations

import os

import pytest
from celery.contrib.testing.worker import start_worker

from mobilityplus.celery import app as celery_app

# Tests that need Redis use REDIS_URL when set, the machine's Redis otherwise; never skipped.
TEST_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


# The broker is set before anything opens a connection: tasks run in-process (eager) by default,
# and through this Redis broker for tests that start a real worker.
celery_app.conf.update(broker_url=TEST_REDIS_URL, result_backend=TEST_REDIS_URL)


@pytest.fixture(autouse=True)
def _tasks_in_process():
    """Unless a test asks for a real worker, tasks run in-process so a test never waits on a queue."""
    celery_app.conf.task_always_eager = True
    yield


@pytest.fixture(autouse=True)
def _private_network_urls_allowed(settings):
    """Test partners run on 127.0.0.1: calls to private addresses are allowed unless a test turns this off
    (tests/test_security_outgoing_urls.py). The partner's-registered-hosts rule still applies."""
    settings.OCPI_ALLOW_PRIVATE_NETWORK_URLS = True


@pytest.fixture
def redis_celery_worker(transactional_db):
    """A real Celery worker thread consuming from Redis; tasks sent with .delay() go through the broker."""
    celery_app.conf.task_always_eager = False
    try:
        with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
            yield worker
    finally:
        celery_app.conf.task_always_eager = True


@pytest.fixture
def ocpi_peer():
    """A second OCPI party on 127.0.0.1 (see tests/ocpi_peer.py)."""
    from tests.ocpi_peer import OcpiPeer

    peer = OcpiPeer().start()
    yield peer
    peer.stop()


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture
def browser(monkeypatch):
    """Debian's headless Chromium (/usr/bin/chromium) driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in the test's thread; the test's ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def _no_failed_authentications_carried_over():
    """Failed-authentication counts live in the shared cache (Redis): no test inherits another's from 127.0.0.1."""
    from roaming.ocpi import throttle

    throttle.reset("127.0.0.1")
    yield


@pytest.fixture(autouse=True)
def _no_decision_outlives_its_test():
    """The decision log writes from its own thread and connection: what one test buffered must not land in the
    database the next test starts from (it would count there as a decision that test made)."""
    from cards.decision_log import decision_log

    decision_log.discard()
    yield
    decision_log.discard()
