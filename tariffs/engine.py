"""OCPI 2.2.1 tariff engine (§11 Tariffs module): what a charging session costs under a Tariff.

Pure functions, no I/O, no Django models: a Tariff is the OCPI object as a dict (as on the wire), money is Decimal.

The price rules (details and the spec's printed figures we depart from: docs/tariffs-engine.md):

- The session is cut into segments at every instant something could change the active TariffElement: meter
  samples, the end of charging, local midnights and `start_time`/`end_time` in the location's time zone,
  `min/max_duration` and `min/max_kwh` crossings. In each segment, per dimension, the first TariffElement that has
  a PriceComponent of that dimension and whose restrictions all match is active; no match means that dimension is
  free there. Consecutive segments with the same active elements form one OCPI ChargingPeriod.
- `TIME` is billed while charging (session start to `charging_end`), `PARKING_TIME` after it, `ENERGY` on the kWh
  delivered, `FLAT` once for the session (the first FLAT that is active) and once for a reservation.
- `step_size` is applied to the last period of each dimension, and to the last period before a switch to an element
  without that dimension: the volume of that dimension since it last became paid is rounded up to the step of the
  PriceComponent billing it, the rest of the periods are billed exactly.
- VAT per PriceComponent; a component without `vat` that bills a non-zero amount makes the price incl. VAT unknown.
- Amounts are summed exactly; `min_price`/`max_price` clamp the total (excl. and incl. VAT separately); then the
  total and each dimension are rounded to the currency's minor unit, half up (so parts may not add up to the cent).
- The tariff must be valid (`start_date_time` .. `end_date_time`) when the session (or reservation) starts; it
  then prices the whole session, as the driver accepted it at the start.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ChargingActivity",
    "activity_from_cdr",
    "activity_from_session",
    "applicable_tariff",
    "Cost",
    "MeterSample",
    "Price",
    "TariffError",
    "TariffNotValid",
    "cost_differs",
    "describe_tariff",
    "estimate_session",
    "price_session",
    "tariff_valid_at",
]

DIMENSIONS = ("FLAT", "ENERGY", "TIME", "PARKING_TIME")
# Keys of Cost.by_dimension: the four tariff dimensions and the reservation (its FLAT fee and reserved TIME),
# matching the CDR's total_fixed_cost, total_energy_cost, total_time_cost, total_parking_cost, total_reservation_cost.
COST_KEYS = (*DIMENSIONS, "RESERVATION")
RESERVATION = "RESERVATION"
RESERVATION_EXPIRES = "RESERVATION_EXPIRES"
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
# Sum of the currents over all phases is P / 230 V for 1-phase and 3-phase alike (230 V phase voltage in Europe):
# used when a meter sample carries power but no current.
PHASE_VOLTAGE = Decimal(230)
# ISO 4217 currencies whose minor unit is not the cent.
MINOR_UNITS = {
    "BHD": 3, "CLP": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3,
    "PYG": 0, "TND": 3, "UGX": 0, "VND": 0, "XAF": 0, "XOF": 0,
}
ZERO = Decimal(0)
MIDNIGHT = time(0, 0)
HOUR = Decimal(3600)
ONE_CENT = Decimal("0.01")
VOLUME_PRECISION = Decimal("1e-6")  # of a Wh or a second
AMOUNT_PRECISION = Decimal("1e-9")
NUMBER_LIMIT = Decimal(10) ** 8  # as our Decimal(12, 4) columns hold; keeps the arithmetic within 28 digits
MAX_SESSION = timedelta(days=60)  # a longer "session" is a data error, not something to price day by day


class TariffError(ValueError):
    """The tariff or the session cannot be priced (malformed input); the message names the field."""


class TariffNotValid(TariffError):
    """The tariff is outside its start_date_time/end_date_time when the session starts."""


@dataclass(frozen=True)
class Price:
    excl_vat: Decimal
    incl_vat: Decimal | None  # None when the VAT of a billed component is unknown

    def as_ocpi(self) -> dict:
        """The OCPI Price object (numbers as on the wire); incl_vat left out when unknown."""
        out: dict = {"excl_vat": float(self.excl_vat)}
        if self.incl_vat is not None:
            out["incl_vat"] = float(self.incl_vat)
        return out


@dataclass(frozen=True)
class MeterSample:
    """A meter reading: `kwh` is the energy delivered since the session start (cumulative).

    `power_kw` / `current_a` (sum over phases) hold from `at` until the next sample; when absent, the interval's
    average power (energy / time) is used, and the current is derived from the power (P / 230 V).
    """

    at: datetime
    kwh: Decimal
    power_kw: Decimal | None = None
    current_a: Decimal | None = None


@dataclass(frozen=True)
class ChargingActivity:
    """A session from `start` to `end`; after `charging_end` (if given) the car is parked, not charging.

    `reservation` = "RESERVATION": `start` is when the reservation was made, the session (charging) starts at the
    first sample (or `end` when there is none). "RESERVATION_EXPIRES": the whole activity is an expired reservation.
    """

    start: datetime
    end: datetime
    samples: list[MeterSample] = field(default_factory=list)
    charging_end: datetime | None = None
    reservation: str | None = None


@dataclass(frozen=True)
class Cost:
    total: Price
    by_dimension: dict[str, Price]  # keys COST_KEYS; before min_price/max_price, which clamp only the total
    periods: list[dict]  # OCPI ChargingPeriod objects


# --------------------------------------------------------------------------------------------------- tariff parsing


def _dec(value, name: str) -> Decimal:
    if isinstance(value, bool):
        raise TariffError(f"{name}: not a number")
    try:
        out = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise TariffError(f"{name}: not a number") from None
    if not out.is_finite():
        raise TariffError(f"{name}: not a finite number")
    if abs(out) >= NUMBER_LIMIT:
        raise TariffError(f"{name}: out of range")
    return out


def _opt_dec(data: dict, key: str, name: str) -> Decimal | None:
    value = data.get(key)
    return None if value is None else _dec(value, f"{name}.{key}")


def _parse_datetime(value, name: str) -> datetime:
    if isinstance(value, datetime):
        out = value
    else:
        try:
            out = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise TariffError(f"{name}: not a DateTime") from None
    # OCPI: a DateTime without a zone designator is UTC.
    return out.astimezone(UTC) if out.tzinfo else out.replace(tzinfo=UTC)


def _parse_time(value, name: str) -> time:
    try:
        hours, minutes = (int(part) for part in str(value).split(":"))
        if (hours, minutes) == (24, 0):
            return time(0, 0)  # not in the spec's pattern, but some send it for midnight at the end of the day
        return time(hours, minutes)
    except ValueError:
        raise TariffError(f"{name}: not a time of day HH:MM") from None


def _parse_date(value, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise TariffError(f"{name}: not a date YYYY-MM-DD") from None


@dataclass(frozen=True)
class _Component:
    element: int
    type: str
    price: Decimal
    vat: Decimal | None
    step_size: int


@dataclass(frozen=True)
class _Restrictions:
    start_time: time | None = None
    end_time: time | None = None
    start_date: date | None = None
    end_date: date | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_current: Decimal | None = None
    max_current: Decimal | None = None
    min_power: Decimal | None = None
    max_power: Decimal | None = None
    min_duration: Decimal | None = None
    max_duration: Decimal | None = None
    day_of_week: frozenset[int] = frozenset()
    reservation: str | None = None


@dataclass(frozen=True)
class _Element:
    index: int
    components: dict[str, _Component]
    restrictions: _Restrictions


@dataclass(frozen=True)
class _Tariff:
    id: str
    currency: str
    elements: tuple[_Element, ...]
    min_price: Price | None
    max_price: Price | None
    start_date_time: datetime | None
    end_date_time: datetime | None


def _parse_price(value, name: str) -> Price | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("excl_vat") is None:
        raise TariffError(f"{name}: not a Price")
    return Price(_dec(value["excl_vat"], f"{name}.excl_vat"), _opt_dec(value, "incl_vat", name))


def _parse_restrictions(data, name: str) -> _Restrictions:
    if data is None:
        return _Restrictions()
    if not isinstance(data, dict):
        raise TariffError(f"{name}: not a TariffRestrictions object")
    days = data.get("day_of_week") or []
    try:
        day_numbers = frozenset(WEEKDAYS.index(str(day).upper()) for day in days)
    except ValueError:
        raise TariffError(f"{name}.day_of_week: not a DayOfWeek") from None
    reservation = data.get("reservation")
    if reservation is not None and reservation not in (RESERVATION, RESERVATION_EXPIRES):
        raise TariffError(f"{name}.reservation: not a ReservationRestrictionType")

    def opt(key: str, parse):
        value = data.get(key)
        return None if value is None else parse(value, f"{name}.{key}")

    return _Restrictions(
        start_time=opt("start_time", _parse_time),
        end_time=opt("end_time", _parse_time),
        start_date=opt("start_date", _parse_date),
        end_date=opt("end_date", _parse_date),
        min_kwh=_opt_dec(data, "min_kwh", name),
        max_kwh=_opt_dec(data, "max_kwh", name),
        min_current=_opt_dec(data, "min_current", name),
        max_current=_opt_dec(data, "max_current", name),
        min_power=_opt_dec(data, "min_power", name),
        max_power=_opt_dec(data, "max_power", name),
        min_duration=_opt_dec(data, "min_duration", name),
        max_duration=_opt_dec(data, "max_duration", name),
        day_of_week=day_numbers,
        reservation=reservation,
    )


def _parse_tariff(tariff: dict) -> _Tariff:
    if not isinstance(tariff, dict):
        raise TariffError("tariff: not a Tariff object")
    raw_elements = tariff.get("elements")
    if not isinstance(raw_elements, list) or not raw_elements:
        raise TariffError("elements: at least one TariffElement is required")
    elements = []
    for index, raw in enumerate(raw_elements):
        name = f"elements[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("price_components"), list):
            raise TariffError(f"{name}.price_components: required")
        components: dict[str, _Component] = {}
        for number, pc in enumerate(raw["price_components"]):
            pc_name = f"{name}.price_components[{number}]"
            if not isinstance(pc, dict) or pc.get("type") not in DIMENSIONS:
                raise TariffError(f"{pc_name}.type: not a TariffDimensionType")
            if pc.get("price") is None:
                raise TariffError(f"{pc_name}.price: required")
            step = _dec(pc.get("step_size") or 0, f"{pc_name}.step_size")
            # Only the first component of a dimension in an element can ever be active.
            components.setdefault(
                pc["type"],
                _Component(index, pc["type"], _dec(pc["price"], f"{pc_name}.price"), _opt_dec(pc, "vat", pc_name),
                           max(int(step), 0)),
            )
        restrictions = _parse_restrictions(raw.get("restrictions"), f"{name}.restrictions")
        elements.append(_Element(index, components, restrictions))
    start = tariff.get("start_date_time")
    end = tariff.get("end_date_time")
    return _Tariff(
        id=str(tariff.get("id", "")),
        currency=str(tariff.get("currency") or "EUR").upper(),
        elements=tuple(elements),
        min_price=_parse_price(tariff.get("min_price"), "min_price"),
        max_price=_parse_price(tariff.get("max_price"), "max_price"),
        start_date_time=None if start is None else _parse_datetime(start, "start_date_time"),
        end_date_time=None if end is None else _parse_datetime(end, "end_date_time"),
    )


def tariff_valid_at(tariff: dict, at: datetime) -> bool:
    """True when `at` lies within the tariff's start_date_time (inclusive) and end_date_time (inclusive)."""
    parsed = _parse_tariff(tariff)
    return _valid_at(parsed, _aware(at, "at"))


