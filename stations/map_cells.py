"""The map's cluster counts: stations per grid cell, rebuilt from Location in the database.

Counting 550,000 locations on every Europe-wide map request is too slow, so the counts are kept per
cell at every cluster level (see stations.models.MapCell) and rebuilt in bulk whenever the map's cache
version or the set of parties accepting our cards moved (beat, every MAP_CELLS_REFRESH_SECONDS).
Station markers always read Location itself; only cluster counts may lag by that interval.

On PostgreSQL the new counts are built in an unlogged shadow table (derived data: no WAL, no dead rows,
index built once) and swapped in by renaming, so readers never wait for a rebuild.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction

from roaming.selectors import party_ids_accepting_our_cards
from stations.models import Location, MapCell

# The minimum-power steps the map offers (stations.filters validates against the same list).
POWER_STEPS = [0, 3.7, 7.4, 11, 22, 43, 50, 100, 150, 250, 350]

# Cluster levels: level L splits the world into 2**L columns (360 degrees) by 2**L rows (180 degrees).
MIN_CELL_LEVEL = 3
MAX_CELL_LEVEL = 12  # zoom 11; closer views are counted live from the covering index
# Per-party rows (the operator filter) only up to here: one operator rarely crowds a closer view, and
# when it does the view is clustered live from the locations.
PARTY_MAX_LEVEL = 10
BUILT_FROM_KEY = "stations:map:cells-built-from"
_LOCK_ID = 604_206  # PostgreSQL advisory lock: one rebuild at a time
_COLUMNS = "party_id, map_status, limited, max_power_kw, connector_standards"


def cell_x(longitude: float, level: int) -> int:
    return min(int((longitude + 180.0) / 360.0 * 2**level), 2**level - 1)


def cell_y(latitude: float, level: int) -> int:
    return min(int((90.0 - latitude) / 180.0 * 2**level), 2**level - 1)


def _fill(cursor, table: str, accepted: list[int]) -> None:
    """Insert every level's rows of each kind into `table` (empty)."""
    party, filters, summary = MapCell.Kind.PARTY, MapCell.Kind.FILTERS, MapCell.Kind.SUMMARY
    top = 2**MAX_CELL_LEVEL
    least = "MIN" if connection.vendor == "sqlite" else "LEAST"
    # Cells keep the power step a station reaches (the filter offers only steps): far fewer distinct rows.
    power_step = "CASE " + " ".join(f"WHEN max_power_kw >= {step} THEN {step}" for step in reversed(POWER_STEPS[1:]))
    insert = f"INSERT INTO {table} (kind, level, x, y, {_COLUMNS}, stations, sum_latitude, sum_longitude)"
    sums = "SUM(stations), SUM(sum_latitude), SUM(sum_longitude)"
    # Finest level straight from the locations, with the same visibility rules as the map. Each level
    # is kept in a small temporary table too, so the next coarser one reads it, not the whole result.
    cursor.execute("DROP TABLE IF EXISTS map_cells_level")
    cursor.execute(
        f"""
        CREATE TEMPORARY TABLE map_cells_level AS
        SELECT cx AS x, cy AS y, {_COLUMNS}, COUNT(*) AS stations, SUM(latitude) AS sum_latitude,
               SUM(longitude) AS sum_longitude
        FROM (
            SELECT CAST({least}(FLOOR((longitude + 180.0) / 360.0 * %s), %s - 1) AS INTEGER) AS cx,
                   CAST({least}(FLOOR((90.0 - latitude) / 180.0 * %s), %s - 1) AS INTEGER) AS cy,
                   party_id, map_status, COALESCE(limited_access_override, limited_access) AS limited,
                   {power_step} ELSE 0 END AS max_power_kw, connector_standards, latitude, longitude
            FROM {Location._meta.db_table}
            WHERE removed_at IS NULL AND published_to_our_drivers = %s AND evse_count > 0
        ) AS located
        GROUP BY cx, cy, {_COLUMNS}
        """,  # noqa: S608
        [top, top, top, top, True],
    )
    marks = ", ".join(["%s"] * len(accepted)) or "NULL"
    rest = "map_status, limited, max_power_kw, connector_standards"
    for level in range(MAX_CELL_LEVEL, MIN_CELL_LEVEL - 1, -1):
        if level <= PARTY_MAX_LEVEL:
            cursor.execute(
                f"""
                {insert}
                SELECT %s, %s, x, y, {_COLUMNS}, stations, sum_latitude, sum_longitude
                FROM map_cells_level ORDER BY party_id, x, y
                """,  # noqa: S608
                [party, level],
            )
        # Rows without the party, for the parties accepting our cards now: the agreement rule baked in.
        cursor.execute(
            f"""
            {insert}
            SELECT %s, %s, x, y, NULL, {rest}, {sums}
            FROM map_cells_level WHERE party_id IN ({marks})
            GROUP BY x, y, {rest}
            ORDER BY x, y
            """,  # noqa: S608
            [filters, level, *accepted],
        )
        cursor.execute(
            f"""
            {insert}
            SELECT %s, %s, x, y, NULL, map_status, limited, 0, '', {sums}
            FROM map_cells_level WHERE party_id IN ({marks})
            GROUP BY x, y, map_status, limited
            ORDER BY x, y
            """,  # noqa: S608
            [summary, level, *accepted],
        )
        if level == MIN_CELL_LEVEL:
            break
        cursor.execute("DROP TABLE IF EXISTS map_cells_coarser")
        cursor.execute(
            f"""
            CREATE TEMPORARY TABLE map_cells_coarser AS
            SELECT x / 2 AS x, y / 2 AS y, {_COLUMNS}, SUM(stations) AS stations,
                   SUM(sum_latitude) AS sum_latitude, SUM(sum_longitude) AS sum_longitude
            FROM map_cells_level
            GROUP BY x / 2, y / 2, {_COLUMNS}
            """  # noqa: S608
        )
        cursor.execute("DROP TABLE map_cells_level")
        cursor.execute("ALTER TABLE map_cells_coarser RENAME TO map_cells_level")
    cursor.execute("DROP TABLE map_cells_level")


