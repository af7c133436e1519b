"""gunicorn settings for production (`make serve`) and the authorize benchmark.

Command-line options (and GUNICORN_* variables here) override these.
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Sync workers: one request at a time per process, no GIL contention between request threads, and the
# kernel hands each new connection to an idle worker. Threads (gthread) cost our own cards' tail latency
# (p99 190 ms against 69 ms at saturation, docs/faults.md). A request waiting on an eMSP's real-time answer
# holds its worker, so only CARDS_REALTIME_PARTNER_WAITING requests of this server may wait on one eMSP and
# CARDS_REALTIME_WAITING_TOTAL on all (cards/realtime_waits.py); keep the latter below `workers`.
# GUNICORN_THREADS above 1 makes gunicorn use gthread workers.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
keepalive = 5
backlog = 2048


def post_worker_init(worker) -> None:
    """Before a worker serves: load every card of ours, so no authorization pays for a cache miss."""
    import time

    from cards.authorization import card_directory

    started = time.monotonic()
    count = card_directory.warm()
    # The card cache lives as long as the worker: keep it out of the collector's way so collections stay short.
    gc.freeze()
    worker.log.info("worker %s: %d cards cached in %.1fs", worker.pid, count, time.monotonic() - started)
