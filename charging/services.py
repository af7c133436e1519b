"""Writes about sessions, CDRs and commands.

Remote commands, in both our roles:

* eMSP (a driver's button press): `request_start` / `request_stop` create ONE Command per press
  (idempotency key), `send_command` (run by a Celery task) posts it to the CPO's commands endpoint,
  `record_command_result` takes the CPO's CommandResult on our unique response_url, and
  `expire_overdue_commands` marks commands whose result never came as timed out.
* CPO (our own stations): `receive_partner_command` answers a partner's START_SESSION/STOP_SESSION
  and hands it to our charge-point backend through `send_to_charge_point`; the backend reports the
  outcome through `report_charge_point_result`, which posts the CommandResult to the partner.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from decimal import Decimal
from typing import Any

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from urllib3.exceptions import NewConnectionError

from cards.models import Card, Driver
from cards.selectors import token_payload
from charging.models import CDR, Command, Session
from mobilityplus.task_queue import QUEUE_ERRORS
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url
from roaming.ocpi.destinations import RefusedDestination, check_url, registered_hosts
from roaming.ocpi.envelope import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    UNKNOWN_LOCATION,
    OcpiError,
    validation_message,
)
from roaming.selectors import (
    agreement_covers,
    own_party,
    party_ids_accepting_our_cards,
)
from stations.models import EVSE, EvseStatus, Location

logger = logging.getLogger(__name__)


def _setting(name: str, default: float) -> float:
    """Tunables, read at call time so settings (and tests) can change them."""
    return getattr(settings, name, default)


def command_http_timeout() -> float:
    """How long we wait for a CPO's synchronous CommandResponse."""
    return float(_setting("CHARGING_COMMAND_HTTP_TIMEOUT_S", 10))


def command_connect_retries() -> int:
    """How often a connection that could not be made is tried again (nothing else is retried)."""
    return int(_setting("CHARGING_COMMAND_CONNECT_RETRIES", 2))


def command_retry_backoff() -> float:
    return float(_setting("CHARGING_COMMAND_RETRY_BACKOFF_S", 0.5))


def command_send_grace() -> int:
    """A command nobody managed to send within this time is failed (and can then never be sent)."""
    return int(_setting("CHARGING_COMMAND_SEND_GRACE_S", 120))


def charge_point_timeout() -> int:
    """The timeout we promise partners for our own charge points' CommandResult."""
    return int(_setting("CHARGING_CHARGE_POINT_TIMEOUT_S", 60))


# When a CPO's CommandResponse carries no usable timeout.
DEFAULT_RESULT_TIMEOUT_S = 120

RESULT_STATUS = {
    "ACCEPTED": Command.Status.ACCEPTED,
    "TIMEOUT": Command.Status.TIMED_OUT,
    "FAILED": Command.Status.FAILED,
}
EVSE_STATE_WORDS = {
    EvseStatus.OUTOFORDER: "out of order",
    EvseStatus.INOPERATIVE: "temporarily unavailable",
    EvseStatus.REMOVED: "removed",
    EvseStatus.PLANNED: "not in service yet",
}
UNUSABLE_EVSE = {EvseStatus.OUTOFORDER, EvseStatus.INOPERATIVE, EvseStatus.REMOVED, EvseStatus.PLANNED}


class CommandRefused(Exception):
    """A driver's request we cannot send (no active card, unknown EVSE, operator without commands...)."""


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 4)))


# --- Sessions and CDRs received from CPOs -------------------------------------------------------------------


def find_card(cdr_token: dict) -> Card | None:
    """Our card behind an OCPI CdrToken, when the token is ours."""
    me = own_party()
    if (cdr_token.get("country_code", "").upper(), cdr_token.get("party_id", "").upper()) != (
        me.country_code,
        me.party_id,
    ):
        return None
    return (
        Card.objects.filter(issuer_party=me, uid__iexact=cdr_token.get("uid", ""), type=cdr_token.get("type"))
        .select_related("driver")
        .first()
    )