def refresh_map_cells() -> int:
    """Rebuild every cluster level from the visible locations; returns the number of cell rows."""
    from stations.selectors import bump_map_cache_version

    table = MapCell._meta.db_table
    accepted = sorted(party_ids_accepting_our_cards())
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608
            _fill(cursor, table, accepted)
        else:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_ID])
            shadow, index = f"{table}_next", MapCell._meta.indexes[0]
            cursor.execute(f"DROP TABLE IF EXISTS {shadow}")
            cursor.execute(f"CREATE UNLOGGED TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY)")
            _fill(cursor, shadow, accepted)
            fields = ", ".join(MapCell._meta.get_field(name).column for name in index.fields)
            cursor.execute(f"CREATE INDEX {shadow}_idx ON {shadow} ({fields})")
            cursor.execute(f"ALTER TABLE {shadow} ADD CONSTRAINT {shadow}_pk PRIMARY KEY (id)")
            cursor.execute(f"ANALYZE {shadow}")
            # The swap: readers wait only for these renames, never for the build above.
            cursor.execute(f"DROP TABLE {table}")
            cursor.execute(f"ALTER TABLE {shadow} RENAME TO {table}")
            cursor.execute(f"ALTER INDEX {shadow}_idx RENAME TO {index.name}")
            cursor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {shadow}_pk TO {table}_pkey")
        cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
        (rows,) = cursor.fetchone()
        version = bump_map_cache_version()
    cache.set(BUILT_FROM_KEY, {"version": version, "accepted": accepted, "at": time.time()}, timeout=None)
    return rows


def summary_parties() -> list[int] | None:
    """The accepting parties the party-less rows were built for (None before the first rebuild)."""
    built = cache.get(BUILT_FROM_KEY)
    return built["accepted"] if built else None


def refresh_map_cells_if_changed() -> bool:
    """Rebuild the cluster counts when the map's cache version or the agreements moved since the last rebuild."""
    from stations.selectors import map_cache_version

    built = cache.get(BUILT_FROM_KEY) or {}
    unchanged = built.get("version") == map_cache_version() and built.get("accepted") == sorted(
        party_ids_accepting_our_cards()
    )
    # Safety nets: a writer that forgot to bump the version, and an unlogged table emptied by a crash.
    recent = time.time() - built.get("at", 0) < settings.MAP_CELLS_MAX_AGE_SECONDS
    if unchanged and recent and (MapCell.objects.exists() or not Location.objects.exists()):
        return False
    refresh_map_cells()
    return True