def applicable_tariff(tariffs: list[dict], at: datetime, *, ad_hoc: bool = False) -> dict | None:
    """Of a connector's tariffs, the one a card holder's session starting `at` pays: valid then, and of type
    REGULAR or without a type ("valid for all sessions"); AD_HOC_PAYMENT only when `ad_hoc` (a payment terminal),
    PROFILE_* only when nothing else fits (they need Charging Preferences)."""
    at = _aware(at, "at")
    valid = []
    for tariff in tariffs:
        try:
            if _valid_at(_parse_tariff(tariff), at):
                valid.append(tariff)
        except TariffError:
            continue
    profiles = ("PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN")
    wanted = (("AD_HOC_PAYMENT",), (None,)) if ad_hoc else (("REGULAR",), (None,), profiles)
    for types in wanted:
        for tariff in valid:
            if tariff.get("type") in types:
                return tariff
    return None


def _valid_at(tariff: _Tariff, at: datetime) -> bool:
    if tariff.start_date_time is not None and at < tariff.start_date_time:
        return False
    return not (tariff.end_date_time is not None and at > tariff.end_date_time)


def _aware(value: datetime, name: str) -> datetime:
    """In UTC: arithmetic on datetimes in a local zone is wall-clock time, wrong across a DST change."""
    if not isinstance(value, datetime):
        raise TariffError(f"{name}: not a datetime")
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------------------ the meter


