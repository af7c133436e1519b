"""Reads about tariffs: our OCPI sender's pages, the price a driver sees per connector, the estimated cost of a
session going on, and the CDR price checks staff count per partner.

Prices in words and costs come from the engine (tariffs.engine, pure); this module only finds the right tariff.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, QuerySet
from django.db.models.functions import Upper
from django.utils import timezone

from roaming.models import Party
from roaming.selectors import own_party
from tariffs.models import CdrPriceCheck, Tariff

logger = logging.getLogger(__name__)

NOT_SHARED = "not_shared"  # the connector names no tariff
UNKNOWN = "unknown"  # it names tariffs we never received (or none valid now)
PRICED = "priced"

NOT_SHARED_TEXT = "Price not shared by the operator"
UNKNOWN_TEXT = "Price not known: the operator's tariff has not reached us"
# When a connector gives neither power nor voltage and current, the typical session is priced at this power.
FALLBACK_POWER_KW = Decimal(11)
CURRENCY_SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$", "CHF": "CHF "}


# --- Our sender ------------------------------------------------------------------------------------------


def our_tariffs() -> QuerySet[Tariff]:
    """What our Tariffs SENDER lists: every tariff of our own party."""
    return Tariff.objects.filter(party=own_party())


def tariffs_to_ocpi(tariffs: list[Tariff]) -> list[dict]:
    """A page of tariffs as OCPI objects (no query: the stored document is the object)."""
    return [tariff.document for tariff in tariffs]


# --- Which tariff applies ---------------------------------------------------------------------------------


def known_tariffs(party_id: int, tariff_ids: Iterable[str]) -> dict[str, Tariff]:
    """The stored tariffs of one party among `tariff_ids`, keyed by upper-cased id (one query)."""
    keys = {str(tariff_id).upper() for tariff_id in tariff_ids if isinstance(tariff_id, str | int)}
    if not keys:
        return {}
    rows = Tariff.objects.annotate(key=Upper("ocpi_id")).filter(party_id=party_id, key__in=keys)
    return {row.key: row for row in rows}


def choose_tariff(tariff_ids: list, known: dict[str, Tariff], moment: dt.datetime) -> Tariff | None:
    """The tariff our card holders pay at a connector naming `tariff_ids`, at `moment` (the engine's rule,
    `engine.applicable_tariff`: valid then; REGULAR, else untyped, else a charging-profile one; never the
    AD_HOC_PAYMENT one, which is for drivers paying at the charger). Ties: the order the operator listed them in."""
    from tariffs import engine

    ordered = []
    for tariff_id in tariff_ids or []:
        tariff = known.get(str(tariff_id).upper())
        if tariff is not None and tariff not in ordered:
            ordered.append(tariff)
    chosen = engine.applicable_tariff([tariff.document for tariff in ordered], moment)
    return next((tariff for tariff in ordered if tariff.document is chosen), None)


def connector_tariff_state(connector, known: dict[str, Tariff], moment: dt.datetime) -> tuple[str, Tariff | None]:
    """(NOT_SHARED / UNKNOWN / PRICED, the tariff): what a driver and staff are told about a connector's price."""
    ids = [tariff_id for tariff_id in connector.tariff_ids or [] if isinstance(tariff_id, str | int)]
    if not ids:
        return NOT_SHARED, None
    tariff = choose_tariff(ids, known, moment)
    return (PRICED, tariff) if tariff is not None else (UNKNOWN, None)


def tariff_at_connector(connector, party_id: int, moment: dt.datetime) -> Tariff | None:
    """The tariff a connector's price followed at `moment` (as it was then, when we kept that version)."""
    known = known_tariffs(party_id, connector.tariff_ids or [])
    tariff = choose_tariff(connector.tariff_ids or [], known, moment)
    return tariff_as_of(tariff, moment) if tariff is not None else None


def tariff_as_of(tariff: Tariff, moment: dt.datetime) -> Tariff:
    """The version of a tariff in force at `moment`: the latest we held whose own `last_updated` is not later
    (the partner's clock, not the time its push reached us); the current one when every version is younger."""
    if tariff.last_updated <= moment:
        return tariff
    record = (
        tariff.history.filter(last_updated__lte=moment)
        .exclude(history_type="-")
        .order_by("-last_updated", "-history_date")
        .first()
    )
    return record.instance if record is not None else tariff


# --- Words and money for drivers --------------------------------------------------------------------------


def money(amount: Decimal | None, currency: str) -> str | None:
    if amount is None:
        return None
    symbol = CURRENCY_SYMBOLS.get(currency.upper(), currency.upper() + " ")
    return f"{symbol}{amount.quantize(Decimal('0.01'))}"


