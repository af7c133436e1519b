"""GET /metrics: Prometheus figures behind a bearer token or a staff login, summed over gunicorn's workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from cards.authorization import card_directory
from roaming.ocpi.credentials import authorization_header
from roaming.outbox_models import OutboxMessage
from roaming.selectors import own_party
from tests.conftest import TEST_REDIS_URL, ocpi_call
from tests.factories import CardFactory, EVSEFactory, PartnerConnectionFactory, SyncRunFactory, UserFactory
from tests.ocpi_peer import ok
from tests.served_platform import PRODUCTION_KEYS, free_port
from tests.test_authorize_station import ask, foreign_emsp

METRICS_TOKEN = "metrics-token-for-the-tests"  # noqa: S105
ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition as {(name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


def scrape(client, token: str = METRICS_TOKEN) -> dict:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return samples(response.content.decode())


@pytest.mark.django_db
def test_metrics_need_the_bearer_token_or_a_staff_login(client, metrics_token, settings):
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"mobilityplus_" not in refused.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {METRICS_TOKEN}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code == 200
    client.force_login(UserFactory(is_staff=False))
    assert client.get("/metrics").status_code == 401  # a driver's login is not enough
    client.force_login(UserFactory(is_staff=True))
    assert client.get("/metrics").status_code == 200
    client.logout()
    settings.METRICS_TOKEN = ""  # unset: no token opens it, not even an empty one
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").status_code in (401, 405)


@pytest.mark.django_db
def test_authorizations_are_counted_by_partner_result_and_path_with_latencies(client, metrics_token, settings):
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    card_directory.clear()
    partner = PartnerConnectionFactory(party__country_code="NL", party__party_id="MTA", tokens__from_them="cpo-mta")
    from tests.factories import RoamingAgreementFactory

    RoamingAgreementFactory(partner=partner.party)
    card = CardFactory()
    before = scrape(client)

    for uid in (card.uid, card.uid, "UNKNOWN0001"):
        answer = ocpi_call(client, "POST", f"/ocpi/emsp/2.2.1/tokens/{uid}/authorize", token="cpo-mta")
        assert answer.status_code in (200, 404)
    after = scrape(client)

    labels = {"direction": "emsp", "partner": "NL*MTA"}
    added = lambda name, **more: value(after, name, **labels, **more) - value(before, name, **labels, **more)  # noqa: E731
    assert added("mobilityplus_authorizations_total", result="ALLOWED", path="local") == 2
    assert added("mobilityplus_authorizations_total", result="UNKNOWN", path="unknown") == 1
    assert added("mobilityplus_authorization_duration_seconds_count", path="local") == 2
    assert added("mobilityplus_authorization_duration_seconds_bucket", path="local", le="+Inf") == 2
    assert added("mobilityplus_authorization_duration_seconds_bucket", path="local", le="0.5") == 2
    card_directory.clear()


@pytest.mark.django_db(transaction=True)
def test_real_time_calls_to_emsps_count_answers_and_timeouts(client, metrics_token, settings, ocpi_peer):
    from tests.test_authorize_station import SERVICE_TOKEN

    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    settings.CARDS_REALTIME_DEADLINE_S = 0.5
    card_directory.clear()
    evse = EVSEFactory(location__party=own_party(), location__ocpi_id="BE-METRICS", uid="BE*MBP*E0009")
    emsp = foreign_emsp(ocpi_peer, whitelist="ALLOWED_OFFLINE").party
    issuer = emsp.ocpi_id
    before = scrape(client)
    ocpi_peer.route("POST", r"/emsp/tokens/.*", lambda r: ok({"allowed": "ALLOWED"}))
    assert ask(client, evse, "AABBCCDD").json()["path"] == "realtime"
    ocpi_peer.route("POST", r"/emsp/tokens/.*", lambda r: (time.sleep(1.5), ok({"allowed": "ALLOWED"}))[1])
    assert ask(client, evse, "AABBCCDD").json()["path"] == "fallback"
    after = scrape(client)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("mobilityplus_emsp_realtime_calls_total", partner=issuer, outcome="answered") == 1
    assert added("mobilityplus_emsp_realtime_calls_total", partner=issuer, outcome="timeout") == 1
    assert added("mobilityplus_emsp_realtime_call_duration_seconds_count", partner=issuer) == 2
    assert added("mobilityplus_authorizations_total", direction="cpo", partner=issuer, result="ALLOWED",
                 path="fallback") == 1  # fmt: skip
    card_directory.clear()


@pytest.mark.django_db
def test_feed_runs_rejects_and_outgoing_deliveries_come_from_the_database(client, metrics_token):
    connection = PartnerConnectionFactory(party__country_code="DE", party__party_id="MTF")
    SyncRunFactory(connection=connection, rejected=2)
    SyncRunFactory(connection=connection, rejected=1)
    SyncRunFactory(connection=connection, status="failed")
    now = timezone.now()
    for index, status in enumerate(("pending", "pending", "failed", "delivered")):
        OutboxMessage.objects.create(
            partner=connection.party, module="cdrs", object_id=f"C{index}", method="POST", status=status,
            next_attempt_at=now,
        )

    found = scrape(client)

    assert value(found, "mobilityplus_feed_runs_total", partner="DE*MTF", status="succeeded") == 2
    assert value(found, "mobilityplus_feed_runs_total", partner="DE*MTF", status="failed") == 1
    assert value(found, "mobilityplus_feed_rejected_objects_total", partner="DE*MTF") == 3
    assert value(found, "mobilityplus_outgoing_deliveries", partner="DE*MTF", state="waiting") == 2
    assert value(found, "mobilityplus_outgoing_deliveries", partner="DE*MTF", state="failed") == 1
    assert ("mobilityplus_evse_status_changes_total", frozenset()) in found


@pytest.fixture
def gunicorn(transactional_db, tmp_path) -> Iterator[tuple[str, Path]]:
    """gunicorn as `make serve` runs it (its config file, three workers), with METRICS_TOKEN set."""
    database = db_connection.settings_dict
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        **PRODUCTION_KEYS,
        "DATABASE_URL": f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "REDIS_URL": TEST_REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "3",
        "METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                requests.get(url + "/healthz", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.2)
        yield url, tmp_path / "metrics"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def test_three_gunicorn_workers_counts_add_up_in_one_scrape(gunicorn):
    url, metrics_dir = gunicorn
    partner = PartnerConnectionFactory(party__country_code="NL", party__party_id="MTG", tokens__from_them="cpo-mtg")
    from tests.factories import RoamingAgreementFactory

    RoamingAgreementFactory(partner=partner.party)
    card = CardFactory()
    for _ in range(30):
        # A new connection each time: gunicorn hands them to whichever worker accepts first.
        answer = requests.post(
            f"{url}/ocpi/emsp/2.2.1/tokens/{card.uid}/authorize",
            headers={"Authorization": authorization_header("cpo-mtg"), "Connection": "close"},
            timeout=20,
        )
        assert answer.status_code == 200, answer.text
    for _ in range(20):
        scraped = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
        assert scraped.status_code == 200
        found = samples(scraped.text)
        assert value(found, "mobilityplus_authorizations_total", direction="emsp", partner="NL*MTG",
                     result="ALLOWED", path="local") == 30  # fmt: skip
    # Several workers answered (each writes its own counter file), yet every scrape, whichever worker serves it,
    # adds up all of them.
    assert len(list(metrics_dir.glob("counter_*.db"))) >= 2
    assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
