"""The drivers' overview of roaming partners (linked from the FAQ): partners whose stations take our card."""

import datetime as dt

from django.utils import timezone

from roaming.models import RoamingAgreement
from tests.factories import LocationFactory, PartyFactory, RoamingAgreementFactory


def test_lists_partners_whose_stations_take_our_card_with_their_station_counts(
    client, db, django_assert_max_num_queries
):
    allego = PartyFactory(name="Allego", website="https://www.allego.eu")
    RoamingAgreementFactory(partner=allego, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    LocationFactory.create_batch(3, party=allego)
    LocationFactory(party=allego, removed_at=timezone.now())  # gone from their feed: not counted
    ended = PartyFactory(name="Ended Energy")
    RoamingAgreementFactory(partner=ended, valid_until=timezone.localdate() - dt.timedelta(days=1))
    their_cards_only = PartyFactory(name="Card Issuer Only")
    RoamingAgreementFactory(partner=their_cards_only, direction=RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS)
    for index in range(5):
        RoamingAgreementFactory(partner=PartyFactory(name=f"Extra {index}"))

    with django_assert_max_num_queries(3):
        page = client.get("/roaming-partners/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Allego" in text and "https://www.allego.eu" in text
    assert "<td>3</td>" in text
    assert "Ended Energy" not in text and "Card Issuer Only" not in text
    assert "Extra 4" in text


def test_is_public_and_linked_from_every_page(client, db):
    assert 'href="/roaming-partners/"' in client.get("/accounts/login/").content.decode()
    assert "No roaming partners yet." in client.get("/roaming-partners/").content.decode()
