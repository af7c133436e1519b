"""A small charge-point simulator: plays sessions at our stations through the charge-point backend API.

Used by `manage.py simulate_charge_points` (against a running platform over HTTP, or in-process through the same
API views) and by the demo loader (charging/demo.py). Two drivers: one of ours and a foreign eMSP's.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings
from django.utils import timezone

from cards.models import Card, ForeignToken
from roaming.selectors import party_ids_whose_cards_we_accept
from stations.models import EVSE

API = "/api/v1/charge-point"


@dataclass
class Play:
    """One session to play: who, where, how much, and whether it ends."""

    session_id: str
    token_uid: str
    token_type: str
    evse: EVSE
    minutes: int
    kwh: float
    ends: bool = True


Post = Callable[[str, dict], tuple[int, Any]]


def http_transport(base_url: str, token: str, timeout: float = 5.0) -> Post:
    """Calls a running platform over HTTP, as our central system does."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def post(path: str, body: dict) -> tuple[int, Any]:
        response = session.post(f"{base_url.rstrip('/')}{API}{path}", json=body, timeout=timeout)
        return response.status_code, response.json()

    return post


def in_process_transport(token: str) -> Post:
    """Calls the same API views in this process (Django's test client): no server needed, e.g. for the demo."""
    client = Client(HTTP_HOST="127.0.0.1")

    def post(path: str, body: dict) -> tuple[int, Any]:
        response = client.post(
            f"{API}{path}", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )
        return response.status_code, response.json()

    return post


def default_plays(prefix: str = "SIM") -> list[Play]:
    """Our first active card and the first foreign token we accept, at our first two EVSEs."""
    evses = list(EVSE.objects.filter(location__party__is_self=True).select_related("location").order_by("pk")[:2])
    if not evses:
        return []
    plays = []
    card = Card.objects.filter(issuer_party__is_self=True, status=Card.Status.ACTIVE, driver__isnull=False).first()
    if card is not None:
        plays.append(Play(f"{prefix}-OURS-1", card.uid, card.type, evses[0], minutes=40, kwh=14.6))
    token = (
        ForeignToken.objects.filter(party_id__in=party_ids_whose_cards_we_accept(), valid=True).order_by("pk").first()
    )
    if token is not None:
        plays.append(Play(f"{prefix}-{token.party.party_id}-1", token.uid, token.type, evses[-1], minutes=55, kwh=21.3))
    return plays


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def play(post: Post, plays: list[Play], *, samples: int = 4, pause_s: float = 0.0, log=print) -> int:
    """Play each session (start, meter values, end), ending now. Returns how many calls were refused."""
    refused = 0
    now = timezone.now().replace(microsecond=0)
    for item in plays:
        start = now - dt.timedelta(minutes=item.minutes)
        calls: list[tuple[str, dict]] = [
            (
                "/evse-status",
                {
                    "location_id": item.evse.location.ocpi_id,
                    "evse_uid": item.evse.uid,
                    "status": "CHARGING",
                    "at": _stamp(start),
                },
            ),
            (
                "/sessions",
                {
                    "session_id": item.session_id,
                    "location_id": item.evse.location.ocpi_id,
                    "evse_uid": item.evse.uid,
                    "started_at": _stamp(start),
                    "token_uid": item.token_uid,
                    "token_type": item.token_type,
                    "authorization_reference": secrets.token_hex(8),
                },
            ),
        ]
        for n in range(1, samples + 1):
            moment = start + dt.timedelta(minutes=item.minutes * n / (samples + 1))
            kwh = round(item.kwh * n / (samples + 1), 3)
            body = {"at": _stamp(moment), "kwh": f"{kwh:.3f}", "power_kw": "22.0"}
            calls.append((f"/sessions/{item.session_id}/meter-values", body))
        if item.ends:
            calls.append((f"/sessions/{item.session_id}/end", {"ended_at": _stamp(now), "kwh": f"{item.kwh:.3f}"}))
            calls.append(
                (
                    "/evse-status",
                    {
                        "location_id": item.evse.location.ocpi_id,
                        "evse_uid": item.evse.uid,
                        "status": "AVAILABLE",
                        "at": _stamp(now),
                    },
                )
            )
        for path, body in calls:
            status, answer = post(path, body)
            if status >= 400:
                refused += 1
                log(f"  {path}: HTTP {status} {answer}")
            if pause_s:
                time.sleep(pause_s)
        log(f"  {item.session_id}: {item.token_uid} at {item.evse.location.ocpi_id}/{item.evse.uid}, {item.kwh} kWh")
    return refused


def play_in_process(plays: list[Play] | None = None, **options: Any) -> int:
    """Play through the API views in this process, with a one-off backend token (the demo has none set)."""
    token = settings.CARDS_BACKEND_API_TOKEN or secrets.token_urlsafe(24)
    with override_settings(CARDS_BACKEND_API_TOKEN=token):
        return play(in_process_transport(token), default_plays() if plays is None else plays, **options)
