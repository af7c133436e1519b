"""The status ingest pool's server (`python -m mobilityplus.ingest_server`: granian, docs/scaling.md "Two pools").

It serves the platform's OCPI endpoints with only the middleware they need: a partner sees the same answers, errors
and headers as from the main pool, nothing else is served there, and its workers yield the CPU to drivers.
"""

from __future__ import annotations

import datetime as dt
import http.client
import os

import pytest
import requests
from django.utils import timezone

from roaming.ocpi.envelope import format_datetime
from stations.models import EVSE, Location, PendingStatus
from tests.conftest import make_ocpi_partner, ocpi_call
from tests.feeds_fixtures import example
from tests.served_platform import served_ingest
from tests.test_server_pools import _autogroup_nice, _env, _workers

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/ocpi/emsp/2.2.1/locations"
OCPI_TOKEN = "bec-ingest-token"


def test_the_ingest_server_answers_partners_as_the_main_pool_does_and_yields_the_cpu(ocpi, tmp_path):
    make_ocpi_partner(country_code="BE", party_id="BEC", token=OCPI_TOKEN, tokens__to_them="to-bec")
    assert ocpi("PUT", BASE + "/BE/BEC/LOC1", example("location_example.json")).status_code == 201
    stamp = format_datetime(timezone.now() + dt.timedelta(seconds=1))
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)

    with served_ingest(_env(STATUS_INBOX="true"), tmp_path / "ingest.log") as ingest:

        def patch(uid: str, body, **more):
            return ocpi_call(ingest.url, "PATCH", f"{BASE}/BE/BEC/LOC1/{uid}", body, **{"token": OCPI_TOKEN, **more})

        # A status PATCH: answered 1000 once queued, request ids echoed and routing headers swapped.
        routing = {"X-Request-ID": "req-1", "OCPI-from-country-code": "BE", "OCPI-from-party-id": "BEC"}
        answer = patch("3257", {"status": "OUTOFORDER", "last_updated": stamp}, headers=routing)
        assert (answer.status_code, answer.envelope["status_code"]) == (200, 1000), answer.envelope
        assert answer.headers["X-Request-ID"] == "req-1" and answer.headers["OCPI-to-party-id"] == "BEC"
        assert list(PendingStatus.objects.values_list("status", flat=True)) == ["OUTOFORDER"]

        # Bad credentials and bad input: the protocol's errors, nothing queued, the EVSE untouched.
        unknown = patch("3257", {"status": "AVAILABLE", "last_updated": stamp}, token="nope")
        assert (unknown.status_code, unknown.envelope["status_code"]) == (401, 2000)
        for body in ({"status": "SLEEPING", "last_updated": stamp}, {"status": "AVAILABLE"}, "[not json"):
            refused = patch("3257", body)
            assert (refused.status_code, refused.envelope["status_code"]) == (400, 2001), (body, refused.envelope)
        missing = patch("9999", {"status": "AVAILABLE", "last_updated": stamp})
        assert (missing.status_code, missing.envelope["status_code"]) == (404, 2003)
        assert PendingStatus.objects.count() == 1
        assert EVSE.objects.get(uid="3257").status == "RESERVED"

        # A whole location pushed (the general path, every check and repair) is taken as by the main pool.
        location = example("location_example.json")
        location["id"], location["name"] = "LOC2", "Pushed to the ingest pool"
        pushed = ocpi_call(ingest.url, "PUT", BASE + "/BE/BEC/LOC2", location, token=OCPI_TOKEN)
        assert (pushed.status_code, pushed.envelope["status_code"]) == (201, 1000), pushed.envelope
        assert Location.objects.get(ocpi_id="LOC2").name == "Pushed to the ingest pool"

        # Nothing but OCPI and the health check: its middleware is OCPI's only (no sessions, CSRF, logins).
        assert requests.get(ingest.url + "/healthz", timeout=10).status_code == 200
        for page in ("/", "/admin/login/", "/accounts/login/", "/api/v1/stations?bbox=4.3,50.8,4.4,50.9&zoom=14"):
            answer = requests.get(ingest.url + page, timeout=10)
            assert answer.status_code == 404 and "OCPI calls only" in answer.text, page
        assert requests.post(ingest.url + "/admin/login/", data={"username": "x"}, timeout=10).status_code == 404
        raw = http.client.HTTPConnection(ingest.url.removeprefix("http://"), timeout=10)
        raw.request("GET", "/healthz/../admin/login/")  # sent as is (a client library would resolve the dots)
        refused = raw.getresponse()
        assert refused.status == 404 and b"OCPI calls only" in refused.read()  # refused before Django sees it

        # Its workers (and, leading its own session, its scheduling group) run at nice 19: drivers first.
        workers = _workers(ingest.pid)
        assert workers and {os.getpriority(os.PRIO_PROCESS, pid) for pid in workers} == {min(19, base_nice + 19)}
        if _autogroup_nice(ingest.pid) is not None:
            assert _autogroup_nice(ingest.pid) == 19
