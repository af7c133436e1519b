"""Liveness of the parts the platform cannot work without: the database and the broker."""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "down"; the message says which
        return f"error: {exc.__class__.__name__}: {exc}"[:300]
    return "ok"


def broker_state() -> str:
    if not settings.REDIS_URL:
        return "ok (in-process tasks)"
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"[:300]
    return "ok"


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer, 503 naming the failing part otherwise."""
    checks = {"database": database_state(), "broker": broker_state()}
    failing = [name for name, state in checks.items() if not state.startswith("ok")]
    body = {"status": "ok" if not failing else "unavailable", "checks": checks, "failing": failing}
    return JsonResponse(body, status=200 if not failing else 503)
