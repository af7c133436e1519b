"""Bench what tariffs add to hot pages and to every CDR: the station API with a price per connector, our Tariffs
SENDER's pages, the start page's estimates, and the check of one CDR.

    DATABASE_URL=postgres://... python bench/tariffs.py [--requests 200]

Sets up its own data (a partner with 100 tariffs, a station of 10 EVSEs x 2 connectors, 100 of our tariffs, a CDR
with 24 charging periods; kept between runs), calls the real views in-process (Django's test client) and prints
p50/p95 per call and the queries each makes. Last line: name=value figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from charging.models import CDR  # noqa: E402
from roaming.models import PartnerConnection, Party, RoamingAgreement  # noqa: E402
from roaming.ocpi.credentials import authorization_header  # noqa: E402
from roaming.ocpi.envelope import format_datetime  # noqa: E402
from roaming.selectors import own_party  # noqa: E402
from roaming.services import store_partner_tokens  # noqa: E402
from stations.models import EVSE, Connector, Location  # noqa: E402
from stations.services import refresh_location_summaries  # noqa: E402
from tariffs import services  # noqa: E402
from tariffs.billing_check import check_cdr_price  # noqa: E402
from tariffs.models import Tariff  # noqa: E402

TOKEN = "bench-tariffs-emsp"  # noqa: S105
ELEMENTS = [
    {"price_components": [{"type": "FLAT", "price": 1, "vat": 21, "step_size": 1}]},
    {"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 21, "step_size": 1}]},
    {"price_components": [{"type": "TIME", "price": 2.4, "vat": 21, "step_size": 60}],
     "restrictions": {"start_time": "18:00", "end_time": "08:00"}},
    {"price_components": [{"type": "PARKING_TIME", "price": 6, "vat": 21, "step_size": 60}],
     "restrictions": {"min_duration": 7200, "day_of_week": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY"]}},
]  # fmt: skip


def document(party: Party, tariff_id: str) -> dict:
    return {"country_code": party.country_code, "party_id": party.party_id, "id": tariff_id, "currency": "EUR",
            "elements": ELEMENTS, "last_updated": format_datetime(timezone.now() - dt.timedelta(days=1))}  # fmt: skip


def set_up() -> tuple[Location, CDR]:
    now = timezone.now()
    me = own_party()
    cpo, _ = Party.objects.get_or_create(country_code="NL", party_id="BTA", defaults={"role": "CPO", "name": "Bench"})
    emsp, _ = Party.objects.get_or_create(country_code="NL", party_id="BTE", defaults={"role": "EMSP", "name": "BE"})
    for party, direction in ((cpo, "our_cards"), (emsp, "their_cards")):
        RoamingAgreement.objects.get_or_create(
            partner=party, direction=direction, defaults={"status": "active", "valid_from": now.date()}
        )
    connection_, _ = PartnerConnection.objects.get_or_create(party=emsp, defaults={"status": "connected"})
    store_partner_tokens(connection_, from_them=TOKEN)
    for n in range(100):
        if not Tariff.objects.filter(party=cpo, ocpi_id=f"B{n}").exists():
            services.store_partner_tariff(cpo, f"B{n}", document(cpo, f"B{n}"), source=None)
        if not Tariff.objects.filter(party=me, ocpi_id=f"BENCH-{n}").exists():
            ours = {**document(me, f"BENCH-{n}"), "last_updated": format_datetime(now)}
            Tariff.objects.create(party=me, ocpi_id=f"BENCH-{n}", currency="EUR", last_updated=now, document=ours)
    location, created = Location.objects.get_or_create(
        party=cpo, ocpi_id="BENCH-TARIFFS",
        defaults={"name": "Bench", "address": "x", "city": "Gent", "country": "BEL", "latitude": 51.05,
                  "longitude": 3.72, "time_zone": "Europe/Brussels", "last_updated": now},
    )  # fmt: skip
    if created:
        for e in range(10):
            evse = EVSE.objects.create(location=location, uid=f"E{e}", status="AVAILABLE", last_updated=now,
                                       capabilities=["REMOTE_START_STOP_CAPABLE"])  # fmt: skip
            for c in range(2):
                Connector.objects.create(evse=evse, connector_id=str(c + 1), standard="IEC_62196_T2", format="SOCKET",
                                         power_type="AC_3_PHASE", max_electric_power=22000, last_updated=now,
                                         tariff_ids=[f"B{e * 2 + c}", "UNKNOWN"])  # fmt: skip
        refresh_location_summaries([location.pk])  # the map shows locations with EVSEs
    start = now - dt.timedelta(hours=14)
    periods = [{"start_date_time": format_datetime(start + dt.timedelta(minutes=30 * i)),
                "dimensions": [{"type": "ENERGY", "volume": 2.0}, {"type": "MAX_POWER", "volume": 11}],
                "tariff_id": "B0"} for i in range(24)]  # fmt: skip
    cdr, _ = CDR.objects.update_or_create(
        party=cpo, ocpi_id="BENCH-CDR",
        defaults={"start_date_time": start, "end_date_time": now, "auth_method": "WHITELIST", "currency": "EUR",
                  "total_cost_excl_vat": 20, "total_energy": 48, "total_time": 12, "last_updated": now,
                  "raw": {"charging_periods": periods}, "location": location},
    )  # fmt: skip
    return location, cdr


def measure(call, n: int) -> tuple[float, float, int]:
    call()  # warm
    queries = []  # counted by a wrapper: the test client's request_started signal resets connection.queries

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = call()
    assert getattr(response, "status_code", 200) == 200, response
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], len(queries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    n = parser.parse_args().requests
    settings.ALLOWED_HOSTS = ["testserver"]
    location, cdr = set_up()
    client = Client()
    auth = {"HTTP_AUTHORIZATION": authorization_header(TOKEN)}
    results = {
        "station_api": measure(lambda: client.get(f"/api/v1/stations/{location.pk}"), n),
        "sender_page_100": measure(lambda: client.get("/ocpi/cpo/2.2.1/tariffs?limit=100", **auth), n),
        "cdr_check": measure(lambda: check_cdr_price(cdr), n),
    }
    assert client.get(f"/api/v1/stations/{location.pk}").json()["properties"]["evses"][0]["connectors"][0]["price"][
        "status"] == "priced"  # fmt: skip
    for name, (p50, p95, queries) in results.items():
        print(f"{name:18s} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   {queries} queries")
    load = os.getloadavg()[0]
    figures = " ".join(f"{name}_p50_ms={p50:.2f} {name}_queries={q}" for name, (p50, _, q) in results.items())
    print(f"{figures} load1={load:.1f}")


if __name__ == "__main__":
    main()
