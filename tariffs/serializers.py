"""The OCPI 2.2.1 Tariff object as partners send it (and as staff write ours): one set of checks, built on
roaming.ocpi.fields, so a bad field is refused with 2001 naming it and nothing is stored."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers

from roaming.ocpi.fields import BoundedIntegerField, NumberField, OcpiDateTimeField, OcpiObjectSerializer

TARIFF_TYPES = ("AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", "REGULAR")
DIMENSIONS = ("ENERGY", "FLAT", "PARKING_TIME", "TIME")
DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
RESERVATION = ("RESERVATION", "RESERVATION_EXPIRES")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


class UpperChoiceField(serializers.ChoiceField):
    """An OCPI enum; the case a partner writes it in does not matter (kept upper-case)."""

    def to_internal_value(self, data: Any):
        if isinstance(data, str):
            data = data.strip().upper()
        return super().to_internal_value(data)


class DisplayTextSerializer(OcpiObjectSerializer):
    language = serializers.CharField(max_length=2, min_length=2)
    text = serializers.CharField(max_length=512)


class PriceSerializer(OcpiObjectSerializer):
    excl_vat = NumberField(min_value=0)
    incl_vat = NumberField(min_value=0, required=False)


class PriceComponentSerializer(OcpiObjectSerializer):
    type = UpperChoiceField(choices=DIMENSIONS)
    price = NumberField(min_value=0)
    vat = NumberField(min_value=0, max_value=100, required=False)
    step_size = BoundedIntegerField()


def _pattern_field(pattern: re.Pattern, example: str) -> serializers.RegexField:
    return serializers.RegexField(pattern, required=False, error_messages={"invalid": f"expected {example}"})


class TariffRestrictionsSerializer(OcpiObjectSerializer):
    start_time = _pattern_field(_TIME, "hh:mm (00:00-23:59)")
    end_time = _pattern_field(_TIME, "hh:mm (00:00-23:59)")
    start_date = _pattern_field(_DATE, "YYYY-MM-DD")
    end_date = _pattern_field(_DATE, "YYYY-MM-DD")
    min_kwh = NumberField(min_value=0, required=False)
    max_kwh = NumberField(min_value=0, required=False)
    min_current = NumberField(min_value=0, required=False)
    max_current = NumberField(min_value=0, required=False)
    min_power = NumberField(min_value=0, required=False)
    max_power = NumberField(min_value=0, required=False)
    min_duration = BoundedIntegerField(required=False)
    max_duration = BoundedIntegerField(required=False)
    day_of_week = serializers.ListField(child=UpperChoiceField(choices=DAYS), required=False, max_length=7)
    reservation = UpperChoiceField(choices=RESERVATION, required=False)


class TariffElementSerializer(OcpiObjectSerializer):
    price_components = PriceComponentSerializer(many=True, allow_empty=False)
    restrictions = TariffRestrictionsSerializer(required=False)


class TariffSerializer(OcpiObjectSerializer):
    """A whole Tariff (PUT body, a feed object, or our own)."""

    country_code = serializers.CharField(max_length=2, min_length=2)
    party_id = serializers.CharField(max_length=3, min_length=3)
    id = serializers.CharField(max_length=36)
    currency = serializers.RegexField(_CURRENCY, error_messages={"invalid": "expected an ISO 4217 code (EUR)"})
    type = UpperChoiceField(choices=TARIFF_TYPES, required=False)
    tariff_alt_text = DisplayTextSerializer(many=True, required=False)
    tariff_alt_url = serializers.URLField(max_length=255, required=False)
    min_price = PriceSerializer(required=False)
    max_price = PriceSerializer(required=False)
    elements = TariffElementSerializer(many=True, allow_empty=False)
    start_date_time = OcpiDateTimeField(required=False)
    end_date_time = OcpiDateTimeField(required=False)
    energy_mix = serializers.DictField(required=False)
    last_updated = OcpiDateTimeField(not_future=True)

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("start_date_time"), attrs.get("end_date_time")
        if start and end and end <= start:
            raise serializers.ValidationError({"end_date_time": "must be after start_date_time"})
        low, high = attrs.get("min_price"), attrs.get("max_price")
        if low and high and high["excl_vat"] < low["excl_vat"]:
            raise serializers.ValidationError({"max_price": "must not be below min_price"})
        return attrs


def without_nulls(value: Any) -> Any:
    """A JSON document without the keys whose value is null, at every level (how we store partners' objects)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def normalised(document: dict, data: dict) -> dict:
    """The stored copy of a checked Tariff: as sent, nulls left out, enums in the upper case we compare in."""
    stored = without_nulls(document)
    if "type" in data:
        stored["type"] = data["type"]
    stored["currency"] = data["currency"].upper()
    for element, checked in zip(stored.get("elements") or [], data["elements"], strict=False):
        for component, checked_component in zip(
            element.get("price_components") or [], checked["price_components"], strict=False
        ):
            component["type"] = checked_component["type"]
        restrictions = checked.get("restrictions") or {}
        if "day_of_week" in restrictions:
            element["restrictions"]["day_of_week"] = restrictions["day_of_week"]
        if "reservation" in restrictions:
            element["restrictions"]["reservation"] = restrictions["reservation"]
    return stored
