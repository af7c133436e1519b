"""What every app's demo step is handed: the demo's moment, its people and the partners, filled in as steps run."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone


@dataclass
class DemoWorld:
    """Shared by the demo steps of `manage.py load_demo`; each step reads what earlier ones left and adds its own."""

    now: dt.datetime = field(default_factory=timezone.now)
    staff: Any = None  # the demo staff user
    driver: Any = None  # cards.Driver of the demo driver (set by cards' step)
    parties: dict[str, Any] = field(default_factory=dict)  # Party by party id (set by roaming's step)
    location_ids: list[int] = field(default_factory=list)  # demo stations (set by stations' step)

    @property
    def today(self) -> dt.date:
        return timezone.localdate(self.now)
