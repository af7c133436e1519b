"""Benchmark of authorization: latency at a stated load, throughput at saturation, and one eMSP stalling.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/mp_cards_bench REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/authorize.py

Loads 100,000 cards of ours and 200 CPO partners (all with an agreement in force, 20 of them only for their
cards at our stations), serves the platform with gunicorn (mobilityplus/gunicorn.conf.py, as in production:
each worker warms its card cache) on PostgreSQL and Redis, and runs two scenarios:

- **emsp**: partner CPOs ask POST /ocpi/emsp/2.2.1/tokens/{uid}/authorize for random cards of ours.
- **stalling-emsp** (docs/faults.md): our stations' backend asks POST /api/v1/authorizations for random cards
  of ours while 20 clients keep asking for a token of an eMSP that stalls (answers after 10 s, trickling a byte
  every 0.5 s so no read timeout fires) and one client asks for a token of a healthy eMSP every 0.25 s.

Each is measured two ways, because a latency target and a throughput figure need different loads:

- **latency at a stated load** (the target: our own cards under 50 ms p99): an open-loop client sends
  a stated number of requests a second at fixed times, whatever the answers do, each on a new connection, and times
  every answer from the moment it was due (so a stalled server is charged for the requests it kept waiting).
- **saturation** (as before, the figure of earlier runs): `wrk` with BENCH_CONNECTIONS connections as fast
  as the server answers. Its latency is mostly queueing (connections / throughput), not service time.

In the stall scenario the first load runs on our cards alone, then during the stall (the figure), then the
saturation run during a second eMSP's stall (so each starts with a closed circuit). Prints `uptime` load.
The last line has name=value figures: own_p99_ms of both scenarios (at the stated load), the healthy eMSP's
real-time answers of its asks, errors.

Options (environment): BENCH_RATE (partner CPOs, 1000 a second: the cards target), BENCH_STATION_RATE (our
stations, 200 a second), BENCH_SECONDS (20), BENCH_WORKERS (gunicorn workers, 3), BENCH_CONNECTIONS (50,
saturation), BENCH_CONFIGS (worker set-ups to compare in one run, e.g. `gthread:8:per-process,sync`;
`per-process`: without the server-wide wait limit, as before it; `sync` runs with that limit at 1 per eMSP and
workers - 1 in all; default: `sync` and then production's, BENCH_WORKER_CLASS (gthread) with BENCH_THREADS
(8); each prints its name=value line, production's last),
BENCH_CARDS (100000), BENCH_PARTNERS (200), BENCH_PORT (8765).
`--scenario emsp|stalling-emsp` runs one; `--no-isolation` turns the per-eMSP limits and circuit off (for the
figures before the fix); `--redis-url` (default: REDIS_URL) is the cache the workers share (the circuit).
Needs `wrk` (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARDS = int(os.environ.get("BENCH_CARDS", "100000"))
PARTNERS = int(os.environ.get("BENCH_PARTNERS", "200"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
# The stated loads: partner CPOs at the 1,000/s of the cards target (docs/cards.md); our stations at 200/s, far
# above their normal load (10,000 charge points each starting a charge every 50 s).
RATE = int(os.environ.get("BENCH_RATE", "1000"))
STATION_RATE = int(os.environ.get("BENCH_STATION_RATE", "200"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
PORT = int(os.environ.get("BENCH_PORT", "8765"))
# Defaults as in production (mobilityplus/gunicorn.conf.py).
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "gthread")
THREADS = int(os.environ.get("BENCH_THREADS", "8"))
UID_PREFIX = "BE0"  # bench cards: BE0 + 11 hex digits
ALONE_SECONDS = 10
ANSWER_TIMEOUT_S = 10.0

# The served platform runs as in production (DEBUG off), which needs both keys; bench-only values.
BENCH_KEYS = {
    "SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
    "OCPI_TOKEN_ENCRYPTION_KEY": "YmVuY2gtb25seS1rZXktbm90LWZvci1wcm9kdWN0aW8=",
}


@dataclass(frozen=True)
class Config:
    """A worker set-up to measure; `per_process` turns the server-wide wait limit off (the design before it)."""

    worker_class: str
    threads: int
    per_process: bool = False

    def __str__(self) -> str:
        return f"{self.worker_class}:{self.threads}" + (":per-process" if self.per_process else "")

    def env(self) -> dict[str, str]:
        env = {"GUNICORN_WORKER_CLASS": self.worker_class, "GUNICORN_THREADS": str(self.threads)}
        if self.worker_class == "sync":  # each waiting request holds a worker: the limits docs/faults.md gives
            env.update(CARDS_REALTIME_PARTNER_WAITING="1", CARDS_REALTIME_WAITING_TOTAL=str(max(1, WORKERS - 1)))
        if self.per_process:
            env.update(CARDS_REALTIME_PARTNER_WAITING="100000", CARDS_REALTIME_WAITING_TOTAL="100000")
        return env


def configs() -> list[Config]:
    """Set-ups to compare, in order: BENCH_CONFIGS like `gthread:8:per-process,sync`.

    By default the two candidates, production's (BENCH_WORKER_CLASS, BENCH_THREADS) last, so its figures end
    the output: the machine changes from minute to minute, so only set-ups measured in one run compare.
    """
    listed = os.environ.get("BENCH_CONFIGS", "").strip()
    if not listed:
        other = Config("gthread", 8) if WORKER_CLASS == "sync" else Config("sync", 1)
        return [other, Config(WORKER_CLASS, THREADS)]
    result = []
    for item in listed.split(","):
        worker_class, threads, per_process = (item.strip().split(":") + ["1", ""])[:3]
        result.append(Config(worker_class, int(threads), per_process == "per-process"))
    return result


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


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


# -- the open-loop client: a stated load, each answer timed from the moment its request was due ----------------


def _request_bytes(kind: str, tokens: list[str], serial: int) -> tuple[bytes, bytes]:
    """(the HTTP request, a marker a good answer contains) for one random card of ours."""
    uid = f"{UID_PREFIX}{random.randrange(CARDS):011X}"
    if kind == "ocpi":
        body = b'{"location_id": "BENCH-LOC-1", "evse_uids": ["BENCH-EVSE-1"]}'
        target = f"/ocpi/emsp/2.2.1/tokens/{uid}/authorize?type=RFID"
        headers = (
            f"Authorization: {random.choice(tokens)}\r\nX-Request-ID: rate-{os.getpid()}-{serial}\r\n"
            f"X-Correlation-ID: rate-{os.getpid()}-{serial}\r\n"
        )
        marker = b'"status_code": 1000'
    else:
        body = json.dumps({"uid": uid, "location_id": "BENCH-LOC-1", "evse_uid": "BENCH-EVSE-1"}).encode()
        target = "/api/v1/authorizations"
        headers = f"Authorization: Bearer {BACKEND_TOKEN}\r\n"
        marker = b'"allowed"'
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body, marker


async def _constant_rate(kind: str, rate: int, seconds: float, port: int) -> dict:
    tokens = ["Token " + base64.b64encode(token_of(i).encode()).decode() for i in range(PARTNERS)]
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    lag = 0.0

    async def one(request: bytes, marker: bytes, due: float) -> None:
        nonlocal errors
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                answer = await reader.read()  # Connection: close, so the whole answer, then EOF
                writer.close()
        except (OSError, TimeoutError):
            errors += 1
            return
        if answer.startswith(b"HTTP/1.1 200") and marker in answer:
            latencies.append(loop.time() - due)
        else:
            errors += 1

    total = int(rate * seconds)
    start = loop.time() + 0.05
    tasks = []
    for serial in range(total):
        due = start + serial / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, loop.time() - due)
        request, marker = _request_bytes(kind, tokens, serial)
        tasks.append(asyncio.create_task(one(request, marker, due)))
    await asyncio.gather(*tasks)
    sys.path.insert(0, str(ROOT))  # run as a script (the rate client), bench/ alone is on the path
    from bench.paced_client import latency_figures

    return latency_figures(latencies, total, errors, lag)


def server_cpu_s(server: subprocess.Popen) -> float:
    """CPU seconds (user + system) the gunicorn workers of `server` have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == server.pid:  # ppid: a worker of this master
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def constant_rate(kind: str, seconds: float, rate: int, server: subprocess.Popen | None = None) -> dict:
    """`rate` requests a second for `seconds` from another process (so it competes only for CPU, not the GIL).

    With `server`, also the workers' CPU time per answer: what the set-up costs, whatever else the shared
    machine runs (latency there depends on the neighbours, CPU time much less).
    """
    cpu_before = server_cpu_s(server) if server else 0.0
    completed = subprocess.run(
        [sys.executable, __file__, "--rate-client", kind, str(rate), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + ANSWER_TIMEOUT_S + 60,
    )
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    if server:
        cpu = server_cpu_s(server) - cpu_before
        figures["cpu_ms_per_answer"] = cpu * 1000 / max(1, figures["answered"])
    return figures


def rate_client_main(kind: str, rate: str, seconds: str) -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a stalled server keeps many connections open
    print(json.dumps(asyncio.run(_constant_rate(kind, int(rate), float(seconds), PORT))))
    return 0


def describe_rate(name: str, figures: dict, rate: int) -> str:
    return (
        f"{name} at {rate}/s ({figures['sent']} sent): p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.0f} ms, errors {figures['errors']} "
        f"(client lag up to {figures['client_lag_ms']:.0f} ms)"
        + (f", workers' CPU {figures['cpu_ms_per_answer']:.2f} ms per answer" if "cpu_ms_per_answer" in figures else "")
    )


# -- the server ---------------------------------------------------------------------------------------------


@contextmanager
def served(config: Config, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """gunicorn with mobilityplus/gunicorn.conf.py and this worker set-up; yields once it answers."""
    env = {**env, **config.env()}
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "mobilityplus.wsgi",
        "-c",
        str(ROOT / "mobilityplus" / "gunicorn.conf.py"),  # warms each worker's card cache before it serves
        "--bind",
        f"127.0.0.1:{PORT}",
        "--workers",
        str(WORKERS),
        "--log-level",
        "info",  # for the workers' "cards cached" lines: the bench starts once every worker has warmed its cache
    ]
    log = tempfile.NamedTemporaryFile("w+", prefix="bench-gunicorn-", suffix=".log")  # noqa: SIM115
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            log.seek(0)
            text = log.read()
            if text.count("cards cached") >= WORKERS:
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {text[-3000:]}")
            time.sleep(0.5)
        urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=10)
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.seek(0)
        tracebacks = log.read().count("Traceback")
        log.close()
        if tracebacks:
            print(f"gunicorn logged {tracebacks} tracebacks")


