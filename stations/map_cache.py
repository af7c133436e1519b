"""The map API's answer cache: per-area versions and a short bounded staleness, no global version.

A viewport answer is cached (`MAP_CACHE_SECONDS`) with the versions of the areas it covers: grid cells
at level `MAP_AREA_LEVEL` (8: about 156 x 78 km in Europe). A writer bumps the versions of the areas
its changed locations lie in, after commit, so a change in Amsterdam leaves the cached answers of Paris
hitting. An answer whose areas moved is recomputed at once, unless it was itself recomputed for a
change less than `MAP_FRESH_SECONDS` (2) ago: under a status stream the areas of a busy city move many
times a second, and their answers are then recomputed at most every MAP_FRESH_SECONDS, so a driver sees a
change at most that long after it was stored (plus the answer's own time). Views covering more than
`MAP_AREA_KEYS_MAX` areas (a country or more, clustered from the cells) count as always changing: they are
reused for MAP_FRESH_SECONDS after each computation. While one request recomputes an answer, the others
asking for it meanwhile get the previous one (at most RECOMPUTE_SECONDS longer): a popular view is computed
once per window, not once per driver. The epoch (bulk or by-hand changes) always drops every answer.

A clustered answer (cluster counts from `stations.MapCell`) changes only when the cells do, so it is kept
with the cells' version (`CELLS_KEY`, moved by every update or rebuild of the cells, about every
MAP_CELLS_REFRESH_SECONDS under a stream) instead of its areas': a status stream does not recompute the
zoomed-out views between two updates of the counts they show.

One Redis round trip reads the answer and its areas' versions (`get_many`). A bulk writer (a feed page
touching many areas) moves one epoch instead, which every answer's versions include.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from stations.map_cells import cell_x, cell_y

EPOCH_KEY = "stations:map:epoch"
AREA_PREFIX = "stations:map:area"
ANSWER_PREFIX = "stations:map:answer"
CELLS_KEY = "stations:map:cells"
# A writer touching more areas than this moves the epoch (one key) rather than each area.
BULK_AREAS = 64
# While one request recomputes an answer whose areas changed, the others serve the previous one this long at most.
RECOMPUTE_SECONDS = 1.0


def area_level() -> int:
    return settings.MAP_AREA_LEVEL


def area_of(latitude: float, longitude: float) -> tuple[int, int]:

    level = area_level()
    return cell_x(longitude, level), cell_y(latitude, level)


def areas_in(bbox) -> list[tuple[int, int]] | None:
    """The areas a box overlaps, or None when there are more than MAP_AREA_KEYS_MAX of them."""

    level = area_level()
    top, bottom = cell_y(bbox.north, level), cell_y(bbox.south, level)
    columns: list[int] = []
    for low, high in bbox.longitude_ranges():
        columns.extend(range(cell_x(low, level), cell_x(high, level) + 1))
    if len(columns) * (bottom - top + 1) > settings.MAP_AREA_KEYS_MAX:
        return None
    return [(x, y) for x in columns for y in range(top, bottom + 1)]


def _area_key(area: tuple[int, int]) -> str:
    return f"{AREA_PREFIX}:{area_level()}:{area[0]}:{area[1]}"


def _bump(key: str) -> None:
    try:
        cache.incr(key)
    except ValueError:  # never set, or evicted: any new value differs from what answers were cached with
        cache.set(key, time.time_ns(), timeout=None)


def bump_areas(points: Iterable[tuple[float, float]]) -> None:
    """Move the versions of the areas holding these (latitude, longitude) points, now."""
    areas = {area_of(lat, lon) for lat, lon in points}
    if len(areas) > BULK_AREAS:
        _bump(EPOCH_KEY)
        return
    for area in areas:
        _bump(_area_key(area))


def note_changed_places(points: Iterable[tuple[float, float]] | None) -> None:
    """After the current transaction commits, move the versions of these places' areas (None: all areas)."""
    points = None if points is None else list(points)

    def bump() -> None:
        if points is None:
            _bump(EPOCH_KEY)
        elif points:
            bump_areas(points)

    # robust: the change is committed; a failed bump is bounded by MAP_CACHE_SECONDS.
    transaction.on_commit(bump, robust=True)


def note_cells_changed() -> None:
    """After the current transaction commits, the clustered answers are recomputed at their next request."""
    transaction.on_commit(lambda: _bump(CELLS_KEY), robust=True)


def cached_answer(key_parts: str, bbox, compute: Callable[[], dict]) -> bytes:
    """The answer for this viewport key, as JSON: from the cache when still current or fresh enough, else computed.

    Kept rendered: a hit (most of a polling map's requests) costs no rendering of up to 1000 stations again.
    """
    areas = areas_in(bbox)
    digest = hashlib.blake2b(key_parts.encode(), digest_size=16).hexdigest()
    answer_key = f"{ANSWER_PREFIX}:{digest}"
    version_keys = [EPOCH_KEY, CELLS_KEY] + ([_area_key(area) for area in areas] if areas is not None else [])
    found = cache.get_many([answer_key, *version_keys])
    epoch, cells = found.get(EPOCH_KEY), found.get(CELLS_KEY)
    versions = [found.get(key) for key in version_keys[2:]] if areas is not None else None
    entry = found.get(answer_key)
    now = time.time()
    # The epoch moves only for bulk or by-hand changes: it always drops the answer. The areas' versions
    # move with every status change: within MAP_FRESH_SECONDS the answer is reused anyway.
    churning = versions is None  # a wide view: no versions to compare, reused for MAP_FRESH_SECONDS
    recomputing = False  # whether this request holds the recompute lock (`:busy`)
    if entry is not None and entry["epoch"] == epoch:
        if entry.get("cells") is not None:  # clustered: current while the cells did not change
            if entry["cells"] == (cells or 0):
                return entry["answer"]
        elif versions is not None and entry["versions"] == versions:
            return entry["answer"]
        # Its areas changed. Recomputed at once after a quiet spell; but an answer that was itself recomputed
        # for a change (a busy area) is reused for MAP_FRESH_SECONDS, so a status stream cannot empty the cache.
        age = now - entry["at"]
        if entry["churning"] and age < settings.MAP_FRESH_SECONDS:
            return entry["answer"]
        # One request recomputes it; the drivers asking meanwhile keep the answer they had (a busy city view is
        # asked by many at once), for at most RECOMPUTE_SECONDS more.
        recomputing = cache.add(f"{answer_key}:busy", 1, timeout=RECOMPUTE_SECONDS)
        if not recomputing and age < settings.MAP_FRESH_SECONDS + RECOMPUTE_SECONDS:
            return entry["answer"]
        churning = True
    computed = compute()
    answer = orjson.dumps(computed)
    clustered = bool(computed.get("meta", {}).get("clustered"))
    cache.set(
        answer_key,
        {
            "at": time.time(),
            "epoch": epoch,
            "versions": versions,
            "churning": churning,
            # A cells version that was never set (no update since Redis started) is kept as 0: still "clustered".
            "cells": (cells or 0) if clustered else None,
            "answer": answer,
        },
        timeout=settings.MAP_CACHE_SECONDS,
    )
    if recomputing:  # only the lock this request took: another request's stays until that one is done
        cache.delete(f"{answer_key}:busy")
    return answer


def drop_all_answers() -> None:
    """Every cached answer is recomputed at its next request (the epoch moves now)."""
    _bump(EPOCH_KEY)
