"""Redis down: the map API works without its cache, "Start charging" fails fast with a message to the driver,
a card blocked is saved at once with its Token push kept for the requeue task, and a partner's START_SESSION at our
station is answered (no queue on that path); a command result that could not be queued is posted by beat later.

The platform runs as in production (gunicorn, `mobilityplus/gunicorn.conf.py`, our settings) in a subprocess
whose REDIS_URL (cache and Celery broker) points at a port where nothing listens, on the test database.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.utils import timezone

from cards.models import Card
from charging.models import Command
from charging.services import NOT_QUEUED_TEXT
from charging.tasks import repost_command_results
from roaming import outbox
from roaming.models import OutboxMessage, Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from stations.feeds import connections_due
from stations.models import SyncRun
from stations.tasks import pull_locations as pull_locations_task
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    LocationFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)
from tests.ocpi_peer import ok

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server_without_redis(transactional_db):
    """Our platform on 127.0.0.1 with Redis unreachable; yields its base URL."""
    s = connection.settings_dict
    credentials = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{credentials}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there: Redis is down
        "DEBUG": "true",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            try:
                requests.get(f"{base_url}/healthz", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def station_and_driver(transactional_db):
    cpo = PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO, name="Allego")
    PartnerConnectionFactory(
        party=cpo,
        endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": f"http://127.0.0.1:{free_port()}/cmd"}],
        tokens__from_them="cpo-calls-us",
        tokens__to_them="we-call-cpo",
    )
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    location = MapLocationFactory(party=cpo, ocpi_id="LOC-GENT", name="Gent Zuid", latitude=51.04, longitude=3.73)
    evse = EVSEFactory(location=location, uid="3256", evse_id="NL*ALL*E3256")
    ConnectorFactory(evse=evse)
    driver = DriverFactory()
    card = CardFactory(driver=driver)
    return location, evse, driver, card


def test_with_redis_down_the_map_answers_and_start_charging_fails_fast_with_a_message(
    server_without_redis, station_and_driver, client
):
    location, evse, driver, card = station_and_driver
    # The map API: its answer cache is unreachable, so it is computed every time, never a 500.
    for _ in range(2):
        started = time.monotonic()
        stations = requests.get(
            f"{server_without_redis}/api/v1/stations", params={"bbox": "2,50,7,52", "zoom": 14}, timeout=10
        )
        assert stations.status_code == 200, stations.text[:500]
        assert time.monotonic() - started < 3.0
        names = [feature["properties"].get("name") for feature in stations.json()["features"]]
        assert "Gent Zuid" in names

    # The driver presses "Start charging": the command cannot be queued.
    client.force_login(driver.user)
    browser = requests.Session()
    browser.cookies.set("sessionid", client.cookies["sessionid"].value)
    start_url = f"{server_without_redis}/charging/start/{location.pk}/{evse.uid}/"
    page = browser.get(start_url, timeout=10)
    assert page.status_code == 200
    form = {
        name: re.search(rf'name="{name}" value="([^"]+)"', page.text).group(1)
        for name in ("csrfmiddlewaretoken", "idempotency_key", "card")
    }
    assert form["card"] == str(card.pk)
    started = time.monotonic()
    pressed = browser.post(start_url, data=form, timeout=30, allow_redirects=False)
    elapsed = time.monotonic() - started
    assert pressed.status_code == 400 and elapsed < 3.0
    assert NOT_QUEUED_TEXT in pressed.text
    command = Command.objects.get(driver=driver)
    assert command.status == Command.Status.FAILED and command.error.startswith("Could not be queued")
    assert command.send_started_at is None and command.attempts == 0  # nothing reached the operator


def logged_in_browser(client, user) -> requests.Session:
    """A requests session carrying a Django login of `user` (made through the test client, same database)."""
    client.force_login(user)
    browser = requests.Session()
    browser.cookies.set("sessionid", client.cookies["sessionid"].value)
    return browser


def test_with_redis_down_a_driver_blocks_a_card_at_once_and_its_push_is_kept_for_the_sweeper(
    server_without_redis, client
):
    """The block is saved and answered; its Token push, kept in the outbox, is left for the beat's sweeper."""
    cpo = PartyFactory(country_code="NL", party_id="TNM", role=Party.Role.CPO, name="TotalEnergies")
    PartnerConnectionFactory(
        party=cpo,
        endpoints=[{"identifier": "tokens", "role": "RECEIVER", "url": f"http://127.0.0.1:{free_port()}/tokens"}],
        tokens__from_them="tnm-calls-us",
        tokens__to_them="we-call-tnm",
    )
    RoamingAgreementFactory(partner=cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    driver = DriverFactory()
    card = CardFactory(driver=driver)
    browser = logged_in_browser(client, driver.user)
    page = browser.get(f"{server_without_redis}/cards/", timeout=10)
    assert page.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    started = time.monotonic()
    blocked = browser.post(
        f"{server_without_redis}/cards/{card.pk}/block/",
        data={"csrfmiddlewaretoken": csrf, "reason": "Lost it on the train"},
        headers={"Referer": f"{server_without_redis}/cards/"},
        timeout=30,
        allow_redirects=False,
    )
    assert blocked.status_code == 302 and time.monotonic() - started < 3.0, blocked.text[:500]
    card.refresh_from_db()
    assert card.status == Card.Status.BLOCKED  # blocked here at once, whatever the queue does
    # The Token push was written in the block's own transaction: kept in the outbox, nothing attempted...
    [push] = OutboxMessage.objects.filter(partner=cpo, module="tokens")
    assert push.status == OutboxMessage.Status.PENDING and push.attempts == 0
    assert push.body["valid"] is False and push.body["last_updated"] == format_datetime(card.last_updated)
    # ...and the outbox sweeper (beat, every OUTBOX_SWEEP_S) sends it once the broker is back.
    assert cpo.pk in outbox.partners_with_due_messages()


def test_with_redis_down_a_partner_start_session_at_our_station_is_answered_not_a_500(server_without_redis):
    emsp = PartyFactory(country_code="NL", party_id="SHL", role=Party.Role.EMSP, name="Shell Recharge")
    PartnerConnectionFactory(
        party=emsp,
        versions_url=f"http://127.0.0.1:{free_port()}/ocpi/versions",
        tokens__from_them="shl-calls-us",
        tokens__to_them="we-call-shl",
    )
    RoamingAgreementFactory(partner=emsp, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT")
    EVSEFactory(location=location, uid="MBP-GENT-1")
    host = f"http://127.0.0.1:{free_port()}"
    body = {
        "response_url": f"{host}/ocpi/emsp/2.2.1/commands/START_SESSION/r-1",
        "token": {
            "country_code": "NL",
            "party_id": "SHL",
            "uid": "0102030405",
            "type": "APP_USER",
            "contract_id": "NL-SHL-C00000001",
            "issuer": "Shell Recharge",
            "valid": True,
            "whitelist": "ALLOWED",
            "last_updated": "2026-01-01T00:00:00Z",
        },
        "location_id": "MBP-GENT",
        "evse_uid": "MBP-GENT-1",
    }
    started = time.monotonic()
    reply = requests.post(
        f"{server_without_redis}/ocpi/cpo/2.2.1/commands/START_SESSION",
        json=body,
        headers={"Authorization": authorization_header("shl-calls-us")},
        timeout=30,
    )
    assert reply.status_code == 200 and time.monotonic() - started < 3.0, reply.text[:500]
    assert reply.json()["status_code"] == 1000 and reply.json()["data"]["result"] == "ACCEPTED"
    command = Command.objects.get(partner=emsp)
    assert command.status == Command.Status.SENT  # handed to our charge-point backend (no queue involved)


def test_a_command_result_that_could_not_be_queued_is_posted_by_the_beat_task(transactional_db, ocpi_peer):
    """What the broker-down path leaves (a result recorded, never posted) is what `repost_command_results` sends."""
    ocpi_peer.route("POST", r"/ocpi/emsp/2\.2\.1/commands/START_SESSION/r-2", lambda r: ok())
    emsp = PartyFactory(country_code="NL", party_id="SHL", role=Party.Role.EMSP, name="Shell Recharge")
    PartnerConnectionFactory(
        party=emsp, versions_url=ocpi_peer.url("/ocpi/versions"), tokens__from_them="a", tokens__to_them="b"
    )
    command = Command.objects.create(
        type=Command.Type.START_SESSION,
        direction=Command.Direction.INCOMING,
        partner=emsp,
        response_url=ocpi_peer.url("/ocpi/emsp/2.2.1/commands/START_SESSION/r-2"),
        request_payload={},
        idempotency_key="in:r-2",
        status=Command.Status.ACCEPTED,
        result="ACCEPTED",
        result_at=timezone.now() - dt.timedelta(minutes=2),
    )
    assert repost_command_results() == 1
    command.refresh_from_db()
    assert command.result_reported_at is not None
    assert [r.json() for r in ocpi_peer.requests] == [{"result": "ACCEPTED"}]
    assert repost_command_results() == 0  # posted once, not again


def test_with_redis_down_a_location_pull_is_skipped_recorded_and_due_again_at_the_next_tick(transactional_db, settings):
    """The pull lock lives in Redis: without it nobody can tell whether a run is going on, so none starts."""
    settings.CACHES = {  # the production cache, on a port where nothing listens
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5, "IGNORE_EXCEPTIONS": True},
        }
    }
    partner = PartnerConnectionFactory(
        endpoints=[{"identifier": "locations", "role": "SENDER", "url": f"http://127.0.0.1:{free_port()}/locations"}],
        location_pull_interval_minutes=15,
    )
    outcome = pull_locations_task(partner.pk)
    assert outcome["status"] == "skipped" and "cannot be reached" in outcome["error"]
    run = SyncRun.objects.get(connection=partner)  # staff see it in the feed's runs
    assert run.status == SyncRun.Status.FAILED and run.finished_at is not None
    assert run.error.startswith("not pulled: the pull lock's store (Redis) cannot be reached")
    assert partner.pk in [pk for pk, _ in connections_due()]  # a skipped run is no pull: tried again at the next tick
