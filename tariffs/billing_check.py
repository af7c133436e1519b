"""Each CDR a CPO sends us recomputed from the tariff it was billed by: the one it names (embedded in the CDR, or
stored by its id as it was at the session start), else its connector's tariff at the session start. A total
that differs by more than 1 cent and 1 % (tariffs.engine.cost_differs) is flagged "price differs" with both
figures, for staff to take up with the partner.

Called when a CDR is stored (charging.services.store_cdr); never stops a CDR from being stored.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import transaction

from tariffs import services
from tariffs.models import CdrPriceCheck, Tariff
from tariffs.selectors import tariff_as_of, tariff_at_connector

logger = logging.getLogger(__name__)
Outcome = CdrPriceCheck.Outcome


def _named_tariff_ids(raw: dict) -> list[str]:
    ids: list[str] = []
    for period in raw.get("charging_periods") or []:
        if isinstance(period, dict) and isinstance(period.get("tariff_id"), str) and period["tariff_id"] not in ids:
            ids.append(period["tariff_id"])
    return ids


def find_cdr_tariff(cdr) -> tuple[dict | None, Tariff | None, str, str]:
    """(tariff document, stored tariff or None, where it came from, detail) for a CDR."""
    raw = cdr.raw or {}
    embedded = {
        str(t.get("id", "")).upper(): t for t in raw.get("tariffs") or [] if isinstance(t, dict) and t.get("id")
    }
    named = _named_tariff_ids(raw)
    detail = f"the CDR names tariffs {', '.join(named)}; checked against the first" if len(named) > 1 else ""
    if named:
        wanted = named[0]
        if wanted.upper() in embedded:
            return embedded[wanted.upper()], None, "cdr", detail
        stored = Tariff.objects.filter(party=cdr.party, ocpi_id__iexact=wanted).first()
        if stored is not None:
            stored = tariff_as_of(stored, cdr.start_date_time)
            return stored.document, stored, "stored", detail
        return None, None, "", f"the CDR names tariff {wanted}, which it does not carry and we never received"
    if len(embedded) == 1:
        return next(iter(embedded.values())), None, "cdr", ""
    connector = _connector(cdr)
    if connector is not None:
        tariff = tariff_at_connector(connector, cdr.party_id, cdr.start_date_time)
        if tariff is not None:
            return tariff.document, tariff, "connector", "the connector's tariff at the session start"
        return None, None, "", "its connector names no tariff we know"
    return None, None, "", "no tariff named, and its connector is not one we know"


def _connector(cdr):
    """The connector a CDR was charged at: by its cdr_location (or its session), or the EVSE's only connector."""
    if cdr.evse is None:
        return None
    connector_id = str((cdr.cdr_location or {}).get("connector_id") or "")
    if not connector_id and cdr.session is not None:
        connector_id = cdr.session.connector_id
    connectors = list(cdr.evse.connectors.all())
    for connector in connectors:
        if connector_id and connector.connector_id.upper() == connector_id.upper():
            return connector
    return connectors[0] if len(connectors) == 1 else None


def activity_of_cdr(cdr):
    """The charging activity a CDR describes (engine.activity_from_cdr on its periods and our stored totals)."""
    from tariffs import engine

    return engine.activity_from_cdr(
        {
            "start_date_time": cdr.start_date_time,
            "end_date_time": cdr.end_date_time,
            "charging_periods": (cdr.raw or {}).get("charging_periods") or [],
            "total_energy": Decimal(cdr.total_energy),
            "total_parking_time": None if cdr.total_parking_time is None else Decimal(cdr.total_parking_time),
        }
    )


def check_cdr_price(cdr) -> CdrPriceCheck:
    """Recompute a CDR's total from its tariff and store the outcome (matches / differs / no tariff / not checked)."""
    from tariffs import engine

    fields: dict[str, Any] = {
        "stated_excl_vat": cdr.total_cost_excl_vat,
        "stated_incl_vat": cdr.total_cost_incl_vat,
        "currency": cdr.currency,
        "tariff": None,
        "tariff_ocpi_id": "",
        "tariff_source": "",
        "computed_excl_vat": None,
        "computed_incl_vat": None,
    }
    if cdr.credit:
        return _save(cdr, Outcome.NOT_CHECKED, "a credit CDR corrects another: nothing to recompute", fields)
    document, stored, source, detail = find_cdr_tariff(cdr)
    if document is None:
        return _save(cdr, Outcome.NO_TARIFF, detail, fields)
    fields.update(tariff=stored, tariff_ocpi_id=str(document.get("id", ""))[:36], tariff_source=source)
    if source == "cdr":
        try:
            document = services.check_tariff(document)[1]
        except services.InvalidTariff as error:
            return _save(cdr, Outcome.NOT_CHECKED, f"the tariff in the CDR is not valid: {error}"[:500], fields)
    if str(document.get("currency", "")).upper() != cdr.currency.upper():
        return _save(
            cdr, Outcome.NOT_CHECKED, f"the tariff is in {document.get('currency')}, the CDR in {cdr.currency}", fields
        )
    time_zone = (cdr.location.time_zone if cdr.location else "") or "UTC"
    try:
        cost = engine.price_session(document, activity_of_cdr(cdr), time_zone)
    except (
        engine.TariffError
    ) as error:  # also periods the engine cannot read  # e.g. the tariff was not valid when the session started
        return _save(cdr, Outcome.NOT_CHECKED, f"cannot be priced: {error}", fields)
    fields.update(computed_excl_vat=cost.total.excl_vat, computed_incl_vat=cost.total.incl_vat)
    differs = engine.cost_differs(Decimal(cdr.total_cost_excl_vat), cost.total.excl_vat)
    if cdr.total_cost_incl_vat is not None and cost.total.incl_vat is not None:
        differs = differs or engine.cost_differs(Decimal(cdr.total_cost_incl_vat), cost.total.incl_vat)
    return _save(cdr, Outcome.DIFFERS if differs else Outcome.MATCHES, detail, fields)


def _save(cdr, outcome: str, detail: str, fields: dict) -> CdrPriceCheck:
    check, _ = CdrPriceCheck.objects.update_or_create(
        cdr=cdr, defaults={**fields, "outcome": outcome, "detail": detail[:1000]}
    )
    return check


def check_stored_cdr(cdr) -> CdrPriceCheck | None:
    """The check as the CDR receiver runs it: a tariff that breaks the engine is logged, the CDR stays stored."""
    try:
        with transaction.atomic():
            return check_cdr_price(cdr)
    except Exception:
        logger.exception("Price check of %s failed", cdr)
        return None
