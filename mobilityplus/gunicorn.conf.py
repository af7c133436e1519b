"""gunicorn settings for production (`make serve`) and the authorize benchmark.

Command-line options (and GUNICORN_* variables here) override these.
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads, so a request waiting on an eMSP's real-time answer (at most CARDS_REALTIME_DEADLINE_S, and at most
# CARDS_REALTIME_PARTNER_CONCURRENCY such requests per eMSP and process) holds one thread, not a whole worker: our
# own cards are answered by the other threads meanwhile (docs/faults.md). With sync workers the first calls to a
# stalling eMSP held every worker until its circuit opened. Each thread keeps its own database connection.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
keepalive = 5
backlog = 2048


def on_starting(server) -> None:
    """Static files: collected once if nobody ran collectstatic (`make serve` does before every start)."""
    from mobilityplus.static_files import collect_if_missing

    collect_if_missing()


def post_worker_init(worker) -> None:
    """Before a worker serves: load every card of ours, so no authorization pays for a cache miss."""
    import time

    from cards.authorization import card_directory

    started = time.monotonic()
    count = card_directory.warm()
    # The card cache lives as long as the worker: keep it out of the collector's way so collections stay short.
    gc.freeze()
    worker.log.info("worker %s: %d cards cached in %.1fs", worker.pid, count, time.monotonic() - started)
