"""Demo partners, connections and agreements for `manage.py load_demo` (the site's loader calls `load_partners`)."""

from __future__ import annotations

import datetime as dt

from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.selectors import own_party

OURS, THEIRS, BOTH = (
    RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
    RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS,
    RoamingAgreement.Direction.BOTH,
)
PARTNERS = [
    # (country, party id, role, name, website, agreement direction or None)
    ("NL", "ALL", Party.Role.CPO, "Allego", "https://www.allego.eu", OURS),
    ("NL", "FST", Party.Role.CPO, "Fastned", "https://fastnedcharging.com", OURS),
    ("DE", "ION", Party.Role.CPO, "Ionity", "https://ionity.eu", OURS),
    ("FR", "TOT", Party.Role.CPO_EMSP, "TotalEnergies", "https://totalenergies.com", BOTH),
    ("NL", "SHL", Party.Role.EMSP, "Shell Recharge", "https://shellrecharge.com", THEIRS),
    ("BE", "Q8C", Party.Role.CPO, "Q8", "https://www.q8.be", None),  # planned partner: no agreement yet
    ("DE", "HBJ", Party.Role.HUB, "Hubject (hub)", "https://www.hubject.com", None),
]


def load_partners(demo) -> None:
    """The demo's partners (connected, planned, a hub with clients) and our own party; fills `demo.parties`."""
    today = demo.today
    demo.parties["MBP"] = own_party()
    for country, party_id, role, name, website, direction in PARTNERS:
        party, _ = Party.objects.update_or_create(
            country_code=country, party_id=party_id, defaults={"role": role, "name": name, "website": website}
        )
        demo.parties[party_id] = party
        status = PartnerConnection.Status.CONNECTED if direction else PartnerConnection.Status.PLANNED
        connection, _ = PartnerConnection.objects.get_or_create(
            party=party,
            defaults={"status": status, "versions_url": f"https://ocpi.{party_id.lower()}.example/ocpi/versions"},
        )
        if direction:
            if connection.last_contact_at is None:
                PartnerConnection.objects.filter(pk=connection.pk).update(
                    last_contact_at=demo.now - dt.timedelta(minutes=3)
                )
            RoamingAgreement.objects.get_or_create(
                partner=party,
                direction=direction,
                defaults={
                    "status": RoamingAgreement.Status.ACTIVE,
                    "valid_from": today - dt.timedelta(days=365),
                    "notes": "Demo agreement",
                },
            )
    # A hub with two clients: one staff confirmed (an agreement through the hub), one the hub announced only.
    hub = PartnerConnection.objects.get(party=demo.parties["HBJ"])
    if hub.status != PartnerConnection.Status.CONNECTED:
        hub.status = PartnerConnection.Status.CONNECTED
        hub.save()
    for party_id, name, confirmed in (("VAT", "Vattenfall InCharge", True), ("EWE", "EWE Go", False)):
        country = "SE" if party_id == "VAT" else "DE"
        client, _ = Party.objects.update_or_create(
            country_code=country, party_id=party_id, defaults={"role": Party.Role.CPO, "name": name}
        )
        demo.parties[party_id] = client
        PartnerConnection.objects.get_or_create(
            party=client,
            defaults={
                "via_hub": hub,
                "status": PartnerConnection.Status.CONNECTED,
                "hub_client_status": "CONNECTED" if confirmed else "PLANNED",
                "hub_client_updated_at": demo.now - dt.timedelta(days=2),
            },
        )
        if confirmed:
            RoamingAgreement.objects.get_or_create(
                partner=client,
                direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS,
                defaults={
                    "status": RoamingAgreement.Status.ACTIVE,
                    "hub": demo.parties["HBJ"],
                    "valid_from": today - dt.timedelta(days=90),
                    "notes": "Demo agreement through the hub",
                },
            )
