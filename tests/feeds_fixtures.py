"""Helpers for the location-feed tests: OCPI Location payloads and a paginated Locations SENDER on `ocpi_peer`."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from roaming.ocpi.envelope import format_datetime, parse_datetime
from tests.factories import PartnerConnectionFactory, PartyFactory, RoamingAgreementFactory
from tests.ocpi_peer import PeerResponse, ok

EXAMPLES = Path("/work/shared/ocpi/examples")
TOKEN_TO_THEM = "token-we-send-to-the-cpo"
TOKEN_FROM_THEM = "token-the-cpo-sends-us"


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def stamp(minutes_ago: float = 0) -> str:
    """An OCPI DateTime (millisecond precision); waits 2 ms so it is later than anything before the call."""
    time.sleep(0.002)
    return format_datetime(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago))


def location(
    ocpi_id: str,
    *,
    country_code: str = "NL",
    party_id: str = "ALL",
    statuses: tuple[str, ...] = ("AVAILABLE",),
    updated: str | None = None,
    **extra: Any,
) -> dict:
    """A valid OCPI Location with one EVSE (one Type 2 connector) per status."""
    updated = updated or "2026-01-01T10:00:00Z"
    data = {
        "country_code": country_code,
        "party_id": party_id,
        "id": ocpi_id,
        "publish": True,
        "name": f"Site {ocpi_id}",
        "address": "Stationsplein 1",
        "city": "Utrecht",
        "postal_code": "3511",
        "country": "NLD",
        "coordinates": {"latitude": "52.089200", "longitude": "5.110600"},
        "parking_type": "ON_STREET",
        "evses": [
            {
                "uid": f"{ocpi_id}-{n}",
                "evse_id": f"{country_code}*{party_id}*E{ocpi_id}{n}",
                "status": status,
                "capabilities": ["RFID_READER"],
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2",
                        "format": "SOCKET",
                        "power_type": "AC_3_PHASE",
                        "max_voltage": 230,
                        "max_amperage": 32,
                        "max_electric_power": 22000,
                        "last_updated": updated,
                    }
                ],
                "last_updated": updated,
            }
            for n, status in enumerate(statuses, start=1)
        ],
        "operator": {"name": "Allego"},
        "time_zone": "Europe/Amsterdam",
        "opening_times": {"twentyfourseven": True},
        "last_updated": updated,
    }
    data.update(extra)
    return data


def cpo_connection(peer, *, country_code: str = "NL", party_id: str = "ALL", role: str = "CPO", path: str = ""):
    """A connected CPO (or hub) whose Locations SENDER is `peer` at /ocpi/cpo/2.2.1/locations (or `path`)."""
    party = PartyFactory(country_code=country_code, party_id=party_id, role=role)
    connection = PartnerConnectionFactory(
        party=party,
        endpoints=[{"identifier": "locations", "role": "SENDER", "url": peer.url(path or "/ocpi/cpo/2.2.1/locations")}],
        tokens__to_them=TOKEN_TO_THEM,
        tokens__from_them=TOKEN_FROM_THEM + party_id,
    )
    if role != "HUB":
        RoamingAgreementFactory(partner=party)
    return connection


class LocationFeed:
    """A Locations SENDER on the peer: offset/limit/date_from/date_to, Link, X-Total-Count, X-Limit.

    `objects` may be changed between (or during) pulls; `fail` maps a page number (1-based) to a
    PeerResponse to send instead, a number of times (`fail_times`).
    """

    def __init__(self, peer, objects: list[dict], *, max_limit: int = 100, path: str = "/ocpi/cpo/2.2.1/locations"):
        self.peer = peer
        self.objects = objects
        self.max_limit = max_limit
        self.path = path
        self.ignore_limit = False
        self.fail: dict[int, PeerResponse] = {}
        self.fail_times: dict[int, int] = {}
        self.served_pages = 0
        self.on_page = None  # called with the page number before answering (to change data mid-crawl)
        peer.route("GET", path, self.handle)

    def matching(self, query: dict[str, str]) -> list[dict]:
        date_from = parse_datetime(query["date_from"]) if query.get("date_from") else None
        date_to = parse_datetime(query["date_to"]) if query.get("date_to") else None
        result = []
        for obj in self.objects:
            updated = parse_datetime(obj["last_updated"])
            if (date_from and updated < date_from) or (date_to and updated >= date_to):
                continue
            result.append(obj)
        return sorted(result, key=lambda o: o["last_updated"])

    def handle(self, request) -> PeerResponse:
        offset = int(request.query.get("offset", 0))
        limit = min(int(request.query.get("limit", self.max_limit)), self.max_limit)
        page_number = offset // max(limit, 1) + 1
        if self.on_page:
            self.on_page(page_number)
        if page_number in self.fail and self.fail_times.get(page_number, 0) > 0:
            self.fail_times[page_number] -= 1
            return self.fail[page_number]
        self.served_pages += 1
        objects = self.matching(request.query)
        size = len(objects) if self.ignore_limit else limit
        page = copy.deepcopy(objects[offset : offset + size])
        headers = {"X-Total-Count": str(len(objects)), "X-Limit": str(self.max_limit)}
        if offset + size < len(objects):
            query = dict(request.query, offset=str(offset + size), limit=str(limit))
            headers["Link"] = f'<{self.peer.url(self.path)}?{urlencode(query)}>; rel="next"'
        return ok(page, **headers)
