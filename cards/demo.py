"""Demo driver and cards for `manage.py load_demo` (the site's loader calls `load_cards`)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model

from cards.identifiers import normalise_contract_id
from cards.models import Card, CardStatusChange, Driver, ForeignToken

DEMO_DRIVER = ("driver", "mobilityplus-demo")


def load_cards(demo) -> None:
    """The demo driver with two cards and a replaced one, and a Shell Recharge token cached for our stations."""
    now, today, me = demo.now, demo.today, demo.parties["MBP"]
    driver_user, created = get_user_model().objects.get_or_create(
        username=DEMO_DRIVER[0], defaults={"first_name": "Dana", "last_name": "Driver"}
    )
    if created:
        driver_user.set_password(DEMO_DRIVER[1])
        driver_user.save()
    demo.driver, _ = Driver.objects.get_or_create(user=driver_user)

    for index, (visual, uid) in enumerate([("MBP-0001", "04A2B3C4D5E680"), ("MBP-0002", "04FF00112233AA")]):
        Card.objects.get_or_create(
            issuer_party=me,
            uid=uid,
            type=Card.Type.RFID,
            defaults={
                "driver": demo.driver,
                "contract_id": normalise_contract_id(f"BE-MBP-C1234567{index}"),
                "visual_number": visual,
                "whitelist": Card.Whitelist.ALLOWED_OFFLINE,
                "valid_until": today + dt.timedelta(days=3 * 365),
                "last_updated": now,
            },
        )
    # An old card the driver lost (replaced).
    old, created = Card.objects.get_or_create(
        issuer_party=me,
        uid="04DEAD00BEEF01",
        type=Card.Type.RFID,
        defaults={
            "driver": demo.driver,
            "contract_id": normalise_contract_id("BE-MBP-C00000099"),
            "visual_number": "MBP-0000",
            "whitelist": Card.Whitelist.ALLOWED_OFFLINE,
            "status": Card.Status.REPLACED,
            "replaced_by": Card.objects.get(issuer_party=me, uid="04A2B3C4D5E680"),
            "last_updated": now,
        },
    )
    if created:
        CardStatusChange.objects.create(card=old, old_status="active", new_status="lost", reason="Lost in Gent")
        CardStatusChange.objects.create(card=old, old_status="lost", new_status="replaced", reason="New card sent")
    ForeignToken.objects.get_or_create(
        party=demo.parties["SHL"],
        uid="12345678905880",
        type=Card.Type.RFID,
        defaults={
            "contract_id": "NL-SHL-C00000001-X",
            "issuer": "Shell Recharge",
            "valid": True,
            "whitelist": Card.Whitelist.ALLOWED,
            "data": {"country_code": "NL", "party_id": "SHL", "uid": "12345678905880", "type": "RFID"},
            "last_updated": now,
        },
    )
