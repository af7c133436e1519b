"""OCPI data types as DRF fields, for every module's serializers of partner input.

One definition each, so every module refuses the same things with the same words:
- `OcpiDateTimeField`: an instant that exists (no month 13, 30 February, year 0, +25:00 offset; year 1 only
  when representable in UTC), optionally no later than now + OCPI_MAX_CLOCK_SKEW_SECONDS;
- `NumberField`: a finite JSON number within the range its column can hold (Decimal(12, 4) by default);
- `GeoCoordinateField`: latitude or longitude as the spec's string (numbers accepted), finite and in range;
- `OcpiObjectSerializer`: the base of every serializer of an OCPI object a partner sends: an optional field
  sent as `null` is absent (many implementations write `null` for every field they do not fill);
  a required field sent as `null` is still refused.
DRF's CharField already refuses NUL characters and lone surrogates; the request-level walk in
`roaming.ocpi.input` refuses them anywhere else in a body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from roaming.ocpi.envelope import OcpiError, parse_datetime
from roaming.ocpi.input import check_not_future

# Decimal(max_digits=12, decimal_places=4): the columns of money, energy and time; 4 decimals as OCPI has.
DECIMAL_12_4_LIMIT = 100_000_000
# PositiveIntegerField (PostgreSQL integer).
INT32_MAX = 2**31 - 1


def without_optional_nulls(data: Any, fields: Mapping[str, serializers.Field]) -> Any:
    """`data` without the keys of optional fields whose value is null (anything but an object: unchanged)."""
    if not isinstance(data, Mapping):
        return data
    return {
        name: value
        for name, value in data.items()
        if value is not None or name not in fields or fields[name].required or fields[name].read_only
    }


class OcpiObjectSerializer(serializers.Serializer):
    """An OCPI object from a partner. An optional field sent as `null` counts as absent, at every level
    (nested objects and lists of objects use this base too); a required one sent as `null` is refused."""

    def to_internal_value(self, data: Any):
        return super().to_internal_value(without_optional_nulls(data, self.fields))


class OcpiDateTimeField(serializers.Field):
    """OCPI DateTime: RFC 3339, `Z` optional (zone-less means UTC), fractions allowed.

    `not_future=True` (every `last_updated`, and session and CDR times): refused beyond now + the allowed clock
    skew, because a stamp from the future makes every later, real update look older and be ignored.
    """

    def __init__(self, *, not_future: bool = False, **kwargs: Any):
        self.not_future = not_future
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any):
        try:
            value = parse_datetime(data, self.field_name or "datetime")
            if self.not_future:
                check_not_future(value, self.field_name or "datetime")
        except OcpiError as exc:
            # The message already starts with the field's name; DRF prefixes it again.
            raise serializers.ValidationError(exc.message.partition(": ")[2]) from exc
        return value

    def to_representation(self, value: Any) -> Any:  # pragma: no cover - input only
        return value


class NumberField(serializers.FloatField):
    """An OCPI number: a finite JSON number (not a string, not a boolean) within [min_value, max_value).

    The upper bound is exclusive and applies to the value rounded to 4 decimals, as stored.
    """

    def __init__(self, *, max_value: float = DECIMAL_12_4_LIMIT, min_value: float | None = None, **kwargs: Any):
        self.upper_limit = max_value
        self.lower_limit = -max_value if min_value is None else min_value
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any):
        if isinstance(data, bool | str):
            raise serializers.ValidationError("must be a JSON number")
        value = super().to_internal_value(data)
        if round(value, 4) >= self.upper_limit:
            raise serializers.ValidationError(f"must be less than {self.upper_limit:g}")
        if value < self.lower_limit:
            raise serializers.ValidationError(f"must be at least {self.lower_limit:g}")
        return value


class BoundedIntegerField(serializers.IntegerField):
    """An integer that fits a PostgreSQL integer column (booleans are not integers)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("max_value", INT32_MAX)
        kwargs.setdefault("min_value", 0)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any):
        if isinstance(data, bool):
            raise serializers.ValidationError("must be an integer")
        return super().to_internal_value(data)


class GeoCoordinateField(serializers.Field):
    """Latitude (limit 90) or longitude (limit 180): the spec sends decimal strings; some hubs numbers."""

    def __init__(self, *, limit: float, **kwargs: Any):
        self.limit = limit
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            raise serializers.ValidationError("must be a decimal number as a string")
        try:
            number = float(data)
        except (ValueError, OverflowError) as exc:
            raise serializers.ValidationError(f"not a number: {str(data)[:40]!r}") from exc
        if not math.isfinite(number) or not -self.limit <= number <= self.limit:
            raise serializers.ValidationError(f"out of range (-{self.limit:g} to {self.limit:g})")
        return str(data)

    def to_representation(self, value: Any) -> Any:  # pragma: no cover - input only
        return value


class GeoLocationSerializer(OcpiObjectSerializer):
    latitude = GeoCoordinateField(limit=90)
    longitude = GeoCoordinateField(limit=180)
