"""GET-list pagination as OCPI defines it: offset/limit/date_from/date_to in, Link and X-* headers out."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse

from roaming.ocpi.envelope import ocpi_response, parse_datetime
from roaming.ocpi.input import page_number


@dataclass(frozen=True)
class PageRequest:
    offset: int
    limit: int
    date_from: object | None
    date_to: object | None


def page_request(request: HttpRequest, *, default_limit: int, max_limit: int) -> PageRequest:
    """Read the list parameters; a bad value is OCPI 2001 naming the parameter."""
    params = request.GET
    offset = page_number(params.get("offset"), "offset", 0)
    limit = min(page_number(params.get("limit"), "limit", default_limit) or default_limit, max_limit)
    date_from = parse_datetime(params["date_from"], "date_from") if params.get("date_from") else None
    date_to = parse_datetime(params["date_to"], "date_to") if params.get("date_to") else None
    return PageRequest(offset=offset, limit=limit, date_from=date_from, date_to=date_to)


def paginated_response(
    request: HttpRequest,
    queryset: QuerySet,
    serialize,
    *,
    default_limit: int = 100,
    max_limit: int = 1000,
    updated_field: str = "last_updated",
) -> JsonResponse:
    """One page of `queryset` (oldest first) in the envelope, with Link, X-Total-Count and X-Limit.

    `serialize` turns the list of objects on the page into a list of OCPI objects, so the caller
    can fetch related rows for the whole page at once.
    """
    page = page_request(request, default_limit=default_limit, max_limit=max_limit)
    if page.date_from:
        queryset = queryset.filter(**{f"{updated_field}__gte": page.date_from})
    if page.date_to:
        queryset = queryset.filter(**{f"{updated_field}__lt": page.date_to})
    queryset = queryset.order_by(updated_field, "pk")
    total = queryset.count()
    objects = list(queryset[page.offset : page.offset + page.limit])
    headers = {"X-Total-Count": str(total), "X-Limit": str(max_limit)}
    next_offset = page.offset + len(objects)
    if objects and next_offset < total:
        query = request.GET.copy()
        query["offset"] = str(next_offset)
        query["limit"] = str(page.limit)
        headers["Link"] = f'<{request.build_absolute_uri(request.path)}?{urlencode(query, doseq=True)}>; rel="next"'
    return ocpi_response(serialize(objects), headers=headers)
