"""Bench: the EVSE status stream at Europe scale, and the driver map while it runs.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/status_push.py [--stations 550000]

Loads the map bench's stations (bench/map.py: COPY, kept between runs) and about two EVSEs per station
(one INSERT ... SELECT), serves the platform as production does (DEBUG off, the Redis cache) in two pools: the map
on gunicorn with the production config (mobilityplus/gunicorn.conf.py), the status PATCHes on the ingest pool
(mobilityplus/ingest_server.py, granian, nice 19), then with `wrk` (another process):

1. the no-work ceiling: a request the same server refuses at once (405);
2. status PATCHes at full speed (`--connections`, 20) for `--seconds` (20): random EVSEs of the 30 operators with
   an agreement, each a random status other than the EVSE's last two (so each is a change, even when two
   pushes of one EVSE overtake each other), increasing last_updated; every one must be answered 1000 and
   recorded in the status history;
3. map viewport readers alone (`--map-connections`, 10): drivers looking at popular places (a fixed set of
   city and street views, so their answers can be cached), then the same readers together with the pushes;
4. the freshness lag: during the combined run, a station's status is pushed and its viewport read every
   50 ms until it shows the change;
5. CPU per request (the gunicorn workers' and their PostgreSQL backends', from /proc): what the capacity
   figures in docs/scaling.md rest on;
6. the cluster cells: the bench process takes in the changed locations every MAP_CELLS_REFRESH_SECONDS, as
   the beat task does, timing each update, and checks the cells against a recount at the end.

Last line: name=value figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.authorize import BENCH_KEYS  # noqa: E402  (the production-mode keys of a served bench platform)
from bench.map import BENCH_PREFIX, CITIES, bench_parties, generate, percentile, viewport, weighted  # noqa: E402
from roaming.models import PartnerConnection  # noqa: E402
from roaming.services import store_partner_tokens  # noqa: E402
from stations.models import EVSE, EvseStatusChange, Location, MapCell, PendingStatus  # noqa: E402

PUSH_STATUSES = ["AVAILABLE", "CHARGING", "BLOCKED", "RESERVED", "OUTOFORDER", "INOPERATIVE", "UNKNOWN"]


def token_for(party_id: int) -> str:
    return f"bench-status-push-{party_id}"


def load(stations: int, regenerate: bool) -> None:
    """The map bench's stations, each with its EVSEs (as many as its evse_count), and the partners' tokens."""
    have = Location.objects.filter(ocpi_id__startswith=BENCH_PREFIX).count()
    if regenerate or have != stations or not EVSE.objects.exists():
        started = time.perf_counter()
        generate(stations)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO stations_evse (location_id, uid, evse_id, status, status_changed_at, status_schedule,
                    capabilities, floor_level, physical_reference, directions, parking_restrictions, images,
                    last_updated)
                SELECT l.id, l.ocpi_id || '-' || n, '', CASE
                        WHEN n < l.available_evse_count THEN 'AVAILABLE'
                        WHEN l.map_status = 'faulty' THEN 'OUTOFORDER'
                        WHEN l.map_status = 'unknown' THEN 'UNKNOWN'
                        ELSE 'CHARGING' END,
                    l.status_updated_at, '[]', '[]', '', '', '[]', '[]', '[]', l.last_updated
                FROM stations_location l CROSS JOIN LATERAL generate_series(0, l.evse_count - 1) AS n
                """
            )
            cursor.execute("VACUUM ANALYZE stations_evse")
            cursor.execute("VACUUM ANALYZE stations_location")
        took = time.perf_counter() - started
        print(f"generated {stations} stations and {EVSE.objects.count()} EVSEs in {took:.0f} s")
    _parties, accepted, feeds = bench_parties()
    for party_id in accepted:
        feed = PartnerConnection.objects.get(pk=feeds[party_id])
        store_partner_tokens(feed, from_them=token_for(party_id))


