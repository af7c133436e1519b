"""The REST API's (/api/v1) error answers: DRF's own JSON shapes, documented once for every operation.

Every refusal is JSON: `{"detail": "..."}` for a refusal of the whole request (401, 403, 404, 406, 415, 429),
`{"<parameter or field>": ["...", ...]}` for bad input (400; a body that is not parseable answers
`{"detail": "..."}` with 400 too). Unknown paths under /api/ answer the same JSON 404 as an unknown station.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponsePermanentRedirect
from django.urls import resolve
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

DETAIL_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What was refused, in words."}},
    "required": ["detail"],
}
BAD_INPUT_SCHEMA = {
    "type": "object",
    "description": "Each bad parameter or field with its messages; `detail` alone when the body cannot be parsed.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}

ERROR_RESPONSES = {
    400: OpenApiResponse(
        BAD_INPUT_SCHEMA,
        description="Bad input: every bad parameter or field is named.",
        examples=[
            OpenApiExample("Bad parameter", value={"zoom": ["Ensure this value is less than or equal to 22."]}),
            OpenApiExample("Unparseable body", value={"detail": "JSON parse error - Expecting value"}),
        ],
    ),
    401: OpenApiResponse(
        DETAIL_SCHEMA,
        description="No credentials, or the bearer token is wrong (see the WWW-Authenticate header).",
        examples=[OpenApiExample("No credentials", value={"detail": "Authentication credentials were not provided."})],
    ),
    403: OpenApiResponse(
        DETAIL_SCHEMA,
        description="Authenticated but not allowed (a driver's session; a staff session without its CSRF token).",
        examples=[OpenApiExample("Not allowed", value={"detail": "You do not have permission to perform this action."})],
    ),
    404: OpenApiResponse(
        DETAIL_SCHEMA,
        description="No such resource.",
        examples=[OpenApiExample("Unknown", value={"detail": "Not found."})],
    ),
    406: OpenApiResponse(
        DETAIL_SCHEMA,
        description="The Accept header excludes JSON.",
        examples=[OpenApiExample("Not acceptable", value={"detail": "Could not satisfy the request Accept header."})],
    ),
    415: OpenApiResponse(
        DETAIL_SCHEMA,
        description="The body is not JSON, form-urlencoded or multipart.",
        examples=[OpenApiExample("Unsupported", value={"detail": 'Unsupported media type "text/plain" in request.'})],
    ),
    429: OpenApiResponse(
        DETAIL_SCHEMA,
        description="Too many requests (failed authentications): wait for the Retry-After header's seconds.",
        examples=[OpenApiExample("Throttled", value={"detail": "Request was throttled. Expected available in 60 seconds."})],
    ),
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented refusals of one operation, for `@extend_schema(responses={200: ..., **error_responses(...)})`."""
    return {code: ERROR_RESPONSES[code] for code in codes}


@extend_schema(exclude=True)
class UnknownApiPath(APIView):
    """Anything under /api/ that no API view answers: a JSON 404, whatever the method (never Django's HTML page)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        raise NotFound()

    def dispatch(self, request, *args, **kwargs):
        # This view answers every path under /api/, so CommonMiddleware's APPEND_SLASH never sees an unknown
        # one: keep its redirect for the pages that do exist with a slash (/api/schema -> /api/schema/).
        if settings.APPEND_SLASH and request.method in ("GET", "HEAD") and not request.path_info.endswith("/"):
            match = resolve(request.path_info + "/")
            if getattr(match.func, "view_class", None) is not UnknownApiPath:
                return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
        return super().dispatch(request, *args, **kwargs)
