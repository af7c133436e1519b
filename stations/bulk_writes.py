"""Bulk upserts for feed pages: COPY into a staging table and one INSERT ... ON CONFLICT on PostgreSQL.

Django's `bulk_create(update_conflicts=True)` spends most of a 1,000-location page building and
adapting parameters; COPY streams the rows instead. Other databases (SQLite in development) use
`bulk_create`, with the same result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection, models

Row = dict[str, Any]  # one row to write: field attname -> value; a missing field takes its default


def json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON, by orjson (a feed page holds thousands of JSON values)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, which the standard encoder writes
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()


def json_text(value: Any) -> str:
    """JSON for a jsonb column."""
    return json_bytes(value).decode()


def _columns(model: type[models.Model], skip_pk: bool = True) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not (skip_pk and f.primary_key)]


def _copy_rows(model: type[models.Model], fields: list[models.Field], rows: Sequence[Row]):
    """Each row as the COPY values of `fields`, defaults filled in and JSON serialised."""
    defaults = {f.attname: f.get_default() for f in fields}
    json_fields = {f.attname for f in fields if isinstance(f, models.JSONField)}
    for row in rows:
        values = []
        for f in fields:
            value = row.get(f.attname, defaults[f.attname])
            if f.attname in json_fields and value is not None:
                value = json_text(value)
            values.append(value)
        yield values


def bulk_upsert(
    model: type[models.Model],
    rows: Sequence[Row],
    *,
    unique_fields: list[str],
    update_fields: list[str],
    known_pks: dict[tuple, int] | None = None,
) -> list[int]:
    """Insert or update `rows` on their unique fields; returns each row's pk, in order.

    With `known_pks` (unique values -> pk of the rows already stored), rows whose values are all the
    same are not rewritten on PostgreSQL (no new row version, no index churn) and take their pk from it.
    """
    if not rows:
        return []
    attnames = [model._meta.get_field(name).attname for name in unique_fields]
    if connection.vendor != "postgresql":
        objs = [model(**row) for row in rows]
        model.objects.bulk_create(
            objs, update_conflicts=True, unique_fields=unique_fields, update_fields=update_fields, batch_size=500
        )
        if any(obj.pk is None for obj in objs):
            _fill_pks(model, objs, unique_fields)
        return [obj.pk for obj in objs]
    fields = _columns(model)
    names = [connection.ops.quote_name(f.column) for f in fields]
    unique = [model._meta.get_field(name).column for name in unique_fields]
    updates = [model._meta.get_field(name).column for name in update_fields]
    table = connection.ops.quote_name(model._meta.db_table)
    stage = connection.ops.quote_name(f"stage_{model._meta.db_table}")
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {', '.join(names)} FROM {table} WITH NO DATA"  # noqa: S608 (identifiers from model meta)
        )
        cursor.execute(f"TRUNCATE {stage}")
        with cursor.cursor.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN") as copy:
            for values in _copy_rows(model, fields, rows):
                copy.write_row(values)
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(names)} FROM {stage} "  # noqa: S608
            f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates)
            + (
                f" WHERE ({', '.join(f'{table}.{c}' for c in updates)}) IS DISTINCT FROM "
                f"({', '.join(f'EXCLUDED.{c}' for c in updates)})"
                if known_pks is not None
                else ""
            )
            + f" RETURNING id, {', '.join(unique)}"
        )
        ids = {tuple(row[1:]): row[0] for row in cursor.fetchall()}
    pks = []
    for row in rows:
        key = tuple(row[a] for a in attnames)
        pks.append(ids[key] if key in ids else known_pks[key])
    return pks


def bulk_insert(model: type[models.Model], rows: Sequence[Row]) -> None:
    """Plain inserts (history rows) by COPY on PostgreSQL."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create([model(**row) for row in rows], batch_size=1000)
        return
    fields = _columns(model)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(model._meta.db_table)
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for values in _copy_rows(model, fields, rows):
                copy.write_row(values)


def _fill_pks(model, objs, unique_fields) -> None:
    attnames = [model._meta.get_field(name).attname for name in unique_fields]
    first = attnames[0]
    keys = {getattr(obj, first) for obj in objs}
    ids = {
        tuple(row[1:]): row[0]
        for row in model.objects.filter(**{f"{first}__in": keys}).values_list("pk", *attnames).iterator()
    }
    for obj in objs:
        obj.pk = ids[tuple(getattr(obj, a) for a in attnames)]


@models.Field.register_lookup
class InArray(models.Lookup):
    """`field__in_array=[...]`: one array parameter on PostgreSQL (`= ANY(%s)`) instead of one per value.

    With thousands of ids per feed page, quoting each placeholder costs more than the query itself.
    """

    lookup_name = "in_array"
    prepare_rhs = False

    def get_prep_lookup(self):
        return list(self.rhs)

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = list(self.rhs)
        if not values:
            return "1 = 0", list(lhs_params)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, values]
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]


def bulk_update_rows(model: type[models.Model], columns: list[str], rows: list[tuple]) -> None:
    """UPDATE `columns` (db column names; the first is the primary key) from `rows`, COPY-staged on PostgreSQL."""
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    names = [connection.ops.quote_name(c) for c in columns]
    sets = ", ".join(f"{n} = s.{n}" for n in names[1:])
    if connection.vendor == "postgresql":
        stage = connection.ops.quote_name(f"stage_update_{model._meta.db_table}")
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {', '.join(names)} FROM {table} WITH NO DATA"  # noqa: S608
            )
            cursor.execute(f"TRUNCATE {stage}")
            with cursor.cursor.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"UPDATE {table} AS t SET {sets} FROM {stage} AS s WHERE t.{names[0]} = s.{names[0]}")  # noqa: S608
        return
    # SQLite (3.33+): UPDATE ... FROM (VALUES ...), whose columns are named column1, column2, ...
    sets = ", ".join(f"{n} = s.column{i + 2}" for i, n in enumerate(names[1:]))
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(chunk))
        params = [connection.ops.adapt_datetimefield_value(v) if hasattr(v, "tzinfo") else v for r in chunk for v in r]
        sql = f"UPDATE {table} SET {sets} FROM (VALUES {values}) AS s WHERE {table}.{names[0]} = s.column1"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


models.ForeignKey.register_lookup(InArray)  # related fields keep their own lookup registry
