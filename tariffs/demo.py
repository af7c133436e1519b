"""Demo tariffs for `manage.py load_demo`: ours at our own stations (pushed like any change), partners' at theirs,
one connector naming a tariff we never received and some naming none, and the demo CDRs checked. Idempotent."""

from __future__ import annotations

from django.utils import timezone

from charging.models import CDR
from roaming.models import Party
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import own_party
from stations.models import Connector
from tariffs import services
from tariffs.billing_check import check_cdr_price
from tariffs.models import Tariff


def _energy(price: float, vat: float = 21.0) -> dict:
    return {"price_components": [{"type": "ENERGY", "price": price, "vat": vat, "step_size": 1}]}


def _component(kind: str, price: float, step: int, vat: float = 21.0) -> dict:
    return {"type": kind, "price": price, "vat": vat, "step_size": step}


OUR_TARIFFS = {
    # AC: €0.30/kWh excl. VAT; parking after charging €0.05/min (€3/h) from 08:00 to 20:00.
    "AC": {
        "id": "MBP-AC-2026",
        "type": "REGULAR",
        "elements": [
            _energy(0.30),
            {
                "price_components": [_component("PARKING_TIME", 3.00, 60)],
                "restrictions": {"start_time": "08:00", "end_time": "20:00"},
            },
        ],
        "tariff_alt_text": [
            {"language": "en", "text": "€0.36/kWh incl. VAT; after charging €0.06/min (08:00-20:00)."},
            {"language": "nl", "text": "€0,36/kWh incl. btw; na het laden €0,06/min (08:00-20:00)."},
            {"language": "fr", "text": "0,36 €/kWh TVAC ; après la charge 0,06 €/min (08:00-20:00)."},
        ],
    },
    # DC: €0.50/kWh, €1 start fee.
    "DC": {
        "id": "MBP-DC-2026",
        "type": "REGULAR",
        "elements": [
            {"price_components": [_component("FLAT", 1.00, 1)]},
            _energy(0.50),
        ],
    },
}

# Partner: (tariff id, elements, alt texts); the connectors of their demo stations name it.
PARTNER_TARIFFS = {
    "ALL": ("ALL-AC-1", [_energy(0.43)], []),  # the demo history's Allego bill matches it; others differ
    "FST": ("FST-DC-1", [_energy(0.59)], [{"language": "en", "text": "€0.71/kWh incl. VAT, no start fee."}]),
    "ION": (
        "ION-HPC",
        [{"price_components": [_component("FLAT", 0.50, 1, 19.0)]}, _energy(0.58, 19.0)],
        [
            {"language": "en", "text": "€0.69/kWh and €0.60 per session, VAT included."},
            {"language": "de", "text": "0,69 €/kWh und 0,60 € pro Ladevorgang, inkl. MwSt."},
        ],
    ),
}
# Ionity's second site names no tariff: its price is "not shared by the operator".
NOT_SHARED_AT = {"ION": ("LOC010",)}
# TotalEnergies' connectors name a tariff it never sent us: the map says the price is not known.
UNKNOWN_TARIFF = ("TOT", "TOT-STD")


def load_tariff_demo() -> int:
    """Create the demo tariffs (once), link the demo connectors to them, and check the demo CDRs."""
    now = timezone.now()
    me = own_party()
    created = 0
    for kind, spec in OUR_TARIFFS.items():
        tariff = Tariff.objects.filter(party=me, ocpi_id=spec["id"]).first()
        if tariff is None:
            tariff = Tariff(party=me)
            document = {
                "country_code": me.country_code,
                "party_id": me.party_id,
                "currency": "EUR",
                **spec,
                "last_updated": format_datetime(now),
            }
            services.save_own_tariff(tariff, document)
            created += 1
        power_types = ("DC",) if kind == "DC" else ("AC_1_PHASE", "AC_3_PHASE")
        connectors = Connector.objects.filter(evse__location__party=me, power_type__in=power_types)
        services.attach_own_tariff(tariff, list(connectors))
    for party_code, (tariff_id, elements, texts) in PARTNER_TARIFFS.items():
        party = Party.objects.filter(party_id=party_code).first()
        if party is None:
            continue
        if not Tariff.objects.filter(party=party, ocpi_id=tariff_id).exists():
            document = {
                "country_code": party.country_code,
                "party_id": party.party_id,
                "id": tariff_id,
                "currency": "EUR",
                "elements": elements,
                "last_updated": format_datetime(now),
            }
            if texts:
                document["tariff_alt_text"] = texts
            services.store_partner_tariff(party, tariff_id, document, source=None)
            created += 1
        connectors = Connector.objects.filter(evse__location__party=party, tariff_ids=[])
        if party_code in NOT_SHARED_AT:
            connectors = connectors.exclude(evse__location__ocpi_id__in=NOT_SHARED_AT[party_code])
        connectors.update(tariff_ids=[tariff_id])
    party = Party.objects.filter(party_id=UNKNOWN_TARIFF[0]).first()
    if party is not None:
        Connector.objects.filter(evse__location__party=party, tariff_ids=[]).update(tariff_ids=[UNKNOWN_TARIFF[1]])
    for cdr in CDR.objects.filter(price_check__isnull=True).exclude(party=me).select_related("party", "evse"):
        check_cdr_price(cdr)
    return created
