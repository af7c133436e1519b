"""Our outgoing OCPI calls: explicit timeouts, retries with backoff, routing headers, pages.

Every call is checked by `roaming.ocpi.destinations` first: the partner's token goes only to its
registered hosts and never to a private address (docs/security-outgoing-calls.md).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings

from roaming.ocpi.credentials import authorization_header
from roaming.ocpi.destinations import CheckedAddressAdapter, RefusedDestination, check_url, registered_hosts
from roaming.ocpi.envelope import SUCCESS

logger = logging.getLogger(__name__)


class OcpiClientError(Exception):
    """A call to a partner that did not give a usable OCPI answer.

    `kind` is one of: refused (a URL we will not call: nothing was sent; never retried), transport
    (unreachable, timeout), http (3xx/4xx/5xx), json (not JSON or no envelope), status (an envelope
    whose status_code is not 1000).
    """

    def __init__(self, kind: str, message: str, *, http_status: int | None = None, status_code: int | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.http_status = http_status
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.kind in {"transport", "json"} or (self.http_status or 0) >= 500

    @property
    def refused(self) -> bool:
        return self.kind == "refused"


@dataclass
class OcpiReply:
    data: Any
    status_code: int
    status_message: str
    http_status: int
    headers: requests.structures.CaseInsensitiveDict
    elapsed_ms: float
    url: str = ""

    @property
    def next_url(self) -> str | None:
        link = self.headers.get("Link", "")
        for part in link.split(","):
            if 'rel="next"' in part or "rel=next" in part:
                start, end = part.find("<"), part.find(">")
                if start != -1 and end > start:
                    return part[start + 1 : end].strip()
        return None

    @property
    def total_count(self) -> int | None:
        value = self.headers.get("X-Total-Count")
        return int(value) if value and value.isdigit() else None

    @property
    def limit(self) -> int | None:
        value = self.headers.get("X-Limit")
        return int(value) if value and value.isdigit() else None


class OcpiClient:
    """Calls one partner with a token; `to_party` adds hub routing headers (country_code, party_id).

    `hosts` are the hosts the token may go to (`for_connection` passes the partner's registered hosts);
    None allows any host, for the versions URL a partner or staff has just given us. Either way every
    URL must be http(s) and reach only public addresses (`roaming.ocpi.destinations`); a `session`
    passed in gets the address-checking adapters mounted too.
    """

    def __init__(
        self,
        token: str,
        *,
        raw_token: bool = False,
        from_party: tuple[str, str] | None = None,
        to_party: tuple[str, str] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        hosts: Iterable[str] | None = None,
    ):
        self.token = token
        self.raw_token = raw_token
        self.from_party = from_party
        self.to_party = to_party
        self.timeout = settings.OCPI_HTTP_TIMEOUT_S if timeout is None else timeout
        self.retries = settings.OCPI_HTTP_RETRIES if retries is None else retries
        self.backoff = backoff
        self.hosts = None if hosts is None else frozenset(hosts)
        self.session = session or requests.Session()
        # No proxy or .netrc from the environment: the socket must go to the address we checked.
        self.session.trust_env = False
        adapter = CheckedAddressAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def for_connection(cls, connection, *, routing: bool = True, **kwargs) -> OcpiClient:
        """A client for a PartnerConnection, through its hub when it has one.

        `routing` is for functional modules (locations, sessions, cdrs, tariffs, tokens, commands,
        chargingprofiles): through a hub it sends FROM=us, TO=the party; straight to a hub (for
        example GET all locations from it) FROM=us, TO=the hub (summary.md §1). Configuration
        modules (versions, credentials, hubclientinfo) SHALL NOT carry routing headers: pass
        `routing=False`. A direct peer gets none either way (single parties do not need them).
        """
        from roaming.models import Party
        from roaming.ocpi.credentials import decrypt_token
        from roaming.selectors import own_party

        transport = connection.transport
        headers: dict[str, Any] = {}
        if routing and (connection.via_hub_id or connection.party.role == Party.Role.HUB):
            me = own_party()
            headers = {
                "from_party": (me.country_code, me.party_id),
                "to_party": (connection.party.country_code, connection.party.party_id),
            }
        kwargs.setdefault("hosts", registered_hosts(transport))
        return cls(
            decrypt_token(transport.token_to_them_encrypted),
            raw_token=transport.accepts_raw_token,
            **headers,
            **kwargs,
        )

    def headers(self) -> dict[str, str]:
        request_id = str(uuid.uuid4())
        headers = {
            "Authorization": authorization_header(self.token, raw=self.raw_token),
            "X-Request-ID": request_id,
            "X-Correlation-ID": request_id,
            "Accept": "application/json",
        }
        if self.from_party:
            headers["OCPI-from-country-code"], headers["OCPI-from-party-id"] = self.from_party
        if self.to_party:
            headers["OCPI-to-country-code"], headers["OCPI-to-party-id"] = self.to_party
        return headers

    def request(
        self,
        method: str,
        url: str,
        *,
        params: dict | None = None,
        body: Any = None,
        accept_status: tuple = (),
        retry_all: bool = False,
    ) -> OcpiReply:
        """One call, retried with exponential backoff on transport errors, invalid JSON and 5xx.

        `accept_status` lists extra OCPI status codes that are answers, not errors (for example 2004).
        `retry_all` also retries an OCPI status other than 1000 and 4xx other than 401/403 (safe GETs
        such as feed pages, where a partner's hiccup often answers 200 with a 3000 envelope).
        A URL the destination check refuses raises kind "refused" at once: nothing is sent, nothing retried.
        """
        self.check_destination(method, url)
        attempt = 0
        while True:
            try:
                return self._request_once(method, url, params=params, body=body, accept_status=accept_status)
            except OcpiClientError as error:
                attempt += 1
                retryable = not error.refused and (
                    error.retryable or (retry_all and error.http_status not in (401, 403))
                )
                if not retryable or attempt > self.retries:
                    raise
                delay = self.backoff * (2 ** (attempt - 1))
                logger.warning("OCPI %s %s failed (%s); retry %d in %.1fs", method, url, error, attempt, delay)
                time.sleep(delay)

    def check_destination(self, method: str, url: str) -> None:
        """The one check every call passes before anything is sent (the address is checked again on connect)."""
        try:
            check_url(url, self.hosts)
        except RefusedDestination as exc:
            raise OcpiClientError("refused", f"{method} {url}: {exc}") from exc

    def _request_once(self, method: str, url: str, *, params, body, accept_status) -> OcpiReply:
        started = time.monotonic()
        headers = self.headers()
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                # A redirect would take the token to a URL nobody checked: never followed.
                allow_redirects=False,
            )
        except RefusedDestination as exc:
            raise OcpiClientError("refused", f"{method} {url}: {exc}") from exc
        except requests.RequestException as exc:
            raise OcpiClientError("transport", f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        if response.is_redirect:
            where = response.headers.get("Location", "")
            raise OcpiClientError(
                "http",
                f"{method} {url}: HTTP {response.status_code} redirect to {where!r}, not followed",
                http_status=response.status_code,
            )
        try:
            payload = self.decode(response)
        except ValueError as exc:
            if response.status_code >= 400:
                raise OcpiClientError(
                    "http", f"{method} {url}: HTTP {response.status_code}", http_status=response.status_code
                ) from exc
            raise OcpiClientError(
                "json", f"{method} {url}: response is not JSON", http_status=response.status_code
            ) from exc
        if not isinstance(payload, dict) or "status_code" not in payload:
            kind = "http" if response.status_code >= 400 else "json"
            raise OcpiClientError(kind, f"{method} {url}: no OCPI envelope", http_status=response.status_code)
        status_code = payload.get("status_code")
        if response.status_code >= 500 or (response.status_code >= 400 and status_code not in accept_status):
            raise OcpiClientError(
                "http",
                f"{method} {url}: HTTP {response.status_code}, OCPI {status_code} {payload.get('status_message', '')}",
                http_status=response.status_code,
                status_code=status_code,
            )
        if status_code != SUCCESS and status_code not in accept_status:
            raise OcpiClientError(
                "status",
                f"{method} {url}: OCPI {status_code} {payload.get('status_message', '')}",
                http_status=response.status_code,
                status_code=status_code,
            )
        return OcpiReply(
            data=payload.get("data"),
            status_code=status_code,
            status_message=payload.get("status_message", ""),
            http_status=response.status_code,
            headers=response.headers,
            elapsed_ms=elapsed_ms,
            url=response.url,
        )

    def decode(self, response: requests.Response) -> Any:
        """The answer's body as JSON (ValueError when it is not); feed pulls decode pages their own way."""
        return response.json()

    def get(self, url: str, params: dict | None = None, **kwargs) -> OcpiReply:
        return self.request("GET", url, params=params, **kwargs)

    def post(self, url: str, body: Any = None, **kwargs) -> OcpiReply:
        return self.request("POST", url, body=body, **kwargs)

    def put(self, url: str, body: Any, **kwargs) -> OcpiReply:
        return self.request("PUT", url, body=body, **kwargs)

    def patch(self, url: str, body: Any, **kwargs) -> OcpiReply:
        return self.request("PATCH", url, body=body, **kwargs)

    def delete(self, url: str, **kwargs) -> OcpiReply:
        return self.request("DELETE", url, **kwargs)

    def pages(self, url: str, params: dict | None = None, *, retry_all: bool = False) -> Iterator[OcpiReply]:
        """Each page of a GET list, following the `Link` header exactly as the partner gives it.

        A Link that points back to a page already fetched ends the list with an error instead of looping;
        one to a host the client may not call (not the partner's, or private) ends it with kind "refused".
        """
        reply = self.get(url, params=params, retry_all=retry_all)
        yield reply
        fetched = {reply.url} if reply.url else set()
        while (next_url := reply.next_url) is not None:
            if next_url in fetched:
                raise OcpiClientError("status", f"GET {next_url}: the Link header points to a page already fetched")
            fetched.add(next_url)
            reply = self.get(next_url, retry_all=retry_all)
            yield reply


def join_url(base: str, *parts: str) -> str:
    """Join URL segments with exactly one slash between them."""
    url = base.rstrip("/")
    for part in parts:
        url += "/" + str(part).strip("/")
    return url
