"""REST API of the cards app: `POST /api/v1/authorizations` for our own charge-point backend.

Authentication: the backend sends `Authorization: Bearer <CARDS_BACKEND_API_TOKEN>` (a secret from the
environment); staff may also call it with their session (for trying it from the browsable API).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, exceptions, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from cards.authorization import authorize_at_station
from cards.models import Card
from roaming.ocpi.throttle import BACKEND_BEARER_AUTH
from roaming.selectors import own_party
from stations.models import EVSE

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


class AuthorizationRequestSerializer(serializers.Serializer):
    uid = serializers.CharField(max_length=64, help_text="The card UID as the charge point read it.")
    type = serializers.ChoiceField(choices=tuple(Card.Type.values), default=Card.Type.RFID)
    location_id = serializers.CharField(max_length=36, help_text="OCPI id of our Location.")
    evse_uid = serializers.CharField(max_length=36, help_text="OCPI uid of our EVSE at that location.")

    def validate(self, data: dict) -> dict:
        ours = EVSE.objects.filter(
            location__party=own_party(), location__ocpi_id__iexact=data["location_id"], uid__iexact=data["evse_uid"]
        )
        if not ours.exists():
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

    @extend_schema(request=AuthorizationRequestSerializer, responses=AuthorizationResultSerializer)
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
