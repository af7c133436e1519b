"""The platform's skeleton: health check, settings from the environment, Celery through Redis."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from mobilityplus.celery import heartbeat

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("ok")


@pytest.mark.django_db
@override_settings(REDIS_URL="redis://127.0.0.1:1/0")
def test_healthz_names_the_failing_broker(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "unavailable"


def test_task_goes_through_redis_to_a_real_worker(redis_celery_worker):
    token = uuid.uuid4().hex
    result = heartbeat.delay(token)
    assert result.get(timeout=20)["token"] == token
    assert result.backend.__class__.__name__ == "RedisBackend"


@pytest.mark.django_db
def test_no_missing_migrations():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "SECRET_KEY": "x" * 20 + uuid.uuid4().hex + uuid.uuid4().hex,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "roaming.mobilityplus.example",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "OCPI_TOKEN_ENCRYPTION_KEY": "0" * 43 + "=",
    }
    completed = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "no issues" in completed.stdout


def test_production_refuses_to_start_without_secret_key():
    env = {"PATH": os.environ["PATH"]}  # DEBUG unset is production
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode != 0
    assert "SECRET_KEY must be set" in completed.stderr


@pytest.mark.django_db
def test_api_docs_load_their_scripts_from_our_static_files(client):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()
