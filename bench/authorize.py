"""Benchmark of our real-time authorize endpoint (OCPI 2.2.1, eMSP side).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mp_cards_bench .venv/bin/python bench/authorize.py

Loads 100,000 cards and 200 CPO partners (all with an agreement in force, 20 of them only for their
cards at our stations), serves the platform with gunicorn on PostgreSQL, and drives
POST /ocpi/emsp/2.2.1/tokens/{uid}/authorize with 50 concurrent connections
from `wrk` (another process; `apt-get install -y wrk`), random cards and random partners. Prints
throughput, latency percentiles, errors and whether the decision log kept up (every answered
request has its row shortly after the load stops). Last line: name=value figures.

Options (environment): BENCH_SECONDS (20), BENCH_WORKERS (gunicorn workers, 3), BENCH_CONNECTIONS (50),
BENCH_WORKER_CLASS (sync; gthread keeps client connections alive but has a longer tail here) and BENCH_THREADS (1),
BENCH_CARDS (100000), BENCH_PARTNERS (200), BENCH_PORT (8765).

gunicorn runs with mobilityplus/gunicorn.conf.py, as in production: each worker warms its card cache.

`--scenario stalling-emsp` (docs/faults.md) measures our stations' POST /api/v1/authorizations instead: `wrk`
asks for random cards of ours (the normal load) while 20 clients keep asking for a token of an eMSP that
stalls (answers after 10 s, trickling a byte every 0.5 s so no read timeout fires), and one client asks for a
token of a second, healthy eMSP every 0.25 s. It prints our own cards' p99 and how many of the healthy eMSP's
authorizations it answered itself (path `realtime`). `--no-isolation` turns the per-eMSP concurrency limit
and circuit off (limits set out of reach), for the figures before the fix. `--redis-url` gives the workers a
Redis cache, so they share the circuit (default: none, each worker has its own).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARDS = int(os.environ.get("BENCH_CARDS", "100000"))
PARTNERS = int(os.environ.get("BENCH_PARTNERS", "200"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
PORT = int(os.environ.get("BENCH_PORT", "8765"))
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "sync")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
UID_PREFIX = "BE0"  # bench cards: BE0 + 11 hex digits

# The served platform runs as in production (DEBUG off), which needs both keys; bench-only values.
BENCH_KEYS = {
    "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
    "OCPI_TOKEN_ENCRYPTION_KEY": "YmVuY2gtb25seS1rZXktbm90LWZvci1wcm9kdWN0aW8=",
}


def token_of(index: int) -> str:
    return f"bench-partner-token-{index:04d}"


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
    # Loading the data in this process: development mode, with the keys the served platform uses (BENCH_KEYS).
    os.environ.setdefault("DEBUG", "true")
    os.environ.update(BENCH_KEYS)
    import django

    django.setup()


def load_data() -> None:
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from cards.identifiers import normalise_contract_id
    from cards.models import Card
    from roaming.models import PartnerConnection, Party, RoamingAgreement
    from roaming.ocpi.credentials import hash_token
    from roaming.selectors import own_party

    call_command("migrate", verbosity=0)
    me = own_party()
    existing = Card.objects.filter(issuer_party=me, uid__startswith=UID_PREFIX).count()
    started = time.monotonic()
    if existing != CARDS:
        Card.objects.filter(issuer_party=me, uid__startswith=UID_PREFIX).delete()
        now = timezone.now()
        statuses = [Card.Status.ACTIVE] * 17 + [Card.Status.BLOCKED, Card.Status.LOST, Card.Status.EXPIRED]
        batch = []
        for i in range(CARDS):
            batch.append(
                Card(
                    issuer_party=me,
                    uid=f"{UID_PREFIX}{i:011X}",
                    type=Card.Type.RFID,
                    contract_id=normalise_contract_id(f"BEMBPB{i:08d}"),
                    visual_number=f"MBP-B{i:08d}",
                    issuer="MobilityPlus",
                    whitelist=Card.Whitelist.ALLOWED_OFFLINE,
                    status=statuses[i % len(statuses)],
                    last_updated=now,
                )
            )
            if len(batch) == 5000:
                Card.objects.bulk_create(batch)
                batch = []
        Card.objects.bulk_create(batch)
    print(f"cards: {CARDS} ({'reused' if existing == CARDS else 'loaded'} in {time.monotonic() - started:.1f}s)")
    with transaction.atomic():
        for i in range(PARTNERS):
            party, _ = Party.objects.get_or_create(
                country_code="NL",
                party_id=f"{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}{i % 10}",
                defaults={"role": Party.Role.CPO, "name": f"Bench CPO {i}"},
            )
            PartnerConnection.objects.update_or_create(
                party=party,
                defaults={
                    "status": PartnerConnection.Status.CONNECTED,
                    "token_from_them_hash": hash_token(token_of(i)),
                },
            )
            # Every partner has an agreement in force (the OCPI gate refuses others); for one in ten it covers
            # only their cards at our stations, so our cards get NOT_ALLOWED there.
            if not RoamingAgreement.objects.filter(partner=party).exists():
                RoamingAgreement.objects.create(
                    partner=party,
                    direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
                    if i % 10 == 9
                    else RoamingAgreement.Direction.BOTH,
                    status=RoamingAgreement.Status.ACTIVE,
                    valid_from=timezone.localdate().replace(year=2020),
                )
    print(f"partners: {PARTNERS}, with an agreement: {RoamingAgreement.objects.filter(status='active').count()}")


WRK_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local tokens = {%(tokens)s}
local body = '{"location_id": "BENCH-LOC-1", "evse_uids": ["BENCH-EVSE-1"]}'
local bad = 0
local counter = 0
local prefix = string.format("%%08x", math.random(0, 2147483647))
request = function()
  counter = counter + 1
  local uid = string.format("%(prefix)s%%011X", math.random(0, %(cards)d - 1))
  local headers = {}
  headers["Authorization"] = tokens[math.random(1, #tokens)]
  headers["Content-Type"] = "application/json"
  -- Partners send a unique X-Request-ID with every call (OCPI 2.2.1), so the server need not invent one.
  headers["X-Request-ID"] = prefix .. "-" .. counter
  headers["X-Correlation-ID"] = prefix .. "-" .. counter
  return wrk.format("POST", "/ocpi/emsp/2.2.1/tokens/" .. uid .. "/authorize?type=RFID", headers, body)
end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"status_code": 1000', 1, true) then
    bad = bad + 1
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d duration_us=%%d p50_us=%%d p95_us=%%d p99_us=%%d max_us=%%d "
    .. "socket_errors=%%d non2xx=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def wrk_script(directory: Path) -> Path:
    tokens = ", ".join('"Token ' + base64.b64encode(token_of(i).encode()).decode() + '"' for i in range(PARTNERS))
    path = directory / "authorize.lua"
    path.write_text(WRK_SCRIPT % {"tokens": tokens, "prefix": UID_PREFIX, "cards": CARDS})
    return path


def baseline(seconds: int = 5) -> float:
    """What this machine gives right now for a request Django refuses at once (405 from the OCPI layer)."""
    completed = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            f"http://127.0.0.1:{PORT}/ocpi/emsp/2.2.1/tokens/X/authorize",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", completed.stdout)
    return float(match.group(1)) if match else 0.0


def run_wrk(script: Path, seconds: int) -> dict:
    completed = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{PORT}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark of authorization (options in the environment: see the module docstring)."
    )
    parser.add_argument("--scenario", choices=("emsp", "stalling-emsp"), default="emsp")
    parser.add_argument("--no-isolation", action="store_true", help="stalling-emsp: per-eMSP limit and circuit off")
    parser.add_argument("--redis-url", default="", help="stalling-emsp: a Redis cache the workers share")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.scenario == "stalling-emsp":
        return stalling_emsp_main(args)
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("Set DATABASE_URL to a PostgreSQL database (the bench measures the real set-up).")
        return 2
    if not shutil.which("wrk"):
        print("wrk is needed as the load generator: apt-get install -y wrk")
        return 2
    setup_django()
    load_data()
    from cards.models import AuthorizationDecision

    env = {
        **os.environ,
        **BENCH_KEYS,
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "ERROR",
        "DB_CONN_MAX_AGE": "600",
        "REDIS_URL": "",
    }
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "mobilityplus.wsgi",
        "-c",
        str(ROOT / "mobilityplus" / "gunicorn.conf.py"),  # warms each worker's card cache before it serves
        "--bind",
        f"127.0.0.1:{PORT}",
        "--workers",
        str(WORKERS),
        "--worker-class",
        WORKER_CLASS,
        "--threads",
        str(THREADS),
        "--backlog",
        "2048",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("gunicorn did not start")
                    return 1
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            script = wrk_script(Path(tmp))
            run_wrk(script, 3)  # warm-up: every worker has loaded its cache and connections
            time.sleep(1)
            ceiling_before = baseline()
            time.sleep(1)
            before = AuthorizationDecision.objects.count()
            result = run_wrk(script, SECONDS)
            # The log is written by each worker's background thread; it has kept up if every answered
            # request has its row within a couple of flush intervals after the load stops.
            answered = result["requests"] - result["socket_errors"]
            waited_started = time.monotonic()
            written = AuthorizationDecision.objects.count() - before
            while written < answered and time.monotonic() - waited_started < 10:
                time.sleep(0.1)
                written = AuthorizationDecision.objects.count() - before
            lag_s = time.monotonic() - waited_started
            ceiling = (ceiling_before + baseline()) / 2  # the machine is shared: bracket the run
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    seconds = result["duration_us"] / 1e6
    throughput = result["requests"] / seconds
    errors = result["socket_errors"] + result["non2xx"]
    kept_up = written >= answered and lag_s < 2
    recent = list(
        AuthorizationDecision.objects.order_by("-decided_at").values_list("result", flat=True)[: answered or 1]
    )
    mix = {r: recent.count(r) for r in sorted(set(recent))}
    print(
        f"gunicorn: {WORKERS} {WORKER_CLASS} workers x {THREADS} threads, connections: {CONNECTIONS}, "
        f"duration: {seconds:.1f}s"
    )
    print(f"requests: {result['requests']}, throughput: {throughput:.0f}/s, errors: {errors}")
    print(
        f"latency: p50 {result['p50_us'] / 1000:.1f} ms, p95 {result['p95_us'] / 1000:.1f} ms, "
        f"p99 {result['p99_us'] / 1000:.1f} ms, max {result['max_us'] / 1000:.1f} ms"
    )
    print(f"answers: {json.dumps(mix)}")
    print(
        f"machine ceiling now: {ceiling:.0f}/s (mean of before and after) for a request the same server refuses "
        f"at once (no work); this run reached {throughput / ceiling:.0%} of it"
    )
    print(f"decision log: {written} rows for {answered} answered requests, {lag_s:.1f}s after the load stopped")
    print(
        f"throughput_per_s={throughput:.0f} p50_ms={result['p50_us'] / 1000:.1f} p95_ms={result['p95_us'] / 1000:.1f} "
        f"p99_ms={result['p99_us'] / 1000:.1f} errors={errors} log_rows={written} log_kept_up={int(kept_up)} "
        f"ceiling_per_s={ceiling:.0f} "
        f"cards={CARDS} partners={PARTNERS} workers={WORKERS} connections={CONNECTIONS}"
    )
    return 0


# -- scenario: one eMSP stalling while our stations' normal load runs -------------------------------------------

BACKEND_TOKEN = "bench-backend-token"
STALLING_UID, HEALTHY_UID = "5A11ED000001", "0CC0CC000001"
STALLING_CLIENTS = 20

STATION_WRK_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  local uid = string.format("%(prefix)s%%011X", math.random(0, %(cards)d - 1))
  local body = '{"uid": "' .. uid .. '", "location_id": "BENCH-LOC-1", "evse_uid": "BENCH-EVSE-1"}'
  local headers = {}
  headers["Authorization"] = "Bearer %(token)s"
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/v1/authorizations", headers, body)
end
response = function(status, headers, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d duration_us=%%d p50_us=%%d p95_us=%%d p99_us=%%d max_us=%%d "
    .. "socket_errors=%%d non2xx=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


class BenchEmsp:
    """An eMSP's authorize endpoint on 127.0.0.1: healthy (answers at once) or stalling (10 s, trickled)."""

    def __init__(self, stalling: bool) -> None:
        self.requests = 0
        self.stop = threading.Event()
        emsp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                emsp.requests += 1
                body = json.dumps(
                    {"status_code": 1000, "data": {"allowed": "ALLOWED"}, "timestamp": "2026-01-01T00:00:00Z"}
                )
                payload = (" " * 20 + body).encode() if stalling else body.encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if stalling:
                        for byte in payload[:20]:  # 10 s of a byte every 0.5 s, then the rest
                            if emsp.stop.wait(0.5):
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                        payload = payload[20:]
                    self.wfile.write(payload)
                except OSError:
                    pass  # the platform gave up on us

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/emsp/tokens"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def load_station_data(stalling: BenchEmsp, healthy: BenchEmsp) -> None:
    """Our EVSE, and two eMSPs with an agreement, a tokens SENDER endpoint and one cached token each."""
    from django.utils import timezone

    from cards.models import ForeignToken
    from roaming.models import PartnerConnection, Party, RoamingAgreement
    from roaming.selectors import own_party
    from roaming.services import store_partner_tokens
    from stations.models import EVSE, Location

    now = timezone.now()
    location, _ = Location.objects.update_or_create(
        party=own_party(),
        ocpi_id="BENCH-LOC-1",
        defaults={
            "name": "Bench station",
            "address": "Bench street 1",
            "city": "Brussel",
            "postal_code": "1000",
            "country": "BEL",
            "latitude": 50.85,
            "longitude": 4.35,
            "time_zone": "Europe/Brussels",
            "last_updated": now,
        },
    )
    EVSE.objects.update_or_create(
        location=location, uid="BENCH-EVSE-1", defaults={"status": "AVAILABLE", "last_updated": now}
    )
    for party_id, emsp, uid in (("STL", stalling, STALLING_UID), ("HEA", healthy, HEALTHY_UID)):
        party, _ = Party.objects.update_or_create(
            country_code="NL", party_id=party_id, defaults={"role": Party.Role.EMSP, "name": f"Bench eMSP {party_id}"}
        )
        connection, _ = PartnerConnection.objects.update_or_create(
            party=party,
            defaults={
                "status": PartnerConnection.Status.CONNECTED,
                "endpoints": [{"identifier": "tokens", "role": "SENDER", "url": emsp.url}],
            },
        )
        store_partner_tokens(connection, to_them=f"bench-to-{party_id}")
        if not RoamingAgreement.objects.filter(partner=party).exists():
            RoamingAgreement.objects.create(
                partner=party,
                direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS,
                status=RoamingAgreement.Status.ACTIVE,
                valid_from=timezone.localdate().replace(year=2020),
            )
        ForeignToken.objects.update_or_create(
            party=party,
            uid=uid,
            type="RFID",
            defaults={
                "contract_id": f"NL-{party_id}-C00000001-X",
                "issuer": party_id,
                "valid": True,
                "whitelist": "ALLOWED_OFFLINE",
                "data": {"uid": uid, "type": "RFID", "valid": True, "whitelist": "ALLOWED_OFFLINE"},
                "last_updated": now,
            },
        )


