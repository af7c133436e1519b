"""Prometheus metrics of authorizations, counted where they are decided (served by /metrics, mobilityplus.metrics).

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py sets it), each process writes its counts to a file there and
/metrics adds up every process's; otherwise they live in this process.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Local decisions take well under a millisecond; real-time ones up to CARDS_REALTIME_DEADLINE_S (a few seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)

AUTHORIZATIONS = Counter(
    "mobilityplus_authorizations",
    "Authorization decisions, by direction (emsp: a CPO asked about our card; cpo: our station asked about a card), "
    "partner (CPO asking, or the card's issuer), result (OCPI AllowedType) and path (local, cache, realtime, "
    "fallback, unknown, agreement).",
    ["direction", "partner", "result", "path"],
)
AUTHORIZATION_SECONDS = Histogram(
    "mobilityplus_authorization_duration_seconds",
    "Time to decide an authorization, by direction, partner and path.",
    ["direction", "partner", "path"],
    buckets=LATENCY_BUCKETS,
)
REALTIME_CALLS = Counter(
    "mobilityplus_emsp_realtime_calls",
    "Real-time authorization calls to an eMSP for a card at our station, by partner and outcome "
    "(answered, timeout: no answer within the deadline, error: refused or unusable answer, "
    "not_called: the partner's circuit is open or it has no endpoint).",
    ["partner", "outcome"],
)
REALTIME_SECONDS = Histogram(
    "mobilityplus_emsp_realtime_call_duration_seconds",
    "How long an eMSP took to answer our real-time authorization call (timeouts count at the deadline).",
    ["partner"],
    buckets=LATENCY_BUCKETS,
)


def observe_decision(direction: str, partner: str, result: str, path: str, elapsed_ms: float | None) -> None:
    partner = partner or "unknown"
    AUTHORIZATIONS.labels(direction, partner, result, path).inc()
    if elapsed_ms is not None:
        AUTHORIZATION_SECONDS.labels(direction, partner, path).observe(elapsed_ms / 1000)


def observe_realtime_call(partner: str, outcome: str, seconds: float | None) -> None:
    REALTIME_CALLS.labels(partner, outcome).inc()
    if seconds is not None:
        REALTIME_SECONDS.labels(partner).observe(seconds)
