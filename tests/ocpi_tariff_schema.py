"""The OCPI 2.2.1 Tariff object as a JSON Schema, written from the specification's tables (mod_tariffs.asciidoc:
Tariff, TariffElement, PriceComponent, TariffRestrictions, Price, DisplayText; types.asciidoc: DateTime, CiString).

Used to check that what we send is exact: no unknown field, every required one, enums and formats as the spec
says. The spec's own examples pass it (tests/test_tariffs_sender_push.py checks that first).
"""

from __future__ import annotations

# What we send: RFC 3339 in UTC with the Z (types.asciidoc DateTime; we always write the Z).
DATETIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"}


def cistring(max_length: int, min_length: int = 0) -> dict:
    return {"type": "string", "maxLength": max_length, "minLength": min_length, "pattern": r"^[\x20-\x7e]*$"}


DISPLAY_TEXT = {
    "type": "object",
    "required": ["language", "text"],
    "additionalProperties": False,
    "properties": {"language": cistring(2, 2), "text": {"type": "string", "maxLength": 512}},
}
PRICE = {
    "type": "object",
    "required": ["excl_vat"],
    "additionalProperties": False,
    "properties": {"excl_vat": {"type": "number", "minimum": 0}, "incl_vat": {"type": "number", "minimum": 0}},
}
PRICE_COMPONENT = {
    "type": "object",
    "required": ["type", "price", "step_size"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["ENERGY", "FLAT", "PARKING_TIME", "TIME"]},
        "price": {"type": "number", "minimum": 0},
        "vat": {"type": "number", "minimum": 0},
        "step_size": {"type": "integer", "minimum": 0},
    },
}
TIME_OF_DAY = {"type": "string", "pattern": r"^([0-1][0-9]|2[0-3]):[0-5][0-9]$"}
DATE = {"type": "string", "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"}
RESTRICTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "start_time": TIME_OF_DAY,
        "end_time": TIME_OF_DAY,
        "start_date": DATE,
        "end_date": DATE,
        **{
            name: {"type": "number", "minimum": 0}
            for name in ("min_kwh", "max_kwh", "min_current", "max_current", "min_power", "max_power")
        },
        "min_duration": {"type": "integer", "minimum": 0},
        "max_duration": {"type": "integer", "minimum": 0},
        "day_of_week": {
            "type": "array",
            "uniqueItems": True,
            "items": {"enum": ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]},
        },
        "reservation": {"enum": ["RESERVATION", "RESERVATION_EXPIRES"]},
    },
}
TARIFF_ELEMENT = {
    "type": "object",
    "required": ["price_components"],
    "additionalProperties": False,
    "properties": {
        "price_components": {"type": "array", "minItems": 1, "items": PRICE_COMPONENT},
        "restrictions": RESTRICTIONS,
    },
}
ENERGY_MIX = {
    "type": "object",
    "required": ["is_green_energy"],
    "properties": {
        "is_green_energy": {"type": "boolean"},
        "energy_sources": {"type": "array"},
        "environ_impact": {"type": "array"},
        "supplier_name": cistring(64),
        "energy_product_name": cistring(64),
    },
    "additionalProperties": False,
}
TARIFF = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["country_code", "party_id", "id", "currency", "elements", "last_updated"],
    "additionalProperties": False,
    "properties": {
        "country_code": cistring(2, 2),
        "party_id": cistring(3, 3),
        "id": cistring(36, 1),
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "type": {"enum": ["AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", "REGULAR"]},
        "tariff_alt_text": {"type": "array", "items": DISPLAY_TEXT},
        "tariff_alt_url": {"type": "string", "pattern": "^https?://", "maxLength": 255},
        "min_price": PRICE,
        "max_price": PRICE,
        "elements": {"type": "array", "minItems": 1, "items": TARIFF_ELEMENT},
        "start_date_time": DATETIME,
        "end_date_time": DATETIME,
        "energy_mix": ENERGY_MIX,
        "last_updated": DATETIME,
    },
}


def tariff_errors(document) -> list[str]:
    """Every way `document` departs from the 2.2.1 Tariff object ([] when it is one)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(TARIFF)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or 'tariff'}: {error.message}"
        for error in validator.iter_errors(document)
    ]
