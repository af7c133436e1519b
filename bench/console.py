"""Benchmark of the staff console's reads: a big partner's dashboard, the staff overview and a /metrics scrape.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mp_console_bench .venv/bin/python bench/console.py

Sets up (once; kept for the next run) 60 partners, one of them big: 20,000 stations, 30 days of hourly feed runs
(720), 300,000 authorization decisions with it over the last 30 days (a tenth real-time calls to it), 2,000 token
pushes waiting. Prints the median and worst of BENCH_REPEAT (7) runs of each read, with its query count.
Last line: name=value figures.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from cards.models import AuthorizationDecision, Card  # noqa: E402
from console.selectors import partner_dashboard, staff_overview  # noqa: E402
from mobilityplus.metrics import registry  # noqa: E402
from roaming.models import PartnerConnection, Party, RoamingAgreement  # noqa: E402
from roaming.outbox_models import OutboxMessage  # noqa: E402
from roaming.selectors import own_party  # noqa: E402
from stations.models import Location, SyncRun  # noqa: E402

REPEAT = int(os.environ.get("BENCH_REPEAT", "7"))
STATIONS = 20_000
DECISIONS = 300_000


def set_up() -> Party:
    big = Party.objects.filter(country_code="XB", party_id="BIG").first()
    if big is not None:
        return big
    now = timezone.now()
    with transaction.atomic():
        parties = [
            Party.objects.create(country_code="XB", party_id=f"P{index:02d}", role="CPO", name=f"Bench partner {index}")
            for index in range(59)
        ]
        big = Party.objects.create(country_code="XB", party_id="BIG", role="CPO_EMSP", name="Bench big partner")
        for party in [*parties, big]:
            connection_ = PartnerConnection.objects.create(party=party, status="connected", version="2.2.1")
            RoamingAgreement.objects.create(partner=party, direction="both", status="active", valid_from=now.date())
            SyncRun.objects.bulk_create(
                SyncRun(connection=connection_, status="failed" if hour % 50 == 0 else "succeeded", full=hour % 24 == 0,
                        started_at=now - dt.timedelta(hours=hour), finished_at=now - dt.timedelta(hours=hour),
                        pages=20, updated=50, unchanged=19_950, rejected=hour % 7)
                for hour in range(720 if party is big else 48)
            )  # fmt: skip
        Location.objects.bulk_create(
            Location(party=big, source=big.connection, ocpi_id=f"L{index}", address="Street 1", city="City",
                     country="BEL", latitude=50 + index / 1e5, longitude=4, last_updated=now,
                     publish=index % 10 != 0, published_to_our_drivers=index % 10 != 0)
            for index in range(STATIONS)
        )  # fmt: skip
        rows = []
        for index in range(DECISIONS):
            realtime = index % 10 == 0
            rows.append(
                AuthorizationDecision(
                    direction="cpo" if realtime else "emsp", partner="XB*BIG", token_uid=f"T{index % 5000}",
                    token_type="RFID", result="ALLOWED" if index % 13 else "BLOCKED", reason="bench",
                    path="realtime" if realtime else "local", elapsed_ms=(index % 400) + 0.5,
                    decided_at=now - dt.timedelta(seconds=index * 8.64),
                )
            )  # fmt: skip
        AuthorizationDecision.objects.bulk_create(rows, batch_size=5000)
        me = own_party()
        cards = Card.objects.bulk_create(
            Card(issuer_party=me, uid=f"BENCH{index:06d}", contract_id=f"BE-MBP-B{index:08d}", last_updated=now)
            for index in range(2000)
        )
        OutboxMessage.objects.bulk_create(
            OutboxMessage(
                partner=big, module="tokens", object_id=card.uid, method="PUT", status="failed", next_attempt_at=now
            )
            for card in cards
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return big


def measure(name: str, read) -> tuple[float, float, int]:
    timings = []
    for _ in range(REPEAT):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            read()
            timings.append((time.perf_counter() - started) * 1000)
    median, worst = statistics.median(timings), max(timings)
    print(f"{name:>22}: median {median:7.1f} ms, worst {worst:7.1f} ms, {len(queries)} queries")
    return median, worst, len(queries)


def main() -> None:
    call_command("migrate", verbosity=0)
    big = set_up()
    print(f"load: {os.getloadavg()[0]:.1f} (1 min), {STATIONS} stations, {DECISIONS} decisions, 60 partners")
    dashboard = measure("partner dashboard", lambda: partner_dashboard(big))
    overview = measure("staff overview", staff_overview)
    metrics = measure("/metrics scrape", lambda: generate_latest(registry()))
    print(
        f"dashboard_ms={dashboard[0]:.1f} dashboard_queries={dashboard[2]} overview_ms={overview[0]:.1f} "
        f"overview_queries={overview[2]} metrics_ms={metrics[0]:.1f} load1={os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
