"""gunicorn settings for production (`make serve`) and the authorize benchmark.

Command-line options (and GUNICORN_* variables here) override these.
"""

import gc
import os
import shutil
import tempfile

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


# Prometheus counters of every worker, added up by /metrics (mobilityplus/metrics.py): each worker writes its own
# files here. A fresh directory per server start (set PROMETHEUS_MULTIPROC_DIR to choose it; it is emptied then).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
else:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mobilityplus-metrics-")


def child_exit(server, worker) -> None:
    """A worker gone: its live gauges go with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    """Before a worker serves: load every card of ours, so no authorization pays for a cache miss."""
    import time

    from cards.authorization import card_directory

    started = time.monotonic()
    count = card_directory.warm()
    # The card cache lives as long as the worker: keep it out of the collector's way so collections stay short.
    gc.freeze()
    worker.log.info("worker %s: %d cards cached in %.1fs", worker.pid, count, time.monotonic() - started)
