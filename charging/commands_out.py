"""Commands we send (eMSP role): a driver's "Start" / "Stop" press becomes ONE OCPI command to the CPO.

`request_start` / `request_stop` create one Command per press (idempotency key), `send_command` (run by a Celery
task) posts it to the CPO's commands endpoint, `record_command_result` takes the CPO's CommandResult on our unique
response_url, and `expire_overdue_commands` marks commands whose result never came as timed out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from urllib3.exceptions import NewConnectionError

from cards.models import Card, Driver
from cards.selectors import token_payload
from charging.models import Command, Session
from mobilityplus.task_queue import QUEUE_ERRORS
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url
from roaming.ocpi.envelope import validation_message
from roaming.selectors import party_ids_accepting_our_cards
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
        from charging.commands_in import send_to_charge_point  # the two directions call each other

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
        from charging.commands_in import report_charge_point_result

        for command in Command.objects.filter(
            direction=Command.Direction.INCOMING, status=Command.Status.SENT, deadline_at__lt=now
        ):
            report_charge_point_result(command, "TIMEOUT")
            count += 1
    return count
