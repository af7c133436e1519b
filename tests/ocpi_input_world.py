"""Shared by the bad-input tests: partners with stored objects to attack, spec examples, and a snapshot
of every row an OCPI call could change (to prove a refusal changed nothing)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from cards.models import ForeignToken
from charging.models import CDR, Command, Session
from roaming.models import PartnerConnection, Party
from roaming.ocpi import credentials
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from stations.models import EVSE, Connector, Location
from tariffs.models import Tariff
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)

EXAMPLES = Path("/work/shared/ocpi/examples")
PARTNER_COUNTRY, PARTNER_PARTY = "BE", "BEC"  # as in the spec's location and CDR examples
PARTNER_TOKEN = "bad-input-partner"  # noqa: S105
HUB_TOKEN = "bad-input-hub"  # noqa: S105
REGISTRATION_TOKEN = "bad-input-registration"  # noqa: S105
# Handshakes call the partner back here: nothing listens, so a valid body fails fast with 3001.
UNREACHABLE_VERSIONS_URL = "http://127.0.0.1:9/ocpi/versions"

# Bookkeeping that a call may touch without changing what the partner stored: contact time, handshake log.
VOLATILE = {"last_contact_at", "updated_at", "last_error", "last_error_at", "handshake_log", "received_at"}
SNAPSHOT_MODELS = (Party, PartnerConnection, Location, EVSE, Connector, Session, CDR, ForeignToken, Command, Tariff)


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


def snapshot() -> dict[str, list[dict]]:
    """Every stored value of the tables OCPI calls write (bookkeeping columns left out)."""
    return {
        model.__name__: [
            {k: v for k, v in row.items() if k not in VOLATILE} for row in model.objects.order_by("pk").values()
        ]
        for model in SNAPSHOT_MODELS
    }


@dataclass
class World:
    partner: Party  # BE*BEC, CPO and eMSP: pushes locations, sessions, CDRs and tokens, sends commands
    hub: Party
    registering: Party
    location: Location
    command: Command  # one of ours to the partner, awaiting its CommandResult

    @staticmethod
    def headers(token: str = PARTNER_TOKEN) -> dict[str, str]:
        return {"Authorization": authorization_header(token), "Content-Type": "application/json"}


def build_world() -> World:
    partner = PartyFactory(
        country_code=PARTNER_COUNTRY, party_id=PARTNER_PARTY, role=Party.Role.CPO_EMSP, name="Bad Input Co"
    )
    PartnerConnectionFactory(party=partner, tokens__from_them=PARTNER_TOKEN)
    RoamingAgreementFactory(partner=partner)
    hub = PartyFactory(country_code="DE", party_id="HBJ", role=Party.Role.HUB)
    PartnerConnectionFactory(party=hub, tokens__from_them=HUB_TOKEN)
    registering = PartyFactory(country_code="NL", party_id="EXA", role=Party.Role.CPO)
    PartnerConnection.objects.create(
        party=registering,
        status=PartnerConnection.Status.PLANNED,
        registration_token_hash=credentials.hash_token(REGISTRATION_TOKEN),
    )
    CardFactory(uid="123ABC")
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT", raw={})
    evse = EVSEFactory(location=location, uid="MBP-GENT-1")
    ConnectorFactory(evse=evse, connector_id="1")
    command = Command.objects.create(type=Command.Type.START_SESSION, partner=partner, status=Command.Status.ACCEPTED)
    return World(partner=partner, hub=hub, registering=registering, location=location, command=command)


def as_partner(body: dict, **changes: Any) -> dict:
    """A spec example rewritten to belong to our test partner (BE*BEC)."""
    body = copy.deepcopy(body)
    body.update(country_code=PARTNER_COUNTRY, party_id=PARTNER_PARTY, **changes)
    return body


def our_cdr_token() -> dict:
    return {
        "country_code": settings.OCPI_COUNTRY_CODE,
        "party_id": settings.OCPI_PARTY_ID,
        "uid": "123abc",
        "type": "RFID",
        "contract_id": "BE-MBP-C12345678-X",
    }