def price_of(cost, currency: str) -> dict:
    """A Cost's total for a driver: incl. VAT when the tariff says what VAT applies, else excl. VAT, and said so."""
    total = cost.total
    if total.incl_vat is not None:
        return {
            "amount": str(total.incl_vat.quantize(Decimal("0.01"))),
            "text": money(total.incl_vat, currency),
            "vat_included": True,
        }
    return {
        "amount": str(total.excl_vat.quantize(Decimal("0.01"))),
        "text": f"{money(total.excl_vat, currency)} excl. VAT",
        "vat_included": False,
    }


def alt_text(document: dict, language: str) -> str | None:
    """The tariff's own words (tariff_alt_text) in `language` (its main part: "nl" for "nl-be"), else English."""
    texts = [t for t in document.get("tariff_alt_text") or [] if isinstance(t, dict) and t.get("text")]
    wanted = (language or "en").lower().replace("_", "-").split("-")[0]
    for code in dict.fromkeys((wanted, "en")):
        for text in texts:
            if str(text.get("language", "")).lower().replace("_", "-").split("-")[0] == code:
                return str(text["text"]).strip()
    return None


def typical_session_kwh() -> Decimal:
    return Decimal(str(settings.TARIFFS_TYPICAL_SESSION_KWH))


def _power(connector) -> Decimal:
    power = Decimal(str(round(connector.power_kw, 1))) if connector.power_kw else Decimal(0)
    return power if power > 0 else FALLBACK_POWER_KW


def typical_estimate(tariff: Tariff, connector, time_zone: str, now: dt.datetime) -> dict:
    """The cost of a typical session (TARIFFS_TYPICAL_SESSION_KWH at the connector's power, starting now)."""
    from tariffs import engine

    kwh, power = typical_session_kwh(), _power(connector)
    cost = engine.estimate_session(tariff.document, kwh=kwh, power_kw=power, start=now, time_zone=time_zone or "UTC")
    minutes = int(round(kwh / power * 60))
    duration = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
    price = price_of(cost, tariff.currency)
    return {
        **price,
        "kwh": float(kwh),
        "power_kw": float(power),
        "duration": duration,
        "label": f"{price['text']} for {kwh.normalize():f} kWh (about {duration} at {power.normalize():f} kW, "
        "starting now)",
    }


def connector_price(
    connector,
    state: str,
    tariff: Tariff | None,
    *,
    language: str,
    time_zone: str,
    now: dt.datetime,
    with_estimate: bool = False,
) -> dict:
    """What a driver reads about one connector's price (the map panel, the start page)."""
    from tariffs import engine

    if state != PRICED:
        return {
            "status": state,
            "text": NOT_SHARED_TEXT if state == NOT_SHARED else UNKNOWN_TEXT,
            "tariff_id": None,
            "alt_text": None,
            "alt_url": None,
            "estimate": None,
        }
    document = tariff.document
    words = alt_text(document, language)
    try:
        # The structured words always (the engine would return the operator's text instead when there is one).
        text = engine.describe_tariff({k: v for k, v in document.items() if k != "tariff_alt_text"}, language)
    except Exception:
        # A partner's tariff the engine cannot read must not take the panel down: its own words, or "unknown".
        logger.exception("Tariff %s of party %s cannot be described", tariff.ocpi_id, tariff.party_id)
        text, words = words or UNKNOWN_TEXT, None
    result: dict[str, Any] = {
        "status": PRICED,
        "text": text,
        "tariff_id": tariff.ocpi_id,
        "alt_text": None if words == text else words,  # the engine may already have chosen the operator's words
        "alt_url": document.get("tariff_alt_url"),
        "estimate": None,
    }
    if with_estimate:
        try:
            result["estimate"] = typical_estimate(tariff, connector, time_zone, now)
        except Exception:
            logger.exception("Tariff %s of party %s cannot be priced", tariff.ocpi_id, tariff.party_id)
    return result


def location_prices(
    location, connectors: list, *, language: str, now: dt.datetime | None = None, with_estimate: bool = False
) -> dict[int, dict]:
    """Connector pk -> its price for a driver, for the connectors of one location (one query)."""
    now = now or timezone.now()
    known = known_tariffs(location.party_id, [t for c in connectors for t in c.tariff_ids or []])
    prices = {}
    for connector in connectors:
        state, tariff = connector_tariff_state(connector, known, now)
        prices[connector.pk] = connector_price(
            connector,
            state,
            tariff,
            language=language,
            time_zone=location.time_zone,
            now=now,
            with_estimate=with_estimate,
        )
    return prices


def evse_price(evse, *, language: str, now: dt.datetime | None = None) -> list[dict]:
    """Each connector of an EVSE with its price and a typical session's estimated cost (the start page)."""
    connectors = list(evse.connectors.order_by("connector_id"))
    prices = location_prices(evse.location, connectors, language=language, now=now, with_estimate=True)
    return [{"connector_id": c.connector_id, "power_kw": round(c.power_kw, 1), **prices[c.pk]} for c in connectors]


