"""Partner authentication and the `ocpi_endpoint` decorator every OCPI view uses."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, DataError
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from roaming.data_version import partner_data_changed, partner_data_version
from roaming.models import PartnerConnection, Party
from roaming.ocpi import credentials, throttle
from roaming.ocpi.bounded_cache import BoundedCache
from roaming.ocpi.envelope import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    SERVER_ERROR,
    OcpiError,
    error_response,
    ocpi_response,
)
from roaming.ocpi.input import InvalidInput, check_request, read_json
from roaming.selectors import (
    CLOSED_STATUSES,
    agreement_in_force,
    agreement_in_force_through_hub,
    hub_client,
    is_our_party,
    platform_party,
)
from roaming.services import record_contact, settle_rotation

logger = logging.getLogger(__name__)

CONFIGURATION_MODULES = {"versions", "credentials", "hubclientinfo"}
# How long a process trusts its copy of a connection at most. Changes noted through the ORM clear it at
# once in this process and within ROAMING_CHANGES_CHECK_S in every other (roaming/data_version.py), so
# this lifetime only bounds rows changed behind the ORM's back (SQL by hand).
CONNECTION_CACHE_SECONDS = 30.0
# `last_contact_at` is written at most this often per connection and process: incoming calls (the
# authorize hot path among them) would otherwise each pay for an UPDATE.
CONTACT_WRITE_SECONDS = 60.0


@dataclass
class PartnerContext:
    """Who is calling: the authenticated connection and the party the call is attributed to."""

    request: HttpRequest
    connection: PartnerConnection
    party: Party
    with_registration_token: bool = False
    _body: Any = field(default=None, repr=False)

    def json(self, required: bool = True) -> Any:
        """The request body as checked JSON (`roaming.ocpi.input.read_json`); bad input is 413 or 400 with 2001."""
        if self._body is None:
            self._body = read_json(self.request, required=required)
        return self._body


# Bounded: unknown tokens are cached too (a miss costs a query), and random tokens must not grow it for good.
_connections: BoundedCache = BoundedCache(max_entries=lambda: settings.OCPI_CONNECTION_CACHE_MAX_ENTRIES)


_connections_seen: dict[str, Any] = {"version": None}

# Connection id -> monotonic time of this process's latest `last_contact_at` write. Cleared with the
# connection cache on a save here, so a connection saved (or created) in this process is written again.
_contacts_written: dict[int, float] = {}


def _clear_connection_cache(**_: Any) -> None:
    _connections.clear()
    _contacts_written.clear()


def _note_contact(connection: PartnerConnection) -> None:
    """Record that the partner reached us, unless this process already did so within CONTACT_WRITE_SECONDS."""
    now = time.monotonic()
    last = _contacts_written.get(connection.pk)
    if last is not None and now - last < CONTACT_WRITE_SECONDS:
        return
    _contacts_written[connection.pk] = now
    try:
        record_contact(connection.pk)
    except DatabaseError:
        # A bookkeeping timestamp must not turn an answer the partner is owed into a 500.
        logger.warning("Could not record contact for connection %s", connection.pk, exc_info=True)


def _check_connections_version() -> None:
    """Forget cached connections when parties, connections or agreements changed in another process."""
    version = partner_data_version.current()
    if version != _connections_seen["version"]:
        _connections.clear()
        _connections_seen["version"] = version


partner_data_changed.connect(_clear_connection_cache, dispatch_uid="ocpi-endpoint-connections")


def _connection_for_token(token: str) -> tuple[PartnerConnection | None, bool]:
    """The connection a token belongs to, and whether it is a registration token (token A)."""
    digest = credentials.hash_token(token)
    now = time.monotonic()
    _check_connections_version()
    cached = _connections.get(digest)
    # Only a known token is answered from the cache: a token issued a moment ago in another process (token B
    # of a handshake, whose partner calls back at once) must not be hidden by this process's earlier miss.
    if cached and cached[0] > now and cached[1] is not None:
        return cached[1], cached[2]
    connection = (
        PartnerConnection.objects.select_related("party", "via_hub")
        .filter(Q(token_from_them_hash=digest) | Q(previous_token_from_them_hash=digest))
        .first()
    )
    registration = False
    if connection is None:
        connection = (
            PartnerConnection.objects.select_related("party", "via_hub").filter(registration_token_hash=digest).first()
        )
        registration = connection is not None
    _connections[digest] = (now + CONNECTION_CACHE_SECONDS, connection, registration)
    return connection, registration


def authenticate(request: HttpRequest, module: str) -> PartnerContext:
    """Find the calling partner from `Authorization: Token ...` and, through a hub, the OCPI-from headers."""
    throttle.refuse_if_blocked(request)  # before any token lookup: 429 to an address that failed too often
    header = request.headers.get("Authorization", "")
    connection, registration = None, False
    for candidate in credentials.tokens_in_header(header):
        connection, registration = _connection_for_token(candidate)
        if connection is not None:
            break
    if connection is None:
        throttle.note_failed_authentication(request)
        raise OcpiError(CLIENT_ERROR, "Unknown or missing credentials token", http_status=401)
    if registration and module not in {"versions", "credentials"}:
        raise OcpiError(CLIENT_ERROR, "The registration token is only valid for versions and credentials", 401)
    if connection.status in CLOSED_STATUSES:
        raise OcpiError(CLIENT_ERROR, f"Connection is {connection.status}", http_status=403)
    if connection.party.is_self:
        # A connection row for our own party would let its token holder act as MobilityPlus.
        raise OcpiError(CLIENT_ERROR, f"Nobody may call us as {connection.party.ocpi_id}", http_status=403)
    if connection.previous_token_from_them_hash and not registration:
        # A rotation whose answer was lost: the token they call with now is the one they keep.
        settle_rotation(connection.pk, candidate)

    party = connection.party
    if module not in CONFIGURATION_MODULES:
        party, hub = _attributed_party(request, connection)
        # Functional modules are for partners we do business with: an ended, suspended, expired or
        # not yet active agreement closes them (configuration modules stay open to (re)connect).
        # Through a hub, only an agreement with that party through that hub counts (staff's confirmation).
        if hub is not None:
            if not agreement_in_force_through_hub(party, hub.party):
                raise OcpiError(
                    CLIENT_ERROR,
                    f"No roaming agreement in force with {party.ocpi_id} through {hub.party.ocpi_id}",
                    http_status=403,
                )
        elif not agreement_in_force(party):
            raise OcpiError(CLIENT_ERROR, f"No roaming agreement in force with {party.ocpi_id}", http_status=403)
    return PartnerContext(request=request, connection=connection, party=party, with_registration_token=registration)


def _attributed_party(request: HttpRequest, connection: PartnerConnection) -> tuple[Party, PartnerConnection | None]:
    """The party a functional call speaks for, and the hub it speaks through (None when it speaks for itself).

    A hub's client named in OCPI-from-*, or the caller. Never MobilityPlus itself, and through a hub
    only a party attached to that hub (its client connection), not suspended or disconnected. A
    platform hosting several parties speaks for any party recorded as reached through its connection,
    named in OCPI-from-* or, without those headers, by the object's own party in the URL.
    """
    country = request.headers.get("OCPI-from-country-code", "").strip().upper()
    party_id = request.headers.get("OCPI-from-party-id", "").strip().upper()
    if not country or not party_id:
        named = request.resolver_match.kwargs if request.resolver_match else {}
        url_party = (str(named.get("country_code", "")).upper(), str(named.get("party_id", "")).upper())
        own = (connection.party.country_code, connection.party.party_id)
        hosted = _hosted_party(connection, *url_party) if all(url_party) and url_party != own else None
        return (hosted or connection.party), None
    if is_our_party(country, party_id):
        raise OcpiError(CLIENT_ERROR, f"Nobody may act as {country}*{party_id}: that is us", http_status=403)
    if (country, party_id) == (connection.party.country_code, connection.party.party_id):
        return connection.party, None
    if connection.party.role != Party.Role.HUB:
        hosted = _hosted_party(connection, country, party_id)
        if hosted is None:
            raise OcpiError(CLIENT_ERROR, f"You may not speak for {country}*{party_id}", http_status=403)
        return hosted, None
    # Cached with the connections (same lifetime and invalidation): through a hub this is every request.
    key = f"hub:{connection.pk}:{country}*{party_id}"
    now = time.monotonic()
    cached = _connections.get(key)
    if cached and cached[0] > now:
        client = cached[1]
    else:
        client = hub_client(connection, country, party_id)
        _connections[key] = (now + CONNECTION_CACHE_SECONDS, client, False)
    if client is None or client.party.is_self:
        raise OcpiError(CLIENT_ERROR, f"The hub may not speak for {country}*{party_id}", http_status=403)
    if client.status in CLOSED_STATUSES:
        raise OcpiError(CLIENT_ERROR, f"Connection to {country}*{party_id} is {client.status}", http_status=403)
    return client.party, connection


def _hosted_party(connection: PartnerConnection, country: str, party_id: str) -> Party | None:
    """`selectors.platform_party`, cached with the connections (same lifetime and invalidation)."""
    key = f"platform:{connection.pk}:{country}*{party_id}"
    now = time.monotonic()
    cached = _connections.get(key)
    if cached and cached[0] > now:
        return cached[1]
    party = platform_party(connection, country, party_id)
    _connections[key] = (now + CONNECTION_CACHE_SECONDS, party, False)
    return party


def _echo_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    response["X-Request-ID"] = request.headers.get("X-Request-ID") or str(uuid.uuid4())
    response["X-Correlation-ID"] = request.headers.get("X-Correlation-ID") or response["X-Request-ID"]
    # The response swaps the routing headers of the request.
    for ours, theirs in (("to", "from"), ("from", "to")):
        for part in ("country-code", "party-id"):
            value = request.headers.get(f"OCPI-{theirs}-{part}")
            if value:
                response[f"OCPI-{ours}-{part}"] = value
    return response


def ocpi_endpoint(
    module: str, methods: tuple[str, ...] = ("GET",), authenticated: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., HttpResponse]]:
    """Wrap a view as an OCPI endpoint.

    The view is called as `view(ctx, **url_kwargs)` (or `view(request, **url_kwargs)` when not
    authenticated) and returns data for a 1000 envelope, or an HttpResponse; OcpiError becomes
    the error envelope. Request ids are echoed, routing headers swapped.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            ctx: PartnerContext | None = None
            try:
                if request.method not in methods:
                    raise OcpiError(CLIENT_ERROR, f"Method {request.method} not allowed here", http_status=405)
                subject = authenticate(request, module) if authenticated else request
                if authenticated:
                    ctx = subject
                check_request(request, kwargs)
                result = view(subject, **kwargs)
                response = result if isinstance(result, HttpResponse) else ocpi_response(result)
            except OcpiError as error:
                response = error_response(error)
            except RequestDataTooBig:  # a body read outside PartnerContext.json()
                response = error_response(OcpiError(INVALID_PARAMETERS, "body: too large", http_status=413))
            except InvalidInput as error:  # domain rules on partner input, mapped to OCPI once
                response = error_response(OcpiError(INVALID_PARAMETERS, str(error)))
            except DataError:
                # A value the database cannot hold slipped past the input checks: still the partner's input, and
                # the failed statement wrote nothing. Logged as an error, because the checks should have caught it.
                logger.exception("OCPI %s %s: input the database refused", request.method, request.path)
                response = error_response(OcpiError(INVALID_PARAMETERS, "body: a value is out of range or not text"))
            except Exception:
                logger.exception("OCPI %s %s failed", request.method, request.path)
                response = ocpi_response(None, SERVER_ERROR, "Internal error", http_status=500)
            # A partner that passed authentication and got an answer (an OCPI error about its input included)
            # is in contact; a crash on our side says nothing about the link.
            if ctx is not None and response.status_code < 500:
                _note_contact(ctx.connection)
            return _echo_headers(request, response)

        return wrapper

    return decorate


@csrf_exempt  # a partner's POST to an unknown path gets the OCPI 404, not Django's HTML CSRF page
def ocpi_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return error_response(OcpiError(CLIENT_ERROR, "No such OCPI endpoint", http_status=404))
