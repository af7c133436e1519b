"""Liveness of the parts the platform cannot work without: the database and the broker.

`/healthz` is public (load balancers call it), so its answer names a failing part and nothing more; what went
wrong (host, port, driver message) goes to the server log. Both checks run at the same time under one deadline
(HEALTHZ_TIMEOUT_S), so a stalled database or broker makes the answer a quick 503, never a hung request.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import redis.asyncio
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)

OK = "ok"
UNAVAILABLE = "unavailable"

# Keys of Django's connection parameters that are psycopg objects, not libpq connection settings.
_NOT_CONNINFO = {"cursor_factory", "context", "prepare_threshold"}


def _postgres_probe_params(timeout_s: float) -> dict[str, Any]:
    """The default database's connection settings, with the probe's own short timeouts."""
    params = {
        key: value
        for key, value in connection.get_connection_params().items()
        if key not in _NOT_CONNINFO and value is not None
    }
    params["connect_timeout"] = max(1, int(timeout_s))  # libpq counts whole seconds, at least 1 (0 = no limit)
    # The server gives up on the probe too, so a stalled probe does not linger there after we stopped waiting.
    params["options"] = f"{params.get('options', '')} -c statement_timeout={int(timeout_s * 1000)}".strip()
    params["autocommit"] = True
    return params


async def _probe_postgres(params: dict[str, Any]) -> None:
    # A connection of its own: the request's pooled connection could be the one that is stuck.
    probe = await psycopg.AsyncConnection.connect(**params)
    try:
        await probe.execute("SELECT 1")
    finally:
        await probe.close()


async def _probe_broker(url: str, timeout_s: float) -> None:
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _within(name: str, probe, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(probe, timeout_s)
    except TimeoutError:
        logger.warning("healthz: %s gave no answer within %.1f s", name, timeout_s)
        return UNAVAILABLE
    except Exception as exc:  # any failure means "down"; the detail is for the log only
        logger.warning("healthz: %s check failed: %s: %s", name, exc.__class__.__name__, exc)
        return UNAVAILABLE
    return OK


async def _network_checks(timeout_s: float) -> dict[str, str]:
    probes: dict[str, Any] = {}
    if connection.vendor == "postgresql":
        probes["database"] = _probe_postgres(_postgres_probe_params(timeout_s))
    if settings.REDIS_URL:
        probes["broker"] = _probe_broker(settings.REDIS_URL, timeout_s)
    states = await asyncio.gather(*(_within(name, probe, timeout_s) for name, probe in probes.items()))
    return dict(zip(probes, states, strict=True))


def _run(coroutine) -> dict[str, str]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from a thread that already runs an event loop: give the checks a thread (and loop) of their own.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _local_database_state() -> str:
    """SQLite (the embedded demo): a local file, no network to stall on."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        logger.warning("healthz: database check failed: %s: %s", exc.__class__.__name__, exc)
        return UNAVAILABLE
    return OK


def health_checks() -> dict[str, str]:
    """State of each part: "ok" (the broker: "ok (in-process tasks)" without Redis) or "unavailable"."""
    checks = _run(_network_checks(settings.HEALTHZ_TIMEOUT_S))
    if "database" not in checks:
        checks["database"] = _local_database_state()
    checks.setdefault("broker", "ok (in-process tasks)")
    return {"database": checks["database"], "broker": checks["broker"]}


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, 503 naming the failing part otherwise."""
    checks = health_checks()
    failing = [name for name, state in checks.items() if not state.startswith(OK)]
    body = {"status": "ok" if not failing else UNAVAILABLE, "checks": checks, "failing": failing}
    return JsonResponse(body, status=200 if not failing else 503)
