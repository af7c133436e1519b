"""Demo driver and cards for `manage.py load_demo` (the site's loader calls `load_cards`)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth import get_user_model

from cards.identifiers import normalise_contract_id
from cards.models import AuthorizationDecision, Card, CardStatusChange, Driver, ForeignToken
from cards.selectors import token_object_id, token_path, token_payload
from roaming.outbox_models import OutboxMessage

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


def load_authorizations(demo) -> None:
    """Today's authorizations both ways and token pushes still waiting or given up, for the staff pages."""
    now, parties = demo.now, demo.parties
    card = Card.objects.get(issuer_party=parties["MBP"], uid="04A2B3C4D5E680")
    for partner_id, (status, attempts, error) in {
        "ALL": (OutboxMessage.Status.PENDING, 3, "HTTP 503 from their tokens endpoint"),
        "ION": (OutboxMessage.Status.FAILED, 1, "OCPI 2001: unknown token type"),
    }.items():
        OutboxMessage.objects.get_or_create(
            partner=parties[partner_id],
            module="tokens",
            object_id=token_object_id(card),
            defaults={
                "method": "PUT",
                "path": token_path(card),
                "body": token_payload(card),
                "status": status,
                "attempts": attempts,
                "last_error": error,
                "next_attempt_at": now + dt.timedelta(hours=1),
                "last_attempt_at": now - dt.timedelta(minutes=5),
            },
        )
    if AuthorizationDecision.objects.filter(decided_at__gte=now - dt.timedelta(hours=12)).exists():
        return
    Direction, Path = AuthorizationDecision.Direction, AuthorizationDecision.Path
    rows = []
    for index in range(40):  # CPOs asking about our cards
        partner = ("NL*ALL", "NL*FST", "FR*TOT")[index % 3]
        allowed = index % 9 != 0
        rows.append(
            AuthorizationDecision(
                direction=Direction.EMSP, partner=partner, token_uid=card.uid, token_type="RFID",
                result="ALLOWED" if allowed else "BLOCKED", reason="Valid" if allowed else "Card blocked",
                path=Path.LOCAL, elapsed_ms=0.4 + index % 5 / 10, decided_at=now - dt.timedelta(minutes=7 * index + 3),
            )
        )  # fmt: skip
    for index in range(24):  # Shell Recharge drivers at our stations: asked in real time, two answers too late
        timeout = index in (5, 17)
        rows.append(
            AuthorizationDecision(
                direction=Direction.CPO, partner="NL*SHL", token_uid="12345678905880", token_type="RFID",
                result="ALLOWED", path=Path.FALLBACK if timeout else Path.REALTIME,
                reason="NL*SHL: no answer in time; cached ALLOWED" if timeout else "Answer of NL*SHL",
                elapsed_ms=3000.0 if timeout else 120.0 + index * 9,
                decided_at=now - dt.timedelta(minutes=11 * index + 2),
            )
        )  # fmt: skip
    AuthorizationDecision.objects.bulk_create(rows)