def _place(party: Party, location_id: str, evse_uid: str) -> tuple[Location | None, EVSE | None]:
    location = Location.objects.filter(party=party, ocpi_id__iexact=location_id).first()
    evse = None
    if location is not None and evse_uid and evse_uid != "#NA":
        evse = EVSE.objects.filter(location=location, uid__iexact=evse_uid).first()
    return location, evse


def _apply_session_fields(session: Session, data: dict) -> None:
    simple = {
        "start_date_time": "start_date_time",
        "end_date_time": "end_date_time",
        "auth_method": "auth_method",
        "currency": "currency",
        "status": "status",
        "last_updated": "last_updated",
        "location_id": "location_ocpi_id",
        "evse_uid": "evse_uid",
        "connector_id": "connector_id",
    }
    for key, attr in simple.items():
        if key in data:
            setattr(session, attr, data[key])
    for key in ("authorization_reference", "meter_id"):
        if key in data:
            setattr(session, key, data[key] or "")
    if "kwh" in data:
        session.kwh = _money(data["kwh"])
    if "cdr_token" in data:
        session.cdr_token = dict(data["cdr_token"])
        session.card = find_card(session.cdr_token)
    if "total_cost" in data:
        cost = data["total_cost"] or {}
        session.total_cost_excl_vat = _money(cost.get("excl_vat"))
        session.total_cost_incl_vat = _money(cost.get("incl_vat"))
    if "location_id" in data or "evse_uid" in data:
        session.location, session.evse = _place(session.party, session.location_ocpi_id, session.evse_uid)


def _refuse_reopening(session: Session, new_status: str | None) -> None:
    if session.status == Session.Status.COMPLETED and new_status not in (None, Session.Status.COMPLETED):
        raise OcpiError(INVALID_PARAMETERS, f"status: session {session.ocpi_id} is COMPLETED, which is final")


def _link_command(session: Session) -> None:
    """A session started by one of our commands: tie it to the command (by authorization_reference)."""
    if session.authorization_reference:
        Command.objects.filter(
            _authorization_reference_q(session.authorization_reference), partner=session.party, session__isnull=True
        ).update(session=session)


def _authorization_reference_q(reference: str) -> Q:
    return Q(request_payload__authorization_reference=reference)


@transaction.atomic
def put_session(party: Party, session_id: str, data: dict, raw: dict) -> tuple[Session, bool]:
    """Store a whole Session (OCPI PUT). Older than what we hold: ignored. Returns (session, created)."""
    session = Session.objects.select_for_update().filter(party=party, ocpi_id__iexact=session_id).first()
    created = session is None
    if session is None:
        session = Session(party=party, ocpi_id=session_id)
    elif data["last_updated"] < session.last_updated:
        return session, False  # a late duplicate: what we hold is newer
    else:
        _refuse_reopening(session, data["status"])
    # PUT replaces everything: fields the partner left out go back to their defaults.
    session.end_date_time = None
    session.authorization_reference = session.meter_id = ""
    session.charging_periods = list(data.get("charging_periods") and raw.get("charging_periods") or [])
    session.total_cost_excl_vat = session.total_cost_incl_vat = None
    _apply_session_fields(session, data)
    session.raw = raw
    if created:
        try:
            with transaction.atomic():
                session.save()
        except IntegrityError:  # a concurrent PUT created it first: apply ours on top
            return put_session(party, session_id, data, raw)
    else:
        session.save()
    if created:
        # A CDR may have come first (pushes cross on the wire): it now has its session.
        CDR.objects.filter(party=party, session__isnull=True, session_ocpi_id__iexact=session_id).update(
            session=session, unknown_session=False
        )
    _end_if_billed(session)
    _link_command(session)
    return session, created


