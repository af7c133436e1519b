"""The durable outbox under a burst: CDRs to 20 eMSPs (one down for the first minute), and card blocks to 5 CPOs.

Real parts: PostgreSQL (DATABASE_URL), Redis (REDIS_URL), `celery -A mobilityplus worker` processes, and loopback
OCPI receivers (one HTTP server per partner, in a separate process, counting what they store per object id).

1. Baseline: N CDR POSTs (sessions ended in a burst, each written in its own transaction, as the session's end would)
   for E eMSPs, all up: time until every CDR is delivered.
2. The same with one eMSP down (its port refuses connections) for the first D seconds: time until all are delivered,
   the healthy partners' time (compare with 1), deliveries per second, the largest per-partner backlog.
   Every CDR must be stored exactly once by its eMSP: none lost, none duplicated.
3. 200 card blocks (staff's "Block selected cards": one transaction) to 5 CPOs, one down and one answering HTTP 500:
   time until every block reached each healthy CPO.

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/cpo_delivery.py \
        [--cdrs 10000] [--emsps 20] [--down-seconds 60] [--workers 2] [--concurrency 2] [--cards 200] [--no-baseline]

The bench writes its own parties (country ZZ), cards and messages, and deletes them afterwards. The beat's sweeper is
played by this process (every OUTBOX_SWEEP_S), so no beat process runs other schedules on the database.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
os.environ.setdefault("DEBUG", "true")  # development mode: built-in keys; loopback partners allowed

COUNTRY = "ZZ"


# -- loopback receivers (a separate process) ---------------------------------------------------------------------------


def _receiver_process(ports: list[int], control_port: int, modes: dict, ready) -> None:
    """One HTTP server per partner port; `modes[port]`: ok, down (refuses connections until told), error (500)."""
    stored: dict[int, Counter] = {port: Counter() for port in ports}
    lock = threading.Lock()
    servers: dict[int, ThreadingHTTPServer] = {}

    def handler_for(port: int):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body are two writes: without this, Nagle and the client's delayed ACK add 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict, location: str = "") -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(payload)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if modes[port] == "error":
                    self._answer(500, {"status_code": 3000, "status_message": "internal error", "timestamp": ""})
                    return
                if self.command == "POST":  # a CDR: stored under its id
                    key = body["id"]
                elif self.command == "PUT":  # a Token: its uid, with the state it says
                    key = f"{self.path.split('?')[0].rsplit('/', 1)[1]}:{body.get('valid')}"
                else:
                    key = self.path
                with lock:
                    stored[port][key] += 1
                location = f"http://127.0.0.1:{port}/cdrs/{key}" if self.command == "POST" else ""
                self._answer(200, {"status_code": 1000, "timestamp": "2026-01-01T00:00:00Z"}, location)

            do_POST = do_PUT = do_PATCH = _handle

        return Handler

    def start(port: int, listen: bool) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(port), bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()  # bound but not listening: connections are refused, as with a partner that is down
        if listen:
            server.server_activate()
            threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[port] = server

    for port in ports:
        start(port, modes[port] != "down")

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            with lock:
                payload = json.dumps({str(p): dict(c) for p, c in stored.items()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self):  # noqa: N802  /up/{port}: a down partner comes back
            port = int(self.path.rsplit("/", 1)[1])
            modes[port] = "ok"
            servers[port].server_activate()
            threading.Thread(target=servers[port].serve_forever, daemon=True).start()
            self.send_response(204)
            self.end_headers()

    control = ThreadingHTTPServer(("127.0.0.1", control_port), Control)
    ready.set()
    control.serve_forever()


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Receivers:
    def __init__(self, modes: dict[int, str]):
        self.control_port = free_ports(1)[0]
        self.ready = multiprocessing.Event()
        self.process = multiprocessing.get_context("fork").Process(
            target=_receiver_process, args=(list(modes), self.control_port, dict(modes), self.ready), daemon=True
        )

    def __enter__(self):
        self.process.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.join(5)

    def stored(self) -> dict[int, Counter]:
        import requests

        data = requests.get(f"http://127.0.0.1:{self.control_port}/", timeout=10).json()
        return {int(port): Counter(counts) for port, counts in data.items()}

    def bring_up(self, port: int) -> None:
        import requests

        requests.post(f"http://127.0.0.1:{self.control_port}/up/{port}", timeout=10)


# -- the platform side ------------------------------------------------------------------------------------------------


def setup_django():
    import django

    django.setup()


class Workers:
    """`celery -A mobilityplus worker` processes on the bench's database and Redis."""

    def __init__(self, count: int, concurrency: int, log_dir: Path):
        self.processes = []
        for n in range(count):
            log = (log_dir / f"cpo_delivery_worker{n}.log").open("wb")
            command = [sys.executable, "-m", "celery", "-A", "mobilityplus", "worker", "--pool=prefork"]
            command += [f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "--loglevel=WARNING"]
            command += ["-n", f"bench-outbox{n}@%h"]
            self.processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=log, start_new_session=True
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_for_workers(timeout: float = 60) -> None:
    from mobilityplus.celery import heartbeat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            heartbeat.delay("bench").get(timeout=5)
            return
        except Exception:  # noqa: BLE001  not started yet
            time.sleep(0.5)
    raise SystemExit("the Celery workers did not answer")


