"""How long the shared OCPI layer takes to admit a partner's functional call.

Every functional request (authorize, location push, session push...) goes through
`roaming.ocpi.endpoint.authenticate`: token lookup, hub attribution and the agreement-in-force rule.
This runs it on real requests against the database in DATABASE_URL (PostgreSQL), inside a
transaction that is rolled back, for a direct partner and for a hub client named in OCPI-from-*.

    DATABASE_URL=postgres://... .venv/bin/python bench/ocpi_partner_auth.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mobilityplus.settings")
# A bench runs the platform in-process in development mode (built-in keys), as its figures were measured.
os.environ.setdefault("DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.utils import timezone  # noqa: E402

from roaming.models import PartnerConnection, Party, RoamingAgreement  # noqa: E402
from roaming.ocpi.credentials import authorization_header  # noqa: E402
from roaming.ocpi.endpoint import authenticate  # noqa: E402
from roaming.services import store_partner_tokens  # noqa: E402

CALLS = 3000
PARTNERS = 200  # other partners and agreements in the tables, so lookups are not on empty tables


class Rollback(Exception):
    pass


def setup() -> None:
    today = timezone.localdate()
    parties = Party.objects.bulk_create(
        [Party(country_code="ZZ", party_id=f"{i:03d}", role=Party.Role.CPO, name=f"Bench {i}") for i in range(PARTNERS)]
    )
    PartnerConnection.objects.bulk_create([PartnerConnection(party=p, status="connected") for p in parties])
    RoamingAgreement.objects.bulk_create(
        [RoamingAgreement(partner=p, direction="both", status="active", valid_from=today) for p in parties]
    )
    direct = PartnerConnection.objects.create(
        party=Party.objects.create(country_code="NL", party_id="BDR", role="CPO", name="Direct"), status="connected"
    )
    store_partner_tokens(direct, from_them="bench-direct-token")
    RoamingAgreement.objects.create(partner=direct.party, direction="both", status="active", valid_from=today)
    hub = PartnerConnection.objects.create(
        party=Party.objects.create(country_code="DE", party_id="BHB", role="HUB", name="Hub"), status="connected"
    )
    store_partner_tokens(hub, from_them="bench-hub-token")
    client = Party.objects.create(country_code="FR", party_id="BCL", role="CPO", name="Hub client")
    PartnerConnection.objects.create(party=client, via_hub=hub, status="connected")
    RoamingAgreement.objects.create(partner=client, hub=hub.party, direction="both", status="active", valid_from=today)


def measure(request) -> list[float]:
    timings = []
    for _ in range(CALLS):
        started = time.perf_counter()
        authenticate(request, "locations")
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    factory = RequestFactory()
    direct = factory.get("/x", HTTP_AUTHORIZATION=authorization_header("bench-direct-token"))
    via_hub = factory.get(
        "/x",
        HTTP_AUTHORIZATION=authorization_header("bench-hub-token"),
        HTTP_OCPI_FROM_COUNTRY_CODE="FR",
        HTTP_OCPI_FROM_PARTY_ID="BCL",
    )
    call_command("migrate", verbosity=0)
    results = {}
    try:
        with transaction.atomic():
            setup()
            for name, request in (("direct", direct), ("hub", via_hub)):
                measure(request)  # warm up
                timings = sorted(measure(request))
                results[name] = timings
            raise Rollback
    except Rollback:
        pass
    print(f"database: {connection.vendor}; {CALLS} calls each; {PARTNERS} other partners with agreements")
    figures = []
    for name, timings in results.items():
        p50 = statistics.median(timings)
        p99 = timings[int(len(timings) * 0.99) - 1]
        throughput = len(timings) / (sum(timings) / 1000)
        print(f"{name:7s} p50 {p50:.3f} ms  p99 {p99:.3f} ms  {throughput:.0f} calls/s (one thread)")
        figures += [f"{name}_p50_ms={p50:.3f}", f"{name}_p99_ms={p99:.3f}", f"{name}_per_s={throughput:.0f}"]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
