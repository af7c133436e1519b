"""Demo data so every page has something real to show. Safe to run twice."""

from __future__ import annotations

import datetime as dt
import random

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from cards.identifiers import normalise_contract_id
from cards.models import Card, CardStatusChange, Driver, ForeignToken
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.selectors import own_party
from stations.map_cells import refresh_map_cells
from stations.models import EVSE, Connector, EvseStatus, Location
from stations.services import refresh_location_summaries

DEMO_STAFF = ("staff", "mobilityplus-demo")
DEMO_DRIVER = ("driver", "mobilityplus-demo")

PARTNERS = [
    # (country, party id, role, name, website, agreement direction or None)
    (
        "NL",
        "ALL",
        Party.Role.CPO,
        "Allego",
        "https://www.allego.eu",
        RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
    ),
    (
        "NL",
        "FST",
        Party.Role.CPO,
        "Fastned",
        "https://fastnedcharging.com",
        RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
    ),
    (
        "DE",
        "ION",
        Party.Role.CPO,
        "Ionity",
        "https://ionity.eu",
        RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
    ),
    ("FR", "TOT", Party.Role.CPO_EMSP, "TotalEnergies", "https://totalenergies.com", RoamingAgreement.Direction.BOTH),
    (
        "NL",
        "SHL",
        Party.Role.EMSP,
        "Shell Recharge",
        "https://shellrecharge.com",
        RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS,
    ),
    ("BE", "Q8C", Party.Role.CPO, "Q8", "https://www.q8.be", None),  # planned partner: no agreement yet
    ("DE", "HBJ", Party.Role.HUB, "Hubject (hub)", "https://www.hubject.com", None),
]

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


class Command(BaseCommand):
    help = "Load demo partners, agreements, cards and stations, and a demo staff user."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        random.seed(42)
        now = timezone.now()
        today = timezone.localdate()
        me = own_party()

        User = get_user_model()
        staff, created = User.objects.get_or_create(
            username=DEMO_STAFF[0], defaults={"is_staff": True, "is_superuser": True, "email": "staff@example.com"}
        )
        if created:
            staff.set_password(DEMO_STAFF[1])
            staff.save()
        driver_user, created = User.objects.get_or_create(
            username=DEMO_DRIVER[0], defaults={"first_name": "Dana", "last_name": "Driver"}
        )
        if created:
            driver_user.set_password(DEMO_DRIVER[1])
            driver_user.save()
        driver, _ = Driver.objects.get_or_create(user=driver_user)

        parties = {}
        for country, party_id, role, name, website, direction in PARTNERS:
            party, _ = Party.objects.update_or_create(
                country_code=country, party_id=party_id, defaults={"role": role, "name": name, "website": website}
            )
            parties[party_id] = party
            status = PartnerConnection.Status.CONNECTED if direction else PartnerConnection.Status.PLANNED
            PartnerConnection.objects.get_or_create(
                party=party,
                defaults={"status": status, "versions_url": f"https://ocpi.{party_id.lower()}.example/ocpi/versions"},
            )
            if direction:
                RoamingAgreement.objects.get_or_create(
                    partner=party,
                    direction=direction,
                    defaults={
                        "status": RoamingAgreement.Status.ACTIVE,
                        "valid_from": today - dt.timedelta(days=365),
                        "notes": "Demo agreement",
                    },
                )

        for index, (visual, uid) in enumerate([("MBP-0001", "04A2B3C4D5E680"), ("MBP-0002", "04FF00112233AA")]):
            Card.objects.get_or_create(
                issuer_party=me,
                uid=uid,
                type=Card.Type.RFID,
                defaults={
                    "driver": driver,
                    "contract_id": normalise_contract_id(f"BE-MBP-C1234567{index}"),
                    "visual_number": visual,
                    "whitelist": Card.Whitelist.ALLOWED_OFFLINE,
                    "valid_until": today + dt.timedelta(days=3 * 365),
                    "last_updated": now,
                },
            )

        # Cards: an old card the driver lost (replaced), and a Shell Recharge token cached for our stations.
        old, created = Card.objects.get_or_create(
            issuer_party=me,
            uid="04DEAD00BEEF01",
            type=Card.Type.RFID,
            defaults={
                "driver": driver,
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
            party=parties["SHL"],
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

        owners = [me, parties["ALL"], parties["FST"], parties["ION"], parties["TOT"], parties["Q8C"]]
        statuses = [EvseStatus.AVAILABLE, EvseStatus.CHARGING, EvseStatus.OUTOFORDER, EvseStatus.UNKNOWN]
        demo_location_ids = []
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
            demo_location_ids.append(location.pk)
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

        self._load_partner_health(parties, now)
        # The map reads the summaries (status, power, limited access): computed like any feed's.
        refresh_location_summaries(demo_location_ids)
        refresh_map_cells()
        # charging: the demo driver's active session and history (with CDRs).
        from charging.demo import load_charging_demo

        load_charging_demo(driver)
        # tariffs: ours and partners' prices, connectors naming them, the demo CDRs checked against them
        # (before our own stations' sessions, so those are priced with our tariff).
        from tariffs.demo import load_tariff_demo

        load_tariff_demo()
        from charging.demo import load_cpo_demo  # sessions at our own stations, through the backend API

        load_cpo_demo()

        self.stdout.write(self.style.SUCCESS("Demo data loaded."))
        self.stdout.write(f"  Staff login  : {DEMO_STAFF[0]} / {DEMO_STAFF[1]}  (http://127.0.0.1:8000/admin/)")
        self.stdout.write(
            f"  Driver login : {DEMO_DRIVER[0]} / {DEMO_DRIVER[1]}  (http://127.0.0.1:8000/accounts/login/)"
        )

    def _load_partner_health(self, parties: dict[str, Party], now: dt.datetime) -> None:
        """Feed syncs, rejects and a hub client, so the partners list and data-quality page have a story."""
        from stations.models import RejectedObject, SyncRun

        hub = PartnerConnection.objects.get(party=parties["HBJ"])
        if hub.status != PartnerConnection.Status.CONNECTED:
            hub.status = PartnerConnection.Status.CONNECTED
            hub.save()
        vattenfall, _ = Party.objects.update_or_create(
            country_code="SE", party_id="VAT", defaults={"role": Party.Role.CPO, "name": "Vattenfall InCharge"}
        )
        PartnerConnection.objects.get_or_create(
            party=vattenfall,
            defaults={"via_hub": hub, "status": PartnerConnection.Status.CONNECTED, "hub_client_status": "CONNECTED"},
        )
        RoamingAgreement.objects.get_or_create(
            partner=vattenfall,
            direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
            defaults={
                "status": RoamingAgreement.Status.ACTIVE,
                "hub": parties["HBJ"],
                "valid_from": now.date() - dt.timedelta(days=90),
                "notes": "Demo agreement through the hub",
            },
        )
        # Ionity sends no opening hours: its access data is missing on the data-quality page.
        Location.objects.filter(party=parties["ION"]).update(opening_times=None)
        # (party id, minutes ago, status, rejected objects)
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
            SyncRun.objects.create(
                connection=connection,
                full=False,
                status=SyncRun.Status.SUCCEEDED,
                started_at=finished - dt.timedelta(hours=1, minutes=1),
                finished_at=finished - dt.timedelta(hours=1),
                pages=1,
                updated=3,
            )
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
