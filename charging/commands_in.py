"""Commands partners send to our own stations (CPO role): START_SESSION / STOP_SESSION.

`receive_partner_command` answers the partner's CommandResponse and hands the command to our charge-point backend
(charging/backend.py); the backend's outcome goes through `report_charge_point_result`, which posts the
CommandResult to the partner's response_url.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from charging.commands_out import (
    UNUSABLE_EVSE,
    _apply_response,
    _not_delivered,
    charge_point_timeout,
    command_connect_retries,
    command_http_timeout,
    command_retry_backoff,
    record_command_result,
)
from charging.models import Command, Session
from mobilityplus.task_queue import QUEUE_ERRORS
from roaming.models import PartnerConnection, Party
from roaming.ocpi.client import OcpiClient, OcpiClientError
from roaming.ocpi.destinations import RefusedDestination, check_url, registered_hosts
from roaming.ocpi.envelope import INVALID_PARAMETERS, UNKNOWN_LOCATION, OcpiError
from roaming.selectors import agreement_covers, own_party
from stations.models import EVSE, Location

logger = logging.getLogger(__name__)


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

    This is the ONE place where commands for our own stations leave the roaming platform. An EVSE we know to be
    unusable is refused here without bothering the charge point. Otherwise the command is ACCEPTED and, after
    commit, the task `charging.send_to_charge_point` posts it to our central system (CHARGE_POINT_BACKEND_URL;
    never on a partner's request path), whose answer becomes the CommandResult (`deliver_to_charge_point`).
    Without that setting the command waits for the backend to report through `report_charge_point_result`.
    """
    from charging.backend import backend_url

    evse = command.evse
    if evse is not None and evse.status in UNUSABLE_EVSE:
        return _command_response("REJECTED", f"EVSE {evse.uid} is {evse.status}.")
    if backend_url():
        transaction.on_commit(lambda: _queue_charge_point_call(command))
    else:
        logger.info("Command %s %s waits for the charge-point backend (no URL set)", command.type, command.uid)
    return _command_response("ACCEPTED")


def _queue_charge_point_call(command: Command) -> None:
    from charging.tasks import send_to_charge_point as task

    try:
        task.delay(command.pk)
    except QUEUE_ERRORS as error:  # never sent, so never acted on: the partner is told at once
        logger.error("Command %s not queued for the charge point: %s", command.pk, error)
        report_charge_point_result(command, "FAILED", "Our charge point could not be reached.")


def deliver_to_charge_point(command_id: int) -> Command:
    """Post one command to our central system, once: its answer (the charge point's) is the CommandResult.

    Only a connection never made is tried again; a request that may have reached the central system (timeout,
    5xx, garbage) is never resent: the command stays waiting, a session starting with its reference accepts it,
    and the expiry reports TIMEOUT otherwise.
    """
    from charging.backend import BackendUnclear, BackendUnreachable, call_central_system

    claimed = Command.objects.filter(pk=command_id, attempts=0).update(attempts=1)
    command = Command.objects.select_related("partner", "location", "evse", "session").get(pk=command_id)
    if not claimed:
        return command
    try:
        answer = call_central_system(command)
    except BackendUnreachable as error:
        Command.objects.filter(pk=command.pk).update(error=f"Central system unreachable: {error}"[:2000])
        return report_charge_point_result(command, "FAILED", "Our charge point could not be reached.")
    except BackendUnclear as error:
        logger.warning("Command %s: no usable answer from the central system: %s", command.uid, error)
        Command.objects.filter(pk=command.pk).update(error=str(error)[:2000], maybe_delivered=True)
        return command
    message = answer.get("message")
    return report_charge_point_result(command, answer["result"], str(message)[:255] if message else None)


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
