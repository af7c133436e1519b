"""Abuse limits: failed partner and backend authentications get HTTP 429, driver and staff logins lock out,
and caches keyed by what callers send stay bounded (docs/security-throttling.md)."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import URLResolver, get_resolver
from requests.adapters import HTTPAdapter

from cards.authorization import card_directory
from roaming.ocpi import endpoint, throttle
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from tests.conftest import TEST_REDIS_URL, make_ocpi_partner
from tests.factories import CardFactory, DriverFactory, EVSEFactory, UserFactory

PARTNER_TOKEN = "valid-partner-token-for-throttling"
SERVICE_TOKEN = "backend-secret-for-throttling"
AUTHORIZE = "/ocpi/emsp/2.2.1/tokens/04AABBCCDD0001/authorize"
OTHER_ADDRESS = "127.0.0.2"  # loopback too: a second real client address on this machine


class FromAddress(HTTPAdapter):
    """Connections leave from a given local address, so the server sees another REMOTE_ADDR."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        return super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(address))
    return session


@pytest.fixture(autouse=True)
def _clean_state(settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 20
    settings.OCPI_AUTH_FAILURE_WINDOW_S = 60
    settings.CARDS_BACKEND_AUTH_FAILURE_LIMIT = 20
    settings.CARDS_BACKEND_AUTH_FAILURE_WINDOW_S = 60
    settings.TRUSTED_PROXY_COUNT = 0
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_DECISION_LOG_FLUSH_S = 0
    addresses = ["127.0.0.1", OTHER_ADDRESS, "198.51.100.7", "198.51.100.8", "203.0.113.9", "2001:db8:1:2::"]
    for address in addresses:
        throttle.reset(address)
    card_directory.clear()
    yield
    for address in addresses:
        throttle.reset(address)
    card_directory.clear()


@pytest.fixture
def partner(transactional_db):
    """A CPO with an agreement taking our cards, and one of our cards it may ask about."""
    CardFactory(uid="04AABBCCDD0001")
    return make_ocpi_partner(token=PARTNER_TOKEN)


def random_token() -> str:
    return secrets.token_urlsafe(24)


# -- OCPI partner authentication ---------------------------------------------------------------------------


def test_random_tokens_get_429_in_the_ocpi_envelope_and_a_valid_partner_elsewhere_still_gets_200(
    live_server, ocpi_live, partner
):
    base = live_server.url
    answers = [ocpi_live("POST", AUTHORIZE, token=random_token()) for _ in range(60)]
    statuses = [answer.status_code for answer in answers]
    assert statuses[:20] == [401] * 20  # the 20th failure is still answered 401, then the address is blocked
    assert statuses[20:] == [429] * 40
    refused = answers[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    body = refused.json()
    assert body["status_code"] == 2000
    assert "too many failed authentications" in body["status_message"].lower()
    assert body["timestamp"] and "data" not in body

    # The partner at its own address is neither counted nor slowed.
    credentials = {"Authorization": authorization_header(partner.token)}
    with session_from(OTHER_ADDRESS) as other:  # the kit's calls leave from 127.0.0.1: this one from elsewhere
        good = other.post(base + AUTHORIZE, headers=credentials, timeout=10)
        assert good.status_code == 200 and good.json()["data"]["allowed"] == "ALLOWED"
        assert other.get(f"{base}/ocpi/versions", headers=credentials, timeout=10).ok

    # From the blocked address even the valid token is refused: 200 there would tell which guess was right.
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 429


def test_a_blocked_address_costs_no_token_lookup(ocpi_live, partner, settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 5
    for _ in range(5):
        assert ocpi_live("POST", AUTHORIZE, token=random_token()).status_code == 401
    cached = len(endpoint._connections)
    for _ in range(30):
        assert ocpi_live("POST", AUTHORIZE, token=random_token()).status_code == 429
    assert len(endpoint._connections) == cached  # refused before any token was hashed or looked up


def test_the_block_ends_with_its_window_or_when_reset(ocpi_live, partner, settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 3
    settings.OCPI_AUTH_FAILURE_WINDOW_S = 1
    for _ in range(3):
        assert ocpi_live("POST", AUTHORIZE, token=random_token()).status_code == 401
    refused = ocpi_live("POST", AUTHORIZE, partner=partner)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 200

    settings.OCPI_AUTH_FAILURE_WINDOW_S = 600
    for _ in range(3):
        ocpi_live("POST", AUTHORIZE, token=random_token())
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 429
    out = io.StringIO()
    call_command("unblock_address", "127.0.0.1", stdout=out)  # what staff run to unblock a partner at once
    assert "127.0.0.1: unblocked" in out.getvalue()
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 200


def test_successful_calls_are_not_counted(ocpi_live, partner, settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 3
    for _ in range(2):
        assert ocpi_live("POST", AUTHORIZE, token=random_token()).status_code == 401
    for _ in range(30):
        assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 200
    assert ocpi_live("POST", AUTHORIZE, token=random_token()).status_code == 401  # the 3rd failure, answered as such
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 429


def test_x_forwarded_for_is_ignored_unless_a_trusted_proxy_is_declared(ocpi_live, partner, settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 3
    # No proxy declared: rotating X-Forwarded-For does not give an attacker fresh addresses.
    for n in range(3):
        ocpi_live("POST", AUTHORIZE, token=random_token(), headers={"X-Forwarded-For": f"203.0.113.{n}"})
    assert ocpi_live("POST", AUTHORIZE, partner=partner, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 429
    throttle.reset("127.0.0.1")

    # One proxy of ours in front: the client is the entry it appended (right-most), not what the client wrote.
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(3):
        ocpi_live(
            "POST",
            AUTHORIZE,
            token=random_token(),
            headers={"X-Forwarded-For": f"10.9.9.{secrets.randbelow(250)}, 198.51.100.7"},
        )
    assert ocpi_live("POST", AUTHORIZE, partner=partner, headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 429
    spoofed = ocpi_live("POST", AUTHORIZE, partner=partner, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    assert spoofed.status_code == 429
    assert ocpi_live("POST", AUTHORIZE, partner=partner, headers={"X-Forwarded-For": "198.51.100.8"}).status_code == 200


def test_ipv6_callers_are_counted_per_64_network():
    from mobilityplus.client_address import address_bucket

    assert address_bucket("2001:db8:1:2::1") == address_bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("::ffff:198.51.100.7") == "198.51.100.7"


def ocpi_routes() -> list[str]:
    """Every URL pattern under /ocpi/, as a path with sample values."""

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    paths = []
    for route in walk(get_resolver().url_patterns, ""):
        if route == "^ocpi/":  # the catch-all 404: it reads no token, so there is nothing to guess against
            continue
        route = route.replace("^", "").replace("$", "").replace("/?", "").replace("\\.", ".")
        route = re.sub(r"<int:\w+>", "1", route)
        route = re.sub(r"<uuid:\w+>", str(uuid.uuid4()), route)
        route = re.sub(r"<(str:)?\w+>", "XX", route)
        if route.startswith("ocpi/"):
            paths.append("/" + route)
    return paths


def test_every_ocpi_endpoint_refuses_a_blocked_address(ocpi_live, partner, settings):
    settings.OCPI_AUTH_FAILURE_LIMIT = 2
    routes = ocpi_routes()
    assert len(routes) >= 15 and "/ocpi/emsp/2.2.1/tokens/XX/authorize" in routes
    for _ in range(2):
        ocpi_live("POST", AUTHORIZE, token=random_token())
    for route in routes:
        statuses = {
            method: ocpi_live(method, route, raw="{}", partner=partner).status_code
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        }
        # Each endpoint answers 429 to every method it serves (405 for the others, decided before any token).
        assert set(statuses.values()) <= {429, 405}, (route, statuses)
        assert 429 in statuses.values(), (route, statuses)


def test_an_unknown_ocpi_path_tells_nothing_about_a_token(ocpi_live, partner):
    answers = [
        ocpi_live("GET", "/ocpi/emsp/2.2.1/nothing-here", token=token) for token in (partner.token, random_token())
    ]
    # No token is looked up there, so right and wrong tokens get the same 404: nothing to guess against.
    assert [answer.status_code for answer in answers] == [404, 404]
    bodies = [answer.json() for answer in answers]
    for body in bodies:
        body.pop("timestamp")
    assert bodies[0] == bodies[1] and bodies[0]["status_code"] == 2000


def test_failures_counted_in_another_process_block_here_through_redis(ocpi_live, partner, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": TEST_REDIS_URL}
    }
    throttle.reset("127.0.0.1")
    root = Path(__file__).resolve().parent.parent
    script = (
        "import django; django.setup()\n"
        "from django.test import RequestFactory\n"
        "from roaming.ocpi import throttle\n"
        "request = RequestFactory().get('/ocpi/versions', REMOTE_ADDR='127.0.0.1')\n"
        "for _ in range(20): throttle.note_failed_authentication(request)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mobilityplus.settings", "REDIS_URL": TEST_REDIS_URL}
    subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True, timeout=60)
    # This process has seen no failure from the address yet: its first wrong guess finds the block.
    guess = ocpi_live("POST", AUTHORIZE, token=random_token())
    assert guess.status_code == 429 and int(guess.headers["Retry-After"]) >= 1
    refused = ocpi_live("POST", AUTHORIZE, partner=partner)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    throttle.reset("127.0.0.1")
    assert ocpi_live("POST", AUTHORIZE, partner=partner).status_code == 200


# -- The charge-point backend bearer (POST /api/v1/authorizations) -------------------------------------------


@pytest.fixture
def our_evse(transactional_db):
    CardFactory(uid="04AABBCCDD0002")
    return EVSEFactory(location__party=own_party(), location__ocpi_id="BE-THROTTLE", uid="BE*MBP*E0009")


def ask_backend(base_url: str, evse, token: str, session: requests.Session | None = None) -> requests.Response:
    body = {"uid": "04AABBCCDD0002", "location_id": evse.location.ocpi_id, "evse_uid": evse.uid}
    return (session or requests).post(
        f"{base_url}/api/v1/authorizations", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_wrong_backend_bearers_get_429_with_retry_after_and_the_backend_elsewhere_still_gets_200(live_server, our_evse):
    base = live_server.url
    with requests.Session() as attacker:
        answers = [ask_backend(base, our_evse, random_token(), attacker) for _ in range(60)]
    assert [answer.status_code for answer in answers] == [401] * 20 + [429] * 40
    refused = answers[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many failed authentications" in refused.json()["detail"].lower()  # DRF's error form

    with session_from(OTHER_ADDRESS) as backend:
        good = ask_backend(base, our_evse, SERVICE_TOKEN, backend)
    assert good.status_code == 200 and good.json()["allowed"] == "ALLOWED"
    assert ask_backend(base, our_evse, SERVICE_TOKEN).status_code == 429  # same rule as OCPI: no oracle
    # A separate count from OCPI's: this address is not blocked for partner calls.
    assert requests.get(f"{base}/ocpi/versions", timeout=10).status_code == 401

    throttle.reset("127.0.0.1")
    assert ask_backend(base, our_evse, SERVICE_TOKEN).status_code == 200


def test_backend_block_ends_with_its_window(live_server, our_evse, settings):
    settings.CARDS_BACKEND_AUTH_FAILURE_LIMIT = 2
    settings.CARDS_BACKEND_AUTH_FAILURE_WINDOW_S = 1
    for _ in range(2):
        assert ask_backend(live_server.url, our_evse, "wrong").status_code == 401
    assert ask_backend(live_server.url, our_evse, SERVICE_TOKEN).status_code == 429
    time.sleep(1.1)
    assert ask_backend(live_server.url, our_evse, SERVICE_TOKEN).status_code == 200


# -- Login lockout (django-axes) --------------------------------------------------------------------------


def log_in(session: requests.Session, base_url: str, path: str, username: str, password: str) -> requests.Response:
    """What a browser does: load the form (CSRF cookie), post it."""
    form = session.get(f"{base_url}{path}", timeout=10)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        f"{base_url}{path}",
        data={"username": username, "password": password, "csrfmiddlewaretoken": csrf, "next": "/cards/"},
        headers={"Referer": f"{base_url}{path}"},
        allow_redirects=False,
        timeout=10,
    )


def assert_locked_page(answer: requests.Response, username: str) -> None:
    assert answer.status_code == 429
    assert "text/html" in answer.headers["Content-Type"]
    assert "<title>Account temporarily locked" in answer.text
    assert "Too many failed login attempts" in answer.text and username in answer.text
    assert "15 minutes" in answer.text


def test_driver_login_locks_after_five_wrong_passwords_even_with_the_right_one(live_server, transactional_db):
    driver = DriverFactory(user__username="locked-driver")
    base = live_server.url
    with requests.Session() as browser:
        for _ in range(4):
            wrong = log_in(browser, base, "/accounts/login/", "locked-driver", "not-the-password")
            assert wrong.status_code == 200 and "didn't match" in wrong.text
        assert_locked_page(log_in(browser, base, "/accounts/login/", "locked-driver", "still-wrong"), "locked-driver")
        right = log_in(browser, base, "/accounts/login/", "locked-driver", "secret-password")
        assert_locked_page(right, "locked-driver")
        assert browser.get(f"{base}/cards/", allow_redirects=False, timeout=10).status_code == 302  # not logged in

    # Locked is the username from this address: the driver at another address can still log in.
    with session_from(OTHER_ADDRESS) as elsewhere:
        assert log_in(elsewhere, base, "/accounts/login/", "locked-driver", "secret-password").status_code == 302
        assert elsewhere.get(f"{base}/cards/", allow_redirects=False, timeout=10).status_code == 200
    assert driver.user.is_active


def test_admin_login_locks_after_five_wrong_passwords(live_server, transactional_db):
    UserFactory(username="locked-staff", is_staff=True, is_superuser=True)
    base = live_server.url
    with requests.Session() as browser:
        for _ in range(4):
            assert log_in(browser, base, "/admin/login/", "locked-staff", "wrong").status_code == 200
        assert_locked_page(log_in(browser, base, "/admin/login/", "locked-staff", "wrong"), "locked-staff")
        assert_locked_page(log_in(browser, base, "/admin/login/", "locked-staff", "secret-password"), "locked-staff")
        assert browser.get(f"{base}/admin/", allow_redirects=False, timeout=10).status_code == 302

    # Staff unlock it (axes' reset, also in the admin under "Access attempts"); the right password works again.
    from axes.utils import reset

    reset(username="locked-staff")
    with requests.Session() as browser:
        assert log_in(browser, base, "/admin/login/", "locked-staff", "secret-password").status_code == 302
        assert browser.get(f"{base}/admin/", timeout=10).status_code == 200


def test_a_successful_login_clears_earlier_failures(live_server, transactional_db):
    DriverFactory(user__username="forgetful")
    base = live_server.url
    with requests.Session() as browser:
        for _ in range(4):
            log_in(browser, base, "/accounts/login/", "forgetful", "wrong")
        assert log_in(browser, base, "/accounts/login/", "forgetful", "secret-password").status_code == 302
    with requests.Session() as browser:
        for _ in range(4):
            assert log_in(browser, base, "/accounts/login/", "forgetful", "wrong").status_code == 200
        assert log_in(browser, base, "/accounts/login/", "forgetful", "secret-password").status_code == 302


# -- Bounded caches ----------------------------------------------------------------------------------------


def test_5000_random_tokens_leave_the_connection_cache_bounded(db, settings):
    settings.OCPI_CONNECTION_CACHE_MAX_ENTRIES = 1000
    connection = make_ocpi_partner(token=PARTNER_TOKEN, agreement=False).connection
    factory = RequestFactory()
    endpoint._clear_connection_cache()

    def call(header: str):
        request = factory.get("/ocpi/versions", HTTP_AUTHORIZATION=header)
        return endpoint.authenticate(request, "versions")

    assert call(authorization_header(PARTNER_TOKEN)).connection == connection
    for _ in range(5000):
        # The lookup behind authenticate(), without the throttle's bookkeeping: only the cache is under test here.
        assert endpoint._connection_for_token(random_token()) == (None, False)
        assert len(endpoint._connections) <= 1000
    assert len(endpoint._connections) == 1000
    # Evicted or not, the partner is still recognised.
    assert call(authorization_header(PARTNER_TOKEN)).connection == connection


def test_with_the_default_limit_random_tokens_barely_touch_the_cache(db):
    endpoint._clear_connection_cache()
    factory = RequestFactory()
    outcomes = []
    for _ in range(1500):
        request = factory.get("/ocpi/versions", HTTP_AUTHORIZATION=authorization_header(random_token()))
        try:
            endpoint.authenticate(request, "versions")
        except endpoint.OcpiError as error:
            outcomes.append(error.http_status)
    assert outcomes.count(401) == 20 and outcomes.count(429) == 1480
    assert len(endpoint._connections) <= 40  # at most the 20 guesses that were looked up (two forms each)


def test_random_card_uids_leave_the_card_cache_bounded(db, settings):
    settings.CARDS_UNKNOWN_CACHE_MAX_ENTRIES = 500
    card = CardFactory(uid="04AABBCCDD0003")
    card_directory.clear()
    for n in range(2000):
        assert card_directory.card(f"FF{n:012X}", "RFID") is None
    assert len(card_directory._unknown) == 500
    assert card_directory.card(card.uid, "RFID").uid == card.uid
    # A card created after its uid was asked for is found: its save evicts it here (other processes' polls too).
    assert card_directory.card("FF0000000007CF", "RFID") is None
    CardFactory(uid="FF0000000007CF")
    assert card_directory.card("FF0000000007CF", "RFID") is not None
