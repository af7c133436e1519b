"""Reads about parties, connections and agreements."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from roaming.models import PartnerConnection, Party, RoamingAgreement

OUR_CARDS = (RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS, RoamingAgreement.Direction.BOTH)
THEIR_CARDS = (RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS, RoamingAgreement.Direction.BOTH)


def own_party() -> Party:
    """MobilityPlus itself, as configured by OCPI_COUNTRY_CODE / OCPI_PARTY_ID."""
    party, _ = Party.objects.get_or_create(
        country_code=settings.OCPI_COUNTRY_CODE.upper(),
        party_id=settings.OCPI_PARTY_ID.upper(),
        defaults={
            "role": Party.Role.CPO_EMSP,
            "name": settings.OCPI_BUSINESS_NAME,
            "website": settings.OCPI_BUSINESS_WEBSITE,
            "is_self": True,
        },
    )
    return party


def active_agreements(*, on: dt.date | None = None, our_cards: bool | None = None):
    """Agreements in force on a date; `our_cards` narrows to one direction of use.

    The single rule both authorization and the station map read: an agreement covers a
    partner when it is ACTIVE and the date lies within valid_from..valid_until.
    """
    on = on or timezone.localdate()
    agreements = RoamingAgreement.objects.filter(status=RoamingAgreement.Status.ACTIVE, valid_from__lte=on).filter(
        Q(valid_until__isnull=True) | Q(valid_until__gte=on)
    )
    if our_cards is True:
        agreements = agreements.filter(direction__in=OUR_CARDS)
    elif our_cards is False:
        agreements = agreements.filter(direction__in=THEIR_CARDS)
    return agreements


def party_ids_accepting_our_cards(on: dt.date | None = None) -> set[int]:
    """Ids of partner parties whose stations take MobilityPlus cards (our own party included)."""
    ids = set(active_agreements(on=on, our_cards=True).values_list("partner_id", flat=True))
    ids.add(own_party().pk)
    return ids


def party_ids_whose_cards_we_accept(on: dt.date | None = None) -> set[int]:
    return set(active_agreements(on=on, our_cards=False).values_list("partner_id", flat=True))


def agreement_covers(partner: Party, *, our_cards: bool, on: dt.date | None = None) -> bool:
    return active_agreements(on=on, our_cards=our_cards).filter(partner=partner).exists()


def agreement_in_force(party: Party, on: dt.date | None = None) -> bool:
    """Whether a partner may use functional modules: an agreement in force with it, or routed through it (hub)."""
    return active_agreements(on=on).filter(Q(partner=party) | Q(hub=party)).exists()


def connected_connections():
    return PartnerConnection.objects.filter(status=PartnerConnection.Status.CONNECTED).select_related(
        "party", "via_hub"
    )


def hub_client(hub: PartnerConnection, country_code: str, party_id: str) -> PartnerConnection | None:
    """A party's connection through this hub, by its OCPI id."""
    return (
        PartnerConnection.objects.select_related("party")
        .filter(via_hub=hub, party__country_code=country_code.upper(), party__party_id=party_id.upper())
        .first()
    )
