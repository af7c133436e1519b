"""Bench the driver map API at Europe scale: 550,000 stations in PostgreSQL.

    DATABASE_URL=postgres://... python bench/map.py [--stations 550000] [--requests 60]

Sets up its own data (bulk COPY; kept between runs when the count matches), then issues viewport
queries from Europe-wide down to street level and nearby queries through the real API views,
printing p50/p95/p99 server time and response sizes per zoom band. Last line: name=value figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
# A bench runs the platform in-process in development mode (built-in keys), as its figures were measured.
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from roaming.models import PartnerConnection, Party, RoamingAgreement  # noqa: E402
from roaming.selectors import own_party  # noqa: E402
from stations.models import Location, SyncRun  # noqa: E402

BENCH_PREFIX = "BENCH"

# (city, lat, lon, weight): weight ~ share of stations around it; the Netherlands and big metros are dense.
CITIES = [
    ("Amsterdam", 52.37, 4.90, 30), ("Rotterdam", 51.92, 4.48, 18), ("Den Haag", 52.08, 4.30, 15),
    ("Utrecht", 52.09, 5.12, 14), ("Eindhoven", 51.44, 5.47, 9), ("Groningen", 53.22, 6.57, 6),
    ("Brussel", 50.85, 4.35, 14), ("Antwerpen", 51.22, 4.40, 10), ("Gent", 51.05, 3.72, 7),
    ("Liège", 50.63, 5.57, 4), ("Paris", 48.86, 2.35, 40), ("Lyon", 45.76, 4.84, 10),
    ("Marseille", 43.30, 5.37, 8), ("Toulouse", 43.60, 1.44, 6), ("Lille", 50.63, 3.06, 6),
    ("Bordeaux", 44.84, -0.58, 6), ("Nantes", 47.22, -1.55, 5), ("Strasbourg", 48.57, 7.75, 4),
    ("Berlin", 52.52, 13.40, 25), ("Hamburg", 53.55, 9.99, 16), ("München", 48.14, 11.58, 18),
    ("Köln", 50.94, 6.96, 12), ("Frankfurt", 50.11, 8.68, 12), ("Stuttgart", 48.78, 9.18, 11),
    ("Düsseldorf", 51.23, 6.78, 9), ("Leipzig", 51.34, 12.37, 6), ("Hannover", 52.37, 9.73, 6),
    ("Nürnberg", 49.45, 11.08, 6), ("Dresden", 51.05, 13.74, 5), ("Bremen", 53.08, 8.80, 5),
    ("London", 51.51, -0.13, 35), ("Manchester", 53.48, -2.24, 9), ("Birmingham", 52.49, -1.89, 9),
    ("Glasgow", 55.86, -4.25, 5), ("Edinburgh", 55.95, -3.19, 4), ("Bristol", 51.45, -2.59, 4),
    ("Dublin", 53.35, -6.26, 5), ("Oslo", 59.91, 10.75, 14), ("Bergen", 60.39, 5.32, 5),
    ("Stockholm", 59.33, 18.07, 12), ("Göteborg", 57.71, 11.97, 6), ("Malmö", 55.60, 13.00, 4),
    ("København", 55.68, 12.57, 9), ("Aarhus", 56.16, 10.20, 3), ("Helsinki", 60.17, 24.94, 6),
    ("Wien", 48.21, 16.37, 10), ("Graz", 47.07, 15.44, 3), ("Zürich", 47.37, 8.54, 8),
    ("Genève", 46.20, 6.14, 4), ("Bern", 46.95, 7.45, 3), ("Milano", 45.46, 9.19, 12),
    ("Roma", 41.90, 12.50, 10), ("Torino", 45.07, 7.69, 5), ("Napoli", 40.85, 14.27, 4),
    ("Bologna", 44.49, 11.34, 4), ("Madrid", 40.42, -3.70, 14), ("Barcelona", 41.39, 2.17, 12),
    ("Valencia", 39.47, -0.38, 5), ("Sevilla", 37.39, -5.98, 4), ("Lisboa", 38.72, -9.14, 7),
    ("Porto", 41.15, -8.61, 4), ("Warszawa", 52.23, 21.01, 6), ("Kraków", 50.06, 19.94, 3),
    ("Praha", 50.08, 14.44, 5), ("Budapest", 47.50, 19.04, 4), ("Bratislava", 48.15, 17.11, 2),
    ("Ljubljana", 46.06, 14.51, 2), ("Zagreb", 45.81, 15.98, 2), ("Athína", 37.98, 23.73, 3),
    ("București", 44.43, 26.10, 3), ("Luxembourg", 49.61, 6.13, 3), ("Tallinn", 59.44, 24.75, 2),
    ("Riga", 56.95, 24.11, 2), ("Vilnius", 54.69, 25.28, 2), ("Reykjavík", 64.15, -21.94, 2),
]  # fmt: skip
# Countryside: (south, west, north, east, weight) boxes over land, for highway and village chargers.
RURAL = [
    (50.0, 2.5, 53.5, 7.0, 12), (43.0, -1.0, 50.5, 7.5, 18), (47.5, 6.0, 54.5, 14.5, 22), (50.5, -4.5, 55.5, 1.5, 10),
    (56.0, 5.0, 63.0, 18.0, 6), (40.0, -8.5, 43.5, 2.5, 6), (41.0, 8.0, 46.5, 16.0, 7), (46.5, 9.5, 48.8, 16.5, 5),
    (49.5, 14.5, 54.5, 24.0, 5), (44.0, 19.0, 48.5, 28.0, 2), (58.0, 22.0, 63.0, 30.0, 1), (54.5, 8.0, 57.5, 12.5, 3),
]  # fmt: skip
PRODUCTS = [
    # (share, max kW, connector standards, evses range)
    (0.50, 11.0, ["IEC_62196_T2"], (1, 2)),
    (0.20, 22.0, ["IEC_62196_T2"], (1, 4)),
    (0.12, 50.0, ["CHADEMO", "IEC_62196_T2_COMBO"], (1, 2)),
    (0.06, 150.0, ["IEC_62196_T2_COMBO"], (2, 6)),
    (0.05, 350.0, ["IEC_62196_T2_COMBO"], (4, 12)),
    (0.04, 7.4, ["DOMESTIC_F", "IEC_62196_T2"], (1, 1)),
    (0.03, 43.0, ["CHADEMO", "IEC_62196_T2", "IEC_62196_T2_COMBO"], (1, 2)),
]
STATUSES = [("available", 0.55), ("in_use", 0.25), ("faulty", 0.05), ("unknown", 0.15)]


def weighted(rng: random.Random, items, weight_index: int):
    return rng.choices(items, weights=[item[weight_index] for item in items])[0]


def bench_parties(count: int = 40) -> tuple[list[Party], set[int], dict[int, int]]:
    """40 operators: 30 with an agreement covering our cards, the rest not (their stations must not show).

    Each has a feed connection with a successful pull a few minutes ago (what confirms its statuses).
    """
    today = timezone.localdate()
    parties, accepted, feeds = [], set(), {}
    for index in range(count):
        party, _ = Party.objects.get_or_create(
            country_code="XX",
            party_id=f"{chr(65 + index // 26)}{chr(65 + index % 26)}B",
            defaults={"role": Party.Role.CPO, "name": f"Bench operator {index}"},
        )
        parties.append(party)
        feed, _ = PartnerConnection.objects.get_or_create(
            party=party, defaults={"status": PartnerConnection.Status.CONNECTED, "version": "2.2.1"}
        )
        SyncRun.objects.filter(connection=feed).delete()
        pulled = timezone.now() - dt.timedelta(minutes=5)
        SyncRun.objects.create(connection=feed, full=True, status=SyncRun.Status.SUCCEEDED, started_at=pulled)
        feeds[party.pk] = feed.pk
        if index < 30:
            RoamingAgreement.objects.get_or_create(
                partner=party,
                direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
                defaults={"status": RoamingAgreement.Status.ACTIVE, "valid_from": today - dt.timedelta(days=30)},
            )
            accepted.add(party.pk)
    parties.append(own_party())
    return parties, accepted, feeds


def generate(total: int, seed: int = 7) -> None:
    """Replace all locations by `total` generated ones, bulk-loaded with COPY."""
    rng = random.Random(seed)
    parties, _, feeds = bench_parties()
    party_weights = [rng.uniform(0.3, 3.0) for _ in parties]
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE stations_connector, stations_evse, stations_evsestatuschange, stations_location CASCADE"
        )
        columns = (
            "party_id, ocpi_id, publish, publish_allowed_to, name, address, city, postal_code, state, country, "
            "latitude, longitude, parking_type, operator, facilities, time_zone, opening_times, last_updated, raw, "
            "content_hash, removed_at, limited_access, limited_access_reasons, map_status, status_updated_at, "
            "max_power_kw, connector_standards, evse_count, available_evse_count, source_id"
        )
        with cursor.cursor.copy(f"COPY stations_location ({columns}) FROM STDIN") as copy:
            for index in range(total):
                if rng.random() < 0.7:
                    city, clat, clon, _w = weighted(rng, CITIES, 3)
                    spread = 0.04 + rng.random() * 0.12
                    lat = clat + rng.gauss(0, spread)
                    lon = clon + rng.gauss(0, spread / math.cos(math.radians(clat)))
                    postal = f"{rng.randint(1000, 9999)}"
                else:
                    south, west, north, east, _w = weighted(rng, RURAL, 4)
                    lat, lon = rng.uniform(south, north), rng.uniform(west, east)
                    city, postal = f"Village {rng.randint(1, 5000)}", f"{rng.randint(10000, 99999)}"
                party = rng.choices(parties, weights=party_weights)[0]
                share = rng.random()
                for product in PRODUCTS:
                    share -= product[0]
                    if share <= 0:
                        break
                _s, power, standards, (low, high) = product
                evses = rng.randint(low, high)
                status = rng.choices([s for s, _ in STATUSES], weights=[w for _, w in STATUSES])[0]
                available = rng.randint(1, evses) if status == "available" else 0
                limited = rng.random() < 0.08
                removed = now if rng.random() < 0.01 else None
                if rng.random() < 0.01:
                    evses = available = 0  # all EVSEs expired
                ocpi_id = f"{BENCH_PREFIX}{index}"
                name = f"{city} {rng.choice(['Centrum', 'Station', 'Parking', 'Mall', 'Hotel', 'Park'])} {index}"
                raw = {
                    "id": ocpi_id,
                    "name": name,
                    "coordinates": {"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"},
                    "evses": [
                        {
                            "uid": f"{ocpi_id}-{n}",
                            "status": "AVAILABLE",
                            "connectors": [{"id": "1", "standard": s, "format": "CABLE"} for s in standards],
                        }
                        for n in range(min(evses, 4))
                    ],
                }
                copy.write_row(
                    (
                        party.pk, ocpi_id, True, "[]", name, f"Street {rng.randint(1, 300)}", city[:45], postal, "",
                        "EUR", round(lat, 6), round(lon, 6), "ON_STREET", json.dumps({"name": party.name}), "[]",
                        "Europe/Brussels", json.dumps({"twentyfourseven": True}), now, json.dumps(raw), "", removed,
                        limited, json.dumps(["parking_customers"] if limited else []), status,
                        now - dt.timedelta(minutes=rng.randint(1, 3 * 24 * 60)), power,
                        "," + ",".join(standards) + ",", evses, available, feeds.get(party.pk),
                    )
                )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE stations_location")


def viewport(lat: float, lon: float, zoom: int, width: int = 1280, height: int = 800) -> str:
    """The bbox a browser window of width x height pixels shows around (lat, lon) at this zoom."""
    world = 256 * 2**zoom
    half_lon = width / world * 180

    def y_of(latitude: float) -> float:
        return math.log(math.tan(math.pi / 4 + math.radians(latitude) / 2))

    def lat_of(y: float) -> float:
        return math.degrees(2 * math.atan(math.exp(y)) - math.pi / 2)

    half_y = height / world * math.pi
    south, north = max(-85.0, lat_of(y_of(lat) - half_y)), min(85.0, lat_of(y_of(lat) + half_y))
    west, east = max(-180.0, lon - half_lon), min(180.0, lon + half_lon)
    return f"{west:.5f},{south:.5f},{east:.5f},{north:.5f}"


def random_filters(rng: random.Random, operators: list[str]) -> dict:
    """No filter most of the time (the default view); otherwise one or two of them."""
    if rng.random() < 0.6:
        return {}
    choices = {
        "standard": rng.choice(["IEC_62196_T2_COMBO", "CHADEMO", "IEC_62196_T2"]),
        "min_power_kw": rng.choice(["22", "50", "150"]),
        "available": "true",
        "hide_limited": "true",
        "operator": rng.choice(operators),
    }
    picked = rng.sample(sorted(choices), rng.randint(1, 2))
    return {name: choices[name] for name in picked}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


BANDS = [
    ("europe", (3, 4, 5)),
    ("country", (6, 7, 8)),
    ("region", (9, 10, 11)),
    ("city", (12, 13, 14)),
    ("street", (15, 16, 17)),
]


def row(band: str, zooms: str, times: list[float], sizes: list[int]) -> str:
    p50, p95, p99 = (percentile(times, q) for q in (50, 95, 99))
    kb_avg, kb_max = statistics.mean(sizes) / 1024, max(sizes) / 1024
    timing = f"{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}{max(times):>9.1f}"
    return f"{band:<10}{zooms:<10}{len(times):>4}{timing}{kb_avg:>8.1f}{kb_max:>8.1f}"


def run(requests_per_band: int, seed: int = 11) -> dict:
    from django.test import Client

    rng = random.Random(seed)
    client = Client()
    operators = [f"XX*{chr(65 + i // 26)}{chr(65 + i % 26)}B" for i in range(30)]
    figures: dict = {}
    print(f"{'band':<10}{'zooms':<10}{'n':>4}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'avg KB':>8}{'max KB':>8}{'features':>10}{'clustered':>10}")  # fmt: skip
    for band, zooms in BANDS:
        times, sizes, features, clustered = [], [], [], 0
        for _ in range(requests_per_band):
            _name, clat, clon, _w = weighted(rng, CITIES, 3)
            zoom = rng.choice(zooms)
            jitter = 20 / 2**zoom  # centre near the city, anywhere from its core to its outskirts
            lat, lon = clat + rng.uniform(-jitter, jitter), clon + rng.uniform(-jitter, jitter)
            params = {"bbox": viewport(lat, lon, zoom), "zoom": zoom, **random_filters(rng, operators)}
            started = time.perf_counter()
            response = client.get("/api/v1/stations", params)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content[:300]
            sizes.append(len(response.content))
            body = response.json()
            features.append(len(body["features"]))
            clustered += body["meta"]["clustered"]
        figures[band] = {"p95": percentile(times, 95), "max_kb": max(sizes) / 1024}
        print(row(band, f"{zooms[0]}-{zooms[-1]}", times, sizes) + f"{max(features):>10}{clustered:>10}")
    times, sizes = [], []
    for _ in range(requests_per_band * 2):
        _name, clat, clon, _w = weighted(rng, CITIES, 3)
        if rng.random() < 0.3:  # countryside: fewer stations around, the search widens
            south, west, north, east, _w = weighted(rng, RURAL, 4)
            clat, clon = rng.uniform(south, north), rng.uniform(west, east)
        params = {"lat": f"{clat + rng.gauss(0, 0.05):.5f}", "lon": f"{clon + rng.gauss(0, 0.05):.5f}"}
        params.update(radius_km=rng.choice([5, 10, 25, 50]), limit=rng.choice([5, 20, 50]))
        params.update(random_filters(rng, operators))
        started = time.perf_counter()
        response = client.get("/api/v1/stations/nearby", params)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
        sizes.append(len(response.content))
    figures["nearby"] = {"p95": percentile(times, 95), "max_kb": max(sizes) / 1024}
    print(row("nearby", "", times, sizes))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--stations", type=int, default=550_000)
    parser.add_argument("--requests", type=int, default=60, help="viewport requests per zoom band")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/map.py needs PostgreSQL: set DATABASE_URL=postgres://...")
    call_command("migrate", verbosity=0)
    have = Location.objects.filter(ocpi_id__startswith=BENCH_PREFIX).count()
    if args.regenerate or have != args.stations:
        started = time.perf_counter()
        generate(args.stations)
        print(f"generated {args.stations} stations in {time.perf_counter() - started:.1f} s")
    from stations.map_cells import refresh_map_cells
    from stations.selectors import visible_locations

    started = time.perf_counter()
    cells = refresh_map_cells()
    refresh_s = time.perf_counter() - started
    visible = visible_locations().count()
    print(f"{args.stations} stations, {visible} visible to our drivers")
    print(f"cluster cells rebuilt: {cells} rows in {refresh_s:.1f} s")
    # Every viewport is a fresh one (random centres), so these are server times without cache hits.
    figures = run(args.requests)
    worst = max(figures[band]["p95"] for band, _ in BANDS)
    biggest = max(figures[band]["max_kb"] for band, _ in BANDS)
    print(
        f"stations={args.stations} viewport_p95_ms_worst_band={worst:.1f} "
        + " ".join(f"{band}_p95_ms={figures[band]['p95']:.1f}" for band, _ in BANDS)
        + f" max_response_kb={biggest:.1f} nearby_p95_ms={figures['nearby']['p95']:.1f} cells_refresh_s={refresh_s:.1f}"
    )
