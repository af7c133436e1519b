"""Bulk upserts for feed pages: COPY into a staging table and one INSERT ... ON CONFLICT on PostgreSQL.

Django's `bulk_create(update_conflicts=True)` spends most of a 1,000-location page building and
adapting parameters; COPY streams the rows instead. Other databases (SQLite in development) use
`bulk_create`, with the same result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection, models


def _columns(model: type[models.Model], skip_pk: bool = True) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not (skip_pk and f.primary_key)]


def _value(field: models.Field, obj: models.Model):
    value = getattr(obj, field.attname)
    if isinstance(field, models.JSONField) and value is not None:
        return json.dumps(value, ensure_ascii=False)
    return value


def bulk_upsert(objs: Sequence[models.Model], *, unique_fields: list[str], update_fields: list[str]) -> None:
    """Insert or update `objs` on their unique fields; sets each object's pk."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(
            objs, update_conflicts=True, unique_fields=unique_fields, update_fields=update_fields, batch_size=500
        )
        if any(obj.pk is None for obj in objs):
            _fill_pks(model, objs, unique_fields)
        return
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
            for obj in objs:
                copy.write_row([_value(f, obj) for f in fields])
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(names)} FROM {stage} "  # noqa: S608
            f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates)
            + f" RETURNING id, {', '.join(unique)}"
        )
        ids = {tuple(row[1:]): row[0] for row in cursor.fetchall()}
    for obj in objs:
        obj.pk = ids[tuple(getattr(obj, model._meta.get_field(name).attname) for name in unique_fields)]


def bulk_insert(objs: Sequence[models.Model]) -> None:
    """Plain inserts (history rows) by COPY on PostgreSQL; pks are not set."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs, batch_size=1000)
        return
    fields = _columns(model)
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(model._meta.db_table)
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for obj in objs:
                copy.write_row([_value(f, obj) for f in fields])


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
