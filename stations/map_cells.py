"""The map's cluster counts: stations per grid cell, kept up to date from the changed locations.

Counting 550,000 locations on every Europe-wide map request is too slow, so the counts are kept per
cell at every cluster level (see stations.models.MapCell). Two ways keep them current:

- incrementally (`update_map_cells`): every writer of what the map shows appends the location to
  `MapDirtyLocation` (`stations.services.note_map_changes`); every MAP_CELLS_REFRESH_SECONDS (10) the beat
  task subtracts what those locations counted for (`MapCellMember`) and adds what they count for now, in
  the cells of every level: work in proportion to the changes, not to the 550,000 locations;
- a rebuild from every location (`refresh_map_cells`): the first time, when the parties accepting our
  cards changed (the per-status rows bake them in), after a bulk change (more than
  MAP_CELLS_INCREMENTAL_MAX changed locations, or `stations.selectors.bump_map_cache_version()`), and
  every MAP_CELLS_MAX_AGE_SECONDS as a safety net. On PostgreSQL the new counts are built in an unlogged
  shadow table (derived data: no WAL, no dead rows, index built once) and swapped in by renaming.

Both run under one session advisory lock, in a REPEATABLE READ transaction on PostgreSQL: the dirty rows
they delete are exactly those their snapshot saw, so a change committed meanwhile is counted next time.
Station markers always read Location itself; only cluster counts lag, by about MAP_CELLS_REFRESH_SECONDS.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models.functions import Coalesce

from roaming.selectors import party_ids_accepting_our_cards
from stations.models import Location, MapCell, MapCellMember, MapDirtyLocation

# The minimum-power steps the map offers (stations.filters validates against the same list).
POWER_STEPS = [0, 3.7, 7.4, 11, 22, 43, 50, 100, 150, 250, 350]

# Cluster levels: level L splits the world into 2**L columns (360 degrees) by 2**L rows (180 degrees).
MIN_CELL_LEVEL = 3
MAX_CELL_LEVEL = 12  # zoom 11; closer views are counted live from the covering index
# Per-party rows (the operator filter) only up to here: one operator rarely crowds a closer view, and
# when it does the view is clustered live from the locations.
PARTY_MAX_LEVEL = 10
BUILT_FROM_KEY = "stations:map:cells-built-from"
REBUILD_KEY = "stations:map:cells-rebuild-requested"
_LOCK_ID = 604_206  # PostgreSQL advisory lock: one rebuild or update at a time
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


_VISIBLE = "removed_at IS NULL AND published_to_our_drivers = %s AND evse_count > 0"


def power_step(max_power_kw: float) -> float:
    """The highest power step a station reaches (as `_fill` computes it in SQL)."""
    return next((step for step in reversed(POWER_STEPS) if max_power_kw >= step), 0)


@contextmanager
def _exclusive():
    """One rebuild or update at a time (PostgreSQL: a session advisory lock, skipped when busy); yields False
    when another process holds it."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_LOCK_ID])
        (got,) = cursor.fetchone()
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_ID])


def _one_snapshot(cursor) -> None:
    """Every statement of this transaction sees the same committed state (the first statement of it)."""
    # Only as the outermost transaction (inside another one, a test's, the snapshot is that one's business).
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _fill_members(cursor) -> None:
    table, least = MapCellMember._meta.db_table, "MIN" if connection.vendor == "sqlite" else "LEAST"
    top = 2**MAX_CELL_LEVEL
    power = "CASE " + " ".join(f"WHEN max_power_kw >= {step} THEN {step}" for step in reversed(POWER_STEPS[1:]))
    cursor.execute(f"DELETE FROM {table}")  # noqa: S608
    cursor.execute(
        f"""
        INSERT INTO {table} (location_id, x, y, party_id, map_status, limited, max_power_kw, connector_standards,
                             latitude, longitude)
        SELECT id, CAST({least}(FLOOR((longitude + 180.0) / 360.0 * %s), %s - 1) AS INTEGER),
               CAST({least}(FLOOR((90.0 - latitude) / 180.0 * %s), %s - 1) AS INTEGER),
               party_id, map_status, COALESCE(limited_access_override, limited_access), {power} ELSE 0 END,
               connector_standards, latitude, longitude
        FROM {Location._meta.db_table} WHERE {_VISIBLE}
        """,  # noqa: S608
        [top, top, top, top, True],
    )


