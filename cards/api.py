"""REST API of the cards app: `POST /api/v1/authorizations` for our own charge-point backend.

Authentication: the backend sends `Authorization: Bearer <CARDS_BACKEND_API_TOKEN>` (a secret from the
environment); staff may also call it with their session (for trying it from the browsable API).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import authentication, exceptions, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from cards.authorization import authorize_at_station, card_directory
from cards.models import Card
from mobilityplus.api_errors import error_responses
from roaming.ocpi.throttle import BACKEND_BEARER_AUTH

BACKEND = "charge-point-backend"


class BackendTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` compared in constant time with CARDS_BACKEND_API_TOKEN."""

    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        # An address that sent too many wrong tokens is refused before its token is compared (right or wrong).
        retry_after = BACKEND_BEARER_AUTH.blocked_for(request)
        expected = settings.CARDS_BACKEND_API_TOKEN
        if retry_after is None and (not expected or not hmac.compare_digest(token.strip().encode(), expected.encode())):
            retry_after = BACKEND_BEARER_AUTH.note_failure(request)
            if retry_after is None:
                raise exceptions.AuthenticationFailed("Invalid service token.")
        if retry_after is not None:
            raise exceptions.Throttled(wait=retry_after, detail="Too many failed authentications from your address.")
        return AnonymousUser(), BACKEND

    def authenticate_header(self, request) -> str:
        return "Bearer"


class IsBackendOrStaff(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return request.auth == BACKEND or bool(request.user and request.user.is_staff)


class StringField(serializers.CharField):
    """A string and only a string: DRF's CharField would take the JSON number 4 for the UID "04"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class AuthorizationRequestSerializer(serializers.Serializer):
    uid = StringField(min_length=1, max_length=64, help_text="The card UID as the charge point read it.")
    type = serializers.ChoiceField(choices=tuple(Card.Type.values), default=Card.Type.RFID)
    location_id = StringField(min_length=1, max_length=36, help_text="OCPI id of our Location.")
    evse_uid = StringField(min_length=1, max_length=36, help_text="OCPI uid of our EVSE at that location.")

    def validate(self, data: dict) -> dict:
        if not card_directory.has_our_evse(data["location_id"], data["evse_uid"]):
            raise serializers.ValidationError({"evse_uid": f"No EVSE {data['evse_uid']!r} at our location."})
        return data


class AuthorizationResultSerializer(serializers.Serializer):
    allowed = serializers.CharField(help_text="ALLOWED, BLOCKED, EXPIRED, NO_CREDIT or NOT_ALLOWED")
    may_charge = serializers.BooleanField()
    path = serializers.CharField(help_text="local, cache, realtime, fallback, unknown or agreement")
    reason = serializers.CharField()
    issuer = serializers.CharField()
    authorization_reference = serializers.CharField(allow_blank=True)
    token = serializers.DictField(allow_null=True)
    elapsed_ms = serializers.FloatField()


class AuthorizationView(APIView):
    authentication_classes = [BackendTokenAuthentication, authentication.SessionAuthentication]
    permission_classes = [IsBackendOrStaff]

    @extend_schema(
        request=AuthorizationRequestSerializer,
        examples=[
            OpenApiExample(
                "A card read at our EVSE",
                value={"uid": "04A1B2C3", "type": "RFID", "location_id": "BE-GRAND-PLACE", "evse_uid": "BE*MBP*E0001"},
                request_only=True,
            )
        ],
        # 429: failed backend authentications are rate limited (documented before the limit is enforced).
        responses={200: AuthorizationResultSerializer, **error_responses(400, 401, 403, 406, 415, 429)},
    )
    def post(self, request):
        """Decide whether a card may charge at one of our EVSEs; always answers within 2 seconds."""
        serializer = AuthorizationRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        decision = authorize_at_station(data["uid"], data["type"], data["location_id"], data["evse_uid"])
        return Response(
            AuthorizationResultSerializer(
                {
                    "allowed": decision.allowed,
                    "may_charge": decision.may_charge,
                    "path": decision.path,
                    "reason": decision.reason,
                    "issuer": decision.issuer,
                    "authorization_reference": decision.authorization_reference,
                    "token": decision.token,
                    "elapsed_ms": decision.elapsed_ms,
                }
            ).data
        )


class BackendTokenScheme(OpenApiAuthenticationExtension):
    target_class = "cards.api.BackendTokenAuthentication"
    name = "backendToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "CARDS_BACKEND_API_TOKEN"}
