"""Factories for test data. Each capability adds its own here, next to the others."""

from __future__ import annotations

import datetime as dt

import factory
from django.utils import timezone

from cards.identifiers import normalise_contract_id
from cards.models import Card, Driver
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.selectors import own_party
from roaming.services import store_partner_tokens
from stations.models import EVSE, Connector, Location


class PartyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Party

    country_code = "NL"
    party_id = factory.Sequence(lambda n: f"{chr(65 + n // 676 % 26)}{chr(65 + n // 26 % 26)}{chr(65 + n % 26)}")
    role = Party.Role.CPO
    name = factory.Sequence(lambda n: f"Partner {n}")


class PartnerConnectionFactory(factory.django.DjangoModelFactory):
    """A connected partner. Pass token_from_them / token_to_them to set its credentials."""

    class Meta:
        model = PartnerConnection
        skip_postgeneration_save = True

    party = factory.SubFactory(PartyFactory)
    status = PartnerConnection.Status.CONNECTED
    version = "2.2.1"

    @factory.post_generation
    def tokens(obj, create, extracted, **kwargs):  # noqa: N805
        if create and (kwargs.get("from_them") or kwargs.get("to_them")):
            store_partner_tokens(obj, from_them=kwargs.get("from_them"), to_them=kwargs.get("to_them"))


class RoamingAgreementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoamingAgreement

    partner = factory.SubFactory(PartyFactory)
    direction = RoamingAgreement.Direction.BOTH
    status = RoamingAgreement.Status.ACTIVE
    valid_from = factory.LazyFunction(lambda: timezone.localdate() - dt.timedelta(days=30))


class DriverFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Driver

    user = factory.SubFactory(
        "tests.factories.UserFactory",
    )


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "auth.User"
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "secret-password")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class CardFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Card

    issuer_party = factory.LazyFunction(own_party)
    driver = factory.SubFactory(DriverFactory)
    uid = factory.Sequence(lambda n: f"04{n:012X}")
    type = Card.Type.RFID
    contract_id = factory.Sequence(lambda n: normalise_contract_id(f"BE-MBP-C{n:08d}"))
    visual_number = factory.Sequence(lambda n: f"MBP-{n:06d}")
    whitelist = Card.Whitelist.ALLOWED_OFFLINE
    last_updated = factory.LazyFunction(timezone.now)


class LocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Location

    party = factory.SubFactory(PartyFactory)
    ocpi_id = factory.Sequence(lambda n: f"LOC{n}")
    name = factory.Sequence(lambda n: f"Station {n}")
    address = "Main street 1"
    city = "Brussel"
    postal_code = "1000"
    country = "BEL"
    latitude = 50.85
    longitude = 4.35
    time_zone = "Europe/Brussels"
    last_updated = factory.LazyFunction(timezone.now)


class EVSEFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EVSE

    location = factory.SubFactory(LocationFactory)
    uid = factory.Sequence(lambda n: f"EVSE{n}")
    status = "AVAILABLE"
    last_updated = factory.LazyFunction(timezone.now)


class ConnectorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Connector

    evse = factory.SubFactory(EVSEFactory)
    connector_id = "1"
    standard = "IEC_62196_T2"
    format = "SOCKET"
    power_type = "AC_3_PHASE"
    max_voltage = 230
    max_amperage = 32
    max_electric_power = 22000
    last_updated = factory.LazyFunction(timezone.now)


class SyncRunFactory(factory.django.DjangoModelFactory):
    """A finished feed pull of a partner's locations."""

    class Meta:
        model = "stations.SyncRun"

    connection = factory.SubFactory(PartnerConnectionFactory)
    status = "succeeded"
    started_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(minutes=5))
    finished_at = factory.LazyFunction(timezone.now)


class MapLocationFactory(LocationFactory):
    """A location with the map summaries the feeds keep (driver map tests set them directly)."""

    map_status = "available"
    status_updated_at = factory.LazyFunction(timezone.now)
    max_power_kw = 22.0
    connector_standards = ",IEC_62196_T2,"
    evse_count = 1
    available_evse_count = factory.LazyAttribute(lambda o: 1 if o.map_status == "available" else 0)


# --- charging (sessions, CDRs, commands) ---


class SessionFactory(factory.django.DjangoModelFactory):
    """A session at a partner's location, charged with one of our cards unless told otherwise."""

    class Meta:
        model = "charging.Session"

    party = factory.SubFactory(PartyFactory)
    ocpi_id = factory.Sequence(lambda n: f"SES{n}")
    card = factory.SubFactory(CardFactory)
    cdr_token = factory.LazyAttribute(
        lambda o: (
            {
                "country_code": o.card.issuer_party.country_code,
                "party_id": o.card.issuer_party.party_id,
                "uid": o.card.uid,
                "type": o.card.type,
                "contract_id": o.card.contract_id,
            }
            if o.card
            else {}
        )
    )
    start_date_time = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(minutes=30))
    kwh = 5
    auth_method = "COMMAND"
    location_ocpi_id = "LOC1"
    evse_uid = "EVSE1"
    connector_id = "1"
    currency = "EUR"
    status = "ACTIVE"
    last_updated = factory.LazyFunction(timezone.now)


class CdrFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "charging.CDR"

    party = factory.SubFactory(PartyFactory)
    ocpi_id = factory.Sequence(lambda n: f"CDR{n}")
    start_date_time = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(hours=2))
    end_date_time = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(hours=1))
    auth_method = "COMMAND"
    currency = "EUR"
    total_cost_excl_vat = 10
    total_cost_incl_vat = 12.1
    total_energy = 20
    total_time = 1
    last_updated = factory.LazyFunction(timezone.now)


class ForeignTokenFactory(factory.django.DjangoModelFactory):
    """A token another eMSP pushed to our CPO side (it may charge at our stations)."""

    class Meta:
        model = "cards.ForeignToken"

    party = factory.SubFactory(PartyFactory, role=Party.Role.EMSP)
    uid = factory.Sequence(lambda n: f"F{n:09X}")
    type = Card.Type.RFID
    contract_id = factory.Sequence(lambda n: f"NL-TNM-C{n:08d}")
    issuer = "TheNewMotion"
    valid = True
    whitelist = Card.Whitelist.ALLOWED
    data = factory.LazyAttribute(
        lambda o: {
            "country_code": o.party.country_code,
            "party_id": o.party.party_id,
            "uid": o.uid,
            "type": o.type,
            "contract_id": o.contract_id,
            "issuer": o.issuer,
            "valid": o.valid,
            "whitelist": o.whitelist,
            "last_updated": "2026-01-01T00:00:00Z",
        }
    )
    last_updated = factory.LazyFunction(timezone.now)
