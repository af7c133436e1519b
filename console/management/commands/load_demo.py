"""Demo data so every page has something real to show. Safe to run twice.

Each app adds its own demo data in its `demo.py`; this loader, at the site level, runs them in order
(one line each in DEMO_STEPS), handing each the same DemoWorld.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from cards.demo import DEMO_DRIVER, load_authorizations, load_cards
from charging.demo import load_charging_demo, load_cpo_demo
from console.demo import DemoWorld
from roaming.demo import load_partners
from stations.demo import load_stations
from tariffs.demo import load_tariff_demo

DEMO_STAFF = ("staff", "mobilityplus-demo")

# Per-app demo steps, in order: later steps use what earlier ones made (partners, the driver, stations).
DEMO_STEPS = [
    load_partners,  # roaming: partners, connections, agreements, a hub and its clients
    load_cards,  # cards: the demo driver, cards, a foreign token
    load_stations,  # stations: stations, feed history, map summaries
    lambda demo: load_charging_demo(demo.driver),  # charging: sessions and CDRs of the demo driver
    load_authorizations,  # cards: today's authorizations, token pushes waiting and failed
    lambda demo: load_tariff_demo(),  # tariffs: prices on connectors, the demo CDRs checked (before ours are priced)
    lambda demo: load_cpo_demo(),  # charging: sessions at our own stations played through the backend API
]


class Command(BaseCommand):
    help = "Load demo partners, agreements, cards and stations, and a demo staff user."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        demo = DemoWorld()
        staff, created = get_user_model().objects.get_or_create(
            username=DEMO_STAFF[0], defaults={"is_staff": True, "is_superuser": True, "email": "staff@example.com"}
        )
        if created:
            staff.set_password(DEMO_STAFF[1])
            staff.save()
        demo.staff = staff
        for step in DEMO_STEPS:
            step(demo)

        self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        self.stdout.write(f"  Staff login  : {DEMO_STAFF[0]} / {DEMO_STAFF[1]}  (http://127.0.0.1:8000/admin/)")
        self.stdout.write(
            f"  Driver login : {DEMO_DRIVER[0]} / {DEMO_DRIVER[1]}  (http://127.0.0.1:8000/accounts/login/)"
        )