def _end_if_billed(session: Session) -> None:
    """A live session that already has its final CDR is over, whatever status the CPO's push still carried.

    Same rule as a CDR arriving for a live session (see store_cdr), for the other order: the CDR first, then
    a PUT still saying ACTIVE or PENDING. Otherwise the driver sees "Charging" and a Stop button next to a
    final bill. Credit CDRs do not count: they correct a bill, they do not end a session.
    """
    if session.status not in Session.LIVE_STATUSES:
        return
    final = session.cdrs.filter(credit=False).order_by("-end_date_time").first()
    if final is None:
        return
    session.status = Session.Status.COMPLETED
    session.end_date_time = session.end_date_time or final.end_date_time
    session.save(update_fields=["status", "end_date_time", "updated_at"])


@transaction.atomic
def patch_session(party: Party, session_id: str, data: dict, raw: dict) -> Session:
    """Apply a Session PATCH: given fields replace, `charging_periods` are appended (duplicates skipped)."""
    session = Session.objects.select_for_update().filter(party=party, ocpi_id__iexact=session_id).first()
    if session is None:
        raise OcpiError(CLIENT_ERROR, f"Unknown session {session_id}: PUT it first", http_status=404)
    if data["last_updated"] < session.last_updated:
        return session  # stale: already superseded
    for key in ("id", "country_code", "party_id"):
        if key in data and str(data[key]).upper() != str(_url_value(session, key)).upper():
            raise OcpiError(INVALID_PARAMETERS, f"{key}: {data[key]!r} does not match the URL")
    _refuse_reopening(session, data.get("status"))
    periods = [p for p in raw.get("charging_periods") or [] if p not in session.charging_periods]
    fields = {k: v for k, v in data.items() if k != "charging_periods"}
    _apply_session_fields(session, fields)
    session.charging_periods = [*session.charging_periods, *periods]
    merged = {**session.raw, **{k: v for k, v in raw.items() if k != "charging_periods"}}
    merged["charging_periods"] = session.charging_periods
    session.raw = merged
    session.save()
    _link_command(session)
    return session


def _url_value(session: Session, key: str) -> str:
    return {"id": session.ocpi_id, "country_code": session.party.country_code, "party_id": session.party.party_id}[key]


@transaction.atomic
def store_cdr(party: Party, data: dict, raw: dict) -> tuple[CDR, bool]:
    """Store a CDR (OCPI POST). Never dropped: unknown session or token only flags it. Duplicates: the first stays."""
    existing = CDR.objects.filter(party=party, ocpi_id__iexact=data["id"]).first()
    if existing is not None:
        return existing, False
    location_data = data["cdr_location"]
    session = None
    if data.get("session_id"):
        session = Session.objects.filter(party=party, ocpi_id__iexact=data["session_id"]).first()
    card = find_card(data["cdr_token"])
    location, evse = _place(party, location_data["id"], location_data["evse_uid"])
    credited = None
    if data.get("credit") and data.get("credit_reference_id"):
        credited = CDR.objects.filter(party=party, ocpi_id__iexact=data["credit_reference_id"]).first()
    cost = data["total_cost"]
    cdr = CDR(
        party=party,
        ocpi_id=data["id"],
        session_ocpi_id=data.get("session_id") or "",
        session=session,
        start_date_time=data["start_date_time"],
        end_date_time=data["end_date_time"],
        cdr_token=dict(data["cdr_token"]),
        card=card,
        auth_method=data["auth_method"],
        authorization_reference=data.get("authorization_reference") or "",
        cdr_location=raw.get("cdr_location") or {},
        location=location,
        evse=evse,
        currency=data["currency"],
        total_cost_excl_vat=_money(cost["excl_vat"]),
        total_cost_incl_vat=_money(cost.get("incl_vat")),
        total_energy=_money(data["total_energy"]),
        total_time=_money(data["total_time"]),
        total_parking_time=_money(data.get("total_parking_time")),
        credit=bool(data.get("credit")),
        credit_reference_id=data.get("credit_reference_id") or "",
        credited_cdr=credited,
        remark=data.get("remark") or "",
        last_updated=data["last_updated"],
        raw=raw,
        unknown_session=session is None,
        unknown_token=card is None,
    )
    try:
        with transaction.atomic():
            cdr.save()
    except IntegrityError:  # the same CDR pushed twice at once
        return CDR.objects.get(party=party, ocpi_id=data["id"]), False
    if session is not None and session.status in Session.LIVE_STATUSES:
        # The CDR is the final word: the session is over even if its COMPLETED push never reached us.
        Session.objects.filter(pk=session.pk).update(
            status=Session.Status.COMPLETED, end_date_time=session.end_date_time or cdr.end_date_time
        )
    from tariffs.billing_check import check_stored_cdr  # tariffs recomputes the total ("price differs")

    check_stored_cdr(cdr)
    if cdr.flagged:
        logger.warning("CDR %s stored with flags: unknown session=%s token=%s", cdr, cdr.unknown_session, card is None)
    return cdr, True


