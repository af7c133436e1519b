"""How many requests of this server may wait for eMSPs' real-time answers: a bulkhead across processes.

A request waiting on an eMSP holds a thread (gthread workers) or a whole worker process (sync workers). So this
server lets at most CARDS_REALTIME_PARTNER_WAITING requests wait on any one eMSP (its circuit key) and at most
CARDS_REALTIME_WAITING_TOTAL on all eMSPs together, across all its worker processes and threads; a request
that finds no free slot is answered from the cached token at once and never queues. The other threads or
workers stay free for our own cards (which never wait on anybody) and for the other eMSPs.

The slots are advisory file locks (flock) on files in CARDS_REALTIME_WAITS_DIR, one file per slot:

- the resource guarded is this server's own workers, so the limit is per server, not cluster-wide;
- taking a slot is two system calls (no network round trip) and works while Redis is down (a fault this
  bulkhead must survive too: a Redis-based count would fall back to per process, that is no limit);
- the kernel frees the locks of a worker that dies (SIGKILL, OOM): nothing to expire, no lease to tune;
- flock locks belong to open file descriptions, so threads of one process exclude each other too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass
class WaitSlot:
    """Slots held while a request waits (the eMSP's, and one of the total); `release` frees them (idempotent)."""

    descriptors: list[int] = field(default_factory=list)

    def release(self) -> None:
        while self.descriptors:
            descriptor = self.descriptors.pop()
            with contextlib.suppress(OSError):
                os.close(descriptor)  # closing the only descriptor of the open file drops its lock


def default_directory() -> str:
    """One directory per deployment (its database), so two platforms on one host do not share slots."""
    database = settings.DATABASES["default"]
    name = f"{database.get('HOST')}:{database.get('PORT')}/{database.get('NAME')}"
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"mobilityplus-emsp-waits-{os.getuid()}-{digest}")


def _directory() -> Path:
    directory = Path(settings.CARDS_REALTIME_WAITS_DIR or default_directory())
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def _take_one(directory: Path, group: str, slots: int) -> int | None:
    """A locked descriptor of one free slot file of `group`, or None when all `slots` are held."""
    for index in range(slots):
        descriptor = os.open(directory / f"{group}.{index}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor
    return None


class NoSlot(Exception):
    """Enough requests of this server wait already; the message says whose slots are full."""


def take_wait_slot(key: str) -> WaitSlot:
    """Slots for one request to wait on the eMSP of circuit `key`, or NoSlot (answer from the cache at once)."""
    try:
        return _take(key)
    except OSError as error:
        # No usable directory (full disk, permissions): the per-process limits still apply (realtime_circuit).
        logger.warning("Real-time wait slots unavailable (%s); limits per process only", error)
        return WaitSlot()


def _take(key: str) -> WaitSlot:
    directory = _directory()
    slot = WaitSlot()
    per_partner = settings.CARDS_REALTIME_PARTNER_WAITING
    own = _take_one(directory, "emsp-" + key.replace(":", "-"), per_partner)
    if own is None:
        raise NoSlot(f"{per_partner} request(s) of this server already waiting for it (concurrency limit)")
    slot.descriptors.append(own)
    total = settings.CARDS_REALTIME_WAITING_TOTAL
    shared = _take_one(directory, "all", total)
    if shared is None:
        slot.release()
        raise NoSlot(f"{total} request(s) of this server already waiting for eMSPs (concurrency limit)")
    slot.descriptors.append(shared)
    return slot


def held_slots(key: str | None = None) -> int:
    """How many slots (of one eMSP's circuit `key`, or of the total) are held now on this server: for tests."""
    directory = _directory()
    group = "all" if key is None else "emsp-" + key.replace(":", "-")
    held = 0
    for path in directory.glob(f"{group}.*"):
        descriptor = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held += 1
        finally:
            os.close(descriptor)
    return held
