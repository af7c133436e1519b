"""Isolation of the eMSPs we ask in real time: one partner's trouble stays that partner's.

Two guards per partner endpoint (the party and its tokens SENDER URL):

- **bulkhead**: at most CARDS_REALTIME_PARTNER_CONCURRENCY calls to one partner in flight in this process,
  counting calls abandoned at the deadline that still hold a pool thread. When its slots are full the
  authorization is answered from the cached token at once (it never queues), so a stalling partner can
  hold only its own slots of the shared real-time pool, never the others'.
- **circuit**: after CARDS_CIRCUIT_FAILURES failed calls (timeout, error, garbage, slower than the deadline)
  within CARDS_CIRCUIT_WINDOW_S, the circuit opens: for CARDS_CIRCUIT_COOLDOWN_S the partner is not asked
  and every authorization is answered from the cache at once. Then it is half-open: one request claims a
  trial call, which runs in the background while that request too is answered from the cache; a good
  answer closes the circuit, a failure opens it for another cool-down.

The state lives in this process (shared by its threads, works without any cache) and is mirrored in the
Django cache (Redis in production), so the gunicorn workers share one circuit: the failures one worker
saw open the circuit for all of them. Cache trouble only costs the sharing (django-redis ignores errors).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

CACHE_PREFIX = "cards:circuit:"


@dataclass
class Ticket:
    """Permission to call a partner once; `trial` when it is the half-open circuit's one trial call."""

    key: str
    trial: bool = False
    started: float = field(default_factory=time.monotonic)
    judged: bool = False  # its outcome counted once: at the deadline by the waiting request, or at its end


@dataclass
class _Partner:
    in_flight: int = 0
    failures: deque = field(default_factory=deque)  # monotonic times of recent failures
    open_until: float = 0.0  # monotonic; 0 = closed (or half-open once passed)
    tripped: bool = False  # opened at least once and not closed since: half-open after the cool-down
    trial_running: bool = False


class Refused(Exception):
    """The partner is not asked now; the message says why (for the decision's reason)."""