def cleanup() -> None:
    from cards.models import Card
    from roaming.models import OutboxMessage, PartnerConnection, Party, RoamingAgreement

    parties = Party.objects.filter(country_code=COUNTRY)
    OutboxMessage.objects.filter(partner__in=parties).delete()
    RoamingAgreement.objects.filter(partner__in=parties).delete()
    PartnerConnection.objects.filter(party__in=parties).delete()
    parties.delete()
    Card.objects.filter(uid__startswith="BENCH").delete()


def make_partners(role: str, ports: list[int], module: str, prefix: str) -> list:
    import datetime as dt

    from django.utils import timezone

    from roaming.models import PartnerConnection, Party, RoamingAgreement
    from roaming.services import store_partner_tokens

    direction = (
        RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS
        if role == Party.Role.EMSP
        else RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS
    )
    parties = []
    for n, port in enumerate(ports):
        party = Party.objects.create(country_code=COUNTRY, party_id=f"{prefix}{n:02d}", role=role, name=f"Bench {n}")
        connection = PartnerConnection.objects.create(
            party=party,
            status=PartnerConnection.Status.CONNECTED,
            version="2.2.1",
            endpoints=[{"identifier": module, "role": "RECEIVER", "url": f"http://127.0.0.1:{port}/{module}"}],
        )
        store_partner_tokens(connection, to_them=f"bench-{prefix}-{n}")
        RoamingAgreement.objects.create(
            partner=party,
            direction=direction,
            status=RoamingAgreement.Status.ACTIVE,
            valid_from=timezone.localdate() - dt.timedelta(days=1),
        )
        parties.append(party)
    return parties


