"""OpenAPI shapes of the map API's answers (GeoJSON), so the schema says what a client can rely on.

The schemathesis run (tests/test_rest_api_schema.py) holds every answer to these shapes.
"""

from __future__ import annotations

from stations.models import EvseStatus, MapStatus


def _obj(required: list[str], properties: dict, **extra) -> dict:
    return {"type": "object", "required": required, "properties": properties, **extra}


STRING = {"type": "string"}
NULLABLE_STRING = {"type": "string", "nullable": True}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
TIMESTAMP = {"type": "string", "format": "date-time", "nullable": True}
MAP_STATUS = {"type": "string", "enum": list(MapStatus.values)}
POINT = _obj(
    ["type", "coordinates"],
    {
        "type": {"type": "string", "enum": ["Point"]},
        "coordinates": {
            "type": "array",
            "items": NUMBER,
            "minItems": 2,
            "maxItems": 2,
            "description": "[longitude, latitude]",
        },
    },
)


def feature(properties: dict) -> dict:
    return _obj(
        ["type", "geometry", "properties"],
        {"type": {"type": "string", "enum": ["Feature"]}, "geometry": POINT, "properties": properties},
    )


STATION_SUMMARY = _obj(
    ["id", "name", "status", "stale", "limited", "max_power_kw", "evses", "available_evses"],
    {
        "id": INTEGER,
        "name": STRING,
        "status": MAP_STATUS,
        "stale": {**BOOLEAN, "description": "The status was not heard from its operator for too long."},
        "limited": {**BOOLEAN, "description": "Limited accessibility (not public, customers only, ...)."},
        "max_power_kw": NUMBER,
        "evses": INTEGER,
        "available_evses": INTEGER,
        "distance_km": {**NUMBER, "description": "Nearby only: distance from the asked point."},
    },
)
CLUSTER = _obj(
    ["cluster", "count", "statuses"],
    {
        "cluster": {"type": "boolean", "enum": [True]},
        "count": INTEGER,
        "statuses": {"type": "object", "additionalProperties": INTEGER, "description": "Stations per map status."},
    },
)
VIEWPORT = _obj(
    ["type", "features", "meta"],
    {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {"type": "array", "items": {"anyOf": [feature(STATION_SUMMARY), feature(CLUSTER)]}},
        "meta": _obj(
            ["zoom", "clustered", "stations", "truncated", "stale_after_minutes"],
            {
                "zoom": INTEGER,
                "clustered": BOOLEAN,
                "stations": INTEGER,
                "truncated": BOOLEAN,
                "stale_after_minutes": INTEGER,
            },
        ),
    },
)
NEARBY = _obj(
    ["type", "features"],
    {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {"type": "array", "items": feature(STATION_SUMMARY)},
    },
)
SEARCH = _obj(
    ["results"],
    {
        "results": {
            "type": "array",
            "items": _obj(
                ["kind", "label", "lat", "lon"],
                {
                    "kind": {"type": "string", "enum": ["place", "station", "operator"]},
                    "label": STRING,
                    "what": {**STRING, "description": "What the result is, in words: 'Town in Belgium', 'Station'."},
                    "operator": {**STRING, "description": "Operators only: the value of the operator filter."},
                    "lat": {**NUMBER, "nullable": True, "description": "null for operators."},
                    "lon": {**NUMBER, "nullable": True, "description": "null for operators."},
                    "id": {**INTEGER, "description": "Stations only."},
                    "stations": {**INTEGER, "description": "Places only: how many stations there."},
                },
            ),
        }
    },
)
# tariffs: a connector's price for our drivers (tariffs.selectors.connector_price).
PRICE = _obj(
    ["status", "text"],
    {
        "status": {"type": "string", "enum": ["priced", "unknown", "not_shared"]},
        "text": {**STRING, "description": "The price in words, or why there is none."},
        "tariff_id": NULLABLE_STRING,
        "alt_text": {**NULLABLE_STRING, "description": "The operator's own words, in the driver's language if given."},
        "alt_url": NULLABLE_STRING,
        "estimate": {"type": "object", "nullable": True, "description": "The start page only: a typical session."},
    },
)
CONNECTOR = _obj(
    ["id", "standard", "label", "format", "power_type", "power_kw"],
    {
        "id": STRING,
        "standard": STRING,
        "label": STRING,
        "format": STRING,
        "power_type": STRING,
        "power_kw": NUMBER,
        "price": PRICE,
    },
)
EVSE = _obj(
    ["uid", "evse_id", "status", "map_status", "status_changed_at", "stale", "card", "app", "start_url", "connectors"],
    {
        "uid": STRING,
        "evse_id": NULLABLE_STRING,
        "status": {"type": "string", "enum": list(EvseStatus.values)},
        "status_label": {**STRING, "description": "The status in words."},
        "map_status": MAP_STATUS,
        "status_changed_at": TIMESTAMP,
        "status_age_minutes": {**INTEGER, "nullable": True},
        "stale": BOOLEAN,
        "card": {**BOOLEAN, "description": "A MobilityPlus card starts a charge here."},
        "app": {
            **BOOLEAN,
            "description": "The app can start a charge here: the EVSE is remotely startable and the operator takes "
            "our commands.",
        },
        "app_reason": {**STRING, "description": "Why the app cannot start here ('Card only: ...'); empty when it can."},
        "start_url": {**NULLABLE_STRING, "description": "Where the app starts a charge, when it can."},
        "connectors": {"type": "array", "items": CONNECTOR},
    },
)
STATION_DETAIL = feature(
    _obj(
        ["id", "name", "address", "city", "country", "operator", "status", "stale", "limited", "evses"],
        {
            "id": INTEGER,
            "name": STRING,
            "address": STRING,
            "postal_code": NULLABLE_STRING,
            "city": STRING,
            "country": STRING,
            "operator": STRING,
            "opening_times": {"type": "object", "nullable": True, "description": "OCPI Hours, as the operator sent."},
            "opening_hours": {**NULLABLE_STRING, "description": "The hours in words; null when none were given."},
            "open_now": {
                **NULLABLE_STRING,
                "description": "'Open now' / 'Closed now, opens 07:00 (Europe/Brussels time)'; null when unknown.",
            },
            "time_zone": NULLABLE_STRING,
            "status": MAP_STATUS,
            "status_label": STRING,
            "status_updated_at": TIMESTAMP,
            "stale": BOOLEAN,
            "stale_after_minutes": INTEGER,
            "limited": BOOLEAN,
            "limited_reasons": {"type": "array", "items": STRING},
            "parking_information": {
                "type": "array",
                "items": STRING,
                "description": "Parking rules that do not limit who may charge (EV only, only while plugged in).",
            },
            "max_power_kw": NUMBER,
            "evse_count": INTEGER,
            "available_evses": INTEGER,
            "directions_url": {**STRING, "description": "A route to the station in the phone's maps app."},
            "card": BOOLEAN,
            "app": BOOLEAN,
            "app_reason": STRING,
            "evses": {"type": "array", "items": EVSE},
        },
    )
)
