"""What a CPO pushing live sessions costs us, and what a driver's live panel costs per poll.

Through the whole Django stack (OCPI decorator, validation, database) on DATABASE_URL (PostgreSQL), inside
a transaction that is rolled back:
- PUT of new sessions, then PATCHes with growing energy and a new charging period each (the live flow);
- POST of the CDRs;
- `GET /charging/live.json` for a driver with a long history, as the page polls it.

    DATABASE_URL=postgres://... .venv/bin/python bench/charging_session_push.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
# A bench runs the platform in-process in development mode (built-in keys), as its figures were measured.
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from cards.models import Card, Driver  # noqa: E402
from charging.models import CDR, Session  # noqa: E402
from roaming.models import PartnerConnection, Party, RoamingAgreement  # noqa: E402
from roaming.ocpi.credentials import authorization_header  # noqa: E402
from roaming.selectors import own_party  # noqa: E402
from roaming.services import store_partner_tokens  # noqa: E402
from stations.models import EVSE, Location  # noqa: E402

SESSIONS = 200
PATCHES_PER_SESSION = 5
HISTORY = 500
POLLS = 300
TOKEN = "bench-cpo-token"


class Rollback(Exception):
    pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run() -> dict:
    now = timezone.now()
    cpo = Party.objects.create(country_code="ZZ", party_id="BCP", role=Party.Role.CPO, name="Bench CPO")
    store_partner_tokens(PartnerConnection.objects.create(party=cpo, status="connected"), from_them=TOKEN)
    # The OCPI layer refuses partners without an agreement in force (HTTP 403).
    RoamingAgreement.objects.create(
        partner=cpo,
        direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
        valid_from=now.date(),
        status=RoamingAgreement.Status.ACTIVE,
    )
    location = Location.objects.create(
        party=cpo,
        ocpi_id="BENCH-LOC",
        address="Bench 1",
        city="Bench",
        country="BEL",
        latitude=50.8,
        longitude=4.3,
        last_updated=now,
    )
    EVSE.objects.create(location=location, uid="BENCH-EVSE", last_updated=now)
    user = get_user_model().objects.create_user("bench-driver", password="bench-password")
    driver = Driver.objects.create(user=user)
    card = Card.objects.create(
        issuer_party=own_party(),
        driver=driver,
        uid="BE0C0001",
        contract_id="BE-MBP-CBENCH001",
        whitelist="ALLOWED",
        last_updated=now,
    )
    token = {
        "country_code": card.issuer_party.country_code,
        "party_id": card.issuer_party.party_id,
        "uid": card.uid,
        "type": "RFID",
        "contract_id": card.contract_id,
    }
    partner = Client(HTTP_AUTHORIZATION=authorization_header(TOKEN))
    errors = 0
    put_ms, patch_ms, cdr_ms = [], [], []

    def call(method: str, url: str, body: dict, into: list) -> None:
        nonlocal errors
        started = time.perf_counter()
        response = getattr(partner, method)(url, data=json.dumps(body), content_type="application/json")
        into.append((time.perf_counter() - started) * 1000)
        if response.status_code not in (200, 201) or response.json()["status_code"] != 1000:
            errors += 1

    for i in range(SESSIONS):
        url = f"/ocpi/emsp/2.2.1/sessions/ZZ/BCP/S{i}"
        call(
            "put",
            url,
            {
                "country_code": "ZZ",
                "party_id": "BCP",
                "id": f"S{i}",
                "start_date_time": "2026-11-01T10:00:00Z",
                "kwh": 0,
                "cdr_token": token,
                "auth_method": "WHITELIST",
                "location_id": "BENCH-LOC",
                "evse_uid": "BENCH-EVSE",
                "connector_id": "1",
                "currency": "EUR",
                "status": "ACTIVE",
                "last_updated": "2026-11-01T10:00:00Z",
            },
            put_ms,
        )
        for p in range(1, PATCHES_PER_SESSION + 1):
            call(
                "patch",
                url,
                {
                    "kwh": p * 2.5,
                    "charging_periods": [
                        {
                            "start_date_time": f"2026-11-01T10:{p:02d}:00Z",
                            "dimensions": [{"type": "ENERGY", "volume": p * 2.5}],
                        }
                    ],
                    "total_cost": {"excl_vat": p, "incl_vat": p * 1.21},
                    "last_updated": f"2026-11-01T10:{p:02d}:00Z",
                },
                patch_ms,
            )
    for i in range(SESSIONS):
        call(
            "post",
            "/ocpi/emsp/2.2.1/cdrs",
            {
                "country_code": "ZZ",
                "party_id": "BCP",
                "id": f"C{i}",
                "start_date_time": "2026-11-01T10:00:00Z",
                "end_date_time": "2026-11-01T11:00:00Z",
                "session_id": f"S{i}",
                "cdr_token": token,
                "auth_method": "WHITELIST",
                "cdr_location": {
                    "id": "BENCH-LOC",
                    "address": "Bench 1",
                    "city": "Bench",
                    "country": "BEL",
                    "coordinates": {"latitude": "50.80000", "longitude": "4.30000"},
                    "evse_uid": "BENCH-EVSE",
                    "evse_id": "ZZ*BCP*E1",
                    "connector_id": "1",
                    "connector_standard": "IEC_62196_T2",
                    "connector_format": "SOCKET",
                    "connector_power_type": "AC_3_PHASE",
                },
                "currency": "EUR",
                "charging_periods": [
                    {"start_date_time": "2026-11-01T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 12.5}]}
                ],
                "total_cost": {"excl_vat": 5, "incl_vat": 6.05},
                "total_energy": 12.5,
                "total_time": 1,
                "last_updated": "2026-11-01T11:00:00Z",
            },
            cdr_ms,
        )

    # A long history for the driver, and one live session, then the page's poll.
    Session.objects.filter(party=cpo).update(status="COMPLETED", end_date_time=now)
    Session.objects.bulk_create(
        [
            Session(
                party=cpo,
                ocpi_id=f"H{i}",
                start_date_time=now - timezone.timedelta(hours=i + 2),
                kwh=10,
                cdr_token=token,
                card=card,
                auth_method="WHITELIST",
                location_ocpi_id="BENCH-LOC",
                evse_uid="BENCH-EVSE",
                connector_id="1",
                currency="EUR",
                status="COMPLETED",
                last_updated=now,
            )
            for i in range(HISTORY)
        ]
    )
    Session.objects.filter(party=cpo, ocpi_id="S0").update(status="ACTIVE", end_date_time=None, start_date_time=now)
    browser = Client()
    browser.force_login(user)
    poll_ms = []
    for _ in range(POLLS):
        started = time.perf_counter()
        response = browser.get("/charging/live.json")
        poll_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or response.json()["session"] is None:
            errors += 1
    assert CDR.objects.filter(party=cpo, unknown_session=False).count() == SESSIONS
    total_s = (sum(put_ms) + sum(patch_ms)) / 1000
    return {
        "session_pushes_per_s": (len(put_ms) + len(patch_ms)) / total_s,
        "put_p50_ms": statistics.median(put_ms),
        "patch_p50_ms": statistics.median(patch_ms),
        "patch_p99_ms": percentile(patch_ms, 0.99),
        "cdr_p99_ms": percentile(cdr_ms, 0.99),
        "live_json_p50_ms": statistics.median(poll_ms),
        "live_json_p99_ms": percentile(poll_ms, 0.99),
        "errors": errors,
    }


def main() -> None:
    if connection.vendor != "postgresql":
        print(f"warning: running on {connection.vendor}; figures are meant for PostgreSQL (set DATABASE_URL)")
    call_command("migrate", verbosity=0)
    settings.ALLOWED_HOSTS = ["testserver"]
    results: dict = {}
    try:
        with transaction.atomic():
            results = run()
            raise Rollback
    except Rollback:
        pass
    print(
        f"{SESSIONS} session PUTs, {SESSIONS * PATCHES_PER_SESSION} PATCHes, {SESSIONS} CDR POSTs through the OCPI "
        f"receivers; {POLLS} polls of /charging/live.json for a driver with {HISTORY} past sessions"
    )
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
