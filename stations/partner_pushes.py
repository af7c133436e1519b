"""Our own stations' changes pushed to partners: each EVSE status (PATCH, only the latest sent) and location changes
(PUT), to every connected eMSP or hub whose agreement lets its drivers charge at our stations.

Written through the durable outbox (roaming/outbox.py) in the transaction of the change: sent after commit, in
order per EVSE, kept until the partner answers OCPI 1000 (docs/outbox.md).
"""

from __future__ import annotations

from roaming import outbox
from roaming.models import Party
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import emsps_served_by_our_stations
from stations.models import EVSE, Connector, Location
from stations.ocpi_locations import evse_to_ocpi, locations_to_ocpi

MODULE = "locations"


def is_ours(location: Location) -> bool:
    """A location of our own party (MobilityPlus as CPO), not a partner's copy."""
    return bool(location.party.is_self)


def _location_path(location: Location) -> str:
    return f"/{location.party.country_code}/{location.party.party_id}/{location.ocpi_id}"


def _evse_object(location: Location, evse: EVSE) -> str:
    # Order and coalescing are per EVSE: its PUT (new EVSE) goes before its status PATCHes.
    return f"{location.ocpi_id}/{evse.uid}"


def push_evse_status(evse: EVSE, partners: list[Party] | None = None) -> int:
    """PATCH the EVSE's status to every partner served by our stations; a not-yet-sent status is replaced."""
    location = evse.location
    if not is_ours(location):
        return 0
    body = {"status": evse.status, "last_updated": format_datetime(evse.last_updated)}
    partners = emsps_served_by_our_stations(MODULE) if partners is None else partners
    outbox.enqueue_to_many(
        partners,
        module=MODULE,
        object_id=_evse_object(location, evse),
        method="PATCH",
        path=f"{_location_path(location)}/{evse.uid}",
        body=body,
        coalesce=True,
    )
    return len(partners)


def push_evse(evse: EVSE) -> int:
    """PUT the whole EVSE (a new one, or one staff changed) to every partner served by our stations."""
    location = evse.location
    if not is_ours(location):
        return 0
    connectors = list(Connector.objects.filter(evse=evse).order_by("connector_id"))
    body = evse_to_ocpi(evse, connectors)
    partners = emsps_served_by_our_stations(MODULE)
    outbox.enqueue_to_many(
        partners,
        module=MODULE,
        object_id=_evse_object(location, evse),
        method="PUT",
        path=f"{_location_path(location)}/{evse.uid}",
        body=body,
        coalesce=True,
    )
    return len(partners)


def push_location(location: Location) -> int:
    """PUT the whole location (opening hours, address, EVSEs...) to every partner served by our stations."""
    if not is_ours(location):
        return 0
    body = locations_to_ocpi([location])[0]
    partners = emsps_served_by_our_stations(MODULE)
    outbox.enqueue_to_many(
        partners,
        module=MODULE,
        object_id=location.ocpi_id,
        method="PUT",
        path=_location_path(location),
        body=body,
        coalesce=True,
    )
    return len(partners)
