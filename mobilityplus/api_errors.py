"""The REST API's (/api/v1) error answers: DRF's own JSON shapes, documented once for every operation.

Every refusal is JSON: `{"detail": "..."}` for a refusal of the whole request (401, 403, 404, 406, 415, 429),
`{"<parameter or field>": ["...", ...]}` for bad input (400; a body that is not parseable answers
`{"detail": "..."}` with 400 too). Unknown paths under /api/ answer the same JSON 404 as an unknown station.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponsePermanentRedirect
from django.urls import resolve
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

DETAIL_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What was refused, in words."}},
    "required": ["detail"],
}
BAD_INPUT_SCHEMA = {
    "type": "object",
    "description": "Each bad parameter or field with its messages; `detail` alone for a request that cannot be parsed.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


def refusal(description: str, detail: str) -> OpenApiResponse:
    """A `{"detail": ...}` answer, with DRF's own words as its example."""
    return OpenApiResponse(
        DETAIL_SCHEMA, description=description, examples=[OpenApiExample("DRF", value={"detail": detail})]
    )


ERROR_RESPONSES = {
    400: OpenApiResponse(
        BAD_INPUT_SCHEMA,
        description="Bad input: every bad parameter or field is named.",
        examples=[
            OpenApiExample("Bad parameter", value={"zoom": ["Ensure this value is less than or equal to 22."]}),
            OpenApiExample("Unparseable body", value={"detail": "JSON parse error - Expecting value"}),
        ],
    ),
    401: refusal(
        "No credentials, or the bearer token is wrong (the WWW-Authenticate header names the scheme).",
        "Authentication credentials were not provided.",
    ),
    403: refusal(
        "Authenticated but not allowed (a driver's session; a staff session without its CSRF token).",
        "You do not have permission to perform this action.",
    ),
    404: refusal("No such resource.", "Not found."),
    406: refusal("The Accept header excludes JSON.", "Could not satisfy the request Accept header."),
    415: refusal(
        "The body is not JSON, form-urlencoded or multipart.", 'Unsupported media type "text/plain" in request.'
    ),
    429: refusal(
        "Too many requests (failed authentications): wait for the Retry-After header's seconds.",
        "Request was throttled. Expected available in 60 seconds.",
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


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus Django's "suspicious" input refusals (too many parameters or fields, body too
    large for a form) as a DRF 400 instead of Django's HTML "Bad Request" page."""
    if isinstance(exc, SuspiciousOperation):
        exc = ParseError(suspicious_input_text(exc))
    return exception_handler(exc, context)


def suspicious_input_text(exc: SuspiciousOperation) -> str:
    if isinstance(exc, TooManyFieldsSent):
        return f"Too many query parameters or form fields (at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})."
    if isinstance(exc, TooManyFilesSent):
        return f"Too many files in the form (at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES})."
    if isinstance(exc, RequestDataTooBig):
        return f"The form is too large (at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)."
    return "Malformed request."
