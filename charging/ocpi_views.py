"""OCPI receivers: sessions and CDRs (eMSP), our response_url for CommandResults, commands for our stations (CPO);
senders: sessions and CDRs of our stations (CPO), each eMSP seeing only its own drivers'."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from charging import selectors, services
from charging.models import CDR, Command, Session
from charging.serializers import (
    CdrSerializer,
    CommandResultSerializer,
    SessionSerializer,
    StartSessionSerializer,
    StopSessionSerializer,
)
from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from roaming.ocpi.envelope import CLIENT_ERROR, INVALID_PARAMETERS, OcpiError, ocpi_response, validated
from roaming.ocpi.input import match_identity
from roaming.ocpi.ownership import check_owner, may_touch
from roaming.ocpi.pagination import paginated_response

OTHER_COMMANDS = {"CANCEL_RESERVATION", "RESERVE_NOW", "UNLOCK_CONNECTOR"}


def _json_object(ctx: PartnerContext) -> dict:
    body = ctx.json()
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "body: must be a JSON object")
    return body


@ocpi_endpoint("sessions", methods=("GET", "PUT", "PATCH"))
def session_receiver(ctx: PartnerContext, country_code: str, party_id: str, session_id: str):
    """GET, PUT and PATCH of one Session; who may: roaming.ocpi.ownership."""
    owner = check_owner(ctx, country_code, party_id)
    if ctx.request.method == "GET":
        session = owner.sessions.filter(ocpi_id__iexact=session_id).select_related("party").first()
        if session is None:
            raise OcpiError(CLIENT_ERROR, f"Unknown session {session_id}", http_status=404)
        return selectors.session_ocpi(session)
    body = _json_object(ctx)
    # The URL names the session (and the stored one was found by it): a body may not move it elsewhere.
    identity = {"country_code": country_code, "party_id": party_id, "id": session_id}
    if ctx.request.method == "PUT":
        data = validated(SessionSerializer, body)
        match_identity(data, identity)
        _, created = services.put_session(owner, session_id, data, body)
        return ocpi_response(None, http_status=201 if created else 200)
    data = validated(SessionSerializer, body, partial=True)
    match_identity(data, identity)
    services.patch_session(owner, session_id, data, body)
    return None


@ocpi_endpoint("cdrs", methods=("POST",))
def cdr_receiver(ctx: PartnerContext):
    """POST of a final CDR: stored (flagged if it matches nothing of ours), answered with its Location."""
    body = _json_object(ctx)
    data = validated(CdrSerializer, body)
    owner = check_owner(ctx, data["country_code"], data["party_id"])
    cdr, created = services.store_cdr(owner, data, body)
    location = f"{settings.OCPI_BASE_URL}/ocpi/emsp/2.2.1/cdrs/{cdr.pk}"
    return ocpi_response(None, http_status=201 if created else 200, headers={"Location": location})


@ocpi_endpoint("cdrs", methods=("GET",))
def cdr_detail(ctx: PartnerContext, cdr_pk: int):
    """GET of a CDR we stored, for the party that posted it."""
    cdr = CDR.objects.filter(pk=cdr_pk).select_related("party").first()
    # Found by our own key: another party's CDR answers as an unknown one, so nobody learns which exist.
    if cdr is None or not may_touch(ctx, cdr.party):
        raise OcpiError(CLIENT_ERROR, f"Unknown CDR {cdr_pk}", http_status=404)
    return cdr.raw


@ocpi_endpoint("commands", methods=("POST",))
def command_result_receiver(ctx: PartnerContext, command: str, command_uid):
    """Our unique response_url: the CommandResult of one command, accepted only from the CPO we sent it to."""
    target = Command.objects.filter(uid=command_uid, type=command, direction=Command.Direction.OUTGOING).first()
    if target is None:
        raise OcpiError(CLIENT_ERROR, f"Unknown command {command}/{command_uid}", http_status=404)
    if not may_touch(ctx, target.partner):
        # The same answer as for an unknown command: nobody learns which commands exist.
        raise OcpiError(CLIENT_ERROR, f"Unknown command {command}/{command_uid}", http_status=404)
    data = validated(CommandResultSerializer, _json_object(ctx))
    with transaction.atomic():
        services.record_command_result(target, data)
    return None


@ocpi_endpoint("commands", methods=("POST",))
def command_receiver(ctx: PartnerContext, command: str):
    """Commands partners send to our own stations; answered with a CommandResponse."""
    if command in OTHER_COMMANDS:
        return {"result": "NOT_SUPPORTED", "timeout": 0}
    serializers = {"START_SESSION": StartSessionSerializer, "STOP_SESSION": StopSessionSerializer}
    if command not in serializers:
        raise OcpiError(INVALID_PARAMETERS, f"command: unknown command {command!r}", http_status=404)
    body = _json_object(ctx)
    data = validated(serializers[command], body)
    services.check_response_url(ctx.connection, data["response_url"])
    return services.receive_partner_command(ctx.party, command, data, body)


@ocpi_endpoint("sessions")
def session_sender(ctx: PartnerContext):
    """GET list of the sessions at our stations charged with the calling eMSP's tokens (paginated, date_from/to)."""
    sessions = Session.objects.filter(party__is_self=True, emsp=ctx.party).select_related("party")
    return paginated_response(ctx.request, sessions, lambda page: [selectors.session_ocpi(s) for s in page])


@ocpi_endpoint("cdrs")
def cdr_sender(ctx: PartnerContext):
    """GET list of our CDRs for the calling eMSP's tokens, credits included (paginated, date_from/to)."""
    cdrs = CDR.objects.filter(party__is_self=True, emsp=ctx.party).only("pk", "last_updated", "raw")
    return paginated_response(ctx.request, cdrs, lambda page: [c.raw for c in page])