# --- Commands we send (eMSP) ----------------------------------------------------------------------------------


def response_url(command: Command) -> str:
    return f"{settings.OCPI_BASE_URL}/ocpi/emsp/2.2.1/commands/{command.type}/{command.uid}"


def active_cards(driver: Driver):
    today = timezone.localdate()
    return (
        Card.objects.filter(driver=driver, status=Card.Status.ACTIVE)
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gte=today))
        .filter(Q(valid_from__isnull=True) | Q(valid_from__lte=today))
        .select_related("issuer_party")
        .order_by("visual_number", "pk")
    )


def commands_url(party: Party) -> str | None:
    """The CPO's commands RECEIVER endpoint, or None when it has none (our own stations need none)."""
    connection = PartnerConnection.objects.select_related("via_hub").filter(party=party).first()
    if connection is None or connection.status != PartnerConnection.Status.CONNECTED:
        return None
    return connection.endpoint_url("commands", "RECEIVER")


def check_startable(location: Location, evse: EVSE) -> None:
    """Raise CommandRefused when a driver cannot start at this EVSE from the app."""
    if location.party_id not in party_ids_accepting_our_cards():
        raise CommandRefused("This operator does not accept MobilityPlus cards.")
    if evse.status in UNUSABLE_EVSE:
        raise CommandRefused(f"This charge point is {EVSE_STATE_WORDS.get(evse.status, evse.status.lower())}.")
    if not location.party.is_self and commands_url(location.party) is None:
        raise CommandRefused("This operator does not support starting a session from the app.")


NOT_QUEUED_TEXT = "We could not pass your request on just now, so nothing was started. Please try again in a minute."


class CommandNotQueued(CommandRefused):
    """The command was created but could not be queued: it is marked failed, nothing reached the operator."""


def _enqueue_send(command: Command) -> None:
    from charging.tasks import send_command as send_task

    def queue() -> None:
        try:
            send_task.delay(command.pk)
        except QUEUE_ERRORS as error:
            # Fail at once rather than leave a pending command nobody will send (publishing gives up within
            # about CELERY_PUBLISH_TIMEOUT_S): the driver reads it and may press again.
            logger.error("Command %s could not be queued: %s", command.pk, error)
            _finish(command, Command.Status.FAILED, error=f"Could not be queued: {error}"[:500])
            raise CommandNotQueued(NOT_QUEUED_TEXT) from error

    transaction.on_commit(queue)


def _create_once(idempotency_key: str, **fields: Any) -> tuple[Command, bool]:
    """The command for this button press: created the first time, found again on a repeated press."""
    try:
        with transaction.atomic():
            command = Command.objects.create(idempotency_key=idempotency_key, **fields)
    except IntegrityError:
        return Command.objects.get(idempotency_key=idempotency_key), False
    _enqueue_send(command)
    return command, True