def served_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **BENCH_KEYS,
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "ERROR",
        "DB_CONN_MAX_AGE": "600",
        **extra,
    }


# -- scenario: partner CPOs authorize our cards over OCPI ---------------------------------------------------------


def emsp_scenario(config: Config) -> dict:
    from cards.models import AuthorizationDecision

    load_before = load_average()
    with served(config, served_env(REDIS_URL="")) as server, tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(Path(tmp))
        run_wrk(script, 3)  # warm-up: every worker has loaded its cache and connections
        time.sleep(1)
        at_rate = constant_rate("ocpi", SECONDS, RATE, server)
        time.sleep(1)
        ceiling_before = baseline(3)
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
        ceiling = (ceiling_before + baseline(3)) / 2  # the machine is shared: bracket the run
    seconds = result["duration_us"] / 1e6
    throughput = result["requests"] / seconds
    errors = result["socket_errors"] + result["non2xx"]
    print(f"-- emsp scenario, {config}, load average {load_before} -> {load_average()}")
    print(describe_rate("partner CPOs authorizing our cards (open loop)", at_rate, RATE))
    print(
        f"saturation (wrk, {CONNECTIONS} connections): {throughput:.0f}/s, p50 {result['p50_us'] / 1000:.1f} ms, "
        f"p99 {result['p99_us'] / 1000:.1f} ms, errors {errors}; machine ceiling {ceiling:.0f}/s (a request "
        f"refused at once); decision log: {written} rows for {answered} answers, {lag_s:.1f}s after the load"
    )
    return {
        "emsp_own_p50_ms": round(at_rate["p50_ms"], 1),
        "emsp_own_p99_ms": round(at_rate["p99_ms"], 1),
        "emsp_own_errors": at_rate["errors"],
        "emsp_cpu_ms_per_answer": round(at_rate["cpu_ms_per_answer"], 2),
        "emsp_sat_throughput_per_s": round(throughput),
        "emsp_sat_p99_ms": round(result["p99_us"] / 1000, 1),
        "emsp_sat_errors": errors,
        "emsp_log_kept_up": int(written >= answered and lag_s < 2),
        "emsp_ceiling_per_s": round(ceiling),
        "emsp_load": load_before,
    }


