"""The driver map's JSON API: GeoJSON stations or clusters per viewport, one station, nearest stations."""

from __future__ import annotations

import math
from urllib.parse import quote

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import get_language_from_request
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from charging.startability import app_start, operator_takes_app_starts
from mobilityplus import display
from mobilityplus.api_errors import error_responses
from stations import api_schema, selectors
from stations.filters import STANDARD_LABELS, StationFilter
from stations.models import EvseStatus, Location, MapStatus
from stations.opening_hours import opening_cue, opening_hours_text
from stations.services import add_favourite, parking_information, remove_favourite
from tariffs.selectors import location_prices

# What a driver reads for each code `stations.services.limited_access_reasons` stores (the lock).
LIMITED_REASON_TEXT = {
    "not_public": "Not a public station: the operator keeps it for some drivers only",
    "parking_customers": "Only for customers of the site (shop, hotel, restaurant)",
    "parking_disabled": "Reserved for disabled drivers",
    "parking_motorcycles": "Only for motorcycles and scooters",
    "parking_type_on_driveway": "Private parking (a driveway)",
}
# Parking rules every driver of ours can follow (`stations.services.parking_information`): no lock.
PARKING_INFORMATION_TEXT = {
    "EV_ONLY": "Parking reserved for electric vehicles",
    "PLUGGED": "Park only while plugged in",
}
EVSE_MAP_STATUS = {
    EvseStatus.AVAILABLE: MapStatus.AVAILABLE,
    EvseStatus.CHARGING: MapStatus.IN_USE,
    EvseStatus.RESERVED: MapStatus.IN_USE,
    EvseStatus.BLOCKED: MapStatus.IN_USE,
    EvseStatus.INOPERATIVE: MapStatus.FAULTY,
    EvseStatus.OUTOFORDER: MapStatus.FAULTY,
}


class ViewportSerializer(serializers.Serializer):
    bbox = serializers.CharField(help_text="west,south,east,north in degrees; west > east crosses the antimeridian.")
    zoom = serializers.IntegerField(min_value=0, max_value=22, help_text="Map zoom level (Web Mercator).")

    def validate_bbox(self, value: str) -> selectors.BBox:
        parts = value.split(",")
        if len(parts) != 4:
            raise serializers.ValidationError("Expected four numbers: west,south,east,north.")
        try:
            west, south, east, north = (float(part) for part in parts)
        except ValueError:
            raise serializers.ValidationError("Expected four numbers: west,south,east,north.") from None
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            raise serializers.ValidationError("Coordinates must be finite numbers.")
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise serializers.ValidationError("Longitudes must lie within -180..180.")
        if not (-90 <= south <= 90 and -90 <= north <= 90):
            raise serializers.ValidationError("Latitudes must lie within -90..90.")
        if south > north:
            raise serializers.ValidationError("south must not be greater than north.")
        # Crossing the antimeridian, the box starts in the east (west > 0) and ends in the west (east < 0).
        if west > east and not (west > 0 > east):
            raise serializers.ValidationError("west is greater than east but the box does not cross the antimeridian.")
        return selectors.BBox(west, south, east, north)


class NearbySerializer(serializers.Serializer):
    lat = serializers.FloatField(min_value=-90, max_value=90)
    lon = serializers.FloatField(min_value=-180, max_value=180)
    radius_km = serializers.FloatField(min_value=0.01, max_value=100, default=10)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)


def validated(
    serializer_class: type[serializers.Serializer], request: Request, *, with_filters: bool = False
) -> tuple[dict, selectors.MapFilters | None]:
    """The query parameters, checked all at once: a 400 names every bad parameter."""
    serializer = serializer_class(data=request.query_params)
    errors = {} if serializer.is_valid() else dict(serializer.errors)
    filters = None
    if with_filters and not any(name in request.query_params for name in StationFilter.base_filters):
        # No filter asked (most of a polling map's requests): what an empty form gives, without building one
        # (django-filter's form took more than half of a cached viewport answer's CPU).
        filters = selectors.MapFilters()
    elif with_filters:
        filterset = StationFilter(data=request.query_params, queryset=Location.objects.none())
        if filterset.is_valid():
            filters = filterset.map_filters()
        else:
            errors.update(filterset.errors)
    if errors:
        raise ValidationError(errors)
    return serializer.validated_data, filters


