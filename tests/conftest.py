"""Shared fixtures: real servers only (PostgreSQL or SQLite, Redis, HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from celery.contrib.testing.worker import start_worker
from django.test import Client

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


# --- The OCPI test kit: one partner, one call helper -------------------------------------------------------------


@dataclass
class OcpiPartner:
    """A partner that may call us: its party, the connection it authenticates on, and that connection's token.

    Through a hub, `connection` is the hub's, `token` the hub's token, `hub` the hub's party, and calls name
    the client in the OCPI-from-* routing headers (`routing`).
    """

    party: Any
    connection: Any
    token: str
    hub: Any = None
    client_connection: Any = field(default=None, repr=False)

    @property
    def routing(self) -> dict[str, str]:
        """OCPI-from-* headers naming this partner (what a hub sends for its client)."""
        return {"OCPI-from-country-code": self.party.country_code, "OCPI-from-party-id": self.party.party_id}


def make_ocpi_partner(
    *,
    country_code: str = "NL",
    party_id: str | None = None,
    role: str = "CPO",
    via_hub: bool = False,
    token: str | None = None,
    agreement: bool = True,
    name: str | None = None,
    **connection: Any,
) -> OcpiPartner:
    """A factory-made party with a connected connection and (unless `agreement=False`) an agreement in force.

    `via_hub=True`: the party is a client of a new hub DE*HUB (connection `via_hub`), confirmed by staff
    (agreement through that hub); `token` is then the hub's. Other keyword arguments are fields of the
    connection the partner calls on (e.g. `versions_url`, `tokens__to_them`).
    """
    from roaming.models import Party
    from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory

    fields = {"country_code": country_code, "role": role}
    if party_id:
        fields["party_id"] = party_id
    if name:
        fields["name"] = name
    party = PartyFactory(**fields)
    token = token or f"token-{party.country_code}-{party.party_id}".lower()
    if not via_hub:
        connection = PartnerConnectionFactory(party=party, tokens__from_them=token, **connection)
        if agreement:
            RoamingAgreementFactory(partner=party)
        return OcpiPartner(party=party, connection=connection, token=token, client_connection=connection)
    hub_party = PartyFactory(country_code="DE", party_id="HUB", role=Party.Role.HUB, name="The hub")
    hub_connection = PartnerConnectionFactory(party=hub_party, tokens__from_them=token, **connection)
    client_connection = PartnerConnectionFactory(party=party, via_hub=hub_connection)
    if agreement:
        RoamingAgreementFactory(partner=party, hub=hub_party)
    return OcpiPartner(
        party=party, connection=hub_connection, token=token, hub=hub_party, client_connection=client_connection
    )


@pytest.fixture
def ocpi_partner(request, db) -> OcpiPartner:
    """One partner (see `make_ocpi_partner`): a CPO NL*<sequence> with an agreement in force by default.

    Parametrize it with indirect parameters, e.g.
    `@pytest.mark.parametrize("ocpi_partner", [{"role": "EMSP"}, {"via_hub": True}], indirect=True)`.
    """
    return make_ocpi_partner(**getattr(request, "param", {}))


def ocpi_call(
    transport: Client | str,
    method: str,
    url: str,
    json_body: Any = None,
    *,
    token: str | None = None,
    partner: OcpiPartner | None = None,
    routing: dict[str, str] | bool | None = None,
    raw: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    **query: str,
):
    """Call one of our OCPI endpoints as a partner and return the response, with `.envelope` (the parsed
    OCPI envelope, or None when the body is not JSON) and `.data` (its `data`).

    - `transport`: pytest-django's `client` (in-process) or a base URL such as `live_server.url` (real HTTP);
      `url` is a path, or an absolute URL (a `Link` header's);
    - `json_body` is sent as JSON (a str or bytes as is), `raw` as is; `query` becomes the query string;
    - `token`: the credentials token (`Authorization: Token <base64>`), else `partner.token`;
    - `routing`: OCPI-from-* headers: a dict, or True for `partner.routing`; by default sent when `partner`
      is reached through a hub (`partner.hub`), never otherwise.
    """
    from roaming.ocpi.credentials import authorization_header

    token = token if token is not None else (partner.token if partner else None)
    sent = {} if token is None else {"Authorization": authorization_header(token)}
    if routing is None:
        routing = bool(partner and partner.hub)
    if routing is True:
        sent.update(partner.routing)
    elif isinstance(routing, dict):
        sent.update(routing)
    sent.update(headers or {})
    if isinstance(json_body, str | bytes):  # already a body: sent as is (bad-input tests)
        raw, json_body = json_body, None
    body = raw if raw is not None else (None if json_body is None else json.dumps(json_body))
    if isinstance(body, str):  # lone surrogates too: bad-input tests send them on purpose
        body = body.encode("utf-8", "surrogatepass")
    if isinstance(transport, str):
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        absolute = url if url.startswith(("http://", "https://")) else transport + url  # e.g. a Link we sent
        response = requests.request(method, absolute, data=body, headers=sent, params=query, timeout=30)
        text = response.text
    else:
        kwargs: dict[str, Any] = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in sent.items()}
        if query:
            url = f"{url}?{urlencode(query)}"
        if body is not None or method.upper() not in ("GET", "HEAD"):
            # No body is an empty one (Django's client would otherwise send an empty multipart form).
            kwargs.update(data=body or "", content_type="application/json")
        response = getattr(transport, method.lower())(url, **kwargs)
        text = response.content.decode("utf-8", "replace")
    try:
        response.envelope = json.loads(text)
    except ValueError:
        response.envelope = None
    response.data = response.envelope.get("data") if isinstance(response.envelope, dict) else None
    return response


def _bound_call(transport: Client | str, request) -> Callable[..., Any]:
    default_token = getattr(request.module, "OCPI_TOKEN", None)

    def call(method: str, url: str, json_body: Any = None, **kwargs: Any):
        if kwargs.get("token") is None and kwargs.get("partner") is None:
            kwargs["token"] = default_token
        return ocpi_call(transport, method, url, json_body, **kwargs)

    return call


@pytest.fixture
def ocpi(client, request) -> Callable[..., Any]:
    """`ocpi_call` bound to pytest-django's in-process `client`: `ocpi("GET", url, partner=ocpi_partner)`.

    Without `token` or `partner`, the token is the test module's `OCPI_TOKEN` (its usual caller), if it sets one.
    """
    return _bound_call(client, request)


@pytest.fixture
def ocpi_live(live_server, request) -> Callable[..., Any]:
    """The same as `ocpi`, over real HTTP to pytest-django's `live_server`."""
    return _bound_call(live_server.url, request)
