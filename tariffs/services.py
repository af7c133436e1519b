"""Writes about tariffs: partners' tariffs as they push or feed them (eMSP), ours as staff change them (CPO),
each change of ours pushed to every eMSP whose cards charge at our stations.

Pull of a partner's Tariffs SENDER: tariffs.pull. The check of CDR totals: tariffs.billing_check.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from roaming.models import PartnerConnection, Party
from roaming.ocpi.envelope import OcpiError, format_datetime, validated
from roaming.ocpi.input import InvalidInput
from tariffs.models import Tariff
from tariffs.serializers import TariffSerializer, normalised

logger = logging.getLogger(__name__)

MODULE = "tariffs"


class InvalidTariff(InvalidInput):
    """A tariff we refuse; the message names the field (`field: why`). At an OCPI endpoint: 2001, HTTP 400."""


def check_tariff(document: Any) -> tuple[dict, dict]:
    """(checked data, the copy we store) of a Tariff object; InvalidTariff naming the field otherwise."""
    if not isinstance(document, dict):
        raise InvalidTariff("body: a Tariff must be a JSON object")
    try:
        data = validated(TariffSerializer, document)
    except OcpiError as error:
        raise InvalidTariff(error.message) from error
    return data, normalised(document, data)


@dataclass
class Stored:
    tariff: Tariff | None
    created: bool = False
    changed: bool = False


def find_tariff(party: Party, tariff_id: str, *, lock: bool = False) -> Tariff | None:
    tariffs = Tariff.objects.select_related("party")
    if lock:
        tariffs = tariffs.select_for_update(of=("self",))
    return tariffs.filter(party=party, ocpi_id__iexact=tariff_id).first()


def _columns(data: dict, stored: dict) -> dict:
    return {
        "currency": data["currency"].upper(),
        "type": data.get("type", ""),
        "start_date_time": data.get("start_date_time"),
        "end_date_time": data.get("end_date_time"),
        "last_updated": data["last_updated"],
        "document": stored,
    }


@transaction.atomic
def store_partner_tariff(
    owner: Party, tariff_id: str, document: dict, *, source: PartnerConnection | None, checked: tuple | None = None
) -> Stored:
    """Create or replace a partner's tariff (PUT or a feed object). Not newer than what we hold: kept as is."""
    data, stored = checked or check_tariff(document)
    for name, expected in (("country_code", owner.country_code), ("party_id", owner.party_id), ("id", tariff_id)):
        if str(data[name]).upper() != expected.upper():
            raise InvalidTariff(f"{name}: {data[name]!r:.40} differs from the URL ({expected!r})")
    tariff = find_tariff(owner, tariff_id, lock=True)
    if tariff is not None and data["last_updated"] < tariff.last_updated:
        return Stored(tariff)  # a late duplicate: what we hold is newer
    if tariff is not None and tariff.document == stored:
        return Stored(tariff)
    created = tariff is None
    if created:
        tariff = Tariff(party=owner, ocpi_id=data["id"])
    for name, value in _columns(data, stored).items():
        setattr(tariff, name, value)
    if source is not None:
        tariff.source = source
    if created:
        try:
            with transaction.atomic():
                tariff.save()
        except IntegrityError:  # created concurrently: apply ours on top of it
            return store_partner_tariff(owner, tariff_id, document, source=source, checked=(data, stored))
    else:
        tariff.save()
    return Stored(tariff, created=created, changed=True)


@transaction.atomic
def delete_partner_tariff(owner: Party, tariff_id: str) -> bool:
    """A partner's DELETE: the tariff is gone (connectors naming it then show its price as unknown)."""
    tariff = find_tariff(owner, tariff_id, lock=True)
    if tariff is None:
        return False
    tariff.delete()
    return True


# --- Our own tariffs (CPO) ----------------------------------------------------------------------------------


