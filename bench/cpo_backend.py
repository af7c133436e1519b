"""Benchmark of the charge-point backend API (docs/cpo.md): how fast our central system's calls are answered.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mp_cpo_bench REDIS_URL=redis://127.0.0.1:6379/4 \
        DEBUG=true .venv/bin/python bench/cpo_backend.py

Sets up its own data (migrates the database, one of our stations with 20 EVSEs, an eMSP with sessions and cdrs
RECEIVERs, its drivers' tokens), then plays BENCH_SESSIONS foreign drivers' sessions through the API views
in-process (Django's test client: every middleware, authentication, serializer and transaction, no socket):
start, BENCH_METER_VALUES meter values, end with its CDR. Every call writes its outbox messages; with REDIS_URL the
after-commit kicks go to the broker (no worker runs here, so nothing is delivered and no partner is called).
Prints the latency percentiles per call type. Last line: name=value figures.
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
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "200"))
METER_VALUES = int(os.environ.get("BENCH_METER_VALUES", "10"))
TOKEN = "bench-backend-token"


def main() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    if not os.environ.get("REDIS_URL"):
        sys.exit("Set REDIS_URL: without a broker every outbox kick would deliver on the request path.")
    call_command("migrate", verbosity=0)
    settings.CARDS_BACKEND_API_TOKEN = TOKEN
    settings.ALLOWED_HOSTS = ["*"]

    from cards.models import Card, ForeignToken
    from charging.models import CDR, MeterSample, Session
    from roaming.models import PartnerConnection, Party, RoamingAgreement
    from roaming.outbox_models import OutboxMessage
    from roaming.selectors import own_party
    from stations.models import EVSE, Connector, Location

    me = own_party()
    run = timezone.now().strftime("%H%M%S")
    now = timezone.now()
    location, _ = Location.objects.get_or_create(
        party=me,
        ocpi_id="BENCH-LOC",
        defaults={
            "name": "Bench",
            "address": "Bench street 1",
            "city": "Gent",
            "country": "BEL",
            "latitude": 51.05,
            "longitude": 3.72,
            "last_updated": now,
        },
    )
    evses = []
    for n in range(20):
        evse, created = EVSE.objects.get_or_create(
            location=location, uid=f"BENCH-E{n}", defaults={"status": "AVAILABLE", "last_updated": now}
        )
        if created:
            Connector.objects.create(
                evse=evse,
                connector_id="1",
                standard="IEC_62196_T2",
                format="SOCKET",
                power_type="AC_3_PHASE",
                last_updated=now,
            )
        evses.append(evse)
    emsp, _ = Party.objects.get_or_create(country_code="NL", party_id="BNC", defaults={"role": "EMSP", "name": "B"})
    endpoints = [
        {"identifier": m, "role": "RECEIVER", "url": f"http://127.0.0.1:9/emsp/{m}"} for m in ("sessions", "cdrs")
    ]
    PartnerConnection.objects.update_or_create(
        party=emsp, defaults={"status": PartnerConnection.Status.CONNECTED, "endpoints": endpoints}
    )
    RoamingAgreement.objects.get_or_create(
        partner=emsp,
        direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS,
        defaults={"status": "active", "valid_from": now.date() - dt.timedelta(days=1)},
    )
    tokens = []
    for n in range(SESSIONS):
        uid = f"BNC{n:08X}"
        ForeignToken.objects.get_or_create(
            party=emsp,
            uid=uid,
            type=Card.Type.RFID,
            defaults={
                "contract_id": f"NL-BNC-C{n:08d}",
                "issuer": "Bench",
                "valid": True,
                "whitelist": "ALLOWED",
                "data": {},
                "last_updated": now,
            },
        )
        tokens.append(uid)

    client = Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    timings: dict[str, list[float]] = {"start": [], "meter": [], "end": []}
    start = now - dt.timedelta(hours=1)

    def post(kind: str, path: str, body: dict) -> None:
        began = time.perf_counter()
        response = client.post(f"/api/v1/charge-point{path}", body, content_type="application/json")
        timings[kind].append((time.perf_counter() - began) * 1000)
        if response.status_code >= 400:
            sys.exit(f"{path}: {response.status_code} {response.content[:300]}")

    stamp = lambda moment: moment.isoformat()  # noqa: E731
    wall, cpu = time.perf_counter(), time.process_time()
    for n, uid in enumerate(tokens):
        sid = f"B{run}-{n}"
        evse = evses[n % len(evses)]
        body = {"session_id": sid, "location_id": "BENCH-LOC", "evse_uid": evse.uid, "started_at": stamp(start)}
        post("start", "/sessions", {**body, "token_uid": uid})
        for m in range(1, METER_VALUES + 1):
            moment = start + dt.timedelta(minutes=3 * m)
            post("meter", f"/sessions/{sid}/meter-values", {"at": stamp(moment), "kwh": f"{m * 0.7:.3f}"})
        post("end", f"/sessions/{sid}/end", {"ended_at": stamp(start + dt.timedelta(minutes=45)), "kwh": "8.000"})
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    figures = {}
    for kind, values in timings.items():
        p50, p95, p99 = pct(values, 0.5), pct(values, 0.95), pct(values, 0.99)
        print(
            f"{kind:6} n={len(values):5}  p50={p50:6.2f} ms  p95={p95:6.2f} ms  p99={p99:6.2f} ms  "
            f"mean={statistics.mean(values):6.2f} ms"
        )
        figures.update({f"{kind}_p50_ms": round(p50, 2), f"{kind}_p99_ms": round(p99, 2)})
    calls = sum(len(v) for v in timings.values())
    queued = OutboxMessage.objects.filter(partner=emsp, status="pending").count()
    ours = Session.objects.filter(ocpi_id__startswith=f"B{run}-")
    print(
        f"{calls} calls in {wall:.1f} s; sessions {ours.count()}, CDRs "
        f"{CDR.objects.filter(session__in=ours).count()}, "
        f"samples {MeterSample.objects.filter(session__in=ours).count()}"
        f", outbox messages waiting for the eMSP {queued}"
    )
    print(f"load: {os.getloadavg()[0]:.2f}")
    # Our process's CPU per call (PostgreSQL's work excluded): less distorted by a loaded machine than latency.
    print(f"CPU of this process per call: {cpu / calls * 1000:.2f} ms")
    figures.update(
        calls_per_s=round(calls / wall, 1),
        cpu_ms_per_call=round(cpu / calls * 1000, 2),
        load1=round(os.getloadavg()[0], 2),
    )
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