def request_start(
    driver: Driver, card: Card, location: Location, evse: EVSE, *, idempotency_key: str
) -> tuple[Command, bool]:
    """A driver's "Start charging": one START_SESSION command, sent by a task. Returns (command, created)."""
    existing = Command.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing, False
    if card.driver_id != driver.pk or not active_cards(driver).filter(pk=card.pk).exists():
        raise CommandRefused("Choose one of your active cards.")
    check_startable(location, evse)
    return _create_once(
        idempotency_key,
        type=Command.Type.START_SESSION,
        partner=location.party,
        driver=driver,
        card=card,
        location=location,
        evse=evse,
    )


def request_stop(driver: Driver, session: Session, *, idempotency_key: str) -> tuple[Command, bool]:
    """A driver's "Stop charging": one STOP_SESSION command for their live session."""
    existing = Command.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing, False
    if session.card is None or session.card.driver_id != driver.pk:
        raise CommandRefused("This is not your session.")
    if session.status not in Session.LIVE_STATUSES:
        raise CommandRefused("This session has already ended.")
    if not session.party.is_self and commands_url(session.party) is None:
        raise CommandRefused("This operator does not support stopping a session from the app.")
    return _create_once(
        idempotency_key,
        type=Command.Type.STOP_SESSION,
        partner=session.party,
        driver=driver,
        card=session.card,
        location=session.location,
        evse=session.evse,
        session=session,
    )


def command_body(command: Command) -> dict:
    """The OCPI StartSession / StopSession object for one of our commands."""
    if command.type == Command.Type.STOP_SESSION:
        return {"response_url": response_url(command), "session_id": command.session.ocpi_id}
    body = {
        "response_url": response_url(command),
        "token": token_payload(command.card),
        "location_id": command.location.ocpi_id,
        "evse_uid": command.evse.uid,
        # Lets us tie the CPO's Session (which carries it back) to this command.
        "authorization_reference": command.uid.hex,
    }
    connectors = list(command.evse.connectors.values_list("connector_id", flat=True))
    if "START_SESSION_CONNECTOR_REQUIRED" in (command.evse.capabilities or []) and connectors:
        body["connector_id"] = connectors[0]
    return body


def _not_delivered(error: OcpiClientError) -> bool:
    """A transport error where the request certainly never reached the CPO, so resending cannot act twice.

    Only a connection that was never made qualifies: refused or not established (urllib3's NewConnectionError,
    which requests wraps in a ConnectionError around a MaxRetryError) or a connect timeout. requests raises the
    same ConnectionError class when the CPO closes the connection after reading our request ("Connection
    aborted", RemoteDisconnected); the CPO may have acted on that request, so it is not resent.
    """
    cause = error.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if not isinstance(cause, requests.ConnectionError) or not cause.args:
        return False
    reason = cause.args[0]
    reason = getattr(reason, "reason", reason)  # MaxRetryError carries the underlying error as .reason
    return isinstance(reason, NewConnectionError)


def _finish(command: Command, status: str, *, only_from: tuple = (Command.Status.PENDING,), **fields: Any) -> bool:
    """Move a command to a status, unless something (a result, the expiry) got there first."""
    updated = Command.objects.filter(pk=command.pk, status__in=only_from).update(status=status, **fields)
    return bool(updated)