# -- scenario: one eMSP stalling while our stations' normal load runs -------------------------------------------

BACKEND_TOKEN = "bench-backend-token"
STALLING_UID, SECOND_STALLING_UID, HEALTHY_UID = "5A11ED000001", "5A11ED000002", "0CC0CC000001"
STALLING_CLIENTS = 20


class Stall:
    """20 clients asking for a stalling eMSP's token, one for a healthy eMSP's every 0.25 s, until stopped."""

    def __init__(self, stalling_uid: str) -> None:
        self.stop = threading.Event()
        self.stalled: list[tuple[str, float]] = []
        self.healthy: list[tuple[str, float]] = []
        self.clients = [
            threading.Thread(target=self._ask, args=(stalling_uid, self.stalled, 0.1)) for _ in range(STALLING_CLIENTS)
        ]
        self.clients.append(threading.Thread(target=self._ask, args=(HEALTHY_UID, self.healthy, 0.25)))

    def _ask(self, uid: str, answers: list, pause: float) -> None:
        while not self.stop.is_set():
            answer, elapsed = ask_station(uid)
            answers.append(((answer or {}).get("path", "error"), elapsed))
            self.stop.wait(pause)

    def __enter__(self) -> Stall:
        for client in self.clients:
            client.start()
        time.sleep(0.2)  # the stall has begun when the normal load starts
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for client in self.clients:
            client.join(timeout=30)

    def figures(self) -> dict:
        paths = [path for path, _ in self.stalled]
        return {
            "healthy_realtime": sum(1 for path, _ in self.healthy if path == "realtime"),
            "healthy_asked": len(self.healthy),
            "healthy_p99_ms": round(percentile([elapsed for _, elapsed in self.healthy], 0.99) * 1000),
            "stalling_answers": len(self.stalled),
            "stalling_paths": {p: paths.count(p) for p in sorted(set(paths))},
            "stalling_p99_ms": round(percentile([elapsed for _, elapsed in self.stalled], 0.99) * 1000),
        }


