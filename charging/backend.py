"""Our charge-point backend (our OCPP central system) and the platform, both ways (docs/cpo.md).

In: the backend tells us what happens at our charge points (`/api/v1/charge-point/...`, charging/backend_api.py):
a session started, meter values, a session ended, an EVSE's status. Each call is idempotent (the backend retries:
a session is keyed by the backend's own session id, a meter value by its time) and ordered by its timestamps
(an older meter value or status arriving after a newer one changes nothing). Nothing is called from the request
path: what partners must learn is written to the outbox in the same transaction (charging/cpo_delivery.py).

Out: `send_to_charge_point` posts a START_SESSION / STOP_SESSION to the central system
(CHARGE_POINT_BACKEND_URL + "/commands"), with an explicit timeout and the never-twice rule of our commands: only a
connection that was never made is tried again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from cards.identifiers import lookup_uid
from cards.models import Card, ForeignToken
from cards.selectors import foreign_token_for
from charging import cpo_delivery
from charging.commands_out import command_connect_retries, command_retry_backoff
from charging.models import AuthMethod, Command, MeterSample, Session
from roaming.models import Party
from roaming.selectors import own_party
from stations.models import EVSE, EvseStatus, Location

logger = logging.getLogger(__name__)


class BackendRefused(Exception):
    """A backend call we cannot act on: `field` names the part of the request at fault (a 400 naming it)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class UnknownSession(Exception):
    """No session with this id at our stations (a 404)."""


@dataclass(frozen=True)
class Driver:
    """Who charges: the OCPI CdrToken, our card (when ours) and the issuing party."""

    cdr_token: dict
    issuer: Party
    card: Card | None
    auth_method: str
    authorization_reference: str
    command: Command | None = None


def _cdr_token(country_code: str, party_id: str, uid: str, token_type: str, contract_id: str) -> dict:
    return {
        "country_code": country_code,
        "party_id": party_id,
        "uid": uid,
        "type": token_type,
        "contract_id": contract_id,
    }


def _card_driver(card: Card, auth_method: str, reference: str, command: Command | None = None) -> Driver:
    token = _cdr_token(
        card.issuer_party.country_code, card.issuer_party.party_id, card.uid, card.type, card.contract_id
    )
    return Driver(token, card.issuer_party, card, auth_method, reference, command)


def _foreign_driver(token: ForeignToken, auth_method: str, reference: str) -> Driver:
    cdr_token = _cdr_token(token.party.country_code, token.party.party_id, token.uid, token.type, token.contract_id)
    return Driver(cdr_token, token.party, None, auth_method, reference)


def _command_driver(reference: str) -> Driver | None:
    """The driver of a remote START_SESSION carrying this authorization_reference (ours or a partner's)."""
    matches = Q(request_payload__authorization_reference=reference)
    # A partner's StartSession without a reference: we gave the central system the command's uid instead.
    with contextlib.suppress(ValueError):
        matches |= Q(uid=uuid.UUID(hex=reference))
    command = (
        Command.objects.select_related("partner", "card__issuer_party")
        .filter(matches, type=Command.Type.START_SESSION, location__party__is_self=True)
        .order_by("-created_at")
        .first()
    )
    if command is None:
        return None
    if command.direction == Command.Direction.OUTGOING and command.card is not None:
        return _card_driver(command.card, AuthMethod.COMMAND, reference, command)
    token = command.request_payload.get("token") or {}
    cdr_token = _cdr_token(
        str(token.get("country_code", command.partner.country_code)).upper(),
        str(token.get("party_id", command.partner.party_id)).upper(),
        str(token.get("uid", "")),
        str(token.get("type", "APP_USER")),
        str(token.get("contract_id", token.get("uid", ""))),
    )
    return Driver(cdr_token, command.partner, None, AuthMethod.COMMAND, reference, command)


def resolve_driver(*, authorization_reference: str, token_uid: str, token_type: str) -> Driver:
    """Who started the session: the remote command with that reference, else the card or foreign token read."""
    if authorization_reference:
        found = _command_driver(authorization_reference)
        if found is not None:
            return found
    if not token_uid:
        raise BackendRefused(
            "token_uid", "Needed unless authorization_reference names a remote start: no command has that reference."
        )
    auth_method = AuthMethod.AUTH_REQUEST if authorization_reference else AuthMethod.WHITELIST
    me = own_party()
    card = (
        Card.objects.select_related("issuer_party")
        .filter(issuer_party=me, uid=lookup_uid(token_uid, token_type), type=token_type)
        .first()
    )
    if card is not None:
        return _card_driver(card, auth_method, authorization_reference)
    token = foreign_token_for(token_uid, token_type)
    if token is None:
        raise BackendRefused("token_uid", f"Unknown token {token_uid!r} ({token_type}): authorize it first.")
    return _foreign_driver(token, auth_method, authorization_reference)