NUMBER_PATTERN = r"-?[0-9]+(\.[0-9]+)?"
# Overrides the serializer's bbox in the schema: the pattern lets clients (and schemathesis) build boxes.
BBOX_PARAMETER = OpenApiParameter(
    "bbox",
    str,
    required=True,
    pattern=f"^{NUMBER_PATTERN},{NUMBER_PATTERN},{NUMBER_PATTERN},{NUMBER_PATTERN}$",
    description=ViewportSerializer().fields["bbox"].help_text,
    examples=[OpenApiExample("Brussels", value="4.30,50.80,4.40,50.90")],
)
FILTER_PARAMETERS = [
    OpenApiParameter("standard", str, many=True, description="Connector standard (OCPI ConnectorType); repeatable."),
    OpenApiParameter("min_power_kw", float, description="Minimum station power: 0, 3.7, 7.4, 11, 22, 43, 50, ..."),
    OpenApiParameter("available", bool, description="true: only stations with an EVSE available now."),
    OpenApiParameter("hide_limited", bool, description="true: hide stations with limited accessibility."),
    OpenApiParameter("operator", str, many=True, description="Operator OCPI id (e.g. NL*ALL); repeatable."),
]


STATION_EXAMPLE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [4.35247, 50.84673]},
    "properties": {
        "id": 1,
        "name": "Grand-Place",
        "status": "available",
        "stale": False,
        "limited": False,
        "max_power_kw": 22.0,
        "evses": 2,
        "available_evses": 1,
    },
}
CLUSTER_EXAMPLE = {
    "type": "Feature",
    "geometry": {"type": "Point", "coordinates": [4.4012, 50.9031]},
    "properties": {
        "cluster": True,
        "count": 1532,
        "statuses": {"available": 802, "in_use": 401, "faulty": 61, "unknown": 268},
    },
}
META_EXAMPLE = {"zoom": 7, "stations": 1532, "truncated": False, "stale_after_minutes": 30}
VIEWPORT_EXAMPLES = [
    OpenApiExample(
        "Stations (few in view)",
        value={
            "type": "FeatureCollection",
            "features": [STATION_EXAMPLE],
            "meta": {**META_EXAMPLE, "clustered": False},
        },
        response_only=True,
    ),
    OpenApiExample(
        "Clusters (many in view)",
        value={"type": "FeatureCollection", "features": [CLUSTER_EXAMPLE], "meta": {**META_EXAMPLE, "clustered": True}},
        response_only=True,
    ),
    OpenApiExample(
        "Bad parameters",
        value={"bbox": ["south must not be greater than north."]},
        response_only=True,
        status_codes=["400"],
    ),
]
NEARBY_EXAMPLE = OpenApiExample(
    "Nearest first",
    value={
        "type": "FeatureCollection",
        "features": [{**STATION_EXAMPLE, "properties": {**STATION_EXAMPLE["properties"], "distance_km": 0.42}}],
    },
    response_only=True,
)


class PublicMapView(APIView):
    # The map is public: it shows only what any driver may see.
    permission_classes = [AllowAny]
    authentication_classes: list = []


