"""REST API for our charge-point backend (our OCPP central system): what happens at our charge points.

`/api/v1/charge-point/...`, authenticated like `/api/v1/authorizations` (`Authorization: Bearer
<CARDS_BACKEND_API_TOKEN>`, or a staff session). Every call is idempotent and answered from the database alone
(partners are told through the outbox, after commit): see charging/backend.py and docs/cpo.md.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import authentication, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from cards.api import BackendTokenAuthentication, IsBackendOrStaff, StringField
from cards.models import Card
from charging import backend
from charging.models import CDR, Session
from mobilityplus.api_errors import error_responses

# The card types, named once in the schema (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
CARD_TYPES = tuple(Card.Type.values)
ERRORS = error_responses(400, 401, 403, 406, 415, 429)
SESSION_ERRORS = error_responses(400, 401, 403, 404, 406, 415, 429)


class SessionStartSerializer(serializers.Serializer):
    session_id = StringField(
        min_length=1, max_length=36, help_text="The backend's id of the session (transaction); the idempotency key."
    )
    location_id = StringField(min_length=1, max_length=36, help_text="OCPI id of our Location.")
    evse_uid = StringField(min_length=1, max_length=36, help_text="OCPI uid of our EVSE at that location.")
    connector_id = StringField(required=False, max_length=36, allow_blank=True)
    started_at = serializers.DateTimeField(help_text="When the charge point started the session (with offset).")
    authorization_reference = StringField(
        required=False,
        max_length=36,
        allow_blank=True,
        help_text="From /api/v1/authorizations or the remote start; names the driver when it was a remote start.",
    )
    token_uid = StringField(
        required=False, max_length=36, allow_blank=True, help_text="The card read (needed unless a remote start)."
    )
    token_type = serializers.ChoiceField(choices=CARD_TYPES, default=Card.Type.RFID)
    meter_id = StringField(required=False, max_length=255, allow_blank=True)


class MeterValueSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="When the charge point measured it.")
    kwh = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=0, coerce_to_string=False, help_text="Energy since the start (kWh)."
    )
    power_kw = serializers.DecimalField(
        max_digits=9, decimal_places=3, min_value=0, required=False, allow_null=True, coerce_to_string=False
    )


class SessionEndSerializer(serializers.Serializer):
    ended_at = serializers.DateTimeField()
    kwh = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=0, coerce_to_string=False, help_text="Final energy (kWh)."
    )


class SessionStateSerializer(serializers.Serializer):
    session_id = serializers.CharField()
    status = serializers.ChoiceField(choices=tuple(Session.Status.values))
    kwh = serializers.FloatField()
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    emsp = serializers.CharField(help_text="The party that issued the driver's token (CC*PID).")
    cdr_id = serializers.CharField(allow_null=True, help_text="Our CDR's id once the session ended.")


class EvseStatusSerializer(serializers.Serializer):
    location_id = StringField(min_length=1, max_length=36)
    evse_uid = StringField(min_length=1, max_length=36)
    status = serializers.ChoiceField(choices=backend.EVSE_STATUSES)
    at = serializers.DateTimeField(help_text="When the charge point reported it; an older report changes nothing.")


class EvseStateSerializer(serializers.Serializer):
    location_id = serializers.CharField()
    evse_uid = serializers.CharField()
    status = serializers.CharField()
    applied = serializers.BooleanField(help_text="False: a repeat or an older report than the EVSE's last change.")


def _state(session: Session) -> dict:
    cdr = None
    if session.status not in Session.LIVE_STATUSES:
        cdr = CDR.objects.filter(party=session.party, session=session, credit=False).values_list("ocpi_id", flat=True)
    return SessionStateSerializer(
        {
            "session_id": session.ocpi_id,
            "status": session.status,
            "kwh": float(session.kwh),
            "started_at": session.start_date_time,
            "ended_at": session.end_date_time,
            "emsp": session.emsp.ocpi_id if session.emsp else "",
            "cdr_id": cdr.first() if cdr is not None else None,
        }
    ).data


def _refused(error: backend.BackendRefused) -> ValidationError:
    return ValidationError({error.field: [error.message]})


class BackendView(APIView):
    authentication_classes = [BackendTokenAuthentication, authentication.SessionAuthentication]
    permission_classes = [IsBackendOrStaff]


class SessionStartView(BackendView):
    @extend_schema(
        request=SessionStartSerializer,
        examples=[
            OpenApiExample(
                "A card read at our EVSE",
                value={
                    "session_id": "TX-1001",
                    "location_id": "BE-GRAND-PLACE",
                    "evse_uid": "BE*MBP*E0001",
                    "started_at": "2026-12-04T18:00:00Z",
                    "token_uid": "04A1B2C3",
                    "token_type": "RFID",
                    "authorization_reference": "7f1c0a",
                },
                request_only=True,
            )
        ],
        responses={200: SessionStateSerializer, 201: SessionStateSerializer, **ERRORS},
    )
    def post(self, request):
        """A session started at one of our EVSEs (201; the same session_id again: 200, nothing changes)."""
        serializer = SessionStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            session, created = backend.start_session(**serializer.validated_data)
        except backend.BackendRefused as error:
            raise _refused(error) from error
        return Response(_state(session), status=201 if created else 200)


def _session_call(function, session_id: str, **data):
    try:
        return function(session_id, **data)  # each runs in its own transaction
    except backend.UnknownSession as error:
        raise NotFound(f"No session {session_id} at our stations.") from error
    except backend.BackendRefused as error:
        raise _refused(error) from error


class MeterValueView(BackendView):
    @extend_schema(request=MeterValueSerializer, responses={200: SessionStateSerializer, **SESSION_ERRORS})
    def post(self, request, session_id: str):
        """A meter value of a session (energy since its start); a repeat or an older value changes nothing."""
        serializer = MeterValueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        session = _session_call(backend.record_meter_value, session_id, **serializer.validated_data)
        return Response(_state(session))


class SessionEndView(BackendView):
    @extend_schema(request=SessionEndSerializer, responses={200: SessionStateSerializer, **SESSION_ERRORS})
    def post(self, request, session_id: str):
        """The session ended: its final state and CDR go to the driver's eMSP. Ending it again changes nothing."""
        serializer = SessionEndSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        session = _session_call(backend.end_session, session_id, **serializer.validated_data)
        return Response(_state(session))


class EvseStatusView(BackendView):
    @extend_schema(request=EvseStatusSerializer, responses={200: EvseStateSerializer, **ERRORS})
    def post(self, request):
        """An EVSE of ours changed status (sent on to every partner that takes our status)."""
        serializer = EvseStatusSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            evse, applied = backend.set_evse_status(data["location_id"], data["evse_uid"], data["status"], data["at"])
        except backend.BackendRefused as error:
            raise _refused(error) from error
        return Response(
            EvseStateSerializer(
                {"location_id": data["location_id"], "evse_uid": evse.uid, "status": evse.status, "applied": applied}
            ).data
        )
