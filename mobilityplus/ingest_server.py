"""The status ingest pool's server: granian, serving the platform's OCPI endpoints (mobilityplus/ingest_wsgi.py).

    INGEST_BIND=127.0.0.1:8001 INGEST_WORKERS=3 INGEST_THREADS=8 INGEST_NICE=19 python -m mobilityplus.ingest_server

The ingest pool answers the CPOs' and hubs' location pushes, the status stream among them (docs/scaling.md, "Two
pools"). Its requests are small and many, so what each costs before our code runs counts: measured on 2 cores,
gunicorn's gthread worker spent about 0.35 ms of CPU on a request before Django saw it, granian (HTTP in Rust)
0.02 ms; and Django's browser-facing middleware, which OCPI calls do not need (mobilityplus/ingest_settings.py),
about 0.19 ms of a status PATCH. The views, authentication, checks and envelope are the main pool's own code.

The main pool stays on gunicorn: its gthread workers and their hooks (the card cache warmed before serving, the
metrics of every worker added up) are what authorizations and drivers rely on.
"""

from __future__ import annotations

import os

from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from mobilityplus.cpu_priority import yield_cpu


def serve() -> None:
    """Serve until stopped (SIGTERM, SIGINT), with the settings of the INGEST_* environment variables."""
    host, _, port = os.environ.get("INGEST_BIND", "127.0.0.1:8001").rpartition(":")
    # The pool yields the CPU to drivers and authorizations by default: it shares a machine with the main pool.
    # 0 where it has a machine of its own. Its workers inherit the nice.
    nice = int(os.environ.get("INGEST_NICE", "19"))
    if nice:
        yield_cpu(nice)
    Granian(
        "mobilityplus.ingest_wsgi:application",
        address=host,
        port=int(port),
        interface=Interfaces.WSGI,
        workers=int(os.environ.get("INGEST_WORKERS", "3")),
        # Threads running Django in each worker; each keeps its database connection, as gunicorn's threads do.
        blocking_threads=int(os.environ.get("INGEST_THREADS", "8")),
        backlog=2048,
        respawn_failed_workers=True,
        log_level=LogLevels(os.environ.get("INGEST_LOG_LEVEL", "warning").lower()),
    ).serve()


if __name__ == "__main__":
    serve()