def _our_evse(location_id: str, evse_uid: str) -> tuple[Location, EVSE]:
    location = Location.objects.filter(party=own_party(), ocpi_id__iexact=location_id).first()
    if location is None:
        raise BackendRefused("location_id", f"No location {location_id!r} of ours.")
    evse = EVSE.objects.filter(location=location, uid__iexact=evse_uid).first()
    if evse is None:
        raise BackendRefused("evse_uid", f"No EVSE {evse_uid!r} at {location_id}.")
    return location, evse


def start_session(
    *,
    session_id: str,
    location_id: str,
    evse_uid: str,
    started_at: dt.datetime,
    connector_id: str = "",
    authorization_reference: str = "",
    token_uid: str = "",
    token_type: str = Card.Type.RFID,
    meter_id: str = "",
) -> tuple[Session, bool]:
    """A session started at one of our EVSEs. The same session id again changes nothing. Returns (session, created)."""
    me = own_party()
    existing = Session.objects.filter(party=me, ocpi_id=session_id).first()
    if existing is not None:
        return existing, False
    location, evse = _our_evse(location_id, evse_uid)
    connectors = list(evse.connectors.values_list("connector_id", flat=True))
    if connector_id and connectors and connector_id not in connectors:
        raise BackendRefused("connector_id", f"No connector {connector_id!r} on EVSE {evse_uid}.")
    driver = resolve_driver(authorization_reference=authorization_reference, token_uid=token_uid, token_type=token_type)
    session = Session(
        party=me,
        ocpi_id=session_id,
        start_date_time=started_at,
        kwh=Decimal(0),
        cdr_token=driver.cdr_token,
        card=driver.card,
        emsp=driver.issuer,
        auth_method=driver.auth_method,
        authorization_reference=driver.authorization_reference,
        location_ocpi_id=location.ocpi_id,
        evse_uid=evse.uid,
        connector_id=connector_id or (connectors[0] if connectors else "1"),
        location=location,
        evse=evse,
        meter_id=meter_id,
        currency=getattr(settings, "CPO_CURRENCY", "EUR"),
        status=Session.Status.ACTIVE,
        last_updated=timezone.now(),
        period_started_at=started_at,
    )
    try:
        with transaction.atomic():
            session.save()
            if driver.command is not None:
                _command_started(driver.command, session)
            cpo_delivery.push_session_started(session)
    except IntegrityError:  # the backend's retry raced its first call
        return Session.objects.get(party=me, ocpi_id=session_id), False
    return session, True


def _command_started(command: Command, session: Session) -> None:
    """The remote start became a session: tie them, and the command succeeded if nobody said otherwise yet."""
    Command.objects.filter(pk=command.pk).update(session=session)
    if command.status in (Command.Status.PENDING, Command.Status.SENT):
        from charging.commands_in import report_charge_point_result

        report_charge_point_result(command, "ACCEPTED")


def _locked_session(session_id: str) -> Session:
    session = (
        Session.objects.select_for_update(of=("self",))
        .select_related("party", "emsp")
        .filter(party=own_party(), ocpi_id=session_id)
        .first()
    )
    if session is None:
        raise UnknownSession(session_id)
    return session


@transaction.atomic
def record_meter_value(session_id: str, *, at: dt.datetime, kwh: Decimal, power_kw: Decimal | None = None) -> Session:
    """A meter value (energy since the start). Kept once per time; an older value never moves the session back."""
    session = _locked_session(session_id)
    if at < session.start_date_time:
        raise BackendRefused("at", "Before the session started.")
    if session.status not in Session.LIVE_STATUSES:
        return session  # after the end: the session and its CDR stay as they are
    # Kept once per time (a retry of the same value inserts nothing); a retry of the newest value is not newer.
    MeterSample.objects.bulk_create(
        [MeterSample(session=session, at=at, kwh=kwh, power_kw=power_kw)], ignore_conflicts=True
    )
    if session.metered_at is not None and at <= session.metered_at:
        return session  # a retry, or a late value (kept for pricing): the session does not go back
    session.kwh = max(kwh, session.kwh)  # a meter never runs backwards
    session.metered_at = at
    session.last_updated = timezone.now()
    session.save(update_fields=["kwh", "metered_at", "last_updated", "updated_at"])
    cpo_delivery.push_session_update(session)
    return session