class StationListView(PublicMapView):
    @extend_schema(
        operation_id="stations_in_viewport",
        summary="Stations in a viewport (GeoJSON), or server-side clusters when there are too many",
        parameters=[ViewportSerializer, BBOX_PARAMETER, *FILTER_PARAMETERS],
        responses={200: api_schema.VIEWPORT, **error_responses(400, 406)},
        examples=VIEWPORT_EXAMPLES,
    )
    def get(self, request: Request) -> Response:
        viewport, filters = validated(ViewportSerializer, request, with_filters=True)
        # Already JSON (cached rendered, stations/map_cache.py); the Accept header was negotiated before get().
        body = selectors.map_features_json(viewport["bbox"], viewport["zoom"], filters)
        return HttpResponse(body, content_type="application/json")


class NearbyView(PublicMapView):
    @extend_schema(
        operation_id="stations_nearby",
        summary="Stations nearest to a point, nearest first (GeoJSON, distance_km in properties)",
        parameters=[NearbySerializer, *FILTER_PARAMETERS],
        responses={200: api_schema.NEARBY, **error_responses(400, 406)},
        examples=[NEARBY_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        params, filters = validated(NearbySerializer, request, with_filters=True)
        features = selectors.nearby_stations(
            params["lat"], params["lon"], params["radius_km"], params["limit"], filters
        )
        return Response({"type": "FeatureCollection", "features": features})


class SearchSerializer(serializers.Serializer):
    q = serializers.CharField(min_length=2, max_length=60, help_text="City, postal code or station name.")


class SearchView(PublicMapView):
    @extend_schema(
        operation_id="stations_search",
        summary="Places and stations matching a city, postal code or station name (our own data)",
        parameters=[SearchSerializer],
        responses={200: api_schema.SEARCH, **error_responses(400, 406)},
    )
    def get(self, request: Request) -> Response:
        params, _ = validated(SearchSerializer, request)
        return Response({"results": selectors.search_places(params["q"])})


def station_payload(location: Location, language: str = "en") -> dict:
    now = timezone.now()
    # tariffs: each connector's price in words (or why there is none), in the driver's language.
    prices = location_prices(
        location, [c for evse in location.evses.all() for c in evse.connectors.all()], language=language, now=now
    )
    confirmed = selectors.status_confirmed_at([location.source_id]).get(location.source_id)
    limited = location.is_limited_access
    reasons = [LIMITED_REASON_TEXT.get(str(reason), str(reason)) for reason in location.limited_access_reasons or []]
    if limited and not reasons:
        reasons = ["Marked as limited access by MobilityPlus"]
    operator = (location.operator or {}).get("name") or location.party.name
    restrictions = [r for evse in location.evses.all() for r in evse.parking_restrictions or []]
    operator_side = operator_takes_app_starts(location)
    evses = []
    for evse in location.evses.all():
        changed = evse.status_changed_at
        start = app_start(evse, operator_side)
        evses.append(
            {
                "uid": evse.uid,
                "evse_id": evse.evse_id,
                "status": evse.status,
                "status_label": display.status_text("evse", evse.status),
                "map_status": EVSE_MAP_STATUS.get(evse.status, MapStatus.UNKNOWN).value,
                "status_changed_at": changed.isoformat() if changed else None,
                "status_age_minutes": int((now - changed).total_seconds() // 60) if changed else None,
                "stale": selectors.is_stale(changed, now, confirmed),
                # The map shows only stations whose operator accepts our card (the agreement says so); OCPI
                # capabilities are optional, so a missing RFID_READER is no reason to tell a driver otherwise.
                "card": True,
                # The app start only where it can work: the EVSE is remotely startable AND the operator takes
                # commands from us (charging.startability); otherwise the panel says "card only" up front.
                "app": start.possible,
                "app_reason": start.reason,
                "start_url": reverse_start(location.pk, evse.uid) if start.possible else None,
                "connectors": [
                    {
                        "id": connector.connector_id,
                        "standard": connector.standard,
                        "label": STANDARD_LABELS.get(connector.standard, connector.standard),
                        "format": connector.format,
                        "power_type": connector.power_type,
                        "power_kw": round(connector.power_kw, 1),
                        "price": prices[connector.pk],
                    }
                    for connector in evse.connectors.all()
                ],
            }
        )
    app = any(evse["app"] for evse in evses)
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [location.longitude, location.latitude]},
        "properties": {
            "id": location.pk,
            "name": location.name or location.address,
            "address": location.address,
            "postal_code": location.postal_code,
            "city": location.city,
            "country": location.country,
            "operator": operator,
            "opening_times": location.opening_times,
            # Both None when the partner gave no opening times: the panel then says nothing about them.
            "opening_hours": opening_hours_text(location.opening_times),
            "open_now": opening_cue(location.opening_times, location.time_zone, now),
            "time_zone": location.time_zone,
            "status": location.map_status,
            "status_label": display.status_text("map", location.map_status),
            "status_updated_at": location.status_updated_at.isoformat() if location.status_updated_at else None,
            "stale": selectors.is_stale(location.status_updated_at, now, confirmed),
            "stale_after_minutes": settings.MAP_STATUS_STALE_AFTER_MINUTES,
            "limited": limited,
            "limited_reasons": reasons,
            "parking_information": [PARKING_INFORMATION_TEXT[code] for code in parking_information(restrictions)],
            "max_power_kw": location.max_power_kw,
            "evse_count": len(evses),
            "available_evses": sum(1 for evse in evses if evse["map_status"] == MapStatus.AVAILABLE),
            # Opens the phone's maps app (or the maps site) with a route to the station.
            "directions_url": "https://www.google.com/maps/dir/?api=1&destination="
            f"{location.latitude:.6f},{location.longitude:.6f}",
            "card": any(evse["card"] for evse in evses),
            "app": app,
            "app_reason": "" if app else operator_side.reason or CARD_ONLY_EVSES,
            "evses": evses,
        },
    }


CARD_ONLY_EVSES = "Card only: these charge points cannot be started from an app."


def reverse_start(location_pk: int, evse_uid: str) -> str:
    """The agreed "Start charging" path (owned by the sessions app)."""
    return f"/charging/start/{location_pk}/{quote(evse_uid, safe='')}/"


class StationDetailView(PublicMapView):
    @extend_schema(
        operation_id="station_detail",
        summary="One station with its EVSEs and connectors (GeoJSON Feature)",
        responses={200: api_schema.STATION_DETAIL, **error_responses(404, 406)},
    )
    def get(self, request: Request, pk: int) -> Response:
        location = selectors.station_detail(pk)
        if location is None:
            raise NotFound("No such station on the map.")
        return Response(station_payload(location, get_language_from_request(request)))


FAVOURITE = {
    "type": "object",
    "required": ["id", "favourite"],
    "properties": {"id": {"type": "integer"}, "favourite": {"type": "boolean"}},
}


class FavouritesView(APIView):
    """The logged-in driver's starred stations (session login; 403 otherwise)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="favourites_list",
        summary="My favourite stations (GeoJSON, newest star first)",
        responses={200: api_schema.NEARBY, **error_responses(403, 406)},
    )
    def get(self, request: Request) -> Response:
        return Response({"type": "FeatureCollection", "features": selectors.favourite_stations(request.user)})


class FavouriteView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="favourite_add",
        summary="Star a station (idempotent)",
        request=None,
        responses={200: FAVOURITE, 201: FAVOURITE, **error_responses(403, 404, 406)},
    )
    def put(self, request: Request, pk: int) -> Response:
        location = selectors.visible_locations().filter(pk=pk).first()
        if location is None:
            raise NotFound("No such station on the map.")
        created = add_favourite(request.user, location)
        return Response({"id": pk, "favourite": True}, status=201 if created else 200)

    @extend_schema(
        operation_id="favourite_remove",
        summary="Unstar a station (idempotent)",
        request=None,
        responses={200: FAVOURITE, **error_responses(403, 404, 406)},
    )
    def delete(self, request: Request, pk: int) -> Response:
        remove_favourite(request.user, pk)
        return Response({"id": pk, "favourite": False})
