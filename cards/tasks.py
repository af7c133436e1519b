"""Celery tasks of the cards app: thin, they call services and selectors.

Token pushes to CPOs are no task of their own: they go through the durable outbox (roaming/outbox.py).
"""

from __future__ import annotations

from celery import shared_task

from cards import services


@shared_task
def expire_cards() -> int:
    return services.expire_cards()
