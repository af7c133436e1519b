"""Demo sessions and CDRs for `manage.py load_demo`: the demo driver charging now, and a history."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from cards.models import Card, Driver
from charging.models import CDR, Session
from roaming.models import Party
from stations.models import Location


def _token(card: Card) -> dict:
    return {
        "country_code": card.issuer_party.country_code,
        "party_id": card.issuer_party.party_id,
        "uid": card.uid,
        "type": card.type,
        "contract_id": card.contract_id,
    }


def load_charging_demo(driver: Driver) -> int:
    """An active session and some past ones (with CDRs) for the demo driver, plus one orphan CDR. Idempotent."""
    card = driver.cards.select_related("issuer_party").order_by("pk").first()
    locations = list(
        Location.objects.filter(party__is_self=False, evses__isnull=False).select_related("party").distinct()[:6]
    )
    if card is None or not locations:
        return 0
    now = timezone.now()
    count = 0
    # (days ago, hours charged, kWh, price per kWh incl. VAT, status)
    plan = [(0, 0.6, 11.4, None, Session.Status.ACTIVE)] + [
        (days, hours, kwh, price, Session.Status.COMPLETED)
        for days, hours, kwh, price in (
            (2, 1.5, 31.2, "0.59"),
            (9, 0.8, 18.5, "0.49"),
            (23, 2.0, 40.0, "0.45"),
            (37, 0.5, 9.8, "0.69"),
            (51, 1.2, 25.3, "0.52"),
        )
    ]
    for index, (days, hours, kwh, price, status) in enumerate(plan):
        location = locations[index % len(locations)]
        evse = location.evses.order_by("pk").first()
        start = now - dt.timedelta(days=days, hours=hours if days else 0, minutes=36 if not days else 0)
        end = None if status == Session.Status.ACTIVE else start + dt.timedelta(hours=hours)
        kwh_d = Decimal(str(kwh))
        cost = (
            (kwh_d * Decimal(price)).quantize(Decimal("0.01"))
            if price
            else (kwh_d * Decimal("0.55")).quantize(Decimal("0.01"))
        )
        session, created = Session.objects.get_or_create(
            party=location.party,
            ocpi_id=f"DEMO-{card.pk}-{index + 1}",
            defaults={
                "start_date_time": start,
                "end_date_time": end,
                "kwh": kwh_d,
                "cdr_token": _token(card),
                "card": card,
                "auth_method": "COMMAND" if index == 0 else "WHITELIST",
                "location_ocpi_id": location.ocpi_id,
                "evse_uid": evse.uid,
                "connector_id": "1",
                "location": location,
                "evse": evse,
                "currency": "EUR",
                "total_cost_excl_vat": (cost / Decimal("1.21")).quantize(Decimal("0.01")),
                "total_cost_incl_vat": cost,
                "status": status,
                "last_updated": end or now,
            },
        )
        count += created
        if end is not None:
            CDR.objects.get_or_create(
                party=location.party,
                ocpi_id=f"CDR-{session.ocpi_id}",
                defaults={
                    "session_ocpi_id": session.ocpi_id,
                    "session": session,
                    "start_date_time": start,
                    "end_date_time": end,
                    "cdr_token": _token(card),
                    "card": card,
                    "auth_method": session.auth_method,
                    "cdr_location": {"id": location.ocpi_id, "name": location.name, "evse_uid": evse.uid},
                    "location": location,
                    "evse": evse,
                    "currency": "EUR",
                    "total_cost_excl_vat": session.total_cost_excl_vat,
                    "total_cost_incl_vat": cost,
                    "total_energy": kwh_d,
                    "total_time": Decimal(str(hours)),
                    "last_updated": end,
                    "raw": {"id": f"CDR-{session.ocpi_id}", "note": "demo data"},
                },
            )
    # A CDR for a session we never heard of and a foreign token: what staff find under "Without matching session".
    party = Party.objects.filter(party_id="FST").first() or locations[0].party
    CDR.objects.get_or_create(
        party=party,
        ocpi_id="DEMO-ORPHAN-1",
        defaults={
            "session_ocpi_id": "LOST-SESSION-7",
            "start_date_time": now - dt.timedelta(days=3, hours=2),
            "end_date_time": now - dt.timedelta(days=3, hours=1),
            "cdr_token": {
                "country_code": "NL",
                "party_id": "XYZ",
                "uid": "FFEE01",
                "type": "RFID",
                "contract_id": "NL-XYZ-1",
            },
            "auth_method": "WHITELIST",
            "cdr_location": {"id": "UNKNOWN-LOC", "name": "Unknown site"},
            "currency": "EUR",
            "total_cost_excl_vat": Decimal("7.10"),
            "total_energy": Decimal("14.2"),
            "total_time": Decimal("1"),
            "last_updated": now - dt.timedelta(days=3),
            "raw": {"id": "DEMO-ORPHAN-1", "note": "demo data"},
            "unknown_session": True,
            "unknown_token": True,
        },
    )
    return count


def load_cpo_demo(prefix: str = "DEMO-CP") -> int:
    """Sessions at our own stations for `make demo`, played through the charge-point backend API in-process:
    one by the demo driver, one by a foreign eMSP's driver (with its CDR). Idempotent. Returns the calls refused."""
    from charging.simulator import default_plays, play_in_process

    return play_in_process(default_plays(prefix), log=lambda line: None)
