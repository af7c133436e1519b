"""Where a call carrying a partner's token may go (see docs/security-outgoing-calls.md).

Every outgoing OCPI call goes through two checks:

- `check_url` before anything is sent: an absolute http(s) URL without user information, whose host is
  one of the partner's registered hosts (`registered_hosts`), and whose host, when written as an IP
  address (in any of the forms resolvers accept, such as `2130706433` or `0x7f.1`), is a public one;
- `CheckedAddressAdapter` when the connection is opened: the host name is resolved once, every address it
  resolves to must be public, and the socket connects to one of exactly those addresses, so a DNS answer
  that changes between our check and the connection (DNS rebinding) cannot send the token elsewhere.

Loopback, private, link-local, shared, reserved and multicast addresses (and IPv6 forms embedding such an
IPv4 address) are refused unless `OCPI_ALLOW_PRIVATE_NETWORK_URLS` is on (tests and the demo).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.util import parse_url
from urllib3.util.connection import allowed_gai_family

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = ("http", "https")
# Characters on which URL parsers disagree (a backslash is a slash to browsers, not to urllib3): refused
# outright, so the host we check is the host we connect to.
_AMBIGUOUS = re.compile(r"[\s\\\x00-\x1f\x7f]")
# Host names that inet_aton reads as an IPv4 address: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedDestination(Exception):
    """A URL or address we will not send a partner's token to; the message says why."""


def private_network_allowed() -> bool:
    return bool(getattr(settings, "OCPI_ALLOW_PRIVATE_NETWORK_URLS", False))


def ip_literal(host: str) -> IpAddress | None:
    """The address a host written as an IP stands for (IPv6 without brackets), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IpAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): checked like the address itself."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in NAT64_PREFIX:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [candidate for candidate in embedded if candidate is not None]


def forbidden_reason(address: IpAddress) -> str | None:
    """Why an address is not a public one (loopback, private, link-local...), or None when it is."""
    for candidate in (*_embedded_ipv4(address), address):
        for test, kind in (
            ("is_unspecified", "unspecified"),
            ("is_loopback", "loopback"),
            ("is_link_local", "link-local"),
            ("is_multicast", "multicast"),
            ("is_private", "private"),
            ("is_reserved", "reserved"),
        ):
            if getattr(candidate, test):
                return f"{address} is a {kind} address"
        if not candidate.is_global:
            return f"{address} is not a public address"
    return None


def check_address(address: IpAddress, host: str) -> None:
    reason = forbidden_reason(address)
    if reason and not private_network_allowed():
        shown = "" if str(address) == host else f"{host} resolves to {address}: "
        raise RefusedDestination(f"{shown}{reason} (private networks are not allowed)")


def normalised_host(host: str) -> str:
    """A host as we compare it: lower case, no trailing dot, IDNA-encoded, an IP in its canonical form."""
    host = host.strip("[]").rstrip(".").lower()
    address = ip_literal(host)
    if address is not None:
        return str(address)
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise RefusedDestination(f"{host!r} is not a valid host name") from exc


def url_host(url: str) -> str:
    """The normalised host of an absolute http(s) URL; RefusedDestination when the URL is not one we call."""
    if not isinstance(url, str) or not url:
        raise RefusedDestination("no URL")
    if _AMBIGUOUS.search(url):
        raise RefusedDestination(f"{url!r} contains whitespace, control characters or a backslash")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise RefusedDestination(f"{url!r} is not a valid URL") from exc
    if (parts.scheme or "").lower() not in ALLOWED_SCHEMES:
        raise RefusedDestination(f"{url!r} is not an http(s) URL")
    if parts.auth is not None:
        raise RefusedDestination(f"{url!r} carries user information before the host")
    if not parts.host:
        raise RefusedDestination(f"{url!r} has no host")
    return normalised_host(parts.host)


def check_url(url: str, hosts: Iterable[str] | None = None) -> str:
    """Refuse a URL we must not call (form, IP-literal host in a private range, host not registered).

    `hosts` are the partner's registered hosts (normalised); None means any host (the versions URL a
    partner or staff just gave us). A host name is resolved and checked when the connection is opened.
    Returns the normalised host.
    """
    host = url_host(url)
    address = ip_literal(host)
    if address is not None:
        check_address(address, host)
    if hosts is not None and host not in hosts:
        registered = ", ".join(sorted(hosts)) or "none"
        raise RefusedDestination(f"{host} is not one of the partner's registered hosts ({registered})")
    return host


def registered_hosts(connection: Any) -> frozenset[str]:
    """The hosts a partner's token may go to: its versions URL's and those of the endpoints it gave us.

    `connection` is the PartnerConnection carrying the calls (a hub's for its clients). A stored URL
    whose host cannot be read adds nothing.
    """
    urls = [connection.versions_url, *(endpoint.get("url") for endpoint in connection.endpoints or [])]
    hosts = set()
    for url in urls:
        try:
            hosts.add(url_host(url))
        except RefusedDestination:
            continue
    return frozenset(hosts)


# --- The connection opened to the checked address -------------------------------------------------------------


def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve a host once; every address must pass `check_address`. Returns them in resolver order."""
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        check_address(address, normalised_host(host))
        if str(address) not in addresses:
            addresses.append(str(address))
    return addresses


class _CheckedConnection:
    """Opens the socket to an address `checked_addresses` approved, never to a second DNS answer.

    urllib3 takes the socket's address from `_dns_host` and the TLS server name and certificate check
    from `host`, so only `_dns_host` is pointed at the checked address while connecting.
    """

    def _new_conn(self):  # type: ignore[no-untyped-def]
        original = self._dns_host
        try:
            addresses = checked_addresses(original, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        failure: Exception | None = None
        try:
            for address in addresses:
                self._dns_host = address
                try:
                    return super()._new_conn()
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    failure = exc
        finally:
            self._dns_host = original
        raise failure or NewConnectionError(self, f"no address for {self.host}")


class CheckedHTTPConnection(_CheckedConnection, HTTPConnection):
    pass


class CheckedHTTPSConnection(_CheckedConnection, HTTPSConnection):
    pass


class CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


class CheckedAddressAdapter(HTTPAdapter):
    """A requests adapter whose connections go only to addresses that passed the check."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": CheckedHTTPConnectionPool,
            "https": CheckedHTTPSConnectionPool,
        }