def send_command(command_id: int) -> Command:
    """Send one of our commands to its CPO, once: connections never made are retried, nothing else is."""
    claimed = Command.objects.filter(
        pk=command_id, status=Command.Status.PENDING, send_started_at__isnull=True, direction=Command.Direction.OUTGOING
    ).update(send_started_at=timezone.now())
    command = Command.objects.select_related("partner", "card__issuer_party", "location", "evse", "session").get(
        pk=command_id
    )
    if not claimed:
        return command  # already sent (or given up): one press, one command
    if command.partner.is_self:
        command.request_payload = command_body(command)
        command.save(update_fields=["request_payload"])
        _apply_response(command, send_to_charge_point(command))
        return Command.objects.get(pk=command_id)
    url = commands_url(command.partner)
    if url is None:
        _finish(command, Command.Status.FAILED, error="The operator has no commands endpoint.")
        return Command.objects.get(pk=command_id)
    body = command_body(command)
    command.request_payload = body
    command.save(update_fields=["request_payload"])
    connection = PartnerConnection.objects.select_related("party", "via_hub").get(party=command.partner)
    client = OcpiClient.for_connection(connection, timeout=command_http_timeout(), retries=0)
    attempt = 0
    while True:
        attempt += 1
        Command.objects.filter(pk=command.pk).update(attempts=attempt)
        try:
            reply = client.post(join_url(url, command.type), body)
            break
        except OcpiClientError as error:
            if error.kind == "transport" and _not_delivered(error) and attempt <= command_connect_retries():
                time.sleep(command_retry_backoff() * 2 ** (attempt - 1))
                continue
            refused = error.kind == "status" or (error.kind == "http" and (error.http_status or 0) < 500)
            status = Command.Status.REJECTED if refused else Command.Status.FAILED
            # Anything but a connection never made (or a URL we refused to call) may have reached the CPO:
            # the driver is told it may still act.
            never_sent = error.refused or (error.kind == "transport" and _not_delivered(error))
            maybe_delivered = not refused and not never_sent
            logger.warning("Command %s to %s: %s", command.uid, command.partner, error)
            _finish(
                command,
                status,
                error=str(error)[:2000],
                maybe_delivered=maybe_delivered,
                responded_at=timezone.now(),
            )
            return Command.objects.get(pk=command_id)
    from charging.serializers import CommandResponseSerializer

    serializer = CommandResponseSerializer(data=reply.data if isinstance(reply.data, dict) else {})
    if not serializer.is_valid():
        _finish(
            command,
            Command.Status.FAILED,
            error=f"Unusable CommandResponse: {validation_message(serializer.errors)}",
            maybe_delivered=True,  # the CPO got it; whatever it meant, it may act on it
            responded_at=timezone.now(),
        )
        return Command.objects.get(pk=command_id)
    _apply_response(command, serializer.validated_data)
    return Command.objects.get(pk=command_id)


def _apply_response(command: Command, response: dict) -> None:
    """Record a CommandResponse: ACCEPTED waits for the result until the CPO's timeout, anything else is final."""
    now = timezone.now()
    timeout = response.get("timeout") or DEFAULT_RESULT_TIMEOUT_S
    fields = {
        "response_result": response["result"],
        "response_message": list(response.get("message") or []),
        "timeout_seconds": response.get("timeout"),
        "responded_at": now,
    }
    if response["result"] == "ACCEPTED":
        # A fast CPO may have posted the result already: then the status stays as the result set it.
        if not _finish(command, Command.Status.SENT, deadline_at=now + dt.timedelta(seconds=timeout), **fields):
            Command.objects.filter(pk=command.pk).update(**fields)
    else:
        _finish(command, Command.Status.REJECTED, **fields)


def record_command_result(command: Command, result: dict) -> Command:
    """The CPO's CommandResult on our response_url. A late one (after we gave up) still tells the truth."""
    status = RESULT_STATUS.get(result["result"], Command.Status.REJECTED)
    fields = {
        "result": result["result"],
        "result_message": list(result.get("message") or []),
        "result_at": timezone.now(),
    }
    if not _finish(
        command,
        status,
        # A result on the unique response_url proves the CPO got the command: it overrides our own guesses
        # (timed out, or failed when its answer was lost on the way), never the CPO's own REJECTED.
        only_from=(Command.Status.PENDING, Command.Status.SENT, Command.Status.TIMED_OUT, Command.Status.FAILED),
        **fields,
    ):
        Command.objects.filter(pk=command.pk).update(**fields)  # final already: keep the status, record the answer
    command.refresh_from_db()
    return command