def refresh_map_cells() -> int:
    """Rebuild every cluster level from the visible locations; returns the number of cell rows (-1: busy)."""
    from stations.map_cache import drop_all_answers

    table = MapCell._meta.db_table
    accepted = sorted(party_ids_accepting_our_cards())
    cache.delete(REBUILD_KEY)  # a request made from now on is seen by the next run
    with _exclusive() as got:
        if not got:
            return -1
        with transaction.atomic(), connection.cursor() as cursor:
            _one_snapshot(cursor)
            # The changes this snapshot holds are counted by the rebuild; later ones stay listed.
            cursor.execute(f"DELETE FROM {MapDirtyLocation._meta.db_table}")  # noqa: S608
            _fill_members(cursor)
            if connection.vendor != "postgresql":
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608
                _fill(cursor, table, accepted)
            else:
                shadow, index = f"{table}_next", MapCell._meta.indexes[0]
                cursor.execute(f"DROP TABLE IF EXISTS {shadow}")
                # Room on each page, so the incremental updates rewrite a cell in place (HOT, no index entry):
                # PostgreSQL's CPU per update of 4,000 changed locations fell from about 3.0 to 2.4 s.
                cursor.execute(
                    f"CREATE UNLOGGED TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY) "
                    "WITH (fillfactor = 70)"
                )
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
            transaction.on_commit(drop_all_answers)
    cache.set(BUILT_FROM_KEY, {"accepted": accepted, "at": time.time()}, timeout=None)
    return rows


def request_rebuild() -> None:
    """The next run rebuilds every cell (rows changed behind the services' back)."""
    cache.set(REBUILD_KEY, True, timeout=None)


def summary_parties() -> list[int] | None:
    """The accepting parties the party-less rows were built for (None before the first rebuild)."""
    built = cache.get(BUILT_FROM_KEY)
    return built["accepted"] if built else None


def _contributions(member: tuple, accepted: set[int], sign: int, into: dict) -> None:
    """Add (sign=1) or subtract (-1) one location's counts, at every level, to `into` (cell key -> sums)."""
    x, y, party_id, status, limited, power, standards, latitude, longitude = member
    for level in range(MAX_CELL_LEVEL, MIN_CELL_LEVEL - 1, -1):
        shift = MAX_CELL_LEVEL - level
        cx, cy = x >> shift, y >> shift
        keys = []
        if level <= PARTY_MAX_LEVEL:
            keys.append((MapCell.Kind.PARTY, level, cx, cy, party_id, status, limited, power, standards))
        if party_id in accepted:
            keys.append((MapCell.Kind.FILTERS, level, cx, cy, None, status, limited, power, standards))
            keys.append((MapCell.Kind.SUMMARY, level, cx, cy, None, status, limited, 0.0, ""))
        for key in keys:
            sums = into[key]
            sums[0] += sign
            sums[1] += sign * latitude
            sums[2] += sign * longitude


def _member_now(row: tuple) -> tuple:
    pk, party_id, status, limited, power, standards, latitude, longitude = row
    return (
        cell_x(longitude, MAX_CELL_LEVEL),
        cell_y(latitude, MAX_CELL_LEVEL),
        party_id,
        status,
        bool(limited),
        float(power_step(power)),
        standards,
        latitude,
        longitude,
    )


_MEMBER_FIELDS = [
    "x", "y", "party_id", "map_status", "limited", "max_power_kw", "connector_standards", "latitude", "longitude",
]  # fmt: skip
_KEY_COLUMNS = ["kind", "level", "x", "y", "party_id", "map_status", "limited", "max_power_kw", "connector_standards"]


def _apply_deltas(cursor, deltas: dict) -> None:
    """Add the sums to the cells (rows created when missing, dropped when they count no station any more)."""
    table = MapCell._meta.db_table
    rows = [(*key, sums[0], sums[1], sums[2]) for key, sums in deltas.items() if sums[0] or sums[1] or sums[2]]
    if not rows:
        return
    columns = [*_KEY_COLUMNS, "stations", "sum_latitude", "sum_longitude"]
    if connection.vendor != "postgresql":
        for row in rows:
            key, (stations, lat, lon) = row[:9], row[9:]
            where = " AND ".join(
                f"{c} IS %s" if c == "party_id" and key[4] is None else f"{c} = %s" for c in _KEY_COLUMNS
            )
            cursor.execute(
                f"UPDATE {table} SET stations = stations + %s, sum_latitude = sum_latitude + %s, "  # noqa: S608
                f"sum_longitude = sum_longitude + %s WHERE {where}",
                [stations, lat, lon, *key],
            )
            if cursor.rowcount == 0:
                cursor.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",  # noqa: S608
                    list(row),
                )
        cursor.execute(f"DELETE FROM {table} WHERE stations <= 0")  # noqa: S608
        return
    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS map_cell_delta (kind smallint, level smallint, x integer, y integer, "
        "party_id bigint, map_status varchar(10), limited boolean, max_power_kw double precision, "
        "connector_standards varchar(255), stations integer, sum_latitude double precision, "
        "sum_longitude double precision)"
    )
    cursor.execute("TRUNCATE map_cell_delta")
    with cursor.cursor.copy(f"COPY map_cell_delta ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute("ANALYZE map_cell_delta")
    # A few thousand changed cells among 1.6 million: look each up by the index, never scan or hash the table.
    cursor.execute("SET LOCAL enable_hashjoin = off")
    cursor.execute("SET LOCAL enable_mergejoin = off")
    same = " AND ".join(f"c.{name} = d.{name}" for name in _KEY_COLUMNS if name != "party_id")
    # Two statements per step, with and without a party, so each matches the cells' index (kind, level, party, x, y).
    emptied: list[int] = []
    for party in ("c.party_id = d.party_id", "c.party_id IS NULL AND d.party_id IS NULL"):
        # The cells left counting no station are named by the UPDATE itself: deleting them by id afterwards
        # costs nothing, where joining the deltas again read the cells' index a second time for every delta.
        cursor.execute(
            f"WITH changed AS (UPDATE {table} c SET stations = c.stations + d.stations, "  # noqa: S608
            "sum_latitude = c.sum_latitude + d.sum_latitude, sum_longitude = c.sum_longitude + d.sum_longitude "
            f"FROM map_cell_delta d WHERE {same} AND {party} RETURNING c.id, c.stations) "
            "SELECT id FROM changed WHERE stations <= 0"
        )
        emptied.extend(row[0] for row in cursor.fetchall())
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join('d.' + c for c in columns)} "  # noqa: S608
        f"FROM map_cell_delta d WHERE d.party_id IS NOT NULL AND d.stations > 0 AND NOT EXISTS "
        f"(SELECT 1 FROM {table} c WHERE {same} AND c.party_id = d.party_id) "
        f"UNION ALL SELECT {', '.join('d.' + c for c in columns)} FROM map_cell_delta d WHERE d.party_id IS NULL "
        f"AND d.stations > 0 AND NOT EXISTS (SELECT 1 FROM {table} c WHERE {same} AND c.party_id IS NULL)"
    )
    if emptied:
        cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [emptied])  # noqa: S608