def circuit_key(party_pk: int, endpoint_url: str) -> str:
    """One circuit per partner endpoint: a changed URL (a partner moving) starts with a closed circuit."""
    digest = hashlib.sha1(endpoint_url.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"{party_pk}:{digest}"


class PartnerCircuits:
    def __init__(self) -> None:
        self._partners: dict[str, _Partner] = {}
        self._lock = threading.Lock()

    def _partner(self, key: str) -> _Partner:
        partner = self._partners.get(key)
        if partner is None:
            partner = self._partners.setdefault(key, _Partner())
        return partner

    # -- before a call -------------------------------------------------------------------------------------
    def admit(self, key: str) -> Ticket:
        """A ticket to call the partner now, or Refused (answer from the cache at once)."""
        with self._lock:
            if self._partner(key).open_until > time.monotonic():
                # Known open here: no round trip to the shared cache for each of a failing partner's drivers.
                raise Refused("failing, not asked for now (circuit open)")
        shared_open_until = self._shared_open_until(key)
        now, wall = time.monotonic(), time.time()
        with self._lock:
            partner = self._partner(key)
            if shared_open_until:
                # Another process saw the failures: adopt its cool-down (or its half-open state once passed).
                partner.open_until = max(partner.open_until, now + (shared_open_until - wall))
                partner.tripped = True
            if partner.open_until > now:
                raise Refused("failing, not asked for now (circuit open)")
            trial = partner.tripped
            if trial and partner.trial_running:
                raise Refused("failing, a trial call is under way (circuit half-open)")
            if partner.in_flight >= settings.CARDS_REALTIME_PARTNER_CONCURRENCY:
                raise Refused(f"{partner.in_flight} calls already waiting for it (concurrency limit)")
            if trial:
                partner.trial_running = True
            partner.in_flight += 1
        if trial and cache.add(CACHE_PREFIX + key + ":trial", 1, timeout=self._trial_ttl()) is False:
            # Another process runs the trial call: give back the slot and answer from the cache.
            self._release(key, trial=True)
            raise Refused("failing, a trial call is under way (circuit half-open)")
        return Ticket(key, trial=trial)

    # -- after a call -----------------------------------------------------------------------------------------
    def _first_judgement(self, ticket: Ticket) -> bool:
        with self._lock:
            if ticket.judged:
                return False
            ticket.judged = True
            return True

    def succeeded(self, ticket: Ticket) -> None:
        """The partner answered usably within the deadline."""
        if not self._first_judgement(ticket):
            return
        with self._lock:
            partner = self._partner(ticket.key)
            if ticket.trial or partner.tripped:
                partner.tripped, partner.open_until = False, 0.0
                partner.failures.clear()
                closed = True
            else:
                closed = False
        if closed:
            cache.delete_many([CACHE_PREFIX + ticket.key + suffix for suffix in (":open", ":failures", ":trial")])
            logger.info("Real-time authorization circuit %s closed: the partner answers again", ticket.key)

    def failed(self, ticket: Ticket) -> None:
        """No usable answer in time (counted when the waiting request gives up, not when the call ends)."""
        if not self._first_judgement(ticket):
            return
        now = time.monotonic()
        window = settings.CARDS_CIRCUIT_WINDOW_S
        with self._lock:
            partner = self._partner(ticket.key)
            partner.failures.append(now)
            while partner.failures and partner.failures[0] < now - window:
                partner.failures.popleft()
            local_count = len(partner.failures)
        shared_count = self._count_shared_failure(ticket.key)
        if ticket.trial or max(local_count, shared_count or 0) >= settings.CARDS_CIRCUIT_FAILURES:
            self._open(ticket.key)

    def release(self, ticket: Ticket) -> None:
        """The call is over (answered, failed or given up by its thread): its slot is free again."""
        self._release(ticket.key, trial=ticket.trial)

    # -- state ------------------------------------------------------------------------------------------------
    def state(self, key: str) -> str:
        """closed, open or half-open (this process's view), for tests and the admin."""
        with self._lock:
            partner = self._partner(key)
            if partner.open_until > time.monotonic():
                return "open"
            return "half-open" if partner.tripped else "closed"

    def reset(self) -> None:
        with self._lock:
            self._partners.clear()

    def _open(self, key: str) -> None:
        cooldown = settings.CARDS_CIRCUIT_COOLDOWN_S
        with self._lock:
            partner = self._partner(key)
            partner.open_until = time.monotonic() + cooldown
            partner.tripped = True
            partner.failures.clear()
        # Kept past the cool-down, so other processes know a trial is due rather than a closed circuit.
        cache.set(CACHE_PREFIX + key + ":open", time.time() + cooldown, timeout=cooldown + self._trial_ttl() + 60)
        cache.delete(CACHE_PREFIX + key + ":failures")
        logger.warning("Real-time authorization circuit %s open for %.0f s", key, cooldown)

    def _release(self, key: str, *, trial: bool) -> None:
        with self._lock:
            partner = self._partner(key)
            partner.in_flight = max(0, partner.in_flight - 1)
            if trial:
                partner.trial_running = False
        if trial:
            cache.delete(CACHE_PREFIX + key + ":trial")

    def _shared_open_until(self, key: str) -> float | None:
        value = cache.get(CACHE_PREFIX + key + ":open")
        return float(value) if isinstance(value, int | float) else None

    def _count_shared_failure(self, key: str) -> int | None:
        name = CACHE_PREFIX + key + ":failures"
        try:
            cache.add(name, 0, timeout=max(1, round(settings.CARDS_CIRCUIT_WINDOW_S)))
            return cache.incr(name)
        except ValueError:  # expired between add and incr
            return None

    @staticmethod
    def _trial_ttl() -> int:
        return max(1, round(settings.CARDS_REALTIME_DEADLINE_S * 2))


partner_circuits = PartnerCircuits()