def cdr_body(n: int, party) -> dict:
    """A CDR as an eMSP receives it (the builder is charging's; the outbox sends whatever it is given)."""
    return {
        "country_code": "BE",
        "party_id": "MBP",
        "id": f"BENCH-CDR-{n:06d}",
        "start_date_time": "2026-12-04T08:00:00Z",
        "end_date_time": "2026-12-04T09:00:00Z",
        "cdr_token": {"country_code": party.country_code, "party_id": party.party_id, "uid": f"TOKEN{n}"},
        "auth_method": "WHITELIST",
        "cdr_location": {"id": "MBP-GENT", "evse_uid": "MBP-GENT-1", "evse_id": "BE*MBP*E1", "connector_id": "1"},
        "currency": "EUR",
        "charging_periods": [
            {"start_date_time": "2026-12-04T08:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 22.5}]}
        ],
        "total_cost": {"excl_vat": 9.45, "incl_vat": 11.43},
        "total_energy": 22.5,
        "total_time": 1.0,
        "last_updated": "2026-12-04T09:00:01Z",
    }


class Sweeper(threading.Thread):
    """Plays beat's `roaming.sweep_outbox` every OUTBOX_SWEEP_S."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stopped = threading.Event()

    def run(self):
        from django.conf import settings
        from django.db import connection

        from roaming import outbox

        while not self.stopped.wait(settings.OUTBOX_SWEEP_S):
            outbox.sweep()
        connection.close()


def enqueue_burst(parties: list, count: int, threads: int = 4) -> float:
    """`count` CDR POSTs, each in its own transaction, from `threads` threads; returns the seconds it took."""
    from django.db import connection, transaction

    from roaming import outbox

    def work(offset: int) -> None:
        for n in range(offset, count, threads):
            party = parties[n % len(parties)]
            with transaction.atomic():
                outbox.enqueue(
                    party, module="cdrs", object_id=f"BENCH-CDR-{n:06d}", method="POST", body=cdr_body(n, party)
                )
        connection.close()

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.monotonic() - started


def run_cdrs(count: int, emsps: int, down_seconds: float) -> dict:
    """One run: returns its figures (seconds from the burst's start)."""
    from roaming.models import OutboxMessage, Party

    cleanup()
    ports = free_ports(emsps)
    down_port = ports[0] if down_seconds > 0 else None
    modes = {port: ("down" if port == down_port else "ok") for port in ports}
    with Receivers(modes) as receivers:
        parties = make_partners(Party.Role.EMSP, ports, "cdrs", "E")
        by_port = dict(zip(ports, parties, strict=True))
        expected = {
            port: {f"BENCH-CDR-{n:06d}" for n in range(count) if n % emsps == i} for i, port in enumerate(ports)
        }
        healthy_ids = [p.pk for port, p in by_port.items() if port != down_port]
        sweeper = Sweeper()
        sweeper.start()
        figures: dict = {}
        started = time.monotonic()
        burst = threading.Thread(target=lambda: figures.__setitem__("enqueue_s", enqueue_burst(parties, count)))
        burst.start()
        largest_backlog, healthy_done, brought_up = 0, None, down_port is None
        while True:
            time.sleep(0.25)
            elapsed = time.monotonic() - started
            if not brought_up and elapsed >= down_seconds:
                receivers.bring_up(down_port)
                brought_up = True
            pending = Counter(
                OutboxMessage.objects.filter(partner__in=parties, status="pending").values_list("partner_id", flat=True)
            )
            largest_backlog = max(largest_backlog, max(pending.values(), default=0))
            delivered = OutboxMessage.objects.filter(partner__in=parties, status="delivered").count()
            healthy_pending = sum(pending[pid] for pid in healthy_ids)
            if healthy_done is None and not burst.is_alive() and healthy_pending == 0:
                healthy_delivered = OutboxMessage.objects.filter(partner_id__in=healthy_ids, status="delivered").count()
                if healthy_delivered == sum(len(expected[p]) for p in ports if p != down_port):
                    healthy_done = elapsed
            if not burst.is_alive() and delivered == count:
                total = elapsed
                break
            if elapsed > 600:
                raise SystemExit(f"not delivered after 10 minutes: {delivered}/{count}")
        sweeper.stopped.set()
        burst.join()
        stored = receivers.stored()
        lost = duplicated = 0
        for port in ports:
            got = stored[port]
            lost += len(expected[port] - set(got))
            duplicated += sum(n - 1 for n in got.values() if n > 1)
            duplicated += len(set(got) - expected[port])
        failed = OutboxMessage.objects.filter(partner__in=parties, status="failed").count()
        # Each healthy partner's CDR: from the commit of its session's end to the partner's OCPI 1000.
        latencies = sorted(
            (delivered - created).total_seconds()
            for created, delivered in OutboxMessage.objects.filter(
                partner_id__in=healthy_ids, status="delivered"
            ).values_list("created_at", "delivered_at")
        )
    cleanup()
    return {
        "total_s": total,
        "healthy_s": healthy_done,
        "enqueue_s": figures["enqueue_s"],
        "per_s": count / total,
        "largest_backlog": largest_backlog,
        "lost": lost,
        "duplicated": duplicated,
        "failed": failed,
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[int(len(latencies) * 0.99)],
        "max_s": latencies[-1],
    }


def run_card_blocks(cards: int) -> dict:
    """`cards` blocks to 5 CPOs (one down, one answering 500): time until each healthy CPO has all of them."""
    from cards import services
    from cards.models import Card
    from roaming.models import OutboxMessage, Party
    from roaming.selectors import own_party

    cleanup()
    ports = free_ports(5)
    modes = {ports[0]: "down", ports[1]: "error", ports[2]: "ok", ports[3]: "ok", ports[4]: "ok"}
    with Receivers(modes) as receivers:
        parties = make_partners(Party.Role.CPO, ports, "tokens", "C")
        me = own_party()
        batch = Card.objects.bulk_create(
            [
                Card(
                    issuer_party=me,
                    uid=f"BENCH{n:08d}",
                    type=Card.Type.RFID,
                    contract_id=f"BE-MBP-CB{n:07d}-X",
                    issuer="MobilityPlus",
                    whitelist=Card.Whitelist.ALLOWED_OFFLINE,
                    status=Card.Status.ACTIVE,
                    last_updated=time_now(),
                )
                for n in range(cards)
            ]
        )
        sweeper = Sweeper()
        sweeper.start()
        started = time.monotonic()
        # As staff's "Block selected cards" does: one transaction for the batch, each card's push written with it.
        services.change_cards(batch, services.block_card, reason="Fraud ring")
        blocked_s = time.monotonic() - started
        healthy = ports[2:]
        reached: dict[int, float] = {}
        while len(reached) < len(healthy) and time.monotonic() - started < 120:
            stored = receivers.stored()
            for port in healthy:
                if port not in reached and sum(1 for k in stored[port] if k.endswith(":False")) == cards:
                    reached[port] = time.monotonic() - started
            time.sleep(0.05)
        sweeper.stopped.set()
        kept = {p.party_id: OutboxMessage.objects.filter(partner=p, status="pending").count() for p in parties[:2]}
    cleanup()
    last = max(reached.values(), default=None)
    return {
        "blocks_written_s": blocked_s,
        "healthy_reached_s": last,
        "after_last_block_s": None if last is None else last - blocked_s,
        "kept": kept,
    }


def time_now():
    from django.utils import timezone

    return timezone.now()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cdrs", type=int, default=10_000)
    parser.add_argument("--emsps", type=int, default=20)
    parser.add_argument("--down-seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--cards", type=int, default=200)
    parser.add_argument("--no-baseline", action="store_true", help="skip the run with every eMSP up")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        raise SystemExit("bench/cpo_delivery.py needs DATABASE_URL=postgres://... and REDIS_URL=redis://...")
    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    workers = Workers(args.workers, args.concurrency, log_dir)
    try:
        wait_for_workers()
        workers_text = f"workers {args.workers}x{args.concurrency}"
        print(f"load: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores; {workers_text}")
        base = None
        if not args.no_baseline:
            base = run_cdrs(args.cdrs, args.emsps, 0)
            print(
                f"baseline, all {args.emsps} eMSPs up: {args.cdrs} CDRs delivered in {base['total_s']:.1f} s "
                f"({base['per_s']:.0f}/s; burst written in {base['enqueue_s']:.1f} s), "
                f"lost {base['lost']}, duplicated {base['duplicated']}"
            )
        run = run_cdrs(args.cdrs, args.emsps, args.down_seconds)
        print(
            f"one eMSP down for {args.down_seconds:.0f} s: all {args.cdrs} CDRs delivered in {run['total_s']:.1f} s "
            f"({run['per_s']:.0f}/s; burst written in {run['enqueue_s']:.1f} s), healthy partners' in "
            f"{run['healthy_s']:.1f} s ({run['healthy_s'] - run['enqueue_s']:.1f} s after the burst), largest backlog "
            f"{run['largest_backlog']}, lost {run['lost']}, duplicated {run['duplicated']}, refused {run['failed']}"
        )
        for name, figures_of in (("without", base), ("with", run)):
            if figures_of:
                p50, p99, slowest = figures_of["p50_s"], figures_of["p99_s"], figures_of["max_s"]
                print(
                    f"healthy partners' CDRs {name} the down eMSP, commit to OCPI 1000: "
                    f"p50 {p50:.2f} s, p99 {p99:.2f} s, max {slowest:.2f} s"
                )
        blocks = run_card_blocks(args.cards)
        print(
            f"{args.cards} card blocks (written in {blocks['blocks_written_s']:.1f} s) reached the 3 healthy CPOs "
            f"in {blocks['healthy_reached_s']:.2f} s ({blocks['after_last_block_s']:.2f} s after the last block); "
            f"kept for the down CPO and the one answering 500: {blocks['kept']}"
        )
        print(f"load after: {os.getloadavg()[0]:.1f}")
        figures = {
            "cdrs": args.cdrs,
            "all_delivered_s": round(run["total_s"], 1),
            "deliveries_per_s": round(run["per_s"]),
            "largest_backlog": run["largest_backlog"],
            "burst_written_s": round(run["enqueue_s"], 1),
            "healthy_with_down_s": round(run["healthy_s"], 1),
            "healthy_without_down_s": round(base["total_s"], 1) if base else "",
            "healthy_after_burst_with_down_s": round(run["healthy_s"] - run["enqueue_s"], 1),
            "healthy_after_burst_without_down_s": round(base["total_s"] - base["enqueue_s"], 1) if base else "",
            "healthy_p99_with_down_s": round(run["p99_s"], 2),
            "healthy_p99_without_down_s": round(base["p99_s"], 2) if base else "",
            "lost": run["lost"] + (base["lost"] if base else 0),
            "duplicated": run["duplicated"] + (base["duplicated"] if base else 0),
            "card_blocks_healthy_s": round(blocks["healthy_reached_s"], 2) if blocks["healthy_reached_s"] else "",
            "card_blocks_written_s": round(blocks["blocks_written_s"], 2),
            "load": round(os.getloadavg()[0], 1),
        }
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
    finally:
        workers.stop()


if __name__ == "__main__":
    main()
