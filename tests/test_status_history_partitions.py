"""The EVSE status history at 11 million rows a day: day partitions on PostgreSQL, retention, bounded reads."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from stations import status_history
from stations.history_tasks import maintain_status_history
from stations.models import EvseStatusChange
from tests.factories import EVSEFactory

pytestmark = pytest.mark.django_db


def _today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


def _partitions() -> list[dt.date]:
    with connection.cursor() as cursor:
        return status_history.partition_days(cursor)


def test_the_history_is_partitioned_by_day_with_the_coming_days_made_ahead():
    assert connection.vendor == "postgresql"  # the suite runs on PostgreSQL; SQLite keeps a plain table
    assert status_history.is_partitioned()
    maintain_status_history()  # what beat runs every hour
    days = _partitions()
    today = _today()
    assert {today + dt.timedelta(days=n) for n in range(settings.STATUS_HISTORY_DAYS_AHEAD + 1)} <= set(days)
    evse = EVSEFactory()
    EvseStatusChange.objects.create(evse=evse, status="CHARGING", changed_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM stations_evsestatuschange_p{today:%Y%m%d} WHERE evse_id = %s", [evse.pk])
        assert cursor.fetchone()[0] == 1


def test_retention_drops_whole_old_partitions_and_old_rows_of_the_default_one(settings):
    settings.STATUS_HISTORY_RETENTION_DAYS = 30
    evse = EVSEFactory()
    today, now = _today(), timezone.now()
    old_day = today - dt.timedelta(days=40)
    with connection.cursor() as cursor:
        assert status_history.create_day_partition(cursor, old_day) is True
        assert status_history.create_day_partition(cursor, old_day) is False  # made once
    at_noon = dt.datetime.combine(old_day, dt.time(12), tzinfo=dt.UTC)
    EvseStatusChange.objects.create(evse=evse, status="CHARGING", changed_at=at_noon)  # in the old partition
    ancient = EvseStatusChange.objects.create(evse=evse, status="BLOCKED", changed_at=now - dt.timedelta(days=400))
    kept = EvseStatusChange.objects.create(evse=evse, status="AVAILABLE", changed_at=now - dt.timedelta(days=2))
    recent = EvseStatusChange.objects.create(evse=evse, status="OUTOFORDER", changed_at=now)

    result = maintain_status_history()

    assert str(old_day) in result["dropped"]
    assert old_day not in _partitions()
    assert set(EvseStatusChange.objects.filter(evse=evse).values_list("pk", flat=True)) == {kept.pk, recent.pk}
    assert not EvseStatusChange.objects.filter(pk=ancient.pk).exists()


def test_rows_of_a_day_that_landed_in_the_default_partition_move_into_its_partition_when_made():
    evse = EVSEFactory()
    day = _today() + dt.timedelta(days=settings.STATUS_HISTORY_DAYS_AHEAD + 3)  # beyond what beat made
    row = EvseStatusChange.objects.create(
        evse=evse, status="CHARGING", changed_at=dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)
    )
    with connection.cursor() as cursor:
        assert status_history.create_day_partition(cursor, day)
        cursor.execute(f"SELECT id FROM stations_evsestatuschange_p{day:%Y%m%d}")
        assert [r[0] for r in cursor.fetchall()] == [row.pk]
    assert EvseStatusChange.objects.get(pk=row.pk).status == "CHARGING"


def test_readers_ask_for_a_bounded_range_and_read_only_its_partitions(admin_client, settings):
    settings.STATUS_HISTORY_SHOWN_DAYS = 3
    evse = EVSEFactory()
    now = timezone.now()
    EvseStatusChange.objects.create(evse=evse, status="BLOCKED", changed_at=now - dt.timedelta(days=20))
    EvseStatusChange.objects.create(evse=evse, status="OUTOFORDER", changed_at=now - dt.timedelta(hours=1))

    recent = status_history.recent_status_changes([evse.pk])
    assert list(recent.values_list("status", flat=True)) == ["OUTOFORDER"]
    # PostgreSQL prunes the partitions before the range: the plan names none older than yesterday's.
    plan = recent.explain()
    oldest_read = min(
        dt.datetime.strptime(day, "%Y%m%d").date() for day in re.findall(r"stations_evsestatuschange_p(\d{8})", plan)
    )
    assert oldest_read >= _today() - dt.timedelta(days=settings.STATUS_HISTORY_SHOWN_DAYS + 1)
    # Staff's EVSE page shows the recent days only.
    page = admin_client.get(f"/admin/stations/evse/{evse.pk}/change/").content.decode()
    assert "Out of order" in page or "OUTOFORDER" in page
    assert "BLOCKED" not in page.split("Status changes")[-1]
