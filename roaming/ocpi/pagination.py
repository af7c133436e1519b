"""GET-list pagination as OCPI defines it, for every list we send (our tokens, our locations):
offset/limit/date_from/date_to/cursor in, Link and X-Total-Count / X-Limit out.

Pages are cut on the stable key (`updated_field`, id). The `Link` to the next page carries a cursor (that key,
opaque to the partner), so page 550 costs the same index range scan as page 1 (an OFFSET would read and drop
every earlier row) and an object updated during the crawl neither shifts nor repeats the pages after it.
A partner that pages by `offset` itself still gets an answer.

Headers, the same from every sender:
- `X-Total-Count`: objects in the window (after date_from / date_to), on every page;
- `X-Limit`: the most objects we send in one page (a larger `limit` is cut to it);
- `Link: <url>; rel="next"`: only when more objects follow; the request's other parameters are kept.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest, JsonResponse

from roaming.ocpi.envelope import INVALID_PARAMETERS, OcpiError, ocpi_response, parse_datetime
from roaming.ocpi.input import page_number

BAD_CURSOR = "cursor: not a cursor from one of our Link headers"


@dataclass(frozen=True)
class PageRequest:
    offset: int
    limit: int
    date_from: dt.datetime | None
    date_to: dt.datetime | None
    cursor: tuple[dt.datetime, int] | None = None


def page_request(request: HttpRequest, *, default_limit: int, max_limit: int) -> PageRequest:
    """Read the list parameters; a bad value is OCPI 2001 naming the parameter."""
    params = request.GET
    offset = page_number(params.get("offset"), "offset", 0)
    limit = min(page_number(params.get("limit"), "limit", default_limit) or default_limit, max_limit)
    date_from = parse_datetime(params["date_from"], "date_from") if params.get("date_from") else None
    date_to = parse_datetime(params["date_to"], "date_to") if params.get("date_to") else None
    cursor = decode_cursor(params["cursor"]) if params.get("cursor") else None
    return PageRequest(offset=offset, limit=limit, date_from=date_from, date_to=date_to, cursor=cursor)


def encode_cursor(stamp: dt.datetime, pk: int) -> str:
    return base64.urlsafe_b64encode(f"{stamp.isoformat()}|{pk}".encode()).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[dt.datetime, int]:
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        stamp, pk = text.rsplit("|", 1)
        moment, key = dt.datetime.fromisoformat(stamp), int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise OcpiError(INVALID_PARAMETERS, BAD_CURSOR) from exc
    # Ours always carry an offset and a key the id column can hold; anything else was made up.
    if moment.tzinfo is None or not 0 <= key < 2**63:
        raise OcpiError(INVALID_PARAMETERS, BAD_CURSOR)
    return moment, key


def paginated_response(
    request: HttpRequest,
    queryset: QuerySet,
    serialize: Callable[[list[Model]], list[Any]],
    *,
    default_limit: int = 100,
    max_limit: int = 1000,
    updated_field: str = "last_updated",
) -> JsonResponse:
    """One page of `queryset` (oldest first, ties broken on the id) in the envelope, with the paging headers.

    `serialize` turns the list of objects on the page into a list of OCPI objects, so the caller
    can fetch related rows for the whole page at once.
    """
    page = page_request(request, default_limit=default_limit, max_limit=max_limit)
    window = queryset
    if page.date_from:
        window = window.filter(**{f"{updated_field}__gte": page.date_from})
    if page.date_to:
        window = window.filter(**{f"{updated_field}__lt": page.date_to})
    rows = window.order_by(updated_field, "pk")
    if page.cursor:
        stamp, pk = page.cursor
        # The `>=` bound gives the index a range to start from; the OR alone would scan from the first row.
        rows = rows.filter(**{f"{updated_field}__gte": stamp}).filter(
            Q(**{f"{updated_field}__gt": stamp}) | Q(pk__gt=pk)
        )
    elif page.offset:
        rows = rows[page.offset :]
    objects = list(rows[: page.limit + 1])
    more = len(objects) > page.limit
    objects = objects[: page.limit]
    headers = {"X-Total-Count": str(window.count()), "X-Limit": str(max_limit)}
    if more:
        last = objects[-1]
        query = {k: v for k, v in request.GET.items() if k not in ("cursor", "offset")}
        query.update(cursor=encode_cursor(getattr(last, updated_field), last.pk), limit=str(page.limit))
        headers["Link"] = f'<{request.build_absolute_uri(request.path)}?{urlencode(query)}>; rel="next"'
    return ocpi_response(serialize(objects), headers=headers)
