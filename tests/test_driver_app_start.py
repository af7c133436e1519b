"""The app start is offered only where it can work, "card only" is said up front otherwise, a driver already
charging is warned before a second start, the FAQ's card advice stands where the driver does, and favourites."""

from __future__ import annotations

import pytest
from django.test import override_settings

from charging.models import Command
from roaming.models import RoamingAgreement
from roaming.selectors import own_party
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    MapLocationFactory,
    PartnerConnectionFactory,
    RoamingAgreementFactory,
    SessionFactory,
)

pytestmark = pytest.mark.django_db
REMOTE = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]


def partner(*, commands: bool):
    party = RoamingAgreementFactory(direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS).partner
    endpoints = (
        [{"identifier": "commands", "role": "RECEIVER", "url": "http://127.0.0.1:9/commands"}] if commands else []
    )
    PartnerConnectionFactory(party=party, endpoints=endpoints)
    return party


def station(party, *capabilities_per_evse):
    location = MapLocationFactory(party=party)
    for n, capabilities in enumerate(capabilities_per_evse):
        ConnectorFactory(
            evse=EVSEFactory(location=location, uid=f"E{n}", status="AVAILABLE", capabilities=capabilities)
        )
    return location


def detail(client, location) -> dict:
    return client.get(f"/api/v1/stations/{location.pk}").json()["properties"]


def test_app_start_needs_a_remotely_startable_evse_and_an_operator_taking_commands(client):
    works = station(partner(commands=True), REMOTE, ["RFID_READER"])
    shown = detail(client, works)
    assert shown["app"] is True and shown["app_reason"] == ""
    remote, card_only = shown["evses"]
    assert remote["app"] and remote["start_url"] == f"/charging/start/{works.pk}/E0/"
    assert not card_only["app"] and card_only["start_url"] is None
    assert card_only["app_reason"] == "Card only: this charge point cannot be started from an app."

    no_receiver = detail(client, station(partner(commands=False), REMOTE))
    assert no_receiver["app"] is False and no_receiver["evses"][0]["start_url"] is None
    assert no_receiver["app_reason"] == "Card only: this operator does not take starts from the app."
    assert all(evse["card"] for evse in no_receiver["evses"])


def test_our_own_stations_take_app_starts_once_the_charge_point_backend_is_set(client, settings):
    ours = station(own_party(), REMOTE)
    settings.CHARGE_POINT_BACKEND_URL = ""
    assert detail(client, ours)["evses"][0]["start_url"] is None
    settings.CHARGE_POINT_BACKEND_URL = "http://127.0.0.1:9/ocpp"
    assert detail(client, ours)["evses"][0]["start_url"] == f"/charging/start/{ours.pk}/E0/"


def test_the_start_page_says_card_only_and_offers_no_button_where_the_app_cannot_start(client):
    location = station(partner(commands=False), REMOTE)
    driver = DriverFactory()
    CardFactory(driver=driver)
    client.force_login(driver.user)
    page = client.get(f"/charging/start/{location.pk}/E0/").content.decode()
    assert 'data-testid="card-only"' in page and "does not take starts from the app" in page
    assert 'data-testid="start"' not in page
    # The FAQ's advice: offer the card again; the reader faulty and no app start here: say so.
    assert "Hold your card to the reader again" in page and "cannot be started from the app" in page
    client.post(f"/charging/start/{location.pk}/E0/", {"card": driver.cards.get().pk, "idempotency_key": "k"})
    assert not Command.objects.exists()


def test_a_driver_already_charging_is_warned_and_must_confirm_a_second_start(
    client, django_capture_on_commit_callbacks
):
    party = partner(commands=True)
    location = station(party, REMOTE)
    driver = DriverFactory()
    card = CardFactory(driver=driver)
    SessionFactory(party=party, card=card, location=location, status="ACTIVE")
    client.force_login(driver.user)
    url = f"/charging/start/{location.pk}/E0/"
    page = client.get(url).content.decode()
    assert 'data-testid="running-session"' in page and "You are already charging" in page
    assert "start from the app" in page  # the FAQ's way out where the app start works
    refused = client.post(url, {"card": card.pk, "idempotency_key": "second"})
    assert refused.status_code == 400 and "confirm" in refused.content.decode()
    assert not Command.objects.exists()
    with override_settings(CELERY_TASK_ALWAYS_EAGER=False), django_capture_on_commit_callbacks(execute=False):
        confirmed = client.post(url, {"card": card.pk, "idempotency_key": "second", "second_session": "yes"})
    assert confirmed.status_code == 302 and Command.objects.count() == 1


def test_favourites_are_starred_listed_and_unstarred_by_their_driver_only(client):
    location = station(partner(commands=False), REMOTE)
    assert client.put(f"/api/v1/favourites/{location.pk}").status_code == 403  # logged out
    driver = DriverFactory()
    client.force_login(driver.user)
    assert client.put(f"/api/v1/favourites/{location.pk}").status_code == 201
    assert client.put(f"/api/v1/favourites/{location.pk}").status_code == 200  # a second star: no-op
    assert client.put("/api/v1/favourites/999999").status_code == 404
    listed = client.get("/api/v1/favourites").json()["features"]
    assert [f["properties"]["id"] for f in listed] == [location.pk]
    other = DriverFactory()
    client.force_login(other.user)
    assert client.get("/api/v1/favourites").json()["features"] == []
    client.force_login(driver.user)
    assert client.delete(f"/api/v1/favourites/{location.pk}").json() == {"id": location.pk, "favourite": False}
    assert client.get("/api/v1/favourites").json()["features"] == []
