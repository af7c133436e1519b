"""Bench: what one status change costs to write, applied on arrival or through the status inbox.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/status_writes.py [--stations 550000]

The write path alone, in this process, without HTTP: `--changes` (4,000) status changes of random EVSEs among the
stations of bench/status_push.py (same data, kept between runs), each a status other than the EVSE's. Measured by
CPU time, not by the clock, so that what else the machine runs moves the figures little: this process's (the
application's share) and its PostgreSQL backend's (from /proc), per change, for

- **on arrival** (`stations.services.apply_evse_status`, STATUS_INBOX off): lock, read, four writes, commit;
- **inbox**: the PATCH's one `INSERT ... SELECT` (`accept_evse_status`), then the applier's batches
  (`apply_pending_statuses`, STATUS_INBOX_BATCH at a time).

Each of `--rounds` (3) rounds measures both, alternately; the figures are the rounds' medians, and every change must
be in the status history. Last line: name=value figures.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.status_push import PUSH_STATUSES, load  # noqa: E402
from stations.models import EvseStatusChange, PendingStatus  # noqa: E402
from stations.ocpi_locations import StatusPatch  # noqa: E402
from stations.services import apply_evse_status  # noqa: E402
from stations.status_inbox import accept_evse_status, apply_pending_statuses  # noqa: E402


def backend_cpu() -> float:
    """CPU seconds used so far by this connection's PostgreSQL backend."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(count: int, seed: int) -> list[tuple[int, str, str, str]]:
    """Random live EVSEs, each with a new status: (party, location id, EVSE uid, status)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed / 1000])
        cursor.execute(
            "SELECT l.party_id, l.ocpi_id, e.uid, e.status FROM stations_evse e "
            "JOIN stations_location l ON l.id = e.location_id "
            "WHERE l.removed_at IS NULL AND e.status <> 'REMOVED' ORDER BY random() LIMIT %s",
            [count],
        )
        rows = cursor.fetchall()
    chooser = random.Random(seed)
    return [(p, loc, uid, chooser.choice([s for s in PUSH_STATUSES if s != now])) for p, loc, uid, now in rows]


def measure(label: str, count: int, work: Callable[[], None]) -> tuple[float, float]:
    """CPU per change (application ms, PostgreSQL ms) of `work`, which writes `count` changes."""
    app_before, db_before = time.process_time(), backend_cpu()
    work()
    app_ms = 1000 * (time.process_time() - app_before) / count
    db_ms = 1000 * (backend_cpu() - db_before) / count
    print(f"  {label:<30} {app_ms:6.3f} ms application + {db_ms:6.3f} ms PostgreSQL per change")
    return app_ms, db_ms


def on_arrival(changes: list[tuple[int, str, str, str]]) -> None:
    for party, location, uid, status in changes:
        assert apply_evse_status(party, location, uid, StatusPatch(status, timezone.now()))


def accept(changes: list[tuple[int, str, str, str]]) -> None:
    for party, location, uid, status in changes:
        assert accept_evse_status(party, location, uid, StatusPatch(status, timezone.now()))


def apply_all() -> None:
    while apply_pending_statuses():
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=550_000)
    parser.add_argument("--changes", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("Set DATABASE_URL to PostgreSQL (the inbox is PostgreSQL's).")
        return 2
    call_command("migrate", verbosity=0)
    load(args.stations, regenerate=False)
    PendingStatus.objects.all().delete()  # an interrupted run's
    settings.STATUS_INBOX = True
    settings.DEBUG = False  # bench/map.py asks for development mode; DEBUG would log every query
    print(f"stations: {args.stations}, {args.changes} status changes of random EVSEs a round, {args.rounds} rounds")
    figures: dict[str, list[float]] = {}
    written = expected = 0
    for round_number in range(args.rounds):
        print(f"round {round_number + 1}")
        history_before = EvseStatusChange.objects.count()
        seed = 10 * round_number
        count = args.changes
        evses = sample(2 * count, seed + 1)  # distinct EVSEs: each change is a change
        arriving, queued = evses[:count], evses[count:]
        results = {
            "arrival": measure("on arrival (the fast path)", count, functools.partial(on_arrival, arriving)),
            "accept": measure("inbox: the PATCH's INSERT", count, functools.partial(accept, queued)),
            "apply": measure("inbox: the applier's batches", count, apply_all),
        }
        for name, (app_ms, db_ms) in results.items():
            figures.setdefault(f"{name}_app_ms", []).append(app_ms)
            figures.setdefault(f"{name}_db_ms", []).append(db_ms)
        written += EvseStatusChange.objects.count() - history_before
        expected += 2 * args.changes
    median = {name: statistics.median(values) for name, values in figures.items()}
    arrival = median["arrival_app_ms"] + median["arrival_db_ms"]
    inbox = sum(median[f"{part}_{side}_ms"] for part in ("accept", "apply") for side in ("app", "db"))
    print(
        f"medians: on arrival {arrival:.2f} ms of CPU per change, through the inbox {inbox:.2f} ms "
        f"({inbox / arrival:.0%}); history rows {written} for {expected} changes"
    )
    print(
        " ".join(f"{name}={value:.3f}" for name, value in median.items())
        + f" arrival_ms={arrival:.2f} inbox_ms={inbox:.2f} inbox_share={inbox / arrival:.2f}"
        + f" history_complete={int(written == expected)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
