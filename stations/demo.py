"""Demo stations and feed history for `manage.py load_demo` (the site's loader calls `load_stations`)."""

from __future__ import annotations

import datetime as dt
import random

from roaming.models import PartnerConnection
from stations.map_cells import refresh_map_cells
from stations.models import EVSE, Connector, EvseStatus, Location, RejectedObject, SyncRun
from stations.services import refresh_location_summaries

# (name, address, city, postal code, lat, lon)
SITES = [
    ("Grand-Place", "Rue au Beurre 1", "Brussel", "1000", 50.84673, 4.35247),
    ("Gent Sint-Pieters", "Koningin Maria Hendrikaplein 1", "Gent", "9000", 51.03563, 3.71036),
    ("Antwerpen Centraal", "Koningin Astridplein 27", "Antwerpen", "2018", 51.21722, 4.42111),
    ("Leuven Ladeuze", "Ladeuzeplein 1", "Leuven", "3000", 50.87854, 4.70075),
    ("Liège Guillemins", "Place des Guillemins 2", "Liège", "4000", 50.62453, 5.56679),
    ("Brugge 't Zand", "'t Zand 34", "Brugge", "8000", 51.20472, 3.21917),
    ("Namur Gare", "Place de la Station 1", "Namur", "5000", 50.46855, 4.86238),
    ("Mechelen Vesten", "Hanswijkvaart 2", "Mechelen", "2800", 51.01732, 4.48356),
    ("Hasselt Kolonel Dusart", "Kolonel Dusartplein 1", "Hasselt", "3500", 50.92906, 5.33731),
    ("Utrecht Jaarbeurs", "Jaarbeursplein 6", "Utrecht", "3521", 52.08904, 5.10864),
    ("Amsterdam Zuidas", "Gustav Mahlerplein 2", "Amsterdam", "1082", 52.33865, 4.87303),
    ("Köln Messe", "Messeplatz 1", "Köln", "50679", 50.94693, 6.98279),
    ("Lille Europe", "Parvis de Rotterdam 1", "Lille", "59777", 50.63895, 3.07553),
    ("Aire de Nivelles", "E19 Nivelles", "Nivelles", "1400", 50.59856, 4.33117),
]




def load_stations(demo) -> None:
    """Stations of ours and of the partners, a feed history with rejects, and the map's summaries."""
    random.seed(42)
    now, parties = demo.now, demo.parties
    owners = [parties["MBP"], parties["ALL"], parties["FST"], parties["ION"], parties["TOT"], parties["Q8C"]]
    statuses = [EvseStatus.AVAILABLE, EvseStatus.CHARGING, EvseStatus.OUTOFORDER, EvseStatus.UNKNOWN]
    for index, (name, address, city, postal_code, lat, lon) in enumerate(SITES):
        owner = owners[index % len(owners)]
        location, created = Location.objects.get_or_create(
            party=owner,
            ocpi_id=f"LOC{index + 1:03d}",
            defaults={
                "name": name,
                "address": address,
                "city": city,
                "postal_code": postal_code,
                "country": "BEL" if index < 9 else ("NLD" if index < 11 else ("DEU" if index == 11 else "FRA")),
                "latitude": lat,
                "longitude": lon,
                "time_zone": "Europe/Brussels",
                "parking_type": "PARKING_LOT" if index % 3 == 0 else "ON_STREET",
                "operator": {"name": owner.name},
                "opening_times": {"twentyfourseven": index % 4 != 3},
                "last_updated": now,
            },
        )
        demo.location_ids.append(location.pk)
        if not created:
            continue
        for evse_index in range(1 + index % 3):
            status = statuses[(index + evse_index) % len(statuses)]
            evse = EVSE.objects.create(
                location=location,
                uid=f"{location.ocpi_id}-{evse_index + 1}",
                evse_id=f"{owner.country_code}*{owner.party_id}*E{index + 1:03d}{evse_index + 1}",
                status=status,
                # Live statuses are minutes old; one site's feed went quiet hours ago and shows as stale.
                status_changed_at=now - dt.timedelta(minutes=240 if index == 6 else random.randint(2, 25)),
                capabilities=["RFID_READER", "REMOTE_START_STOP_CAPABLE"],
                parking_restrictions=["CUSTOMERS"] if index % 5 == 4 else [],
                last_updated=now,
            )
            Connector.objects.create(
                evse=evse,
                connector_id="1",
                standard="IEC_62196_T2_COMBO" if index % 2 else "IEC_62196_T2",
                format="CABLE" if index % 2 else "SOCKET",
                power_type="DC" if index % 2 else "AC_3_PHASE",
                max_voltage=400 if index % 2 else 230,
                max_amperage=125 if index % 2 else 32,
                max_electric_power=50000 if index % 2 else 22000,
                last_updated=now,
            )
    _load_feed_history(parties, now)
    # The map reads the summaries (status, power, limited access): computed like any feed's.
    refresh_location_summaries(demo.location_ids)
    refresh_map_cells()


def _load_feed_history(parties: dict, now: dt.datetime) -> None:
    """Feed syncs and rejects, so the partners list and data-quality page have a story."""
    # Ionity sends no opening hours: its access data is missing on the data-quality page.
    Location.objects.filter(party=parties["ION"]).update(opening_times=None)
    # (party id, minutes ago, status, rejected objects) of the latest run; a month of daily runs before it.
    runs = [
        ("ALL", 20, "succeeded", 0),
        ("FST", 50, "succeeded", 2),
        ("ION", 15, "failed", 0),
        ("TOT", 35, "succeeded", 1),
    ]
    for party_id, minutes, status, rejected in runs:
        connection = PartnerConnection.objects.get(party=parties[party_id])
        if connection.sync_runs.exists():
            continue
        finished = now - dt.timedelta(minutes=minutes)
        history = []
        for days_ago in range(30, 0, -1):
            ended = finished - dt.timedelta(days=days_ago)
            bad = (days_ago * 7 + len(party_id)) % 5 if party_id in ("FST", "TOT") else 0
            history.append(
                SyncRun(
                    connection=connection,
                    full=days_ago % 7 == 0,
                    status=SyncRun.Status.SUCCEEDED,
                    started_at=ended - dt.timedelta(minutes=2),
                    finished_at=ended,
                    pages=1 + days_ago % 3,
                    updated=random.randint(2, 40),
                    unchanged=random.randint(50, 200),
                    rejected=bad,
                )
            )
        SyncRun.objects.bulk_create(history)
        run = SyncRun.objects.create(
            connection=connection,
            full=False,
            status=status,
            started_at=finished - dt.timedelta(minutes=1),
            finished_at=finished,
            pages=1,
            updated=3 if status == "succeeded" else 0,
            rejected=rejected,
            error="GET locations: HTTP 502" if status == "failed" else "",
        )
        for index in range(rejected):
            RejectedObject.objects.create(
                sync_run=run,
                connection=connection,
                object_id=f"BAD{index + 1}",
                error="coordinates.latitude: not a GeoLocation latitude",
                payload={"id": f"BAD{index + 1}", "coordinates": {"latitude": "north", "longitude": "4.3"}},
            )
    # Fastned's weekly full sync is running now: the partner page follows it.
    fastned = PartnerConnection.objects.get(party=parties["FST"])
    if not fastned.sync_runs.filter(status=SyncRun.Status.RUNNING).exists():
        SyncRun.objects.create(
            connection=fastned, full=True, status=SyncRun.Status.RUNNING, started_at=now - dt.timedelta(minutes=4),
            pages=23, created=40, updated=310, unchanged=1950, rejected=3, expected_objects=9800,
        )  # fmt: skip