def stalling_scenario(config: Config, args: argparse.Namespace) -> dict:
    stalling, second, healthy = BenchEmsp(stalling=True), BenchEmsp(stalling=True), BenchEmsp(stalling=False)
    load_station_data(
        {"STL": (stalling, STALLING_UID), "ST2": (second, SECOND_STALLING_UID), "HEA": (healthy, HEALTHY_UID)}
    )
    env = served_env(
        REDIS_URL=args.redis_url,
        CARDS_BACKEND_API_TOKEN=BACKEND_TOKEN,
        # The bench's eMSPs listen on 127.0.0.1, which the outgoing-URL allow-list refuses when DEBUG is off.
        OCPI_ALLOW_PRIVATE_NETWORK_URLS="true",
    )
    if args.no_isolation:
        env.update(
            CARDS_REALTIME_PARTNER_CONCURRENCY="100000",
            CARDS_REALTIME_PARTNER_WAITING="100000",
            CARDS_REALTIME_WAITING_TOTAL="100000",
            CARDS_CIRCUIT_FAILURES="100000000",
            CARDS_REALTIME_POOL_SIZE="16",
        )
    load_before = load_average()
    try:
        with served(config, env) as server, tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "station.lua"
            script.write_text(STATION_WRK_SCRIPT % {"prefix": UID_PREFIX, "cards": CARDS, "token": BACKEND_TOKEN})
            run_wrk(script, 3)  # warm-up
            time.sleep(1)
            # The machine's state now: our own cards, no stall.
            alone = constant_rate("station", ALONE_SECONDS, STATION_RATE, server)
            time.sleep(1)
            with Stall(STALLING_UID) as stall:
                during = constant_rate("station", SECONDS, STATION_RATE, server)
            stalling_calls = stalling.requests
            time.sleep(1)
            with Stall(SECOND_STALLING_UID) as saturated_stall:  # a fresh stall: its circuit starts closed
                saturated = run_wrk(script, SECONDS)
            second_calls = second.requests
    finally:
        for emsp in (stalling, second, healthy):
            emsp.close()
    stall_figures, sat_figures = stall.figures(), saturated_stall.figures()
    seconds = saturated["duration_us"] / 1e6
    sat_errors = saturated["socket_errors"] + saturated["non2xx"]
    print(
        f"-- stalling-emsp scenario, {config}, isolation {not args.no_isolation}, "
        f"shared cache {bool(args.redis_url)}, load average {load_before} -> {load_average()}"
    )
    print(describe_rate("our own cards alone (open loop)", alone, STATION_RATE))
    print(describe_rate("our own cards during the stall (open loop)", during, STATION_RATE))
    print(
        f"  healthy eMSP: {stall_figures['healthy_realtime']} of {stall_figures['healthy_asked']} answered by the "
        f"eMSP (realtime), p99 {stall_figures['healthy_p99_ms']} ms; stalling eMSP ({STALLING_CLIENTS} clients): "
        f"{stall_figures['stalling_answers']} answers {json.dumps(stall_figures['stalling_paths'])}, "
        f"p99 {stall_figures['stalling_p99_ms']} ms; it was asked {stalling_calls} times"
    )
    print(
        f"saturation during a second eMSP's stall (wrk, {CONNECTIONS} connections): {saturated['requests']} "
        f"requests, {saturated['requests'] / seconds:.0f}/s, p50 {saturated['p50_us'] / 1000:.1f} ms, "
        f"p99 {saturated['p99_us'] / 1000:.1f} ms, errors {sat_errors}; healthy eMSP "
        f"{sat_figures['healthy_realtime']} of {sat_figures['healthy_asked']} realtime; the stalling eMSP was "
        f"asked {second_calls} times"
    )
    return {
        "stall_alone_p99_ms": round(alone["p99_ms"], 1),
        "stall_own_p50_ms": round(during["p50_ms"], 1),
        "stall_own_p99_ms": round(during["p99_ms"], 1),
        "stall_own_max_ms": round(during["max_ms"]),
        "stall_own_errors": during["errors"] + alone["errors"],
        "stall_alone_cpu_ms_per_answer": round(alone["cpu_ms_per_answer"], 2),
        "healthy_realtime": stall_figures["healthy_realtime"],
        "healthy_asked": stall_figures["healthy_asked"],
        "healthy_p99_ms": stall_figures["healthy_p99_ms"],
        "stalling_emsp_calls": stalling_calls,
        "stall_sat_throughput_per_s": round(saturated["requests"] / seconds),
        "stall_sat_p99_ms": round(saturated["p99_us"] / 1000, 1),
        "stall_sat_errors": sat_errors,
        "stall_sat_healthy_realtime": sat_figures["healthy_realtime"],
        "stall_sat_healthy_asked": sat_figures["healthy_asked"],
        "stall_sat_stalling_emsp_calls": second_calls,
        "stall_load": load_before,
    }


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


