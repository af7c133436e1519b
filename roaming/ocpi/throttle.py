"""Rate limits on failed machine authentication: OCPI partner tokens and the charge-point backend bearer.

An address that fails authentication `limit` times within `window` seconds is refused with HTTP 429
for the next `window` seconds, before its token is even looked up. Only failures are counted: a partner
whose token is valid is never counted, and callers at other addresses are never affected.

While an address is blocked, every call from it is refused, valid token or not: letting a valid token
through would tell an attacker which of its guesses is right (429 for wrong, 200 for right), which is the
oracle the limit exists to take away.

The counts live in the Django cache (Redis in production, so every worker process shares them; local
memory in the embedded mode). If the cache cannot be reached the limit is skipped (logged): a broken cache
must not lock every partner out.

So that callers with valid tokens pay almost nothing, a process asks the cache about one address only once that
address has failed in this process lately (`_suspects`). Addresses blocked by other processes are known from the
scope's block list, one small cache entry that each process reads at most every BLOCKLIST_CHECK_S: a valid token
from an address blocked anywhere is refused everywhere within that time (a gthread worker keeps a keep-alive
connection, so an attacker's guesses may all have landed in one process).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from mobilityplus.client_address import address_bucket, client_address
from roaming.ocpi.bounded_cache import BoundedCache
from roaming.ocpi.envelope import CLIENT_ERROR, OcpiError

logger = logging.getLogger(__name__)

# (scope, address bucket) -> monotonic time until which this process checks the address before any work.
_suspects = BoundedCache(max_entries=10_000)
# How often a process re-reads each scope's list of blocked addresses (set by any process).
BLOCKLIST_CHECK_S = 0.5
# scope -> (monotonic time of the next read, {address bucket: wall-clock time the block ends})
_blocklists: dict[str, tuple[float, dict[str, float]]] = {}


@dataclass(frozen=True)
class FailureLimit:
    """One kind of authentication whose failures are counted per client address."""

    scope: str
    limit_setting: str
    window_setting: str
    default_limit: int = 20
    default_window_s: float = 60.0

    @property
    def limit(self) -> int:
        return max(1, int(getattr(settings, self.limit_setting, self.default_limit)))

    @property
    def window_s(self) -> float:
        return max(1.0, float(getattr(settings, self.window_setting, self.default_window_s)))

    def _keys(self, bucket: str) -> tuple[str, str]:
        return f"throttle:{self.scope}:failures:{bucket}", f"throttle:{self.scope}:blocked:{bucket}"

    def blocked_for(self, request: HttpRequest) -> int | None:
        """Seconds until the caller's address may try again, or None when it is not blocked.

        Reads the shared cache only for an address that failed in this process lately: a caller that never
        fails costs one dictionary lookup.
        """
        bucket = address_bucket(client_address(request))
        suspect_until = _suspects.get((self.scope, bucket))
        if suspect_until is None or suspect_until < time.monotonic():
            until = self._blocklist().get(bucket)
            if until is None or until <= time.time():
                return None
        return self._blocked_for(bucket)

    def _blocklist_key(self) -> str:
        return f"throttle:{self.scope}:blocklist"

    def _blocklist(self) -> dict[str, float]:
        """Addresses blocked by any process (this process's copy, at most BLOCKLIST_CHECK_S old)."""
        now = time.monotonic()
        next_read, blocked = _blocklists.get(self.scope, (0.0, {}))
        if now < next_read:
            return blocked
        try:
            blocked = cache.get(self._blocklist_key()) or {}
        except Exception:
            logger.warning("Rate limit %s: cache unreachable, block list not read", self.scope, exc_info=True)
        _blocklists[self.scope] = (now + BLOCKLIST_CHECK_S, blocked)
        return blocked

    def _list_block(self, bucket: str, until: float | None) -> None:
        """Add (or with None, remove) an address in the scope's block list; ended blocks are dropped."""
        now = time.time()
        blocked = {b: u for b, u in (cache.get(self._blocklist_key()) or {}).items() if u > now}
        if until is None:
            blocked.pop(bucket, None)
        else:
            blocked[bucket] = until
        cache.set(
            self._blocklist_key(),
            blocked,
            timeout=math.ceil(max([self.window_s, *[u - now for u in blocked.values()]])),
        )
        _blocklists.pop(self.scope, None)

    def note_failure(self, request: HttpRequest) -> int | None:
        """Count one failed authentication from the caller's address; block it once the limit is reached.

        Returns the seconds left when the address was already blocked (by any process): the caller answers 429.
        """
        address = client_address(request)
        bucket = address_bucket(address)
        window = self.window_s
        _suspects[(self.scope, bucket)] = time.monotonic() + 2 * window
        retry_after = self._blocked_for(bucket)
        if retry_after is not None:
            return retry_after
        failures_key, blocked_key = self._keys(bucket)
        timeout = math.ceil(window)
        try:
            # add() then incr(): atomic on Redis, so concurrent workers never lose a count. The window
            # starts at the first failure (add is a no-op while a count is running).
            cache.add(failures_key, 0, timeout=timeout)
            try:
                failures = cache.incr(failures_key)
            except ValueError:  # the count expired between add and incr
                cache.set(failures_key, 1, timeout=timeout)
                failures = 1
            if failures >= self.limit:
                cache.set(blocked_key, time.time() + window, timeout=timeout)
                cache.delete(failures_key)
                self._list_block(bucket, time.time() + window)
                logger.warning(
                    "Rate limit %s: %s blocked for %.0f s after %d failed authentications",
                    self.scope,
                    bucket,
                    window,
                    failures,
                )
        except Exception:
            logger.warning("Rate limit %s: cache unreachable, failure not counted", self.scope, exc_info=True)
        return None

    def _blocked_for(self, bucket: str) -> int | None:
        _, blocked_key = self._keys(bucket)
        try:
            until = cache.get(blocked_key)
        except Exception:
            logger.warning("Rate limit %s: cache unreachable, not checked", self.scope, exc_info=True)
            return None
        if until is None:
            return None
        remaining = until - time.time()
        if remaining <= 0:
            return None
        # Keep checking this address for as long as the block lasts, and a window after.
        _suspects[(self.scope, bucket)] = time.monotonic() + remaining + self.window_s
        return max(1, math.ceil(remaining))

    def reset(self, address: str) -> None:
        """Forget the failures and any block of an address (staff unblocking a partner, tests)."""
        bucket = address_bucket(address)
        cache.delete_many(list(self._keys(bucket)))
        self._list_block(bucket, None)


OCPI_PARTNER_AUTH = FailureLimit("ocpi", "OCPI_AUTH_FAILURE_LIMIT", "OCPI_AUTH_FAILURE_WINDOW_S")
BACKEND_BEARER_AUTH = FailureLimit(
    "backend-bearer", "CARDS_BACKEND_AUTH_FAILURE_LIMIT", "CARDS_BACKEND_AUTH_FAILURE_WINDOW_S"
)
FAILURE_LIMITS = (OCPI_PARTNER_AUTH, BACKEND_BEARER_AUTH)


def reset(address: str) -> None:
    """Unblock an address everywhere (every limit in FAILURE_LIMITS)."""
    for failure_limit in FAILURE_LIMITS:
        failure_limit.reset(address)


class TooManyFailedAuthentications(OcpiError):
    """HTTP 429 in the OCPI envelope (2000), with Retry-After."""

    def __init__(self, retry_after: int):
        super().__init__(
            CLIENT_ERROR,
            f"Too many failed authentications from your address; try again in {retry_after} s",
            http_status=429,
        )
        self.headers = {"Retry-After": str(retry_after)}


def refuse_if_blocked(request: HttpRequest) -> None:
    """Raise TooManyFailedAuthentications when the caller's address is blocked for OCPI."""
    retry_after = OCPI_PARTNER_AUTH.blocked_for(request)
    if retry_after is not None:
        raise TooManyFailedAuthentications(retry_after)


def note_failed_authentication(request: HttpRequest) -> None:
    """Count a failed OCPI authentication; raise TooManyFailedAuthentications if the address is blocked already."""
    retry_after = OCPI_PARTNER_AUTH.note_failure(request)
    if retry_after is not None:
        raise TooManyFailedAuthentications(retry_after)