@transaction.atomic
def end_session(session_id: str, *, ended_at: dt.datetime, kwh: Decimal) -> Session:
    """The session ended: final state to the eMSP, then its CDR. Ending it again changes nothing."""
    session = _locked_session(session_id)
    if session.status not in Session.LIVE_STATUSES:
        return session
    if ended_at < session.start_date_time:
        raise BackendRefused("ended_at", "Before the session started.")
    session.kwh = max(kwh, session.kwh)
    session.end_date_time = ended_at
    session.metered_at = max(ended_at, session.metered_at or ended_at)
    session.status = Session.Status.COMPLETED
    session.last_updated = timezone.now()
    cpo_delivery.close_period(session, ended_at)
    cost = cpo_delivery.apply_cost(session)
    session.save()
    cpo_delivery.push_session_update(session, final=True)
    cpo_delivery.issue_cdr(session, cost=cost)
    return session


def set_evse_status(location_id: str, evse_uid: str, status: str, at: dt.datetime) -> tuple[EVSE, bool]:
    """An EVSE of ours changed status at `at`: history, map and every partner (stations.services), unless it is a
    repeat or older than the EVSE's last change. Returns (evse, applied)."""
    from stations.services import record_our_evse_status

    _, evse = _our_evse(location_id, evse_uid)
    applied = record_our_evse_status(evse, status, at)
    return evse, applied


EVSE_STATUSES = tuple(EvseStatus.values)


# --- Commands to the central system ---------------------------------------------------------------------------


def backend_url() -> str:
    return (getattr(settings, "CHARGE_POINT_BACKEND_URL", "") or "").rstrip("/")


def backend_timeout() -> float:
    return float(getattr(settings, "CHARGE_POINT_BACKEND_TIMEOUT_S", 5))


def command_for_backend(command: Command) -> dict[str, Any]:
    """What the central system is asked to do (the charge point's own words come back as the result)."""
    body: dict[str, Any] = {"command_id": str(command.uid), "type": command.type}
    if command.type == Command.Type.START_SESSION:
        payload = command.request_payload or {}
        body.update(
            location_id=command.location.ocpi_id,
            evse_uid=command.evse.uid if command.evse else payload.get("evse_uid"),
            connector_id=payload.get("connector_id"),
            token=payload.get("token"),
            # Passed back with "session started", which ties the session to this command.
            authorization_reference=payload.get("authorization_reference") or command.uid.hex,
        )
    else:
        body["session_id"] = command.session.ocpi_id if command.session else None
    return {k: v for k, v in body.items() if v is not None}


class BackendUnreachable(Exception):
    """The central system could not be reached: the command certainly never reached it."""


class BackendUnclear(Exception):
    """The command may have reached the central system, but no usable answer came back: it is not resent."""


def _connection_never_made(error: requests.RequestException) -> bool:
    if isinstance(error, requests.ConnectTimeout):
        return True
    if not isinstance(error, requests.ConnectionError) or not error.args:
        return False
    from urllib3.exceptions import NewConnectionError

    reason = error.args[0]
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, NewConnectionError)


def call_central_system(command: Command) -> dict:
    """POST the command to the central system; its answer {"result", "message"?}. Raises BackendUnreachable/Unclear.

    Idempotency-Key is the command's uid, so a central system seeing it twice can tell; we still never resend
    a request that may have reached it.
    """
    url = f"{backend_url()}/commands"
    headers = {"Idempotency-Key": str(command.uid), "Content-Type": "application/json"}
    token = getattr(settings, "CHARGE_POINT_BACKEND_TOKEN", "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = command_for_backend(command)
    attempt = 0
    while True:
        attempt += 1
        try:
            response = requests.post(url, json=body, headers=headers, timeout=backend_timeout(), allow_redirects=False)
            break
        except requests.RequestException as error:
            if _connection_never_made(error):
                if attempt <= command_connect_retries():
                    time.sleep(command_retry_backoff() * 2 ** (attempt - 1))
                    continue
                raise BackendUnreachable(str(error)) from error
            raise BackendUnclear(str(error)) from error
    try:
        data = response.json()
    except ValueError:
        data = None
    if 400 <= response.status_code < 500 and not (isinstance(data, dict) and data.get("result")):
        # Refused before acting (unknown charge point, bad request): the charge point was not asked.
        return {"result": "REJECTED", "message": f"The central system refused: HTTP {response.status_code}"}
    if response.status_code >= 300 or not isinstance(data, dict) or data.get("result") not in Command.RESULT_VALUES:
        raise BackendUnclear(f"HTTP {response.status_code}: {response.text[:200]}")
    return data