class _Meter:
    """Cumulative energy as a piecewise-linear function of time, with the power and current of each interval."""

    def __init__(self, samples: list[MeterSample], charging_start: datetime, charging_end: datetime):
        points = sorted(
            ((_aware(s.at, "samples.at"), _dec(s.kwh, "samples.kwh"),
              None if s.power_kw is None else _dec(s.power_kw, "samples.power_kw"),
              None if s.current_a is None else _dec(s.current_a, "samples.current_a"))
             for s in samples),
            key=lambda point: (point[0], point[1]),
        )
        if points and points[0][0] > charging_start:
            # Before the first reading: from 0 kWh at the start, at the power of the first reading.
            points.insert(0, (charging_start, ZERO, points[0][2], points[0][3]))
        # Readings never go down (a meter glitch is not a refund).
        cumulative = ZERO
        self.points: list[tuple[datetime, Decimal, Decimal | None, Decimal | None]] = []
        for at, kwh, power, current in points:
            cumulative = max(cumulative, kwh)
            self.points.append((at, cumulative, power, current))
        self.times = [point[0] for point in self.points]
        self.charging_end = charging_end

    def kwh_at(self, at: datetime) -> Decimal:
        index = bisect_right(self.times, at) - 1  # the last reading at or before `at`
        if index < 0:
            return ZERO
        t0, k0 = self.points[index][:2]
        if index + 1 == len(self.points) or at == t0:
            return k0
        t1, k1 = self.points[index + 1][:2]
        return k0 + (k1 - k0) * _seconds(at - t0) / _seconds(t1 - t0)

    def _interval(self, at: datetime) -> int | None:
        """Index of the reading whose interval contains `at` (None before the first)."""
        index = bisect_right(self.times, at) - 1
        return None if index < 0 else index

    def power_current(self, at: datetime) -> tuple[Decimal | None, Decimal | None]:
        if at >= self.charging_end:
            return ZERO, ZERO
        index = self._interval(at)
        if index is None:
            return None, None
        t0, k0, power, current = self.points[index]
        if power is None:
            if index + 1 < len(self.points):
                t1, k1 = self.points[index + 1][:2]
                power = (k1 - k0) / (_seconds(t1 - t0) / HOUR)
            else:
                power = ZERO  # after the last reading no energy flows
        if current is None and power is not None:
            current = power * 1000 / PHASE_VOLTAGE
        return power, current

    def crossings(self, kwh: Decimal) -> list[datetime]:
        """Instants at which the delivered energy reaches `kwh`."""
        out = []
        for (t0, k0, _, _), (t1, k1, _, _) in zip(self.points, self.points[1:], strict=False):
            if k0 < kwh < k1:
                fraction = (kwh - k0) / (k1 - k0)
                out.append(t0 + timedelta(microseconds=int(fraction * ((t1 - t0) // timedelta(microseconds=1)))))
        return out


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta // timedelta(microseconds=1)) / Decimal(1_000_000)


# ------------------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Moment:
    """What the restrictions are evaluated against, at the middle of a segment."""

    local: datetime
    kwh: Decimal
    duration: Decimal
    power: Decimal | None
    current: Decimal | None


def _time_matches(r: _Restrictions, local: time) -> bool:
    start, end = r.start_time, r.end_time
    if start is None and end is None:
        return True
    if end is None:
        return local >= start
    if start is None:
        return end == MIDNIGHT or local < end  # "until 00:00" is until the end of the day
    if start < end:
        return start <= local < end
    if start > end:  # across midnight, e.g. 22:00-06:00 or 20:00-00:00
        return local >= start or local < end
    return True  # start == end: the whole day


def _between(value: Decimal | None, low: Decimal | None, high: Decimal | None) -> bool:
    """min inclusive, max exclusive; a bound on an unknown quantity does not match."""
    if low is None and high is None:
        return True
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value < high)


def _matches(r: _Restrictions, moment: _Moment) -> bool:
    local = moment.local
    if r.day_of_week and local.weekday() not in r.day_of_week:
        return False
    if r.start_date is not None and local.date() < r.start_date:
        return False
    if r.end_date is not None and local.date() >= r.end_date:
        return False
    return (
        _time_matches(r, local.time())
        and _between(moment.kwh, r.min_kwh, r.max_kwh)
        and _between(moment.duration, r.min_duration, r.max_duration)
        and _between(moment.power, r.min_power, r.max_power)
        and _between(moment.current, r.min_current, r.max_current)
    )


def _candidates(tariff: _Tariff, reservation: str | None) -> list[_Element]:
    """Elements that may apply in a phase, in the order in which they are tried."""
    if reservation is None:
        return [e for e in tariff.elements if e.restrictions.reservation is None]
    if reservation == RESERVATION:
        return [e for e in tariff.elements if e.restrictions.reservation == RESERVATION]
    # An expired reservation: its own elements win (§11 ReservationRestrictionType note), then the reservation's.
    expired = [e for e in tariff.elements if e.restrictions.reservation == RESERVATION_EXPIRES]
    return expired + [e for e in tariff.elements if e.restrictions.reservation == RESERVATION]


def _active(candidates: list[_Element], dimension: str, moment: _Moment) -> _Component | None:
    for element in candidates:
        component = element.components.get(dimension)
        if component is not None and _matches(element.restrictions, moment):
            return component
    return None


# --------------------------------------------------------------------------------------------------------- pricing


@dataclass
class _Segment:
    start: datetime
    end: datetime
    phase: str  # RESERVATION, CHARGING or PARKING
    energy: Decimal
    seconds: Decimal
    active: dict[str, _Component | None]


def _local_boundaries(tariff: _Tariff, zone: ZoneInfo, start: datetime, end: datetime) -> set[datetime]:
    times = {time(0, 0)}
    for element in tariff.elements:
        r = element.restrictions
        times.update(t for t in (r.start_time, r.end_time) if t is not None)
    out = set()
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        for moment in times:
            out.add(datetime.combine(day, moment, tzinfo=zone).astimezone(UTC))
        day += timedelta(days=1)
    return out


def _cuts(tariff: _Tariff, zone: ZoneInfo, meter: _Meter, origin: datetime, start: datetime, end: datetime,
          fixed: list[datetime]) -> list[datetime]:
    cuts = {start, end, *fixed, *(p[0] for p in meter.points)}
    cuts |= _local_boundaries(tariff, zone, start, end)
    for element in tariff.elements:
        r = element.restrictions
        for seconds in (r.min_duration, r.max_duration):
            if seconds is not None and 0 < seconds < _seconds(end - origin):
                cuts.add(origin + timedelta(seconds=float(seconds)))
        for kwh in (r.min_kwh, r.max_kwh):
            if kwh is not None:
                cuts.update(meter.crossings(kwh))
    return sorted(c for c in cuts if start <= c <= end)


def _segments(tariff: _Tariff, activity: ChargingActivity, zone: ZoneInfo) -> list[_Segment]:
    start = _aware(activity.start, "start")
    end = _aware(activity.end, "end")
    if end < start:
        raise TariffError("end: before start")
    if end - start > MAX_SESSION:
        raise TariffError(f"end: more than {MAX_SESSION.days} days after start")
    if activity.reservation not in (None, RESERVATION, RESERVATION_EXPIRES):
        raise TariffError("reservation: not RESERVATION or RESERVATION_EXPIRES")
    samples = list(activity.samples or [])
    if activity.reservation == RESERVATION_EXPIRES:
        session_start = end  # no charging session followed
    elif activity.reservation == RESERVATION:
        session_start = min((_aware(s.at, "samples.at") for s in samples), default=end)
        session_start = min(max(session_start, start), end)
    else:
        session_start = start
    charging_end = end if activity.charging_end is None else _aware(activity.charging_end, "charging_end")
    charging_end = min(max(charging_end, session_start), end)
    meter = _Meter(samples, session_start, charging_end)

    segments: list[_Segment] = []
    phases = []
    if session_start > start:
        phases.append((start, session_start, start, activity.reservation or RESERVATION))
    if end > session_start:
        phases.append((session_start, end, session_start, None))
    for phase_start, phase_end, origin, reservation in phases:
        candidates = _candidates(tariff, reservation)
        cuts = _cuts(tariff, zone, meter if reservation is None else _Meter([], start, start), origin,
                     phase_start, phase_end, [charging_end])
        for t0, t1 in zip(cuts, cuts[1:], strict=False):
            if t1 <= t0:
                continue
            middle = t0 + (t1 - t0) / 2
            if reservation is not None:
                phase, power, current, kwh, energy = RESERVATION, ZERO, ZERO, ZERO, ZERO
            else:
                phase = "CHARGING" if middle < charging_end else "PARKING"
                power, current = meter.power_current(middle)
                kwh = meter.kwh_at(middle)
                energy = meter.kwh_at(t1) - meter.kwh_at(t0)
            moment = _Moment(middle.astimezone(zone), kwh, _seconds(middle - origin), power, current)
            dimensions = ("FLAT", "TIME") if reservation is not None else DIMENSIONS
            active = {d: _active(candidates, d, moment) for d in dimensions}
            segments.append(_Segment(t0, t1, phase, energy, _seconds(t1 - t0), active))
    return segments


# A billed quantity: (component or None when free, volume in step units: Wh or seconds)
_Entry = tuple[_Component | None, Decimal]


def _bill(entries: list[_Entry], unit_per_price: Decimal, steps: bool = True) -> tuple[Decimal, Decimal | None]:
    """Cost excl./incl. VAT of one dimension's volumes in period order, step_size on the last of each paid run."""
    entries = [(c, v) for c, v in entries if v > 0]
    excl = ZERO
    incl: Decimal | None = ZERO
    run_used = ZERO
    run_billed = ZERO
    for index, (component, volume) in enumerate(entries):
        if component is None:
            run_used = run_billed = ZERO
            continue
        run_used += volume
        following = entries[index + 1][0] if index + 1 < len(entries) else None
        billed = volume
        if steps and following is None and component.step_size >= 1:
            # Last period of this dimension, or the next element has no such component: round the run up.
            step = Decimal(component.step_size)
            # Quantized first: interpolation leaves noise in the 20th decimal that must not cost a whole step.
            used = run_used.quantize(VOLUME_PRECISION)
            billed = max(ZERO, Decimal(math.ceil(used / step)) * step - run_billed)
        run_billed += billed
        amount = billed * component.price / unit_per_price
        excl += amount
        if component.vat is None:
            if amount:
                incl = None
        elif incl is not None:
            incl += amount * (1 + component.vat / 100)
        if following is None:
            run_used = run_billed = ZERO
    return excl, incl


def _round(value: Decimal | None, currency: str) -> Decimal | None:
    if value is None:
        return None
    # Two steps: away with the arithmetic noise (…4999999 must round as …5), then half up to the minor unit.
    minor_unit = Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))
    return value.quantize(AMOUNT_PRECISION).quantize(minor_unit, rounding=ROUND_HALF_UP)


def _flat(segments: list[_Segment], phases: tuple[str, ...], key: str = "FLAT") -> list[_Entry]:
    for segment in segments:
        if segment.phase in phases and segment.active.get(key) is not None:
            return [(segment.active[key], Decimal(1))]
    return []


def _format_datetime(value: datetime) -> str:
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _volume(value: Decimal, places: int) -> float:
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _periods(tariff: _Tariff, segments: list[_Segment]) -> list[dict]:
    """Group segments into OCPI ChargingPeriods: a new period whenever the phase or an active element changes."""
    periods: list[dict] = []
    last_key = None
    totals: dict[str, Decimal] = {}
    for segment in segments:
        if segment.phase == "CHARGING":
            relevant = ("ENERGY", "TIME")
        elif segment.phase == "PARKING":
            relevant = ("PARKING_TIME", "ENERGY")
        else:
            relevant = ("TIME",)
        key = (segment.phase, tuple((d, segment.active[d] and segment.active[d].element) for d in relevant))
        if key != last_key:
            totals = {}
            periods.append({"start_date_time": _format_datetime(segment.start), "dimensions": totals})
            if tariff.id:
                periods[-1]["tariff_id"] = tariff.id
            last_key = key
        if segment.phase == "CHARGING":
            totals["ENERGY"] = totals.get("ENERGY", ZERO) + segment.energy
            totals["TIME"] = totals.get("TIME", ZERO) + segment.seconds
        elif segment.phase == "PARKING":
            if segment.energy:
                totals["ENERGY"] = totals.get("ENERGY", ZERO) + segment.energy
            totals["PARKING_TIME"] = totals.get("PARKING_TIME", ZERO) + segment.seconds
        else:
            totals["RESERVATION_TIME"] = totals.get("RESERVATION_TIME", ZERO) + segment.seconds
    for period in periods:
        totals = period["dimensions"]
        period["dimensions"] = [
            {"type": kind, "volume": _volume(value, 4) if kind == "ENERGY" else _volume(value / HOUR, 6)}
            for kind, value in totals.items()
        ]
    return periods


def price_session(tariff: dict, activity: ChargingActivity, time_zone: str) -> Cost:
    """The cost of `activity` under the OCPI `tariff`, local restrictions read in `time_zone` (the location's)."""
    parsed = _parse_tariff(tariff)
    try:
        zone = ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise TariffError(f"time_zone: unknown time zone {time_zone!r}") from None
    started = _aware(activity.start, "start")
    if not _valid_at(parsed, started):
        raise TariffNotValid(f"tariff {parsed.id}: not valid at {_format_datetime(started)}")
    segments = _segments(parsed, activity, zone)

    session = ("CHARGING", "PARKING")
    entries: dict[str, tuple[list[_Entry], Decimal]] = {
        "FLAT": (_flat(segments, session), Decimal(1)),  # FLAT has no unit, so no step_size
        "ENERGY": ([(s.active["ENERGY"], s.energy * 1000) for s in segments if s.phase in session], Decimal(1000)),
        "TIME": ([(s.active["TIME"], s.seconds) for s in segments if s.phase == "CHARGING"], HOUR),
        "PARKING_TIME": ([(s.active["PARKING_TIME"], s.seconds) for s in segments if s.phase == "PARKING"], HOUR),
    }
    exact: dict[str, tuple[Decimal, Decimal | None]] = {
        key: _bill(dimension_entries, unit, steps=key != "FLAT")
        for key, (dimension_entries, unit) in entries.items()
    }
    reserved = [s for s in segments if s.phase == RESERVATION]
    flat_excl, flat_incl = _bill(_flat(reserved, (RESERVATION,)), Decimal(1), steps=False)
    time_excl, time_incl = _bill([(s.active["TIME"], s.seconds) for s in reserved], HOUR)
    reservation_incl = None if flat_incl is None or time_incl is None else flat_incl + time_incl
    exact["RESERVATION"] = (flat_excl + time_excl, reservation_incl)

    # Each figure is rounded from the exact amounts (the total is not the sum of rounded parts: a cent may differ).
    currency = parsed.currency
    by_dimension = {key: Price(_round(excl, currency), _round(incl, currency)) for key, (excl, incl) in exact.items()}
    excl = sum((e for e, _ in exact.values()), ZERO)
    incl = None if any(i is None for _, i in exact.values()) else sum((i for _, i in exact.values()), ZERO)
    clamped = _clamp(Price(excl, incl), parsed.min_price, parsed.max_price)
    total = Price(_round(clamped.excl_vat, currency), _round(clamped.incl_vat, currency))
    return Cost(total=total, by_dimension=by_dimension, periods=_periods(parsed, segments))


def _clamp(total: Price, min_price: Price | None, max_price: Price | None) -> Price:
    """min_price/max_price: excl. and incl. VAT are each bounded by their own figure (§11 Tariff notes)."""
    excl, incl = total.excl_vat, total.incl_vat
    if min_price is not None and excl < min_price.excl_vat:
        excl = min_price.excl_vat
        if incl is None:
            incl = min_price.incl_vat  # the session costs the minimum price, whose incl. VAT is stated
    if max_price is not None and excl > max_price.excl_vat:
        excl = max_price.excl_vat
        if incl is None:
            incl = max_price.incl_vat
    if incl is not None:
        if min_price is not None and min_price.incl_vat is not None:
            incl = max(incl, min_price.incl_vat)
        if max_price is not None and max_price.incl_vat is not None:
            incl = min(incl, max_price.incl_vat)
    return Price(excl, incl)


def estimate_session(tariff: dict, *, kwh: Decimal, power_kw: Decimal, start: datetime, time_zone: str) -> Cost:
    """A typical session: `kwh` delivered at a constant `power_kw` from `start`, unplugged when full (no parking)."""
    kwh = _dec(kwh, "kwh")
    power = _dec(power_kw, "power_kw")
    if power <= 0 or kwh < 0:
        raise TariffError("power_kw: must be positive" if power <= 0 else "kwh: must not be negative")
    start = _aware(start, "start")
    end = start + timedelta(microseconds=int(kwh / power * 3_600_000_000))
    samples = [MeterSample(start, ZERO, power), MeterSample(end, kwh, power)]
    return price_session(tariff, ChargingActivity(start=start, end=end, samples=samples, charging_end=end), time_zone)


# ------------------------------------------------------------------------ sessions as OCPI CDRs and Sessions tell them


def activity_from_cdr(cdr: dict) -> ChargingActivity:
    """The session an OCPI CDR describes, rebuilt from its charging_periods, to recompute its cost."""
    parking = cdr.get("total_parking_time")
    return _activity_from_periods(
        _parse_datetime(cdr.get("start_date_time"), "start_date_time"),
        _parse_datetime(cdr.get("end_date_time"), "end_date_time"),
        cdr.get("charging_periods") or [],
        _dec(cdr.get("total_energy") or 0, "total_energy"),
        None if parking is None else _dec(parking, "total_parking_time"),
    )


def activity_from_session(session: dict, now: datetime | None = None) -> ChargingActivity:
    """An OCPI Session so far (to its end_date_time, else `now`, else its last_updated), for a "cost so far"."""
    start = _parse_datetime(session.get("start_date_time"), "start_date_time")
    until = session.get("end_date_time") or now or session.get("last_updated") or start
    end = max(_parse_datetime(until, "end_date_time"), start)
    return _activity_from_periods(start, end, session.get("charging_periods") or [],
                                  _dec(session.get("kwh") or 0, "kwh"), None)


def _plus_hours(at: datetime, hours: Decimal, limit: datetime) -> datetime:
    """`at` + `hours`, no later than `limit` (nor earlier than `at`): a period's volume cannot leave the session."""
    seconds = min(max(hours * HOUR, ZERO), max(_seconds(limit - at), ZERO))
    return at + timedelta(seconds=float(seconds))


def _activity_from_periods(start: datetime, end: datetime, periods: list, total_kwh: Decimal,
                           total_parking: Decimal | None) -> ChargingActivity:
    """Meter samples from ChargingPeriods: each period's energy is delivered over its TIME (else up to the next
    period), at its MAX_POWER/MAX_CURRENT (else MIN_*, else the average); parking starts with the first period
    that only parks. Periods whose energy adds up to 1000 × the total were sent in Wh (the spec's own Session
    example does that): read as such."""
    parsed = []
    for index, period in enumerate(periods):
        if not isinstance(period, dict):
            raise TariffError(f"charging_periods[{index}]: not a ChargingPeriod")
        dims: dict[str, Decimal] = {}
        for dimension in period.get("dimensions") or []:
            if isinstance(dimension, dict) and dimension.get("volume") is not None:
                kind = str(dimension.get("type"))
                dims[kind] = dims.get(kind, ZERO) + _dec(dimension["volume"], f"charging_periods[{index}].volume")
        parsed.append((_parse_datetime(period.get("start_date_time"), f"charging_periods[{index}].start_date_time"),
                       dims))
    parsed.sort(key=lambda item: item[0])
    energy_sum = sum((dims.get("ENERGY", ZERO) for _, dims in parsed), ZERO)
    scale = Decimal(1)
    if energy_sum and total_kwh and abs(energy_sum / 1000 - total_kwh) < abs(energy_sum - total_kwh):
        scale = Decimal(1000)

    samples: list[MeterSample] = []
    cumulative = ZERO
    charging_end = None
    reserved = False
    for index, (at, dims) in enumerate(parsed):
        following = parsed[index + 1][0] if index + 1 < len(parsed) else end
        energy = dims.get("ENERGY", ZERO) / scale
        hours = dims.get("TIME", ZERO)
        if dims.get("RESERVATION_TIME") and not energy and not hours:
            reserved = True
            continue
        if not energy and not hours:
            if dims.get("PARKING_TIME") and charging_end is None and samples:
                charging_end = at
            continue
        active_end = _plus_hours(at, hours, following) if hours else following
        power = dims.get("MAX_POWER", dims.get("MIN_POWER"))
        current = dims.get("MAX_CURRENT", dims.get("MIN_CURRENT"))
        samples.append(MeterSample(at, cumulative, power, current))
        cumulative += energy
        samples.append(MeterSample(active_end, cumulative, power, current))
    if charging_end is None and total_parking:
        charging_end = end - (_plus_hours(start, total_parking, end) - start)
    if not energy_sum and total_kwh:
        # No energy per period: spread the total over the charging time.
        charge_from = samples[0].at if samples else start
        samples = [MeterSample(charge_from, ZERO), MeterSample(charging_end or end, total_kwh)]
    elif samples and total_kwh > cumulative:
        # The total says more than the periods (a live session's periods lag behind its kwh): the rest after them.
        last = samples[-1].at
        samples.append(MeterSample(max(last, charging_end or end), total_kwh))
    reservation = None
    if reserved:
        reservation = RESERVATION if samples else RESERVATION_EXPIRES
    return ChargingActivity(start=start, end=end, samples=samples, charging_end=charging_end, reservation=reservation)


def cost_differs(stated: Decimal, computed: Decimal) -> bool:
    """True when `stated` differs from `computed` by more than 1 cent AND more than 1 % of `computed`."""
    stated, computed = _dec(stated, "stated"), _dec(computed, "computed")
    difference = abs(stated - computed)
    return difference > ONE_CENT and difference > abs(computed) / 100


def describe_tariff(tariff: dict, language: str = "en") -> str:
    """The price in a few words for drivers, then the tariff_alt_text in `language` when it has one."""
    from tariffs.price_words import describe

    return describe(tariff, language)