def ask_station(uid: str) -> tuple[dict | None, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/api/v1/authorizations",
        data=json.dumps({"uid": uid, "location_id": "BENCH-LOC-1", "evse_uid": "BENCH-EVSE-1"}).encode(),
        headers={"Authorization": f"Bearer {BACKEND_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read()), time.monotonic() - started
    except OSError:
        return None, time.monotonic() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def stalling_emsp_main(args: argparse.Namespace) -> int:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("Set DATABASE_URL to a PostgreSQL database (the bench measures the real set-up).")
        return 2
    if not shutil.which("wrk"):
        print("wrk is needed as the load generator: apt-get install -y wrk")
        return 2
    from cryptography.fernet import Fernet

    # The bench stores the tokens we send to the eMSPs; gunicorn must be able to read them.
    os.environ.setdefault("OCPI_TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    setup_django()
    load_data()
    stalling, healthy = BenchEmsp(stalling=True), BenchEmsp(stalling=False)
    load_station_data(stalling, healthy)
    env = {
        **os.environ,
        "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "ERROR",
        "DB_CONN_MAX_AGE": "600",
        "REDIS_URL": args.redis_url,
        "CARDS_BACKEND_API_TOKEN": BACKEND_TOKEN,
    }
    if args.no_isolation:
        env.update(
            CARDS_REALTIME_PARTNER_CONCURRENCY="100000",
            CARDS_CIRCUIT_FAILURES="100000000",
            CARDS_REALTIME_POOL_SIZE="16",
        )
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "mobilityplus.wsgi",
        "-c",
        str(ROOT / "mobilityplus" / "gunicorn.conf.py"),
        "--bind",
        f"127.0.0.1:{PORT}",
        "--workers",
        str(WORKERS),
        "--worker-class",
        WORKER_CLASS,
        "--threads",
        str(THREADS),
        "--backlog",
        "2048",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    stop = threading.Event()
    stalled_answers: list[tuple[str, float]] = []
    healthy_answers: list[tuple[str, float]] = []

    def stalling_client() -> None:
        while not stop.is_set():
            answer, elapsed = ask_station(STALLING_UID)
            stalled_answers.append(((answer or {}).get("path", "error"), elapsed))
            stop.wait(0.1)

    def healthy_client() -> None:
        while not stop.is_set():
            answer, elapsed = ask_station(HEALTHY_UID)
            healthy_answers.append(((answer or {}).get("path", "error"), elapsed))
            stop.wait(0.25)

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("gunicorn did not start")
                    return 1
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "station.lua"
            script.write_text(STATION_WRK_SCRIPT % {"prefix": UID_PREFIX, "cards": CARDS, "token": BACKEND_TOKEN})
            run_wrk(script, 3)  # warm-up
            time.sleep(1)
            alone = run_wrk(script, 5)  # the machine's state now: our own cards without the stall
            time.sleep(1)
            clients = [threading.Thread(target=stalling_client) for _ in range(STALLING_CLIENTS)]
            clients.append(threading.Thread(target=healthy_client))
            for client in clients:
                client.start()
            time.sleep(0.2)  # the stall has begun when the normal load starts
            result = run_wrk(script, SECONDS)
            stop.set()
            for client in clients:
                client.join(timeout=30)
    finally:
        stop.set()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        stalling.close()
        healthy.close()
    seconds = result["duration_us"] / 1e6
    errors = result["socket_errors"] + result["non2xx"]
    # wrk leaves requests that timed out (5 s) out of its percentiles: with none answered there are none.
    answered = result["requests"] - result["socket_errors"]
    own_p50 = f"{result['p50_us'] / 1000:.1f}" if answered > 0 else "NA"
    own_p99 = f"{result['p99_us'] / 1000:.1f}" if answered > 0 else "NA"
    realtime = sum(1 for path, _ in healthy_answers if path == "realtime")
    stalled_paths = {p: [path for path, _ in stalled_answers].count(p) for p in sorted({p for p, _ in stalled_answers})}
    stalled_p99 = percentile([elapsed for _, elapsed in stalled_answers], 0.99) * 1000
    healthy_p99 = percentile([elapsed for _, elapsed in healthy_answers], 0.99) * 1000
    print(
        f"gunicorn: {WORKERS} {WORKER_CLASS} workers x {THREADS} threads, isolation: {not args.no_isolation}, "
        f"shared cache: {bool(args.redis_url)}, duration: {seconds:.1f}s"
    )
    print(
        f"our own cards (wrk, {CONNECTIONS} connections): {result['requests']} requests, "
        f"{result['requests'] / seconds:.0f}/s, p50 {own_p50} ms, p99 {own_p99} ms (of {answered} answered), "
        f"errors {errors} (timeouts after 5 s: {result['socket_errors']})"
    )
    print(
        f"healthy eMSP: {realtime} of {len(healthy_answers)} answered by the eMSP (realtime), p99 {healthy_p99:.0f} ms"
    )
    print(
        f"stalling eMSP ({STALLING_CLIENTS} clients): {len(stalled_answers)} answers {json.dumps(stalled_paths)}, "
        f"p99 {stalled_p99:.0f} ms; it was asked {stalling.requests} times"
    )
    print(
        f"scenario=stalling_emsp isolation={int(not args.no_isolation)} own_p99_ms={own_p99} "
        f"own_p50_ms={own_p50} own_answered={answered} own_throughput_per_s={result['requests'] / seconds:.0f} "
        f"own_errors={errors} healthy_realtime={realtime} healthy_asked={len(healthy_answers)} "
        f"healthy_p99_ms={healthy_p99:.0f} stalling_answers={len(stalled_answers)} stalling_p99_ms={stalled_p99:.0f} "
        f"stalling_emsp_calls={stalling.requests} alone_p99_ms={alone['p99_us'] / 1000:.1f} "
        f"alone_throughput_per_s={alone['requests'] / (alone['duration_us'] / 1e6):.0f} "
        f"workers={WORKERS} connections={CONNECTIONS}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