def load_station_data(emsps: dict[str, tuple[BenchEmsp, str]]) -> None:
    """Our EVSE, and eMSPs (party id: server, token uid) with an agreement, a tokens SENDER endpoint and one
    cached token each."""
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
    for party_id, (emsp, uid) in emsps.items():
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark of authorization (options in the environment: see the module docstring)."
    )
    parser.add_argument("--scenario", choices=("both", "emsp", "stalling-emsp"), default="both")
    parser.add_argument("--no-isolation", action="store_true", help="stalling-emsp: per-eMSP limits and circuit off")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", ""), help="stalling-emsp: the Redis cache the workers share"
    )
    return parser.parse_args()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--rate-client":
        return rate_client_main(*sys.argv[2:])
    args = parse_args()
    # Stopped (Ctrl-C, or TERM when run in the background): stop the servers it started too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("Set DATABASE_URL to a PostgreSQL database (the bench measures the real set-up).")
        return 2
    if not shutil.which("wrk"):
        print("wrk is needed as the saturation load: apt-get install -y wrk")
        return 2
    from cryptography.fernet import Fernet

    # The bench stores the tokens we send to the eMSPs; gunicorn must be able to read them.
    os.environ.setdefault("OCPI_TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    setup_django()
    load_data()
    print(
        f"stated loads: partner CPOs {RATE}/s, our stations {STATION_RATE}/s; saturation: {CONNECTIONS} "
        f"connections; workers: {WORKERS}"
    )
    lines = []
    for config in configs():
        figures: dict = {"config": str(config)}
        if args.scenario in ("both", "emsp"):
            figures.update(emsp_scenario(config))
        if args.scenario in ("both", "stalling-emsp"):
            figures.update(stalling_scenario(config, args))
        errors = sum(value for name, value in figures.items() if name.endswith("errors"))
        figures.update(errors=errors, emsp_rate_per_s=RATE, station_rate_per_s=STATION_RATE, workers=WORKERS)
        figures["connections"] = CONNECTIONS
        figures["isolation"] = int(not args.no_isolation)
        lines.append(" ".join(f"{name}={value}" for name, value in figures.items()))
        print(lines[-1])
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    for line in lines[:-1]:
        print(line)
    print(lines[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
