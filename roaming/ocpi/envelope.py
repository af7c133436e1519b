"""The OCPI response envelope, status codes and DateTime handling."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

from django.http import JsonResponse
from django.utils import timezone

OCPI_VERSION = "2.2.1"

# Status codes (OCPI 2.2.1, transport and format, section "Status codes").
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
NOT_ENOUGH_INFORMATION = 2002
UNKNOWN_LOCATION = 2003
UNKNOWN_TOKEN = 2004
SERVER_ERROR = 3000
UNABLE_TO_USE_CLIENT_API = 3001
UNSUPPORTED_VERSION = 3002
NO_MATCHING_ENDPOINTS = 3003
HUB_UNKNOWN_RECEIVER = 4001


def http_status_for(status_code: int) -> int:
    """The HTTP status of an OCPI error when the raiser names none: client errors are 4xx, once for all modules."""
    if status_code in (UNKNOWN_LOCATION, UNKNOWN_TOKEN):
        return 404
    if CLIENT_ERROR <= status_code < SERVER_ERROR:
        return 400
    return 200


class OcpiError(Exception):
    """An error answered to a partner in the OCPI envelope (HTTP status from `http_status_for` unless given)."""

    def __init__(self, status_code: int, message: str, http_status: int | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.http_status = http_status_for(status_code) if http_status is None else http_status


def format_datetime(value: dt.datetime | None) -> str | None:
    """OCPI DateTime: RFC 3339 in UTC with a `Z`, no offset notation."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.year < 1000:  # strftime does not pad the year to four digits (partners do send year 1)
        text = f"{value.year:04d}{text[text.index('-') :]}"
    if value.microsecond:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$")


def parse_datetime(value: Any, field: str = "datetime") -> dt.datetime:
    """Parse an OCPI DateTime, with or without `Z` (zone-less means UTC), fractions allowed."""
    if not isinstance(value, str) or not _DATETIME.match(value.strip()):
        raise OcpiError(INVALID_PARAMETERS, f"{field}: not an OCPI DateTime: {value!r:.60}")
    try:
        return _parse_checked_datetime(value.strip())
    except (ValueError, OverflowError) as exc:
        # Matches the pattern but is no instant: month 13, 30 February, year 0, offset +25:00, or
        # year 1 with a positive offset (before the first representable instant in UTC).
        raise OcpiError(INVALID_PARAMETERS, f"{field}: not a valid date and time: {value!r:.60}") from exc


@functools.lru_cache(maxsize=4096)
def _parse_checked_datetime(text: str) -> dt.datetime:
    # Cached: a feed page repeats the same stamps on a location, its EVSEs and its connectors.
    if "." in text:  # Python accepts at most 6 fraction digits
        head, _, rest = text.partition(".")
        digits = re.match(r"\d+", rest).group(0)
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    text = text.replace("Z", "+00:00")
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def envelope(data: Any = None, status_code: int = SUCCESS, message: str | None = None) -> dict:
    body: dict[str, Any] = {"status_code": status_code}
    if data is not None:
        body["data"] = data
    body["status_message"] = message or ("Success" if status_code == SUCCESS else "Error")
    body["timestamp"] = format_datetime(timezone.now())
    return body


def ocpi_response(
    data: Any = None,
    status_code: int = SUCCESS,
    message: str | None = None,
    http_status: int = 200,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    response = JsonResponse(envelope(data, status_code, message), status=http_status, safe=False)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(error: OcpiError) -> JsonResponse:
    return ocpi_response(
        None, error.status_code, error.message, http_status=error.http_status, headers=getattr(error, "headers", None)
    )


def validation_message(errors: Any, prefix: str = "") -> str:
    """Flatten DRF-style serializer errors into 'field: message; other.field: message'."""
    parts: list[str] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(key, int):  # DRF keys a list's errors by index: charging_periods[0].dimensions[1]
                name = f"{prefix}[{key}]"
            if key == "non_field_errors":
                name = prefix or "body"
            parts.append(validation_message(value, name))
    elif isinstance(errors, list):
        if all(isinstance(item, str) for item in errors):
            parts.append(f"{prefix or 'body'}: {' '.join(str(e) for e in errors)}")
        else:
            for index, item in enumerate(errors):
                if item:
                    parts.append(validation_message(item, f"{prefix}[{index}]"))
    else:
        parts.append(f"{prefix or 'body'}: {errors}")
    return "; ".join(p for p in parts if p)


def validated(serializer_class, data: Any, **kwargs) -> dict:
    """Run a DRF serializer on partner input; invalid input becomes OCPI 2001 naming the fields."""
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise OcpiError(INVALID_PARAMETERS, validation_message(serializer.errors))
    return serializer.validated_data