def evse_list(path: Path, accepted: set[int], limit: int, exclude: set[int]) -> int:
    """A random sample of the operators' EVSEs, one a line: token|country|party|location|uid|status."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.id, p.country_code, p.party_id, l.ocpi_id, e.uid, e.status
            FROM stations_evse e JOIN stations_location l ON l.id = e.location_id
            JOIN roaming_party p ON p.id = l.party_id
            WHERE l.party_id = ANY(%s) AND l.removed_at IS NULL AND e.status <> 'REMOVED' AND NOT l.id = ANY(%s)
            ORDER BY random() LIMIT %s
            """,
            [sorted(accepted), sorted(exclude), limit],
        )
        rows = cursor.fetchall()
    with path.open("w") as out:
        for party_pk, country, party, location, uid, status in rows:
            token = base64.b64encode(token_for(party_pk).encode()).decode()
            out.write(f"{token}|{country}|{party}|{location}|{uid}|{status}\n")
    return len(rows)


# What both wrk scripts print at the end (each keeps `threads` and a per-thread `bad` count).
LUA_DONE = """
function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do bad_total = bad_total + thread:get("bad") end
  io.write(string.format("RESULT requests=%%d duration_us=%%d p50_us=%%d p95_us=%%d p99_us=%%d max_us=%%d "
    .. "socket_errors=%%d non2xx=%%d bad=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, bad_total))
end
"""


PUSH_LUA = """
local threads = {}
local count = 0
function setup(thread)
  thread:set("id", count)
  count = count + 1
  table.insert(threads, thread)
end
local statuses = {%(statuses)s}
function init(args)
  evses = {}
  local n = 0
  for line in io.lines("%(list)s") do
    if n %% %(threads)d == id then
      local token, cc, pid, loc, uid, status = line:match("([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|]+)")
      table.insert(evses, {path = "/ocpi/emsp/2.2.1/locations/" .. cc .. "/" .. pid .. "/" .. loc .. "/" .. uid,
                           auth = "Token " .. token, last = status, before = status})
    end
    n = n + 1
  end
  math.randomseed(os.time() + id * 7919)
  counter = 0
  bad = 0
  sent = 0
end
request = function()
  local evse = evses[math.random(1, #evses)]
  local status
  repeat status = statuses[math.random(1, #statuses)] until status ~= evse.last and status ~= evse.before
  evse.before, evse.last = evse.last, status
  counter = counter + 1
  local stamp = os.date("!%%Y-%%m-%%dT%%H:%%M:%%S", os.time()) .. string.format(".%%03dZ", counter %% 1000)
  local headers = {}
  headers["Authorization"] = evse.auth
  headers["Content-Type"] = "application/json"
  headers["X-Request-ID"] = id .. "-" .. counter
  headers["X-Correlation-ID"] = id .. "-" .. counter
  return wrk.format("PATCH", evse.path, headers, '{"status": "' .. status .. '", "last_updated": "' .. stamp .. '"}')
end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"status_code": 1000', 1, true) then
    bad = bad + 1
    if bad < 3 then io.stderr:write(status .. " " .. body .. "\\n") end
  end
end
"""

MAP_LUA = """
local paths = {%(paths)s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
request = function() return wrk.format("GET", paths[math.random(1, #paths)]) end
response = function(status, headers, body) if status ~= 200 then bad = bad + 1 end end
"""


def map_paths(count: int, seed: int = 5) -> list[str]:
    """Popular views: around the cities, from the whole country down to a few streets (no filters)."""
    rng = random.Random(seed)
    paths = []
    for _ in range(count):
        _name, lat, lon, _w = weighted(rng, CITIES, 3)
        zoom = rng.choice([6, 8, 10, 12, 13, 14, 15, 16])
        jitter = 4 / 2**zoom
        bbox = viewport(lat + rng.uniform(-jitter, jitter), lon + rng.uniform(-jitter, jitter), zoom)
        paths.append(f"/api/v1/stations?bbox={bbox}&zoom={zoom}")
    return paths