def expire_overdue_commands(*, now: dt.datetime | None = None, driver: Driver | None = None) -> int:
    """Time out commands whose result never came, and fail those nobody could send. Returns how many."""
    now = now or timezone.now()
    commands = Command.objects.all()
    if driver is not None:
        commands = commands.filter(driver=driver)
    count = commands.filter(
        direction=Command.Direction.OUTGOING, status=Command.Status.SENT, deadline_at__lt=now
    ).update(status=Command.Status.TIMED_OUT)
    count += commands.filter(
        direction=Command.Direction.OUTGOING,
        status=Command.Status.PENDING,
        created_at__lt=now - dt.timedelta(seconds=command_send_grace()),
    ).update(status=Command.Status.FAILED, error="The command could not be sent in time.")
    # Our own charge points that never answered: tell the partner TIMEOUT, as the spec expects of a CPO.
    if driver is None:
        for command in Command.objects.filter(
            direction=Command.Direction.INCOMING, status=Command.Status.SENT, deadline_at__lt=now
        ):
            report_charge_point_result(command, "TIMEOUT")
            count += 1
    return count


# --- Commands partners send to our own stations (CPO) ---------------------------------------------------------


def _command_response(result: str, message: str | None = None, timeout: int | None = None) -> dict:
    response: dict[str, Any] = {"result": result, "timeout": charge_point_timeout() if timeout is None else timeout}
    if message:
        response["message"] = [{"language": "en", "text": message}]
    return response


def check_response_url(connection: PartnerConnection, url: str) -> None:
    """Refuse at once (OCPI 2001) a response_url we would not post the result to, before anything is stored.

    What can be told without DNS: an http(s) URL, no user information, no private IP written in it, on one
    of the hosts registered for the connection carrying the call (a hub's for its clients). A host name
    resolving to a private address is refused when the result is posted (see post_command_result).
    """
    try:
        check_url(url, registered_hosts(connection.transport))
    except RefusedDestination as error:
        raise OcpiError(INVALID_PARAMETERS, f"response_url: refused: {error}") from error


def receive_partner_command(party: Party, command_type: str, data: dict, raw: dict) -> dict:
    """A partner's START_SESSION / STOP_SESSION for our stations: the CommandResponse to answer."""
    key = hashlib.sha256(f"in:{party.pk}:{command_type}:{data['response_url']}".encode()).hexdigest()
    existing = Command.objects.filter(idempotency_key=key).first()
    if existing is not None:  # the same command again: same answer, not handed over twice
        return _command_response(existing.response_result or "ACCEPTED", timeout=existing.timeout_seconds or 0)
    me = own_party()
    fields: dict[str, Any] = {
        "type": command_type,
        "direction": Command.Direction.INCOMING,
        "partner": party,
        "response_url": data["response_url"],
        "request_payload": raw,
        "idempotency_key": key,
    }
    if command_type == Command.Type.START_SESSION:
        token = data["token"]
        if (token["country_code"].upper(), token["party_id"].upper()) != (party.country_code, party.party_id):
            return _command_response("REJECTED", "An eMSP may only use its own tokens.")
        if not agreement_covers(party, our_cards=False):
            return _command_response("REJECTED", "No roaming agreement covers your cards at our stations.")
        location = Location.objects.filter(party=me, ocpi_id__iexact=data["location_id"]).first()
        if location is None:
            raise OcpiError(UNKNOWN_LOCATION, f"location_id: unknown location {data['location_id']}")
        evse = None
        if data.get("evse_uid"):
            evse = EVSE.objects.filter(location=location, uid__iexact=data["evse_uid"]).first()
            if evse is None:
                raise OcpiError(UNKNOWN_LOCATION, f"evse_uid: unknown EVSE {data['evse_uid']}")
        fields.update(location=location, evse=evse)
    else:
        session = Session.objects.filter(party=me, ocpi_id__iexact=data["session_id"]).first()
        token = (session.cdr_token or {}) if session else {}
        ours = (token.get("country_code", "").upper(), token.get("party_id", "").upper()) == (
            party.country_code,
            party.party_id,
        )
        if session is None or not ours or session.status not in Session.LIVE_STATUSES:
            return _command_response("UNKNOWN_SESSION", f"No live session {data['session_id']} of yours.")
        fields.update(session=session, location=session.location, evse=session.evse)
    try:
        with transaction.atomic():
            command = Command.objects.create(**fields)
    except IntegrityError:
        existing = Command.objects.get(idempotency_key=key)
        return _command_response(existing.response_result or "ACCEPTED", timeout=existing.timeout_seconds or 0)
    response = send_to_charge_point(command)
    _apply_response(command, response)
    return response


