"""Periodic work of the driver map (stations.tasks belongs to the feeds)."""

from __future__ import annotations

from celery import shared_task

from stations import map_cells


@shared_task(ignore_result=True)
def refresh_map_cells_if_changed() -> bool:
    return map_cells.refresh_map_cells_if_changed()