def run_wrk(url: str, script: Path, seconds: int, connections: int, threads: int = 2) -> dict:
    completed = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # a scheduling group of its own: the load is not starved by what it measures
    )
    line = next((line for line in completed.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result: {completed.stdout} {completed.stderr}")
    if completed.stderr.strip():
        print("wrk:", completed.stderr.strip()[:500])
    result = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    result["per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = result["socket_errors"] + result["non2xx"] + result["bad"]
    return result


def paced(kind: str, rate: float, seconds: int, url: str, listed: Path) -> dict:
    """An open-loop load at a stated rate (bench/paced_client.py, a process of its own)."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "paced_client.py"), kind, str(rate), str(seconds),
         url.rsplit(":", 1)[1], str(listed)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # a scheduling group of its own: the load is not starved by what it measures
        timeout=seconds + 120,
    )  # fmt: skip
    return json.loads(completed.stdout.strip().splitlines()[-1])


def ceiling(url: str, seconds: int, connections: int) -> float:
    """Requests per second the server answers for a request it refuses at once (405 from the OCPI layer)."""
    completed = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"{url}/ocpi/emsp/2.2.1/tokens/X/authorize"],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,  # a scheduling group of its own: the load is not starved by what it measures
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", completed.stdout)
    return float(match.group(1)) if match else 0.0


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(servers: list[subprocess.Popen], others: tuple[int, ...] = ()) -> tuple[float, float]:
    """CPU used so far by the gunicorn workers (and `others`: the inbox applier) and by this database's
    PostgreSQL backends (their connections)."""
    workers = list(others)
    arbiters = {server.pid for server in servers}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) in arbiters:
                workers.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        backends = [row[0] for row in cursor.fetchall()]
    return sum(_cpu_of(pid) for pid in workers), sum(_cpu_of(pid) for pid in backends)


def history_rows() -> int:
    return EvseStatusChange.objects.count()


def postgres_settings() -> str:
    """What the figures rest on: the settings docs/scaling.md asks of the primary (a queue table needs autovacuum)."""
    names = ["autovacuum", "synchronous_commit", "wal_compression", "max_wal_size", "checkpoint_timeout"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s) ORDER BY name", [names])
        return " ".join(f"{name}={setting}{unit or ''}" for name, setting, unit in cursor.fetchall())


def wait_applied(inbox: bool, timeout: float = 120) -> float:
    """Wait until the status inbox is empty (every answered PATCH applied); how long it took."""
    started = time.monotonic()
    if not inbox:
        time.sleep(0.5)  # the last answers' commits
        return 0.0
    while PendingStatus.objects.exists() and time.monotonic() - started < timeout:
        time.sleep(0.05)
    time.sleep(0.3)  # the last batch's commit
    return time.monotonic() - started


# The inbox's applier (`manage.py apply_status_inbox`) as a service manager runs it: a session of its own, niced.
APPLIER = (
    "import os, sys; from mobilityplus.cpu_priority import yield_cpu; yield_cpu(int(sys.argv[1])); "
    "os.execv(sys.executable, [sys.executable, 'manage.py', 'apply_status_inbox'])"
)


class CellsUpdater:
    """What beat and a worker do: take in the changed locations every MAP_CELLS_REFRESH_SECONDS.

    A process of its own, at the nice level of a background worker sharing the machine (docs/scaling.md, "Two
    pools"; `nice` None: the bench's own priority).
    """

    def __init__(self, nice: int | None) -> None:
        context = multiprocessing.get_context("fork")
        self.nice = nice
        self.stop = context.Event()
        self.results = context.Queue()
        self.process = context.Process(target=self._run, daemon=True)
        self.runs: list[tuple[int, float]] = []

    def start(self) -> None:
        connection.close()  # the child opens its own
        self.process.start()

    def _run(self) -> None:
        from mobilityplus.cpu_priority import yield_cpu
        from stations.map_cells import update_map_cells

        os.setsid()  # a scheduling group of its own, as a worker on the machine has
        if self.nice:
            yield_cpu(self.nice)
        try:
            while not self.stop.wait(settings.MAP_CELLS_REFRESH_SECONDS):
                started = time.perf_counter()
                taken = update_map_cells()
                self.results.put((taken, time.perf_counter() - started))
        finally:
            connection.close()
            self.results.put(None)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                break
            self.runs.append(item)
        self.process.join(timeout=5)


def freshness_probe(ingest: str, base: str, token: str, target: dict, rounds: int, results: list[float]) -> None:
    """Push a status of the target station and read its viewport every 50 ms until the map shows it."""
    headers = {
        "Authorization": "Token " + base64.b64encode(token.encode()).decode(),
        "Content-Type": "application/json",
        "X-Request-ID": "probe",
        "X-Correlation-ID": "probe",
    }
    flip = {"AVAILABLE": ("CHARGING", "in_use"), "CHARGING": ("AVAILABLE", "available")}
    status = target["status"]
    for index in range(rounds):
        time.sleep(1.5)
        urllib.request.urlopen(base + target["viewport"], timeout=10).read()  # a cached answer to beat
        status, expected = flip[status]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{index:03d}Z"
        body = json.dumps({"status": status, "last_updated": stamp}).encode()
        request = urllib.request.Request(ingest + target["path"], data=body, headers=headers, method="PATCH")
        pushed = time.perf_counter()
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert answer["status_code"] == 1000, answer
        while time.perf_counter() - pushed < 30:
            features = json.loads(urllib.request.urlopen(base + target["viewport"], timeout=10).read())["features"]
            shown = {f["properties"].get("id"): f["properties"].get("status") for f in features}
            if shown.get(target["id"]) == expected:
                break
            time.sleep(0.05)
        results.append(time.perf_counter() - pushed)


def probe_target(accepted: set[int]) -> tuple[dict, str]:
    """A visible one-EVSE station of an operator we push for, and its partner's token."""
    location = (
        Location.objects.filter(
            party_id__in=accepted, evse_count=1, removed_at__isnull=True, published_to_our_drivers=True
        )
        .select_related("party")
        .order_by("pk")
        .first()
    )
    evse = EVSE.objects.get(location=location)
    if evse.status not in ("AVAILABLE", "CHARGING"):
        EVSE.objects.filter(pk=evse.pk).update(status="AVAILABLE")
        Location.objects.filter(pk=location.pk).update(map_status="available", available_evse_count=1)
        evse.status = "AVAILABLE"
    party = location.party
    bbox = viewport(location.latitude, location.longitude, 17)
    target = {
        "id": location.pk,
        "status": evse.status,
        "path": f"/ocpi/emsp/2.2.1/locations/{party.country_code}/{party.party_id}/{location.ocpi_id}/{evse.uid}",
        "viewport": f"/api/v1/stations?bbox={bbox}&zoom=17",
    }
    return target, token_for(party.pk)


def cells_match_recount() -> bool:
    """The incrementally kept unfiltered cells (coarsest level) against a count of the visible locations."""
    from django.db.models import Count, Sum

    from stations.map_cells import MIN_CELL_LEVEL, summary_parties
    from stations.selectors import visible_locations

    cells = dict(
        MapCell.objects.filter(kind=MapCell.Kind.SUMMARY, level=MIN_CELL_LEVEL)
        .values_list("map_status")
        .annotate(n=Sum("stations"))
        .values_list("map_status", "n")
    )
    counted = dict(
        visible_locations(set(summary_parties() or []))
        .values_list("map_status")
        .annotate(n=Count("id"))
        .values_list("map_status", "n")
    )
    return {k: v for k, v in cells.items() if v} == counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=550_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=20, help="concurrent pushers")
    parser.add_argument("--map-connections", type=int, default=10, help="concurrent map readers")
    parser.add_argument("--evses", type=int, default=200_000, help="EVSEs the pushers pick from")
    parser.add_argument("--views", type=int, default=60, help="distinct popular map views")
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers of the main pool")
    parser.add_argument(
        "--ingest-nice",
        type=int,
        default=19,
        help="serve the status PATCHes from a second pool at this nice level (docs/scaling.md); -1: one pool",
    )
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--threads", type=int, default=8, help="threads of each worker of the main pool")
    parser.add_argument("--push-rate", type=float, default=500, help="status PATCHes a second, stated-rate phases")
    parser.add_argument(
        "--drivers-rate", type=float, default=200, help="viewports a second (drivers polling), stated-rate phases"
    )
    parser.add_argument(
        "--ingest-server",
        choices=("granian", "gunicorn"),
        default="granian",
        help="the ingest pool's HTTP server (mobilityplus/ingest_server.py: granian; or gunicorn as the main pool)",
    )
    parser.add_argument("--ingest-workers", type=int, default=3)
    parser.add_argument("--ingest-threads", type=int, default=8)
    parser.add_argument(
        "--cells-nice", type=int, default=10, help="nice level of the process updating the cluster cells (a worker)"
    )
    parser.add_argument(
        "--no-inbox", action="store_true", help="apply each status PATCH as it arrives (STATUS_INBOX off)"
    )
    parser.add_argument(
        "--inbox-nice", type=int, default=0, help="nice level of the inbox's applier (it makes changes visible)"
    )
    args = parser.parse_args()
    args.ingest_nice = None if args.ingest_nice < 0 else args.ingest_nice
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        print("Set DATABASE_URL to PostgreSQL and REDIS_URL (the bench measures the production set-up).")
        return 2
    call_command("migrate", verbosity=0)
    PendingStatus.objects.all().delete()  # an interrupted run's
    load(args.stations, args.regenerate)
    from stations.map_cells import refresh_map_cells

    _parties, accepted, _feeds = bench_parties()
    target, probe_token = probe_target(accepted)  # before the cells are built: it may set a status directly
    started = time.perf_counter()
    refresh_map_cells()
    rebuild_s = time.perf_counter() - started
    evses_total = EVSE.objects.count()
    base = f"http://127.0.0.1:{args.port}"
    env = {
        **os.environ,
        **BENCH_KEYS,
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "ERROR",
        "DB_CONN_MAX_AGE": "600",
        "STATUS_INBOX": "false" if args.no_inbox else "true",
    }

    def serve(port: int, nice: int, workers: int, threads: int, server: str = "gunicorn") -> subprocess.Popen:
        if server == "granian":  # the ingest pool's server (mobilityplus/ingest_server.py)
            ingest = {"INGEST_BIND": f"127.0.0.1:{port}", "INGEST_NICE": str(nice), "INGEST_WORKERS": str(workers)}
            ingest["INGEST_THREADS"] = str(threads)
            command = [sys.executable, "-m", "mobilityplus.ingest_server"]
            return subprocess.Popen(command, cwd=ROOT, env={**env, **ingest}, start_new_session=True)
        command = [
            str(ROOT / ".venv/bin/gunicorn"),
            "mobilityplus.wsgi",
            "-c",
            str(ROOT / "mobilityplus" / "gunicorn.conf.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
        ]
        return subprocess.Popen(command, cwd=ROOT, env={**env, "GUNICORN_NICE": str(nice)}, start_new_session=True)

    # Two pools, as docs/scaling.md runs them: the status stream's ingest pool, niced, and the pool drivers use.
    ingest_base = f"http://127.0.0.1:{args.port + 1}" if args.ingest_nice is not None else base
    servers = [serve(args.port, 0, args.workers, args.threads)]
    if args.ingest_nice is not None:
        servers.append(
            serve(args.port + 1, args.ingest_nice, args.ingest_workers, args.ingest_threads, args.ingest_server)
        )
    updater = CellsUpdater(args.cells_nice)
    applier = (
        None
        if args.no_inbox
        else subprocess.Popen(
            [sys.executable, "-c", APPLIER, str(args.inbox_nice)], cwd=ROOT, env=env, start_new_session=True
        )
    )
    others = () if applier is None else (applier.pid,)
    lags: list[float] = []
    try:
        deadline = time.monotonic() + 120
        for url in {base, ingest_base}:
            while True:
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline or any(server.poll() is not None for server in servers):
                        print("gunicorn did not start")
                        return 1
                    time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            listed = Path(tmp) / "evses.txt"

            def fresh_list() -> int:
                """Listed again before each run: each run's first status of an EVSE differs from the one stored."""
                return evse_list(listed, accepted, args.evses, {target["id"]})

            sampled = fresh_list()
            push = Path(tmp) / "push.lua"
            push.write_text(
                (PUSH_LUA + LUA_DONE)
                % {"statuses": ", ".join(f'"{s}"' for s in PUSH_STATUSES), "list": listed, "threads": 2}
            )
            readers = Path(tmp) / "map.lua"
            readers.write_text((MAP_LUA + LUA_DONE) % {"paths": ", ".join(f'"{p}"' for p in map_paths(args.views))})
            run_wrk(ingest_base, push, 3, args.connections)  # warm-up: connections, caches
            run_wrk(base, readers, 3, args.map_connections)
            updater.start()
            ceiling_before = ceiling(ingest_base, 5, args.connections)
            fresh_list()
            rows_before = history_rows()
            cpu_before = cpu_seconds(servers, others)
            pushed = run_wrk(ingest_base, push, args.seconds, args.connections)
            drain_s = wait_applied(not args.no_inbox)
            cpu_push = [after - before for after, before in zip(cpu_seconds(servers, others), cpu_before, strict=True)]
            recorded = history_rows() - rows_before
            cpu_before = cpu_seconds(servers)
            map_alone = run_wrk(base, readers, args.seconds, args.map_connections)
            cpu_map = [after - before for after, before in zip(cpu_seconds(servers), cpu_before, strict=True)]
            results: dict = {}
            fresh_list()
            rows_before = history_rows()
            together_push = threading.Thread(
                target=lambda: results.update(push=run_wrk(ingest_base, push, args.seconds, args.connections))
            )
            probe = threading.Thread(
                target=freshness_probe,
                args=(ingest_base, base, probe_token, target, max(3, int(args.seconds // 4)), lags),
            )
            together_push.start()
            probe.start()
            map_under = run_wrk(base, readers, args.seconds, args.map_connections)
            together_push.join()
            probe.join()
            wait_applied(not args.no_inbox)
            recorded_together = history_rows() - rows_before - len(lags)
            # At stated rates (open loop): the stream at --push-rate, drivers at --drivers-rate, alone and together.
            paths_file = Path(tmp) / "paths.txt"
            paths_file.write_text("\n".join(map_paths(args.views)) + "\n")
            stated: dict = {}
            fresh_list()
            rows_before = history_rows()
            stated["push"] = paced("push", args.push_rate, args.seconds, ingest_base, listed)
            wait_applied(not args.no_inbox)
            stated["push_recorded"] = history_rows() - rows_before
            stated["map"] = paced("map", args.drivers_rate, args.seconds, base, paths_file)
            fresh_list()
            rows_before = history_rows()
            both = threading.Thread(
                target=lambda: stated.update(
                    push_with_map=paced("push", args.push_rate, args.seconds, ingest_base, listed)
                )
            )
            both.start()
            stated["map_with_push"] = paced("map", args.drivers_rate, args.seconds, base, paths_file)
            both.join()
            wait_applied(not args.no_inbox)
            stated["push_with_map_recorded"] = history_rows() - rows_before
            ceiling_after = ceiling(ingest_base, 5, args.connections)
    finally:
        updater.stop.set()
        if applier is not None and applier.poll() is None:
            os.killpg(applier.pid, signal.SIGTERM)
            applier.wait(timeout=30)
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    updater.join(timeout=120)
    from stations.map_cells import update_map_cells

    started = time.perf_counter()
    update_map_cells()
    last_update_s = time.perf_counter() - started
    cells_ok = cells_match_recount()
    ceiling_rate = (ceiling_before + ceiling_after) / 2
    under = results["push"]
    answered = pushed["requests"] - pushed["socket_errors"]
    answered_together = under["requests"] - under["socket_errors"]
    updates = [seconds for taken, seconds in updater.runs if taken]
    taken = [taken for taken, _seconds in updater.runs if taken]
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(
        f"stations: {args.stations}, EVSEs: {evses_total} ({sampled} pushed at random), map: the main pool, gunicorn "
        f"{args.workers} workers x {args.threads} threads (production config)"
        + (
            f"; status PATCHes: the ingest pool, {args.ingest_server} {args.ingest_workers} workers x "
            f"{args.ingest_threads} threads at nice {args.ingest_nice}"
            if args.ingest_nice is not None
            else ", one pool for both"
        )
        + f", cells rebuilt in {rebuild_s:.1f} s, "
        + (
            "status PATCHes applied as they arrive"
            if args.no_inbox
            else f"status inbox (applier at nice {args.inbox_nice})"
        )
    )
    print(f"PostgreSQL: {postgres_settings()}")
    print(
        f"no-work ceiling (405 at once): {ceiling_rate:.0f}/s (before {ceiling_before:.0f}, after {ceiling_after:.0f})"
    )

    def line(name: str, r: dict) -> str:
        return (
            f"{name:<22}{r['per_s']:>8.0f}/s  p50 {r['p50_us'] / 1000:6.1f} ms  p95 {r['p95_us'] / 1000:6.1f} ms  "
            f"p99 {r['p99_us'] / 1000:6.1f} ms  max {r['max_us'] / 1000:7.1f} ms  errors {r['errors']}"
        )

    # CPU per request (gunicorn workers + their PostgreSQL backends): what capacity planning rests on, far less
    # sensitive than latency to what else the machine runs.
    push_app_ms, push_db_ms = (1000 * cpu / max(1, pushed["requests"]) for cpu in cpu_push)
    map_app_ms, map_db_ms = (1000 * cpu / max(1, map_alone["requests"]) for cpu in cpu_map)
    print(line("status PATCH alone", pushed) + f"  history rows {recorded} for {answered} answered")
    print(
        f"{'':<22}CPU per PATCH: {push_app_ms:.1f} ms application + {push_db_ms:.1f} ms PostgreSQL"
        + ("" if args.no_inbox else f" (with the applier's); the inbox was empty {drain_s:.1f} s after the last PATCH")
    )
    print(line("map viewports alone", map_alone))
    print(f"{'':<22}CPU per viewport: {map_app_ms:.1f} ms application + {map_db_ms:.1f} ms PostgreSQL")
    print(line("status PATCH + map", under) + f"  history rows {recorded_together} for {answered_together} answered")
    print(line("map under the push", map_under) + f"  ({map_under['per_s'] / map_alone['per_s']:.0%} of alone)")
    print(f"at stated rates (open loop, each request timed from when it was due): status PATCHes at "
          f"{args.push_rate:.0f}/s, drivers' viewports at {args.drivers_rate:.0f}/s")  # fmt: skip

    def stated_line(name: str, r: dict) -> str:
        return (
            f"{name:<22}{r['per_s']:>8.0f}/s  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
            f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']:7.1f} ms  errors {r['errors']}  "
            f"(client: late by {r['client_lag_ms']:.0f} ms at most, {r['client_cpu_s'] / args.seconds:.0%} of a core)"
        )

    print(stated_line("status PATCH alone", stated["push"]) + f"  history rows {stated['push_recorded']}")
    print(stated_line("drivers alone", stated["map"]))
    print(
        stated_line("status PATCH + drivers", stated["push_with_map"])
        + f"  history rows {stated['push_with_map_recorded']}"
    )
    print(
        stated_line("drivers under the push", stated["map_with_push"])
        + f"  ({stated['map_with_push']['per_s'] / stated['map']['per_s']:.0%} of alone)"
    )
    print(
        f"freshness lag (PATCH -> viewport answer shows it), {len(lags)} probes: "
        + ", ".join(f"{lag:.2f}" for lag in lags)
        + " s"
    )
    if updates:
        print(
            f"cluster cells: {len(updates)} incremental updates every {settings.MAP_CELLS_REFRESH_SECONDS} s, "
            f"{sum(taken) / len(taken):.0f} locations each on average, {max(updates):.2f} s at most; last one "
            f"{last_update_s:.2f} s; match a recount: {cells_ok}"
        )
    # wrk counts the requests answered within its duration; the few still in flight when it stops (at most one per
    # connection) are answered and recorded too.
    all_recorded = all(
        ok <= rows <= ok + args.connections
        for ok, rows in (
            (answered - pushed["errors"], recorded),
            (answered_together - under["errors"], recorded_together),
        )
    ) and all(stated[name]["answered"] == stated[f"{name}_recorded"] for name in ("push", "push_with_map"))
    print(
        f"stations={args.stations} push_per_s={pushed['per_s']:.0f} push_p50_ms={pushed['p50_us'] / 1000:.1f} "
        f"push_p99_ms={pushed['p99_us'] / 1000:.1f} push_errors={pushed['errors']} "
        f"history_complete={int(all_recorded)} ceiling_per_s={ceiling_rate:.0f} "
        f"push_share_of_ceiling={pushed['per_s'] / ceiling_rate:.2f} "
        f"push_with_map_per_s={under['per_s']:.0f} push_with_map_p99_ms={under['p99_us'] / 1000:.1f} "
        f"map_alone_per_s={map_alone['per_s']:.0f} map_alone_p95_ms={map_alone['p95_us'] / 1000:.1f} "
        f"map_under_push_per_s={map_under['per_s']:.0f} map_under_push_p95_ms={map_under['p95_us'] / 1000:.1f} "
        f"map_ratio={map_under['per_s'] / map_alone['per_s']:.2f} "
        f"freshness_max_s={max(lags) if lags else float('nan'):.2f} "
        f"freshness_p50_s={percentile(lags, 50) if lags else float('nan'):.2f} "
        f"cells_update_max_s={max(updates) if updates else float('nan'):.2f} cells_match={int(cells_ok)} "
        f"cells_rebuild_s={rebuild_s:.1f} push_cpu_app_ms={push_app_ms:.2f} push_cpu_db_ms={push_db_ms:.2f} "
        f"map_cpu_app_ms={map_app_ms:.2f} map_cpu_db_ms={map_db_ms:.2f} "
        f"stated_push_per_s={stated['push']['per_s']:.0f} stated_push_p99_ms={stated['push']['p99_ms']:.1f} "
        f"stated_map_per_s={stated['map']['per_s']:.0f} stated_map_p95_ms={stated['map']['p95_ms']:.1f} "
        f"stated_push_with_map_p99_ms={stated['push_with_map']['p99_ms']:.1f} "
        f"stated_map_with_push_per_s={stated['map_with_push']['per_s']:.0f} "
        f"stated_map_with_push_p95_ms={stated['map_with_push']['p95_ms']:.1f} "
        f"stated_map_ratio={stated['map_with_push']['per_s'] / stated['map']['per_s']:.2f} "
        f"stated_errors={sum(stated[k]['errors'] for k in ('push', 'map', 'push_with_map', 'map_with_push'))} "
        f"inbox={int(not args.no_inbox)} inbox_drain_s={0 if args.no_inbox else drain_s:.1f} "
        f"ingest_granian={int(args.ingest_server == 'granian' and args.ingest_nice is not None)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
