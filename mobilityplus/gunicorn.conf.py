"""gunicorn settings for production (`make serve`) and the authorize benchmark.

Command-line options (and GUNICORN_* variables here) override these.
"""

import gc
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads: a request waiting on an eMSP's real-time answer (at most CARDS_REALTIME_DEADLINE_S) holds one thread, not
# a whole worker, and the server-wide limits (CARDS_REALTIME_PARTNER_WAITING per eMSP, CARDS_REALTIME_WAITING_TOTAL in
# all; cards/realtime_waits.py) keep most threads free for our own cards. Measured against sync workers in
# docs/faults.md: during one eMSP's stall, sync workers queued our own cards behind that eMSP's drivers. With
# GUNICORN_WORKER_CLASS=sync set the two limits to 1 and below `workers`. Each thread keeps its database connection.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
keepalive = 5
backlog = 2048
# A pool that yields the CPU to the others on its machine runs its workers this much nicer: the status ingest
# pool (`/ocpi/emsp/2.2.1/locations`, GUNICORN_NICE=19) under a flood of partner pushes leaves the cores to
# drivers and authorizations (docs/scaling.md, "Two pools").
nice = int(os.environ.get("GUNICORN_NICE", "0"))


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


def on_starting(server) -> None:
    """Static files: collected once if nobody ran collectstatic (`make serve` does before every start)."""
    from mobilityplus.static_files import collect_if_missing

    collect_if_missing()
    if nice:
        from mobilityplus.cpu_priority import yield_cpu

        yield_cpu(nice)


def post_worker_init(worker) -> None:
    """Before a worker serves: load every card of ours, so no authorization pays for a cache miss."""
    import time

    from cards.authorization import card_directory

    started = time.monotonic()
    count = card_directory.warm()
    # The card cache lives as long as the worker: keep it out of the collector's way so collections stay short.
    gc.freeze()
    worker.log.info("worker %s: %d cards cached in %.1fs", worker.pid, count, time.monotonic() - started)
