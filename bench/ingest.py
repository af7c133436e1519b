"""Bench: pull a 550,000-location OCPI feed (pages of 1,000 from a real server on 127.0.0.1) into PostgreSQL.

    DATABASE_URL=postgres://... python bench/ingest.py [--count 550000]

Phases: (1) full pull into empty tables, (2) incremental pull after 1 % of the locations changed,
(3) a second full pull with nothing changed, which must write no rows. Each pull runs in its own
worker process (as a Celery worker would run the task); its peak RSS is read from the kernel
(wait4 rusage). Targets: full < 300 s with peak RSS < 500 MB, incremental < 15 s, no rows written by (3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
# A bench runs the platform in-process in development mode (built-in keys), as its figures were measured.
os.environ.setdefault("DEBUG", "true")

STATION_TABLES = ["stations_location", "stations_evse", "stations_connector", "stations_evsestatuschange"]


def worker(connection_id: int, full: bool) -> None:
    """Child process: one pull, as the Celery task runs it; prints its SyncRun as JSON."""
    import django

    django.setup()
    from stations.feeds import pull_locations

    started = time.monotonic()
    run = pull_locations(connection_id, full=full)
    print(
        json.dumps(
            {
                "seconds": time.monotonic() - started,
                "status": run.status,
                "error": run.error,
                "pages": run.pages,
                "created": run.created,
                "updated": run.updated,
                "unchanged": run.unchanged,
                "removed": run.removed,
                "rejected": run.rejected,
            }
        )
    )


def run_worker(connection_id: int, full: bool) -> dict:
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", str(connection_id), "--full" if full else "--delta"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read().decode()
    process.stdout.close()
    if status != 0:
        raise SystemExit(f"worker failed ({status}): {output}")
    result = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    # CPU the worker itself used: less sensitive than wall time to other load on a shared machine.
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def rows_written() -> int:
    """Inserted + updated + deleted rows of the station tables, from PostgreSQL's statistics."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s)",
            [STATION_TABLES],
        )
        return int(cursor.fetchone()[0])


def wait_for_stats(previous: int, settle_s: float = 2.0) -> int:
    """Statistics reach pg_stat_* asynchronously (about every second): wait until they stop moving."""
    from django.db import connection

    time.sleep(settle_s)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
    return rows_written()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=550_000)
    parser.add_argument("--change-percent", type=float, default=1.0)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Keep the locations a previous run loaded (same --count) and measure only the incremental and "
        "second full pulls; the change then uses another version so it is a real change.",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from bench.feedgen import FeedServer
    from roaming.models import PartnerConnection, Party
    from roaming.services import store_partner_tokens

    if connection.vendor != "postgresql":
        raise SystemExit("bench/ingest.py measures PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    from stations.models import Location

    reuse = args.reuse and Location.objects.filter(party__party_id="BCH").count() == args.count
    if not reuse:
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE stations_rejectedobject, stations_syncrun, stations_evsestatuschange, stations_connector, "
                "stations_evse, stations_location CASCADE"
            )
    server = FeedServer(args.count).start()
    party, _ = Party.objects.update_or_create(
        country_code="NL", party_id="BCH", defaults={"role": Party.Role.CPO, "name": "Bench CPO"}
    )
    conn, _ = PartnerConnection.objects.update_or_create(
        party=party,
        defaults={
            "status": PartnerConnection.Status.CONNECTED,
            "version": "2.2.1",
            "endpoints": [{"identifier": "locations", "role": "SENDER", "url": server.url}],
        },
    )
    store_partner_tokens(conn, to_them="bench-token-to-them", from_them="bench-token-from-them")
    print(f"Feed: {args.count:,} locations, pages of {server.max_limit} from {server.url}")
    print(f"Database: {settings.DATABASES['default']['NAME']} on {settings.DATABASES['default']['HOST']}")

    if reuse:
        full = {
            "seconds": float("nan"),
            "pages": 0,
            "created": args.count,
            "peak_rss_mb": float("nan"),
            "cpu_s": float("nan"),
            "status": "succeeded (reused from a previous run, not measured)",
        }
    else:
        full = run_worker(conn.pk, full=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT (SELECT count(*) FROM stations_evse), (SELECT count(*) FROM stations_connector)")
        evses, connectors = cursor.fetchone()
    print(
        f"Full pull:        {full['seconds']:8.1f} s  {full['pages']} pages, {full['created']:,} locations, "
        f"{evses:,} EVSEs, {connectors:,} connectors, peak RSS {full['peak_rss_mb']:.0f} MB, "
        f"worker CPU {full['cpu_s']:.0f} s  ({full['status']})"
    )

    time.sleep(1.1)  # the changes happen after the full pull started
    changed = server.change_percent(args.change_percent, version=2 if reuse else 1)
    delta = run_worker(conn.pk, full=False)
    print(
        f"Incremental pull: {delta['seconds']:8.1f} s  {changed:,} changed at the source, {delta['updated']:,} "
        f"updated, peak RSS {delta['peak_rss_mb']:.0f} MB  ({delta['status']})"
    )

    before = wait_for_stats(0)
    again = run_worker(conn.pk, full=True)
    after = wait_for_stats(before)
    written = after - before
    print(
        f"Full pull again:  {again['seconds']:8.1f} s  {again['unchanged']:,} unchanged, {again['updated']:,} "
        f"updated, {again['removed']:,} removed, {written} station rows written, "
        f"peak RSS {again['peak_rss_mb']:.0f} MB  ({again['status']})"
    )
    server.stop()
    errors = sum(not r["status"].startswith("succeeded") for r in (full, delta, again))
    print(
        f"locations={full['created']} evses={evses} connectors={connectors} "
        f"full_s={full['seconds']:.1f} full_locations_per_s={full['created'] / full['seconds']:.0f} "
        f"full_peak_rss_mb={full['peak_rss_mb']:.0f} full_worker_cpu_s={full['cpu_s']:.0f} "
        f"incremental_s={delta['seconds']:.2f} "
        f"incremental_updated={delta['updated']} second_full_s={again['seconds']:.1f} "
        f"second_full_rows_written={written} errors={errors}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), full=sys.argv[3] == "--full")
    else:
        main()
