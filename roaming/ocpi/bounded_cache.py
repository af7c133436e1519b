"""A per-process cache with a ceiling on its entries, least recently used out first.

Caches keyed by what a caller sends (a credentials token, a card uid) would otherwise grow with every
random value an attacker or a broken client tries: 1,500 random tokens were 1,500 entries for good.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

_MISSING = object()


class BoundedCache(OrderedDict):
    """An OrderedDict that keeps at most `max_entries`, dropping the least recently read or written.

    `max_entries` is a number or a function returning it (read on each insert, so a setting can change it).

    Safe to share between threads of one process without a lock: a concurrent eviction at worst makes a
    read miss (the caller loads the value again), never an error.
    """

    def __init__(self, max_entries: int | Callable[[], int]) -> None:
        super().__init__()
        self._max_entries = max_entries

    @property
    def max_entries(self) -> int:
        limit = self._max_entries() if callable(self._max_entries) else self._max_entries
        return max(1, int(limit))

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, _MISSING)
        if value is _MISSING:
            return default
        with contextlib.suppress(KeyError):  # evicted by another thread meanwhile
            self.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        with contextlib.suppress(KeyError):
            self.move_to_end(key)
        limit = self.max_entries
        while len(self) > limit:
            try:
                self.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
