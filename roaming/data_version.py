"""How every process learns, within a second, that parties, connections or agreements changed.

Each process caches those tables (the OCPI layer's connections, `selectors.agreements_in_force`): a
suspension or an ended agreement must still take effect everywhere at once. One row
(`PartnerDataVersion`) counts committed changes:

- any write through the ORM notes the change: `save()`/`delete()` by signal, and `update()`,
  `bulk_create()`, `bulk_update()` of these models' querysets (`PartnerDataQuerySet`), which send no
  signal. The counter is bumped once the change is committed (never before, so a process that sees
  the new number reads the new rows), and this process's caches are cleared at once;
- each process reads the counter at most every ROAMING_CHANGES_CHECK_S (0.5 s): one primary-key
  lookup, shared by every cache, so the authorize hot path pays one cheap query per interval.

Only `last_contact_at` is written without a bump: a bookkeeping timestamp that no cache reads, written
on partner calls (a bump there would empty every process's caches all the time). Rows changed by hand
in SQL are not seen this way; the caches' own lifetimes (30 s) bound that case.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent in this process when a change is noted (before it commits): caches subscribe and clear themselves.
partner_data_changed = Signal()

# Fields whose writes no cache depends on: a queryset update touching only these is not a change.
UNTRACKED_FIELDS = frozenset({"last_contact_at"})

VERSION_ROW = 1


def _bump() -> None:
    from roaming.models import PartnerDataVersion

    updated = PartnerDataVersion.objects.filter(pk=VERSION_ROW).update(value=F("value") + 1)
    if not updated:  # the row is created by migration; a flushed test database lacks it
        PartnerDataVersion.objects.get_or_create(pk=VERSION_ROW, defaults={"value": 1})


def note_partner_data_change(**_: Any) -> None:
    """Clear this process's caches now and bump the shared counter once the change is committed."""
    partner_data_changed.send(sender=None)
    # robust: the change itself is committed already; a failed bump is logged, the caches' lifetime bounds it.
    transaction.on_commit(_bump, robust=True)


class PartnerDataQuerySet(models.QuerySet):
    """Querysets of parties, connections and agreements: bulk writes note the change like save() does."""

    def update(self, **kwargs: Any) -> int:
        rows = super().update(**kwargs)
        if rows and not set(kwargs) <= UNTRACKED_FIELDS:
            note_partner_data_change()
        return rows

    update.alters_data = True

    def bulk_create(self, objs, *args: Any, **kwargs: Any):
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            note_partner_data_change()
        return created

    bulk_create.alters_data = True

    # bulk_update() needs no override: it writes through update() above.


class VersionWatch:
    """This process's view of the shared counter, read at most every ROAMING_CHANGES_CHECK_S."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: int | None = None
        self._next_read = 0.0

    def current(self) -> int | None:
        now = time.monotonic()
        if now < self._next_read:
            return self._value
        with self._lock:
            if now >= self._next_read:
                from mobilityplus.db_outage import DATABASE_ERRORS, bounded_queries
                from roaming.models import PartnerDataVersion

                try:
                    with bounded_queries():
                        self._value = (
                            PartnerDataVersion.objects.filter(pk=VERSION_ROW).values_list("value", flat=True).first()
                        )
                except DATABASE_ERRORS as error:
                    # Database stalled or down: nobody can change partner data either, so the caches stay as
                    # they are (partners keep being answered) and the counter is read again a little later.
                    logger.warning("Reading the partner-data change counter failed (%s); caches kept", error)
                    self._next_read = now + max(settings.ROAMING_CHANGES_CHECK_S, 2.0)
                    return self._value
                self._next_read = now + settings.ROAMING_CHANGES_CHECK_S
        return self._value


partner_data_version = VersionWatch()


def connect_signals() -> None:
    """save()/delete() of the three models note the change (called once the app registry is ready)."""
    from django.db.models.signals import post_delete, post_save

    from roaming.models import PartnerConnection, Party, RoamingAgreement

    for model in (Party, PartnerConnection, RoamingAgreement):
        label = model._meta.label_lower
        post_save.connect(_saved, sender=model, dispatch_uid=f"partner-data-version-save-{label}")
        post_delete.connect(note_partner_data_change, sender=model, dispatch_uid=f"partner-data-version-del-{label}")


def _saved(sender: type, instance: Any, update_fields: Any = None, **_: Any) -> None:
    if update_fields is not None and set(update_fields) <= UNTRACKED_FIELDS | {"updated_at"}:
        return
    note_partner_data_change()
