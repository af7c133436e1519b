"""A tariff's price in a few words for drivers: "€0.35/kWh · €0.10/min after 2 h · €1 start".

Prices are shown including VAT (what a driver pays) when every priced component states its VAT; otherwise excluding
VAT, and the text says so. Restrictions are put in a few words after the price they limit.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from tariffs.engine import (
    MINOR_UNITS,
    RESERVATION,
    RESERVATION_EXPIRES,
    TariffError,
    _Component,
    _parse_tariff,
    _Restrictions,
    _Tariff,
)

SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$", "JPY": "¥", "INR": "₹", "KRW": "₩", "PLN": "zł"}
SUFFIX_SYMBOLS = {"PLN"}  # written after the amount: "0,35 zł" style, kept simple as "0.35 zł"
DAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SEPARATOR = " · "
ALT_SEPARATOR = " — "
NOT_SHARED = "price not shared by the operator"


def describe(tariff: dict, language: str = "en") -> str:
    """The price in words, followed by the tariff_alt_text in `language` when the tariff has one.

    Both, because §11 says an alt text next to elements "SHALL only contain additional tariff information" (a
    conforming operator's alt text alone would hide the price), while the spec's own examples repeat the price there.
    """
    alt = _alt_text(tariff, language)
    try:
        words = _price_words(_parse_tariff(tariff))
    except TariffError:
        return alt or NOT_SHARED
    return f"{words}{ALT_SEPARATOR}{alt}" if alt else words


def _price_words(parsed: _Tariff) -> str:
    components = [c for e in parsed.elements for c in e.components.values()]
    with_vat = all(c.vat is not None for c in components if c.price)
    parts: list[str] = []
    for element in parsed.elements:
        words = _restriction_words(element.restrictions)
        for component in element.components.values():
            part = _component_words(component, parsed.currency, with_vat, element.restrictions.reservation)
            if part is None:
                continue
            text = f"{part} {words}".strip() if words else part
            if text not in parts:
                parts.append(text)
    if not parts:
        return "free"
    text = SEPARATOR.join(parts)
    return text if with_vat else f"{text}{SEPARATOR}excl. VAT"


def _alt_text(tariff: dict, language: str) -> str | None:
    texts = tariff.get("tariff_alt_text") if isinstance(tariff, dict) else None
    if not isinstance(texts, list) or not language:
        return None
    wanted = language.lower().replace("_", "-")
    for exact in (True, False):
        for entry in texts:
            if not isinstance(entry, dict) or not entry.get("text"):
                continue
            code = str(entry.get("language", "")).lower().replace("_", "-")
            if (code == wanted) if exact else (code.split("-")[0] == wanted.split("-")[0]):
                return str(entry["text"]).strip()
    return None


def money(amount: Decimal, currency: str, unit_price: bool = False) -> str:
    """€1, €0.35, CHF 0.35: whole amounts without decimals, others to the minor unit (a unit price to one more
    decimal when it has one: €0.275/kWh, as rounding it would misstate it)."""
    places = MINOR_UNITS.get(currency, 2)
    shown = places + 1 if unit_price else places
    amount = amount.quantize(Decimal(1).scaleb(-shown), rounding=ROUND_HALF_UP)
    if amount == amount.to_integral_value():
        figure = f"{amount:.0f}"
    elif amount == amount.quantize(Decimal(1).scaleb(-places)):
        figure = f"{amount:.{places}f}"
    else:
        figure = f"{amount:.{shown}f}"
    symbol = SYMBOLS.get(currency)
    if symbol is None:
        return f"{currency} {figure}"
    return f"{figure} {symbol}" if currency in SUFFIX_SYMBOLS else f"{symbol}{figure}"


def _exact_in_minor_units(amount: Decimal, currency: str) -> bool:
    places = MINOR_UNITS.get(currency, 2)
    return amount == amount.quantize(Decimal(1).scaleb(-places))


def _component_words(component: _Component, currency: str, with_vat: bool, reservation: str | None) -> str | None:
    price = component.price
    if with_vat and component.vat is not None:
        price = price * (1 + component.vat / 100)
    if component.type == "FLAT":
        if not price:
            return None
        label = {RESERVATION: "reservation fee", RESERVATION_EXPIRES: "if the reservation expires"}.get(
            reservation, "start")
        return f"{money(price, currency)} {label}"
    if component.type == "ENERGY":
        return f"{money(price, currency, unit_price=True)}/kWh" if price else "free energy"
    label = {"TIME": "", "PARKING_TIME": " parking"}[component.type]
    if reservation == RESERVATION:
        label = " reserved"
    elif reservation == RESERVATION_EXPIRES:
        label = " reserved, if it expires"
    if not price:
        return f"free{label}" if label else "free charging time"
    per_minute = price / 60
    # Per minute when that is a round amount (€0.10/min), per hour otherwise (€1.90/h).
    rate = f"{money(per_minute, currency)}/min" if _exact_in_minor_units(per_minute, currency) else (
        f"{money(price, currency)}/h")
    return f"{rate}{label}"


def _duration(seconds: Decimal) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _days(days: frozenset[int]) -> str:
    ordered = sorted(days)
    if ordered == [5, 6]:
        return "weekends"
    if ordered == [0, 1, 2, 3, 4]:
        return "weekdays"
    runs: list[list[int]] = []
    for day in ordered:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        DAY_ABBREVIATIONS[r[0]] if len(r) == 1 else f"{DAY_ABBREVIATIONS[r[0]]}–{DAY_ABBREVIATIONS[r[-1]]}"
        for r in runs
    )


def _restriction_words(r: _Restrictions) -> str:
    words: list[str] = []
    if r.min_duration is not None and r.max_duration is not None:
        words.append(f"from {_duration(r.min_duration)} to {_duration(r.max_duration)}")
    elif r.min_duration is not None:
        words.append(f"after {_duration(r.min_duration)}")
    elif r.max_duration is not None:
        words.append(f"first {_duration(r.max_duration)}")
    if r.min_kwh is not None and r.max_kwh is not None:
        words.append(f"from {_number(r.min_kwh)} to {_number(r.max_kwh)} kWh")
    elif r.min_kwh is not None:
        words.append(f"after {_number(r.min_kwh)} kWh")
    elif r.max_kwh is not None:
        words.append(f"first {_number(r.max_kwh)} kWh")
    for low, high, unit in ((r.min_power, r.max_power, "kW"), (r.min_current, r.max_current, "A")):
        if low is not None and high is not None:
            words.append(f"at {_number(low)}–{_number(high)} {unit}")
        elif low is not None:
            words.append(f"at {_number(low)} {unit} or more")
        elif high is not None:
            words.append(f"below {_number(high)} {unit}")
    if r.day_of_week:
        words.append(_days(r.day_of_week))
    if r.start_time is not None or r.end_time is not None:
        start = r.start_time.strftime("%H:%M") if r.start_time else "00:00"
        end = r.end_time.strftime("%H:%M") if r.end_time else "24:00"
        words.append(f"{start}–{end}")
    if r.start_date is not None:
        words.append(f"from {r.start_date.isoformat()}")
    if r.end_date is not None:
        words.append(f"before {r.end_date.isoformat()}")
    return " ".join(words)
