"""Which address a request comes from, for rate limits and login lockouts.

`REMOTE_ADDR`, unless settings.TRUSTED_PROXY_COUNT says that many reverse proxies of ours stand in front
and each appends the address it saw to `X-Forwarded-For`. Then the client is the TRUSTED_PROXY_COUNT-th
entry from the right: entries further left were written by the client itself and prove nothing, so the
header is never read when no proxy is declared (the default, 0).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The caller's IP address as text ("" when the server gave none)."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    hops = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0) or 0)
    if hops > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if forwarded:
            # Fewer entries than proxies: the first proxy wrote the left-most entry itself.
            candidate = forwarded[-hops] if len(forwarded) >= hops else forwarded[0]
            if _is_ip(candidate):
                return candidate
    return remote


def address_bucket(address: str) -> str:
    """What a limit counts against: the IPv4 address, or the /64 network of an IPv6 address.

    One IPv6 host usually holds a whole /64 and could walk through its addresses to dodge a per-address count.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