# --- A session going on -----------------------------------------------------------------------------------


def session_tariff(session) -> Tariff | None:
    """The tariff a session is charged by: the one its charging periods name, else its connector's at its start."""
    named = [p.get("tariff_id") for p in session.charging_periods or [] if isinstance(p, dict) and p.get("tariff_id")]
    if named:
        tariff = Tariff.objects.filter(party_id=session.party_id, ocpi_id__iexact=str(named[-1])).first()
        if tariff is not None:
            return tariff_as_of(tariff, session.start_date_time)
    if session.evse is None:
        return None
    connector = session.evse.connectors.filter(connector_id__iexact=session.connector_id).first()
    if connector is None:
        return None
    return tariff_at_connector(connector, session.party_id, session.start_date_time)


def estimated_cost_so_far(session, now: dt.datetime | None = None) -> dict | None:
    """The cost of a session so far computed from its tariff (for when the CPO sends none), or None."""
    from tariffs import engine

    tariff = session_tariff(session)
    if tariff is None or tariff.currency.upper() != (session.currency or tariff.currency).upper():
        return None
    now = now or timezone.now()
    time_zone = (session.location.time_zone if session.location else "") or "UTC"
    so_far = {
        "start_date_time": session.start_date_time,
        "end_date_time": session.end_date_time,
        "charging_periods": session.charging_periods or [],
        "kwh": Decimal(session.kwh),
    }
    try:
        activity = engine.activity_from_session(so_far, now)
        if session.status == "RESERVATION":
            activity = dataclasses.replace(activity, reservation="RESERVATION")
        cost = engine.price_session(tariff.document, activity, time_zone)
    except Exception:  # the live page shows "not sent by the operator" rather than fail
        logger.exception("Session %s cannot be priced with tariff %s", session.pk, tariff.ocpi_id)
        return None
    return {**price_of(cost, tariff.currency), "tariff_id": tariff.ocpi_id}


def price_our_session(session, samples: list) -> Any | None:
    """A session at our own stations priced with our tariff (`engine.Cost`) from our backend's meter values
    (charging.MeterSample: `at`, cumulative `kwh`, `power_kw`), or None when its connector names none of ours.

    An ended session whose energy stopped rising before its end was parked after that: the time from the first
    meter value at the final energy to the end is PARKING_TIME (a charging pause in a live session is not).
    """
    from tariffs import engine

    tariff = session_tariff(session)
    if tariff is None or tariff.currency.upper() != (session.currency or tariff.currency).upper():
        return None
    start = session.start_date_time
    readings = [
        engine.MeterSample(at=s.at, kwh=Decimal(s.kwh), power_kw=None if s.power_kw is None else Decimal(s.power_kw))
        for s in samples
        if s.at >= start
    ]
    if not readings or readings[0].at > start:
        readings.insert(0, engine.MeterSample(at=start, kwh=Decimal(0)))
    end = session.end_date_time or max(readings[-1].at, start)
    if session.end_date_time and Decimal(session.kwh) > readings[-1].kwh:
        readings.append(engine.MeterSample(at=end, kwh=Decimal(session.kwh)))  # the end's reading, if newer
    charging_end = None
    if session.end_date_time:
        final = readings[-1].kwh
        first_at_final = next(r.at for r in readings if r.kwh >= final)
        if final > 0 and first_at_final < end:
            charging_end = first_at_final
    activity = engine.ChargingActivity(start=start, end=end, samples=readings, charging_end=charging_end)
    time_zone = (session.location.time_zone if session.location else "") or "UTC"
    try:
        return engine.price_session(tariff.document, activity, time_zone)
    except engine.TariffError:
        logger.exception("Our session %s cannot be priced with tariff %s", session.pk, tariff.ocpi_id)
        return None


# --- Staff: CDR price checks ------------------------------------------------------------------------------

PRICE_CHECK_DAYS = 30


def price_differs_per_party(since: dt.datetime | None = None) -> dict[int, int]:
    """Per CPO party, its CDRs of the last PRICE_CHECK_DAYS days flagged "price differs" (one query)."""
    since = since or timezone.now() - dt.timedelta(days=PRICE_CHECK_DAYS)
    rows = (
        CdrPriceCheck.objects.filter(outcome=CdrPriceCheck.Outcome.DIFFERS, cdr__end_date_time__gte=since)
        .values("cdr__party")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {row["cdr__party"]: row["n"] for row in rows}


def partner_tariffs(party: Party) -> QuerySet[Tariff]:
    return Tariff.objects.filter(party=party)
