"""A suspension, an ended agreement or a bulk update reaches every other process within a second.

The server here is a real second process: gunicorn with two workers on the test database, each with its
own connection and agreement caches warmed by earlier calls. The test process changes rows the way
staff and our code do (save(), and queryset.update(), which sends no signal and leaves updated_at alone)
and times how long the other processes keep answering from their caches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection

from roaming import services
from roaming.models import PartnerConnection, Party, RoamingAgreement
from tests.conftest import ocpi_call
from tests.factories import CardFactory, PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
WITHIN_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def other_processes():
    """gunicorn (2 sync workers) serving the test database: processes that share no memory with this one."""
    database = db_connection.settings_dict
    port = free_port()
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    if database.get("PASSWORD"):
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(
            database["USER"], f"{database['USER']}:{database['PASSWORD']}"
        )
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url + "/ocpi/versions", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or the workers still booting
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def partner():
    connection = PartnerConnectionFactory(
        party=PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO), tokens__from_them="partner-token"
    )
    RoamingAgreementFactory(partner=connection.party)
    return connection


def authorize_status(url: str, card_uid: str, token: str = "partner-token", **headers: str) -> int:
    response = ocpi_call(url, "POST", f"/ocpi/emsp/2.2.1/tokens/{card_uid}/authorize", token=token, headers=headers)
    if response.status_code == 200:
        assert response.json()["data"]["allowed"] == "ALLOWED"
    return response.status_code


def warm(ask: Callable[[], int], expected: int) -> None:
    """Enough calls that both workers answered (and cached) before the change."""
    for _ in range(12):
        assert ask() == expected


def seconds_until_every_process_answers(ask: Callable[[], int], expected: int, change: Callable[[], None]) -> float:
    """Make the change, then ask until `expected` and keep asking: the time of the last other answer."""
    change()
    started = time.monotonic()
    last_other = 0.0
    while time.monotonic() - started < 1.5:
        if ask() != expected:
            last_other = time.monotonic() - started
        time.sleep(0.02)
    return last_other


def test_a_suspension_or_an_ended_agreement_reaches_other_processes_within_a_second(other_processes, partner):
    card = CardFactory()

    def ask() -> int:
        return authorize_status(other_processes, card.uid)

    warm(ask, 200)
    rows = PartnerConnection.objects.filter(pk=partner.pk)
    # Bulk updates: no post_save, no updated_at bump.
    assert seconds_until_every_process_answers(ask, 403, lambda: rows.update(status="suspended")) < WITHIN_S
    assert seconds_until_every_process_answers(ask, 200, lambda: rows.update(status="connected")) < WITHIN_S
    agreements = RoamingAgreement.objects.filter(partner=partner.party)
    assert seconds_until_every_process_answers(ask, 403, lambda: agreements.update(status="ended")) < WITHIN_S
    assert seconds_until_every_process_answers(ask, 200, lambda: agreements.update(status="active")) < WITHIN_S
    # Staff's Suspend action (save()).
    partner.refresh_from_db()
    suspended = seconds_until_every_process_answers(ask, 403, lambda: services.suspend_connection(partner))
    assert suspended < WITHIN_S


def test_a_hub_client_detached_in_bulk_reaches_other_processes_within_a_second(other_processes):
    hub = PartnerConnectionFactory(party=PartyFactory(role=Party.Role.HUB), tokens__from_them="hub-token")
    client = PartnerConnectionFactory(party=PartyFactory(country_code="FR", party_id="TOT"), via_hub=hub)
    RoamingAgreementFactory(partner=client.party, hub=hub.party)
    card = CardFactory()

    def ask() -> int:
        return authorize_status(
            other_processes,
            card.uid,
            token="hub-token",
            **{"OCPI-from-country-code": "FR", "OCPI-from-party-id": "TOT"},
        )

    warm(ask, 200)
    rows = PartnerConnection.objects.filter(pk=client.pk)
    assert seconds_until_every_process_answers(ask, 403, lambda: rows.update(via_hub=None)) < WITHIN_S


def test_contact_bookkeeping_bumps_nothing_and_a_change_bumps_once_committed(partner):
    """Partner calls write last_contact_at all the time: that must not empty every process's caches."""
    from django.db import transaction

    from roaming.models import PartnerDataVersion

    def version() -> int:
        return PartnerDataVersion.objects.get(pk=1).value

    before = version()
    services.record_contact(partner.pk)
    partner.save(update_fields=["last_contact_at", "updated_at"])
    assert version() == before
    with transaction.atomic():
        PartnerConnection.objects.filter(pk=partner.pk).update(status="suspended")
        assert version() == before  # not before the change is visible to others
    assert version() == before + 1
    RoamingAgreement.objects.bulk_update(list(RoamingAgreement.objects.all()), ["status"])
    assert version() == before + 2
