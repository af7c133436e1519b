"""A realistic OCPI 2.2.1 Locations feed, generated on the fly (nothing is held in memory).

    from bench.feedgen import FeedServer, generate_location
    server = FeedServer(count=550_000).start()      # a Locations SENDER on 127.0.0.1
    server.url                                      # -> http://127.0.0.1:PORT/ocpi/cpo/2.2.1/locations
    server.change_percent(1)                        # 1 % of the locations change (status, last_updated)

Location `i` is the same every time it is generated: European coordinates, 1-3 EVSEs (about 2 on
average), 1-2 connectors each (about 1.45), a mix of statuses, parking restrictions, opening hours
and unpublished sites. Pages are ordered by (last_updated, index) and follow OCPI pagination
(offset/limit, Link, X-Total-Count, X-Limit).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

BASE_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STATUSES = ["AVAILABLE"] * 10 + ["CHARGING"] * 5 + ["OUTOFORDER", "INOPERATIVE", "UNKNOWN", "RESERVED", "BLOCKED"]
CITIES = [
    ("Brussel", "BEL", 50.85, 4.35),
    ("Amsterdam", "NLD", 52.37, 4.90),
    ("Berlin", "DEU", 52.52, 13.40),
    ("Paris", "FRA", 48.86, 2.35),
    ("Madrid", "ESP", 40.42, -3.70),
    ("Milano", "ITA", 45.46, 9.19),
    ("Wien", "AUT", 48.21, 16.37),
    ("Stockholm", "SWE", 59.33, 18.07),
    ("Oslo", "NOR", 59.91, 10.75),
    ("Warszawa", "POL", 52.23, 21.01),
    ("Lisboa", "PRT", 38.72, -9.14),
    ("København", "DNK", 55.68, 12.57),
]
STANDARDS = [
    ("IEC_62196_T2", "SOCKET", "AC_3_PHASE", 230, 32, 22000),
    ("IEC_62196_T2", "SOCKET", "AC_3_PHASE", 230, 16, 11000),
    ("IEC_62196_T2_COMBO", "CABLE", "DC", 920, 500, 350000),
    ("IEC_62196_T2_COMBO", "CABLE", "DC", 500, 125, 50000),
    ("CHADEMO", "CABLE", "DC", 500, 125, 50000),
]


def _mix(i: int, salt: int = 0) -> int:
    """A cheap deterministic hash of i (no random module: millions of calls)."""
    x = (i * 2654435761 + salt * 40503) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 1274126177) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _status(hk: int, version: int) -> str:
    status = STATUSES[(hk >> 9) % len(STATUSES)]
    if version == 1:  # a changed location: every EVSE flips between available and busy
        return "CHARGING" if status == "AVAILABLE" else "AVAILABLE"
    if version >= 2:  # another change, different from version 1 for every EVSE
        return "OUTOFORDER" if status == "AVAILABLE" else ("BLOCKED" if status == "RESERVED" else "RESERVED")
    return status


def _stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def generate_location(
    i: int, *, version: int = 0, updated: dt.datetime | None = None, country_code: str = "NL", party_id: str = "BCH"
) -> dict:
    """Location number `i`; a higher `version` changes its EVSE statuses (and `updated` its last_updated)."""
    h = _mix(i)
    city, country, lat, lon = CITIES[h % len(CITIES)]
    updated_text = _stamp(updated or BASE_TIME + dt.timedelta(milliseconds=i))
    evses = []
    evse_count = (1, 2, 2, 3)[h >> 4 & 3]
    for k in range(evse_count):
        hk = _mix(i, k + 1)
        connectors = []
        for c in range(1 + (hk % 20 < 9)):
            standard, fmt, power_type, volts, amps, watts = STANDARDS[(hk >> 5 + c) % len(STANDARDS)]
            connectors.append(
                {
                    "id": str(c + 1),
                    "standard": standard,
                    "format": fmt,
                    "power_type": power_type,
                    "max_voltage": volts,
                    "max_amperage": amps,
                    "max_electric_power": watts,
                    "tariff_ids": [f"T{watts // 1000}"],
                    "last_updated": updated_text,
                }
            )
        evse = {
            "uid": f"{i}-{k + 1}",
            "evse_id": f"{country_code}*{party_id}*E{i:07d}{k + 1}",
            "status": _status(hk, version),
            "capabilities": ["RFID_READER", "REMOTE_START_STOP_CAPABLE"],
            "connectors": connectors,
            "physical_reference": str(k + 1),
            "last_updated": updated_text,
        }
        if hk % 10 == 0:
            evse["parking_restrictions"] = ["CUSTOMERS"]
        elif hk % 33 == 0:
            evse["parking_restrictions"] = ["EV_ONLY"]
        evses.append(evse)
    location = {
        "country_code": country_code,
        "party_id": party_id,
        "id": f"LOC{i:07d}",
        "publish": h % 50 != 0,
        "name": f"{city} charging {i}",
        "address": f"Straat {h % 300 + 1}",
        "city": city,
        "postal_code": f"{1000 + h % 8999}",
        "country": country,
        "coordinates": {
            "latitude": f"{lat + ((h >> 8) % 20000 - 10000) / 5000:.6f}",
            "longitude": f"{lon + ((h >> 3) % 20000 - 10000) / 4000:.6f}",
        },
        "parking_type": ("ON_STREET", "PARKING_LOT", "PARKING_GARAGE", "ALONG_MOTORWAY")[h >> 12 & 3],
        "evses": evses,
        "operator": {"name": f"Operator {h % 40}"},
        "time_zone": "Europe/Brussels",
        "opening_times": {"twentyfourseven": True}
        if h % 12
        else {
            "twentyfourseven": False,
            "regular_hours": [{"weekday": d, "period_begin": "07:00", "period_end": "22:00"} for d in range(1, 8)],
        },
        "last_updated": updated_text,
    }
    if h % 7 == 0:
        location["facilities"] = ["SUPERMARKET", "WIFI"]
    return location


class FeedServer:
    """A Locations SENDER over `count` generated locations; `change_percent` changes a share of them."""

    def __init__(self, count: int, *, max_limit: int = 1000, country_code: str = "NL", party_id: str = "BCH"):
        self.count = count
        self.max_limit = max_limit
        self.party = (country_code, party_id)
        self.changed_every = 0  # every n-th location changed (0: none)
        self.changed_at: dt.datetime | None = None
        self.changed_version = 1
        self.pages_served = 0
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if not self.headers.get("Authorization", "").startswith("Token "):
                    body, headers, status = {"status_code": 2000, "status_message": "Unauthorized"}, {}, 401
                else:
                    body, headers, status = feed.page(query), feed.last_headers, 200
                payload = json.dumps(body, separators=(",", ":")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.last_headers: dict[str, str] = {}

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/ocpi/cpo/2.2.1/locations"

    def start(self) -> FeedServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def change_percent(self, percent: float, at: dt.datetime | None = None, version: int = 1) -> int:
        """Change every (100/percent)-th location: new statuses, last_updated = `at`. Returns how many."""
        self.changed_version = version
        self.changed_every = round(100 / percent)
        self.changed_at = at or dt.datetime.now(dt.UTC)
        return len(range(3, self.count, self.changed_every))

    def _is_changed(self, i: int) -> bool:
        return bool(self.changed_every) and i % self.changed_every == 3

    def _window(self, date_from: dt.datetime | None, date_to: dt.datetime | None) -> tuple[list | range, list]:
        """Indices of unchanged locations (ordered by base time) and of changed ones, inside the window."""

        def inside(stamp: dt.datetime) -> bool:
            return (date_from is None or stamp >= date_from) and (date_to is None or stamp < date_to)

        # Base stamps run from BASE_TIME in 1 ms steps: the window is a range of indices.
        lo, hi = 0, self.count
        if date_from is not None:
            lo = max(0, min(self.count, _ceil_ms(date_from - BASE_TIME)))
        if date_to is not None:
            hi = max(0, min(self.count, _ceil_ms(date_to - BASE_TIME)))
        base = _BaseIndices(lo, max(lo, hi), self.changed_every)
        changed = range(3, self.count, self.changed_every) if self.changed_every else range(0)
        changed = changed if self.changed_at and inside(self.changed_at) else range(0)
        return base, changed

    def page(self, query: dict[str, str]) -> dict:
        from roaming.ocpi.envelope import parse_datetime

        offset = int(query.get("offset", 0))
        limit = min(int(query.get("limit", self.max_limit)), self.max_limit)
        date_from = parse_datetime(query["date_from"]) if query.get("date_from") else None
        date_to = parse_datetime(query["date_to"]) if query.get("date_to") else None
        base, changed = self._window(date_from, date_to)
        total = len(base) + len(changed)
        data = []
        for position in range(offset, min(offset + limit, total)):
            if position < len(base):
                data.append(generate_location(base[position], country_code=self.party[0], party_id=self.party[1]))
            else:
                i = changed[position - len(base)]
                data.append(
                    generate_location(
                        i,
                        version=self.changed_version,
                        updated=self.changed_at,
                        country_code=self.party[0],
                        party_id=self.party[1],
                    )
                )
        self.last_headers = {"X-Total-Count": str(total), "X-Limit": str(self.max_limit)}
        if offset + limit < total:
            next_query = dict(query, offset=str(offset + limit), limit=str(limit))
            self.last_headers["Link"] = f'<{self.url}?{urlencode(next_query)}>; rel="next"'
        self.pages_served += 1
        return {"status_code": 1000, "status_message": "Success", "data": data, "timestamp": _stamp(BASE_TIME)}


def _ceil_ms(delta: dt.timedelta) -> int:
    ms = delta / dt.timedelta(milliseconds=1)
    return int(ms) if ms == int(ms) else int(ms) + 1


class _BaseIndices:
    """Indices lo..hi-1 without the changed ones (i % every == 3), addressable by position in O(log n)."""

    def __init__(self, lo: int, hi: int, every: int):
        self.lo, self.hi, self.every = lo, hi, every

    def _kept_below(self, x: int) -> int:
        """How many kept indices lie in lo..x-1."""
        if not self.every:
            return x - self.lo
        excluded = _changed_below(x, self.every) - _changed_below(self.lo, self.every)
        return x - self.lo - excluded

    def __len__(self) -> int:
        return self._kept_below(self.hi)

    def __getitem__(self, position: int) -> int:
        low, high = self.lo, self.hi  # smallest x with _kept_below(x + 1) > position
        while low < high:
            middle = (low + high) // 2
            if self._kept_below(middle + 1) > position:
                high = middle
            else:
                low = middle + 1
        return low


def _changed_below(x: int, every: int) -> int:
    return 0 if x <= 3 else (x - 3 + every - 1) // every
