"""Lift the 429 block of a client address at once (OCPI partner tokens and the backend bearer)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from roaming.ocpi import throttle


class Command(BaseCommand):
    help = "Forget the failed authentications and any 429 block of the given addresses (OCPI and backend bearer)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("addresses", nargs="+", help="client IP addresses (IPv6: any address of the /64)")

    def handle(self, *args, addresses: list[str], **options) -> None:
        for address in addresses:
            throttle.reset(address)
            self.stdout.write(f"{address}: unblocked")