def own_tariff_document(tariff: Tariff, fields: dict, *, now: dt.datetime | None = None) -> dict:
    """The OCPI Tariff object of one of ours from the staff form's fields, checked like any partner's."""
    me = tariff.party
    document: dict[str, Any] = {
        "country_code": me.country_code,
        "party_id": me.party_id,
        "id": fields["ocpi_id"],
        "currency": fields["currency"],
    }
    for name in ("type", "tariff_alt_url"):
        if fields.get(name):
            document[name] = fields[name]
    if fields.get("tariff_alt_text"):
        document["tariff_alt_text"] = fields["tariff_alt_text"]
    for name in ("min_price", "max_price"):
        if fields.get(name):
            document[name] = fields[name]
    document["elements"] = fields.get("elements") or []
    for name in ("start_date_time", "end_date_time"):
        if fields.get(name):
            document[name] = format_datetime(fields[name])
    if fields.get("energy_mix"):
        document["energy_mix"] = fields["energy_mix"]
    document["last_updated"] = format_datetime(now or timezone.now())
    return document


def emsps_to_tell() -> list[Party]:
    """Connected eMSPs (or hubs) with a tariffs RECEIVER whose cards charge at our stations."""
    from roaming.selectors import emsps_served_by_our_stations

    return emsps_served_by_our_stations(MODULE)


def _push(tariff: Tariff, method: str) -> int:
    """Queue the change for every eMSP to tell (roaming.outbox delivers it after commit, retried until 1000)."""
    from roaming.outbox import enqueue_to_many

    partners = emsps_to_tell()
    enqueue_to_many(
        partners,
        module=MODULE,
        object_id=tariff.ocpi_id,
        method=method,
        path=f"/{tariff.party.country_code}/{tariff.party.party_id}/{tariff.ocpi_id}",
        body=tariff.document if method == "PUT" else None,
        # Only the latest version matters: a PUT not yet sent is replaced by the newer one.
        coalesce=method == "PUT",
    )
    return len(partners)


@transaction.atomic
def save_own_tariff(tariff: Tariff, document: dict) -> int:
    """Store one of our tariffs (created or changed by staff) and push it; returns the eMSPs told."""
    data, stored = check_tariff(document)
    if not tariff.party.is_self or data["country_code"].upper() != tariff.party.country_code:
        raise InvalidTariff("country_code/party_id: our own tariffs carry our own party")
    for name, value in _columns(data, stored).items():
        setattr(tariff, name, value)
    tariff.ocpi_id = data["id"]
    tariff.source = None
    try:
        with transaction.atomic():
            tariff.save()
    except IntegrityError as error:
        raise InvalidTariff(f"id: we already have a tariff {data['id']!r}") from error
    return _push(tariff, "PUT")


@transaction.atomic
def delete_own_tariff(tariff: Tariff) -> int:
    """Delete one of our tariffs, tell every eMSP (DELETE), and take it off our connectors."""
    attach_own_tariff(tariff, [])  # the connectors stop naming it first (EVSE PUTs), then it goes (DELETE)
    told = _push(tariff, "DELETE")
    tariff.delete()
    return told


def _touch_connector(connector) -> None:
    """A connector of ours whose tariffs changed: its, its EVSE's and its location's last_updated move (the Locations
    SENDER's deltas carry it) and its EVSE is PUT to every eMSP served by our stations (after the tariff's PUT)."""
    from stations.partner_pushes import push_evse

    now = timezone.now()
    connector.last_updated = now
    connector.save(update_fields=["tariff_ids", "last_updated"])
    evse, location = connector.evse, connector.evse.location
    evse.last_updated = location.last_updated = now
    type(evse).objects.filter(pk=evse.pk).update(last_updated=now)
    type(location).objects.filter(pk=location.pk).update(last_updated=now)
    push_evse(evse)


@transaction.atomic
def attach_own_tariff(tariff: Tariff, connectors: list) -> tuple[int, int]:
    """Make `connectors` (of our own stations) name this tariff, and only those; returns (attached, detached)."""
    from stations.models import Connector

    wanted = {connector.pk for connector in connectors}
    attached = detached = 0
    current = Connector.objects.filter(evse__location__party=tariff.party).select_related("evse__location__party")
    for connector in current:
        has = any(str(t).upper() == tariff.ocpi_id.upper() for t in connector.tariff_ids or [])
        if connector.pk in wanted and not has:
            connector.tariff_ids = [*(connector.tariff_ids or []), tariff.ocpi_id]
            _touch_connector(connector)
            attached += 1
        elif connector.pk not in wanted and has:
            connector.tariff_ids = [t for t in connector.tariff_ids if str(t).upper() != tariff.ocpi_id.upper()]
            _touch_connector(connector)
            detached += 1
    return attached, detached
