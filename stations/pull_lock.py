"""One location pull per partner at a time, and what happens when the worker holding it dies.

The lock is a cache entry naming its owner (host, process, SyncRun) and the last time the owner showed life
(its heartbeat, written at the start and after every stored page). A worker killed mid-pull (SIGKILL, OOM,
a lost machine) never releases it: the next run takes it over when the owner is provably gone (same host
and process namespace, process no longer exists) or its heartbeat is older than FEEDS_LOCK_STALE_S, and closes
the dead run's SyncRun as failed ("worker died: ...") instead of being dropped as busy. The entry also expires
by itself FEEDS_LOCK_TIMEOUT_S after the last heartbeat.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from stations.models import SyncRun

LOCK_KEY = "stations:pull_locations:{}"
TAKEOVER_KEY = "stations:pull_locations:{}:takeover"
# The error of a SyncRun closed because its worker died; the scheduler does not count such a run as a pull.
WORKER_DIED = "worker died"


# The error of a SyncRun recorded for a pull skipped because the lock's store (Redis) could not be reached; like a
# dead worker's run it does not count as a pull, so the partner is pulled at the first tick once Redis is back.
LOCK_UNAVAILABLE = "not pulled"


class PullBusy(Exception):
    """Another run for this partner holds the lock and is alive."""


class LockUnavailable(PullBusy):
    """The lock's store (the Django cache, Redis) cannot be reached: nobody can tell whether a run is going on."""


class PullTakenOver(Exception):
    """This run's lock was taken over (its heartbeat went stale): it stops, the new run goes on."""


@functools.cache
def this_process_namespace() -> str:
    """Host, boot and PID namespace: two owners with the same value see the same processes."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""  # not Linux: a holder's process can only be judged by its heartbeat
    return f"{socket.gethostname()}|{boot}|{namespace}"


def owner_is_gone(holder: dict[str, Any]) -> bool:
    """Whether the holder's process provably no longer exists (only decidable from the same namespace)."""
    if not this_process_namespace() or holder.get("namespace") != this_process_namespace():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process whose parent died too stays a zombie until reaped (a container's PID 1 may never reap it):
    it still answers signal 0, but runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name in parentheses, which may itself contain spaces or parentheses.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "Z"


def why_dead(holder: dict[str, Any] | None, now: float | None = None) -> str:
    """Why the holder of a lock counts as dead ("" when it is alive)."""
    if holder is None:
        return ""
    now = time.time() if now is None else now
    owner = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"
    if owner_is_gone(holder):
        return f"{WORKER_DIED}: process {owner} no longer exists"
    silent = now - float(holder.get("beat", 0))
    if silent > settings.FEEDS_LOCK_STALE_S:
        return f"{WORKER_DIED}: no heartbeat from {owner} for {silent:.0f} s"
    return ""


@dataclass
class PullLock:
    connection_id: int
    token: str = ""
    sync_run_id: int | None = None
    holder: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return LOCK_KEY.format(self.connection_id)

    def _value(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "namespace": this_process_namespace(),
            "run": self.sync_run_id,
            "beat": time.time(),
        }

    def acquire(self) -> bool:
        """Take the lock, or take it over from a dead holder (whose SyncRun is closed as failed)."""
        self.token = uuid.uuid4().hex
        added = cache.add(self.key, self._value(), timeout=settings.FEEDS_LOCK_TIMEOUT_S)
        if added is None:  # django-redis answers None (not False) when it ignored a connection error
            raise LockUnavailable(f"{LOCK_UNAVAILABLE}: the pull lock's store (Redis) cannot be reached")
        if added:
            return True
        return self._take_over()

    def _take_over(self) -> bool:
        # Two new runs may find the same dead holder: a short mutex lets one of them replace it.
        mutex = TAKEOVER_KEY.format(self.connection_id)
        if not cache.add(mutex, self.token, timeout=30):
            return False
        try:
            holder = cache.get(self.key)
            if holder is not None and not isinstance(holder, dict):
                return False  # a lock written before owners were recorded: only its expiry frees it
            reason = why_dead(holder)
            if holder is not None and not reason:
                return False
            cache.set(self.key, self._value(), timeout=settings.FEEDS_LOCK_TIMEOUT_S)
            if holder is not None:
                close_dead_run(holder.get("run"), reason)
            return True
        finally:
            if cache.get(mutex) == self.token:
                cache.delete(mutex)

    def attach(self, sync_run_id: int) -> None:
        """Name the run holding the lock (so whoever finds this worker dead can close its SyncRun)."""
        self.sync_run_id = sync_run_id
        cache.set(self.key, self._value(), timeout=settings.FEEDS_LOCK_TIMEOUT_S)

    def refresh(self) -> None:
        """The heartbeat; raises PullTakenOver when another run has taken the lock over meanwhile."""
        holder = cache.get(self.key)
        if holder is None:
            raise PullTakenOver(f"the lock expired (no heartbeat for {settings.FEEDS_LOCK_TIMEOUT_S} s)")
        if not isinstance(holder, dict) or holder.get("token") != self.token:
            raise PullTakenOver("the lock was taken over by another run")
        cache.set(self.key, self._value(), timeout=settings.FEEDS_LOCK_TIMEOUT_S)

    def release(self) -> None:
        # Only the holder releases it (a run whose lock was taken over must not free the newer run's lock).
        holder = cache.get(self.key)
        if isinstance(holder, dict) and holder.get("token") == self.token:
            cache.delete(self.key)


def close_dead_run(sync_run_id: int | None, reason: str) -> bool:
    """Close a run whose worker died as failed, with why; pages it stored stay stored."""
    if not sync_run_id:
        return False
    return bool(
        SyncRun.objects.filter(pk=sync_run_id, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, error=reason, finished_at=timezone.now()
        )
    )


def close_dead_runs() -> list[int]:
    """Close every RUNNING SyncRun whose worker is gone; the scheduler calls this before choosing pulls.

    A run is alive while the lock of its connection names it with a fresh heartbeat. A run the lock does not
    name (expired, released, taken over) has no live worker: the lock is taken before a run starts and
    released only after it is saved as finished.
    """
    closed = []
    for run_id, connection_id in SyncRun.objects.filter(status=SyncRun.Status.RUNNING).values_list(
        "pk", "connection_id"
    ):
        holder = cache.get(LOCK_KEY.format(connection_id))
        if isinstance(holder, dict) and holder.get("run") == run_id:
            reason = why_dead(holder)
        elif holder is not None and (not isinstance(holder, dict) or holder.get("run") is None):
            # A new run has the lock and has not named itself yet (it closes older runs itself), or a lock
            # written before owners were recorded: leave it to its expiry.
            continue
        else:
            reason = f"{WORKER_DIED}: its lock is gone (no heartbeat for {settings.FEEDS_LOCK_TIMEOUT_S} s)"
        if reason and close_dead_run(run_id, reason):
            closed.append(run_id)
    return closed
