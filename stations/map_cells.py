"""The map's cluster counts: stations per grid cell, rebuilt from Location in the database.

Counting 550,000 locations on every Europe-wide map request is too slow, so the counts are kept per
cell at every cluster level (see stations.models.MapCell) and refreshed in bulk, in one transaction,
whenever the map's cache version moved (beat, every MAP_CELLS_REFRESH_SECONDS). Station markers
always read Location itself; only cluster counts may lag by that interval.
"""

from __future__ import annotations

from django.core.cache import cache
from django.db import connection, transaction

from stations.models import Location, MapCell

# Cluster levels: level L splits the world into 2**L columns (360 degrees) by 2**L rows (180 degrees).
MIN_CELL_LEVEL = 3
MAX_CELL_LEVEL = 14
BUILT_FROM_KEY = "stations:map:cells-built-from"
_LOCK_ID = 604_206  # PostgreSQL advisory lock: one rebuild at a time


def cell_x(longitude: float, level: int) -> int:
    return min(int((longitude + 180.0) / 360.0 * 2**level), 2**level - 1)


def cell_y(latitude: float, level: int) -> int:
    return min(int((90.0 - latitude) / 180.0 * 2**level), 2**level - 1)


def refresh_map_cells() -> int:
    """Rebuild every cluster level from the visible locations; returns the number of cell rows."""
    from stations.selectors import bump_map_cache_version

    cells = MapCell._meta.db_table
    locations = Location._meta.db_table
    columns = "party_id, map_status, limited, max_power_kw, connector_standards"
    top = 2**MAX_CELL_LEVEL
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
        cursor.execute(f"DELETE FROM {cells}")  # noqa: S608
        # Finest level straight from the locations, with the same visibility rules as the map.
        cursor.execute(
            f"""
            INSERT INTO {cells} (level, x, y, {columns}, stations, sum_latitude, sum_longitude)
            SELECT %s, cx, cy, {columns}, COUNT(*), SUM(latitude), SUM(longitude) FROM (
                SELECT LEAST(FLOOR((longitude + 180.0) / 360.0 * %s), %s - 1) AS cx,
                       LEAST(FLOOR((90.0 - latitude) / 180.0 * %s), %s - 1) AS cy,
                       party_id, map_status, COALESCE(limited_access_override, limited_access) AS limited,
                       max_power_kw, connector_standards, latitude, longitude
                FROM {locations}
                WHERE removed_at IS NULL AND publish = %s AND evse_count > 0
            ) AS located
            GROUP BY cx, cy, {columns}
            """.replace("LEAST(", "MIN(" if connection.vendor == "sqlite" else "LEAST("),  # noqa: S608
            [MAX_CELL_LEVEL, top, top, top, top, True],
        )
        # Each coarser level from the one below it: a few hundred thousand rows at most, never the locations.
        for level in range(MAX_CELL_LEVEL - 1, MIN_CELL_LEVEL - 1, -1):
            cursor.execute(
                f"""
                INSERT INTO {cells} (level, x, y, {columns}, stations, sum_latitude, sum_longitude)
                SELECT %s, x / 2, y / 2, {columns}, SUM(stations), SUM(sum_latitude), SUM(sum_longitude)
                FROM {cells} WHERE level = %s
                GROUP BY x / 2, y / 2, {columns}
                """,  # noqa: S608
                [level, level + 1],
            )
        cursor.execute(f"SELECT COUNT(*) FROM {cells}")  # noqa: S608
        (rows,) = cursor.fetchone()
        version = bump_map_cache_version()
        transaction.on_commit(lambda: cache.set(BUILT_FROM_KEY, version, timeout=None))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {cells}")
    return rows


def refresh_map_cells_if_changed() -> bool:
    """Rebuild the cluster counts when the map's cache version moved since the last rebuild."""
    from stations.selectors import map_cache_version

    if cache.get(BUILT_FROM_KEY) == map_cache_version():
        return False
    refresh_map_cells()
    return True