def update_map_cells() -> int:
    """Take in the locations changed since the last run (incremental); returns how many (-1: busy)."""
    accepted = set(summary_parties() or [])
    dirty_table = MapDirtyLocation._meta.db_table
    with _exclusive() as got:
        if not got:
            return -1
        with transaction.atomic(), connection.cursor() as cursor:
            _one_snapshot(cursor)
            if connection.vendor == "postgresql":
                cursor.execute(f"DELETE FROM {dirty_table} RETURNING location_id")  # noqa: S608
                ids = sorted({row[0] for row in cursor.fetchall()})
            else:
                ids = sorted(set(MapDirtyLocation.objects.values_list("location_id", flat=True)))
                MapDirtyLocation.objects.all().delete()
            if not ids:
                return 0
            deltas: dict = defaultdict(lambda: [0, 0.0, 0.0])
            for start in range(0, len(ids), 5000):
                chunk = ids[start : start + 5000]
                old = MapCellMember.objects.filter(location_id__in=chunk).values_list(*_MEMBER_FIELDS)
                for member in old:
                    _contributions(member, accepted, -1, deltas)
                now = {
                    row[0]: _member_now(row)
                    for row in Location.objects.filter(
                        pk__in=chunk, removed_at__isnull=True, published_to_our_drivers=True, evse_count__gt=0
                    )
                    # The lock as the map reads it: the staff override wins.
                    .annotate(limited=Coalesce("limited_access_override", "limited_access"))
                    .values_list(
                        "pk", "party_id", "map_status", "limited", "max_power_kw", "connector_standards",
                        "latitude", "longitude",
                    )
                }  # fmt: skip
                for member in now.values():
                    _contributions(member, accepted, 1, deltas)
                MapCellMember.objects.filter(location_id__in=chunk).delete()
                MapCellMember.objects.bulk_create(
                    [
                        MapCellMember(location_id=pk, **dict(zip(_MEMBER_FIELDS, member, strict=True)))
                        for pk, member in now.items()
                    ],
                    batch_size=2000,
                )
            _apply_deltas(cursor, deltas)
            # Clustered map answers are kept with the cells' version (stations/map_cache.py).
            from stations.map_cache import note_cells_changed

            note_cells_changed()
    return len(ids)


def refresh_map_cells_if_changed() -> bool:
    """The beat task's work: rebuild when due (see the module's docstring), else take in the changed locations.

    Returns whether the cells changed.
    """
    built = cache.get(BUILT_FROM_KEY) or {}
    accepted = sorted(party_ids_accepting_our_cards())
    due = (
        not built
        or built.get("accepted") != accepted
        or time.time() - built.get("at", 0) >= settings.MAP_CELLS_MAX_AGE_SECONDS
        or cache.get(REBUILD_KEY)
        # An unlogged table is emptied by a crash of PostgreSQL.
        or (not MapCell.objects.exists() and Location.objects.exists())
        or MapDirtyLocation.objects.count() > settings.MAP_CELLS_INCREMENTAL_MAX
    )
    if due:
        return refresh_map_cells() >= 0
    return update_map_cells() > 0
