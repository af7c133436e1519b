"""Redis down: the map API works without its cache, and "Start charging" fails fast with a message to the driver.

The platform runs as in production (gunicorn, `mobilityplus/gunicorn.conf.py`, our settings) in a subprocess
whose REDIS_URL (cache and Celery broker) points at a port where nothing listens, on the test database.
"""

from __future__ import annotations

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

from charging.models import Command
from charging.services import NOT_QUEUED_TEXT
from roaming.models import Party, RoamingAgreement
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

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
