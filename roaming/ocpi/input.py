"""Partner input on the OCPI wire, checked in one place before any module sees it.

Every OCPI view goes through `ocpi_endpoint`, which calls `check_request` (URL segments and query
parameters) and reads bodies through `read_json`. What passes here is safe to hand to the database:
no NUL characters or lone surrogates in any string or key, only finite numbers, nesting of at most
`MAX_JSON_DEPTH`, a body within Django's upload limit. Field-level rules (dates, ranges, lengths) live
in the OCPI fields of `roaming.ocpi.fields`, used by every module's serializers; identity fields are
compared with the URL or the stored object by `match_identity`. Every refusal is an `OcpiError`
(2001 naming the field, HTTP 4xx) and is raised before anything is written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.utils import timezone

from roaming.ocpi.envelope import INVALID_PARAMETERS, OcpiError

# OCPI objects nest about eight levels (Tariff > elements > price_components / restrictions); hubs add a few.
MAX_JSON_DEPTH = 32
# CiString(36) is the longest identifier OCPI puts in a URL (CDR ids of 39 are never in our URLs).
MAX_URL_SEGMENT = 36
# A query parameter is a short value (offset, limit, a DateTime, a cursor, a token type).
MAX_QUERY_VALUE = 512
# offset and limit end up in SQL OFFSET/LIMIT (bigint); a partner never needs more than an int32.
MAX_PAGE_NUMBER = 2**31 - 1

# NUL cannot be stored in PostgreSQL text or jsonb; a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class InvalidInput(ValueError):
    """Partner input a domain rule refuses (a Location field, a token identifier...); the message names the field.

    Modules subclass it for their own checks; `ocpi_endpoint` answers it with 2001 (HTTP 400), in one place.
    """


def max_clock_skew() -> dt.timedelta:
    """How far in the future a partner's timestamp may be (its clock may run a little ahead of ours)."""
    return dt.timedelta(seconds=getattr(settings, "OCPI_MAX_CLOCK_SKEW_SECONDS", 300))


_future_limit: list[Any] = [0.0, None]  # [monotonic time to recompute at, latest acceptable timestamp]


def future_limit() -> dt.datetime:
    """now + the allowed skew, recomputed at most once a second: a feed page checks millions of stamps."""
    now = time.monotonic()
    if now >= _future_limit[0]:
        _future_limit[:] = [now + 1.0, timezone.now() + max_clock_skew()]
    return _future_limit[1]


def check_not_future(value: dt.datetime, field: str) -> dt.datetime:
    """Refuse a timestamp beyond now + the allowed skew: stored, it would make every later update look stale."""
    if value > future_limit():
        raise OcpiError(INVALID_PARAMETERS, f"{field}: in the future ({value.isoformat()})")
    return value


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    return "contains a NUL character" if found.group() == "\x00" else "contains a lone surrogate (not Unicode text)"


def check_text(value: str, field: str) -> str:
    problem = text_problem(value)
    if problem:
        raise OcpiError(INVALID_PARAMETERS, f"{field}: {problem}")
    return value


def _nan(_constant: str) -> float:
    # NaN, Infinity and -Infinity are not JSON; parsed as NaN so the walk below names the field.
    return math.nan


def read_json(request: HttpRequest, *, required: bool = True) -> Any:
    """The request body as checked JSON; None when empty and not required.

    Too large: HTTP 413; not JSON, nested too deep, NUL, lone surrogates, NaN or an infinite number:
    HTTP 400 with OCPI 2001 naming where.
    """
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise OcpiError(
            INVALID_PARAMETERS, f"body: larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", http_status=413
        ) from exc
    if not raw.strip():
        if required:
            raise OcpiError(INVALID_PARAMETERS, "body: a JSON body is required", http_status=400)
        return None
    try:
        body = json.loads(raw, parse_constant=_nan)
    except RecursionError as exc:
        raise OcpiError(INVALID_PARAMETERS, f"body: nested deeper than {MAX_JSON_DEPTH} levels", 400) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise OcpiError(INVALID_PARAMETERS, f"body: invalid JSON ({str(exc)[:200]})", http_status=400) from exc
    check_json(body)
    return body


def check_json(value: Any) -> None:
    """Walk a parsed JSON document (without recursion) and refuse what cannot be stored, naming its path."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: {problem}", http_status=400)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: not a finite number", http_status=400)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                message = f"{path or 'body'}: nested deeper than {MAX_JSON_DEPTH} levels"
                raise OcpiError(INVALID_PARAMETERS, message, http_status=400)
            if isinstance(item, dict):
                for key, child in item.items():
                    problem = text_problem(key)
                    if problem:
                        raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: a key {problem}", http_status=400)
                    stack.append((child, f"{path}.{key}" if path else key, depth + 1))
            else:
                stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))


def check_request(request: HttpRequest, url_values: Mapping[str, Any]) -> None:
    """URL segments and query parameters: storable text of a sane length (2001 naming the parameter)."""
    for name, value in url_values.items():
        if isinstance(value, str):
            check_text(value, name)
            if len(value) > MAX_URL_SEGMENT:
                raise OcpiError(INVALID_PARAMETERS, f"{name}: longer than {MAX_URL_SEGMENT} characters")
    for name, values in request.GET.lists():
        check_text(name, "query")
        for value in values:
            check_text(value, name)
            if len(value) > MAX_QUERY_VALUE:
                raise OcpiError(INVALID_PARAMETERS, f"{name}: longer than {MAX_QUERY_VALUE} characters")


def page_number(raw: str | None, name: str, default: int) -> int:
    """offset / limit: a non-negative integer that fits the database (2001 naming it otherwise)."""
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise OcpiError(INVALID_PARAMETERS, f"{name}: not an integer: {raw[:40]!r}") from exc
    if value < 0:
        raise OcpiError(INVALID_PARAMETERS, f"{name}: must not be negative")
    if value > MAX_PAGE_NUMBER:
        raise OcpiError(INVALID_PARAMETERS, f"{name}: larger than {MAX_PAGE_NUMBER}")
    return value


def match_identity(data: Mapping[str, Any], expected: Mapping[str, str], where: str = "the URL") -> None:
    """Identity fields (country_code, party_id, id/uid...) present in a body must equal the URL's or the stored
    object's (case-insensitively: they are CiStrings); a body may not move an object to another owner or id."""
    for name, value in expected.items():
        if name in data and (not isinstance(data[name], str) or data[name].upper() != str(value).upper()):
            raise OcpiError(INVALID_PARAMETERS, f"{name}: {data[name]!r:.60} differs from {where} ({value!r})")