def send_to_charge_point(command: Command) -> dict:
    """Hand a START_SESSION / STOP_SESSION to our charge-point backend; returns the OCPI CommandResponse.

    This is the ONE place where commands for our own stations leave the roaming platform. The backend
    (our OCPP central system) takes commands in status `sent` (see `charging.selectors.charge_point_commands`)
    and, once the charge point has answered, calls `report_charge_point_result(command, result)`.
    An EVSE we know to be unusable is refused here without bothering the charge point.
    """
    evse = command.evse
    if evse is not None and evse.status in UNUSABLE_EVSE:
        return _command_response("REJECTED", f"EVSE {evse.uid} is {evse.status}.")
    logger.info("Command %s %s handed to the charge-point backend", command.type, command.uid)
    return _command_response("ACCEPTED")


def report_charge_point_result(command: Command, result: str, message: str | None = None) -> Command:
    """Our charge-point backend's outcome of a command: recorded, and posted to the partner's response_url."""
    if result not in Command.RESULT_VALUES:
        raise ValueError(f"not an OCPI CommandResult: {result}")
    payload: dict[str, Any] = {"result": result}
    if message:
        payload["message"] = [{"language": "en", "text": message}]
    command = record_command_result(command, payload)
    if command.direction == Command.Direction.INCOMING and command.response_url:
        transaction.on_commit(lambda: _queue_result_post(command))
    return command


def _queue_result_post(command: Command) -> None:
    """Queue the post of a result; with the broker down it stays unreported and `repost_command_results` sends it."""
    from charging.tasks import post_command_result

    try:
        post_command_result.delay(command.pk)
    except QUEUE_ERRORS as error:
        logger.error("Result of command %s not queued (sent later): %s", command.pk, error)


def post_command_result(command_id: int) -> bool:
    """POST a CommandResult to the partner's response_url (connection failures retried). Returns success."""
    command = Command.objects.select_related("partner").get(pk=command_id)
    if command.result_reported_at is not None:
        return True
    connection = PartnerConnection.objects.select_related("party", "via_hub").filter(party=command.partner).first()
    if connection is None:
        logger.warning("Command %s: no connection to %s to report the result", command.uid, command.partner)
        return False
    body: dict[str, Any] = {"result": command.result}
    if command.result_message:
        body["message"] = command.result_message
    client = OcpiClient.for_connection(connection, timeout=command_http_timeout(), retries=0)
    for attempt in range(1, command_connect_retries() + 2):
        try:
            client.post(command.response_url, body)
        except OcpiClientError as error:
            if error.kind == "transport" and _not_delivered(error) and attempt <= command_connect_retries():
                time.sleep(command_retry_backoff() * 2 ** (attempt - 1))
                continue
            Command.objects.filter(pk=command.pk).update(error=f"Reporting the result failed: {error}"[:2000])
            return False
        Command.objects.filter(pk=command.pk).update(result_reported_at=timezone.now())
        return True
    return False  # pragma: no cover
