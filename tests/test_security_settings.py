"""Start-up rules: development mode only when asked for (DEBUG=true); a production server needs its keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests

from tests.served_platform import PRODUCTION_KEYS, ROOT, production_env, served

SHOW_DEBUG = "from django.conf import settings; print('DEBUG=%s' % settings.DEBUG)"


def start(env: dict[str, str], code: str = SHOW_DEBUG) -> subprocess.CompletedProcess:
    """A fresh process that loads the settings and sets Django up, as every server and worker does first."""
    script = f"import django; django.setup(); {code}"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def bare_env(tmp_path, **variables: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "mobilityplus.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **variables,
    }


def test_without_secret_key_start_up_stops_naming_it_and_how_to_generate_it(tmp_path):
    started = start(bare_env(tmp_path))  # no DEBUG, no SECRET_KEY: a production server missing its key
    assert started.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off" in started.stderr
    assert "secrets.token_urlsafe(50)" in started.stderr
    assert "DEBUG=" not in started.stdout


def test_without_token_encryption_key_start_up_stops_naming_it_and_how_to_generate_it(tmp_path):
    started = start(bare_env(tmp_path, SECRET_KEY=PRODUCTION_KEYS["SECRET_KEY"]))
    assert started.returncode != 0
    assert "ImproperlyConfigured: OCPI_TOKEN_ENCRYPTION_KEY must be set when DEBUG is off" in started.stderr
    assert "Fernet.generate_key()" in started.stderr


def test_a_malformed_token_encryption_key_stops_start_up(tmp_path):
    started = start(bare_env(tmp_path, SECRET_KEY=PRODUCTION_KEYS["SECRET_KEY"], OCPI_TOKEN_ENCRYPTION_KEY="secret"))
    assert started.returncode != 0
    assert "ImproperlyConfigured: OCPI_TOKEN_ENCRYPTION_KEY is not a Fernet key" in started.stderr


@pytest.mark.parametrize(
    ("debug", "expected"),
    [(None, "False"), ("", "False"), ("false", "False"), ("0", "False"), ("true", "True"), ("True", "True")],
)
def test_debug_is_on_only_when_asked_for(tmp_path, debug, expected):
    variables = dict(PRODUCTION_KEYS)
    if debug is not None:
        variables["DEBUG"] = debug
    started = start(bare_env(tmp_path, **variables))
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"DEBUG={expected}"


def test_development_mode_starts_without_keys_and_encrypts_partner_tokens(tmp_path):
    code = (
        "from roaming.ocpi.credentials import encrypt_token, decrypt_token; "
        "from django.conf import settings; "
        "print(settings.DEBUG, decrypt_token(encrypt_token('token-b')))"
    )
    started = start(bare_env(tmp_path, DEBUG="true"), code)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "True token-b"


def test_a_production_server_answers_an_unknown_url_without_traceback_or_settings(tmp_path):
    env = production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with served(env, tmp_path / "gunicorn.log") as platform:
        response = requests.get(f"{platform.url}/no-such-page/", timeout=10)
        health = requests.get(f"{platform.url}/healthz", timeout=10)
    assert response.status_code == 404
    for revealing in ("Traceback", "URLconf", "mobilityplus.urls", "DEBUG = True", "settings", "SECRET_KEY"):
        assert revealing not in response.text
    assert re.sub(r"\s+", " ", response.text).strip().startswith("<!doctype html>")
    assert "Not Found" in response.text
    assert health.status_code == 200, health.text  # the same server is otherwise up and serving


def test_a_development_server_does_show_its_debug_page(tmp_path):
    """The contrast that makes the test above mean something: with DEBUG=true the 404 shows the URLconf."""
    env = production_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="true")
    with served(env, tmp_path / "gunicorn.log") as platform:
        response = requests.get(f"{platform.url}/no-such-page/", timeout=10)
    assert response.status_code == 404
    assert "URLconf" in response.text


LOG_DJANGO_REQUEST = (
    "import logging; log = logging.getLogger('django.request'); "
    "log.warning('Not Found: /a-4xx-warning'); log.error('Internal Server Error: /an-error')"
)


@pytest.mark.parametrize(("level", "warning_shown"), [("ERROR", False), ("WARNING", True), (None, True)])
def test_log_level_holds_for_djangos_own_loggers_too(tmp_path, level, warning_shown):
    # Django's loggers carry their own level (INFO): without the handler's level, LOG_LEVEL=ERROR still printed a
    # warning for every 4xx answer (thousands a second under a partner's flood of bad requests).
    variables = dict(PRODUCTION_KEYS, **({"LOG_LEVEL": level} if level else {}))
    started = start(bare_env(tmp_path, **variables), LOG_DJANGO_REQUEST)
    assert started.returncode == 0, started.stderr
    assert ("a-4xx-warning" in started.stderr) is warning_shown
    assert "an-error" in started.stderr
