"""/healthz: a quick 503 naming the failing part (database or broker), never its address or driver message."""

from __future__ import annotations

import logging
import os
import time

import pytest
import requests
from django.test import override_settings

from tests.served_platform import StalledServer, free_port, production_env, served

TEST_REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DEADLINE_S = 2.0


def timed_get(url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=10)
    return response, time.monotonic() - started


def test_a_stalled_database_is_a_quick_503_naming_only_the_database(tmp_path):
    with StalledServer() as database:
        env = production_env(
            DATABASE_URL=f"postgres://postgres:db-password@127.0.0.1:{database.port}/mobilityplus",
            REDIS_URL=TEST_REDIS_URL,
        )
        with served(env, tmp_path / "gunicorn.log") as platform:
            response, elapsed = timed_get(f"{platform.url}/healthz")
            # The server was not left hanging on its probe: it answers the next check as quickly.
            again, elapsed_again = timed_get(f"{platform.url}/healthz")
        assert database.accepted, "the health check never reached the stalled database"

    assert response.status_code == 503
    assert elapsed < DEADLINE_S and elapsed_again < DEADLINE_S, (elapsed, elapsed_again)
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "unavailable", "broker": "ok"},
        "failing": ["database"],
    }
    assert again.status_code == 503
    for secret in (str(database.port), "127.0.0.1", "postgres", "db-password", "mobilityplus"):
        assert secret not in response.text
    assert "healthz: database gave no answer within 1.5 s" in platform.log()  # the detail is in the server log


def test_database_and_broker_both_stalled_are_named_together_within_the_deadline(tmp_path):
    with StalledServer() as database, StalledServer() as broker:
        env = production_env(
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{database.port}/mobilityplus",
            REDIS_URL=f"redis://127.0.0.1:{broker.port}/0",
        )
        with served(env, tmp_path / "gunicorn.log") as platform:
            response, elapsed = timed_get(f"{platform.url}/healthz")
        assert database.accepted and broker.accepted

    assert response.status_code == 503
    assert elapsed < DEADLINE_S, elapsed  # the two checks wait at the same time, not one after the other
    assert response.json()["failing"] == ["database", "broker"]
    assert str(database.port) not in response.text and str(broker.port) not in response.text


@pytest.mark.django_db
def test_redis_down_is_a_quick_503_naming_the_broker(client, caplog):
    closed_port = free_port()  # bound once, then released: nothing listens there
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{closed_port}/0"), caplog.at_level(logging.WARNING):
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert elapsed < DEADLINE_S, elapsed
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable"},
        "failing": ["broker"],
    }
    assert str(closed_port) not in response.content.decode()
    assert f"127.0.0.1:{closed_port}" in caplog.text  # what failed, for the operator, in the log only


@pytest.mark.django_db
def test_a_stalled_broker_is_a_503_within_the_deadline(client):
    with StalledServer() as broker, override_settings(REDIS_URL=f"redis://127.0.0.1:{broker.port}/0"):
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started
        assert broker.accepted

    assert response.status_code == 503
    assert elapsed < DEADLINE_S, elapsed
    assert response.json()["failing"] == ["broker"]


@pytest.mark.django_db
def test_healthy_parts_answer_200(client, settings):
    settings.REDIS_URL = TEST_REDIS_URL
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}, "failing": []}
