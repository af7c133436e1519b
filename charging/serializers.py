"""Validation of partner input (OCPI 2.2.1 Session, CDR, CommandResponse/Result, StartSession, StopSession).

Used through `roaming.ocpi.envelope.validated()`, so a bad field becomes OCPI 2001 naming it.
"""

from __future__ import annotations

from rest_framework import serializers

from cards.serializers import TokenSerializer
from charging.models import AuthMethod, Command, Session
from roaming.ocpi.fields import (
    BoundedIntegerField,
    GeoLocationSerializer,
    NumberField,
    OcpiDateTimeField,
    OcpiObjectSerializer,
)


class PriceSerializer(OcpiObjectSerializer):
    excl_vat = NumberField()
    incl_vat = NumberField(required=False, allow_null=True)


class CdrTokenSerializer(OcpiObjectSerializer):
    country_code = serializers.CharField(min_length=2, max_length=2)
    party_id = serializers.CharField(min_length=3, max_length=3)
    uid = serializers.CharField(max_length=36)
    type = serializers.ChoiceField(choices=["AD_HOC_USER", "APP_USER", "OTHER", "RFID"])
    contract_id = serializers.CharField(max_length=36)


class CdrDimensionSerializer(OcpiObjectSerializer):
    type = serializers.ChoiceField(
        choices=[
            "CURRENT",
            "ENERGY",
            "ENERGY_EXPORT",
            "ENERGY_IMPORT",
            "MAX_CURRENT",
            "MIN_CURRENT",
            "MAX_POWER",
            "MIN_POWER",
            "PARKING_TIME",
            "POWER",
            "RESERVATION_TIME",
            "STATE_OF_CHARGE",
            "TIME",
        ]
    )
    volume = NumberField()


class ChargingPeriodSerializer(OcpiObjectSerializer):
    start_date_time = OcpiDateTimeField(not_future=True)
    dimensions = CdrDimensionSerializer(many=True, allow_empty=False)
    tariff_id = serializers.CharField(max_length=36, required=False)


class SessionSerializer(OcpiObjectSerializer):
    """A whole Session (PUT); with partial=True a PATCH, which must still carry last_updated."""

    country_code = serializers.CharField(min_length=2, max_length=2)
    party_id = serializers.CharField(min_length=3, max_length=3)
    id = serializers.CharField(max_length=36)
    start_date_time = OcpiDateTimeField(not_future=True)
    end_date_time = OcpiDateTimeField(not_future=True, required=False, allow_null=True)
    kwh = NumberField(min_value=0)
    cdr_token = CdrTokenSerializer()
    auth_method = serializers.ChoiceField(choices=AuthMethod.values)
    authorization_reference = serializers.CharField(max_length=36, required=False, allow_null=True)
    location_id = serializers.CharField(max_length=36)
    evse_uid = serializers.CharField(max_length=36)
    connector_id = serializers.CharField(max_length=36)
    meter_id = serializers.CharField(max_length=255, required=False, allow_null=True)
    currency = serializers.CharField(min_length=3, max_length=3)
    charging_periods = ChargingPeriodSerializer(many=True, required=False)
    total_cost = PriceSerializer(required=False, allow_null=True)
    status = serializers.ChoiceField(choices=Session.Status.values)
    last_updated = OcpiDateTimeField(not_future=True)

    def validate(self, attrs: dict) -> dict:
        if self.partial and "last_updated" not in attrs:
            raise serializers.ValidationError({"last_updated": ["a PATCH must carry last_updated"]})
        return attrs


class CdrLocationSerializer(OcpiObjectSerializer):
    id = serializers.CharField(max_length=36)
    name = serializers.CharField(max_length=255, required=False, allow_null=True)
    address = serializers.CharField(max_length=255)
    city = serializers.CharField(max_length=45)
    postal_code = serializers.CharField(max_length=10, required=False, allow_null=True)
    state = serializers.CharField(max_length=45, required=False, allow_null=True)
    country = serializers.CharField(min_length=3, max_length=3)
    coordinates = GeoLocationSerializer()
    evse_uid = serializers.CharField(max_length=36)
    evse_id = serializers.CharField(max_length=48)
    connector_id = serializers.CharField(max_length=36)
    connector_standard = serializers.CharField(max_length=40)
    connector_format = serializers.ChoiceField(choices=["SOCKET", "CABLE"])
    connector_power_type = serializers.CharField(max_length=16)


class CdrSerializer(OcpiObjectSerializer):
    country_code = serializers.CharField(min_length=2, max_length=2)
    party_id = serializers.CharField(min_length=3, max_length=3)
    id = serializers.CharField(max_length=39)
    start_date_time = OcpiDateTimeField(not_future=True)
    end_date_time = OcpiDateTimeField(not_future=True)
    session_id = serializers.CharField(max_length=36, required=False, allow_null=True)
    cdr_token = CdrTokenSerializer()
    auth_method = serializers.ChoiceField(choices=AuthMethod.values)
    authorization_reference = serializers.CharField(max_length=36, required=False, allow_null=True)
    cdr_location = CdrLocationSerializer()
    meter_id = serializers.CharField(max_length=255, required=False, allow_null=True)
    currency = serializers.CharField(min_length=3, max_length=3)
    tariffs = serializers.ListField(child=serializers.DictField(), required=False)
    charging_periods = ChargingPeriodSerializer(many=True, allow_empty=False)
    total_cost = PriceSerializer()
    total_fixed_cost = PriceSerializer(required=False, allow_null=True)
    total_energy = NumberField()  # negative only on a credit CDR (validate)
    total_energy_cost = PriceSerializer(required=False, allow_null=True)
    total_time = NumberField(min_value=0)
    total_time_cost = PriceSerializer(required=False, allow_null=True)
    total_parking_time = NumberField(required=False, allow_null=True, min_value=0)
    total_parking_cost = PriceSerializer(required=False, allow_null=True)
    total_reservation_cost = PriceSerializer(required=False, allow_null=True)
    remark = serializers.CharField(max_length=255, required=False, allow_null=True)
    invoice_reference_id = serializers.CharField(max_length=39, required=False, allow_null=True)
    credit = serializers.BooleanField(required=False, allow_null=True)
    credit_reference_id = serializers.CharField(max_length=39, required=False, allow_null=True)
    home_charging_compensation = serializers.BooleanField(required=False, allow_null=True)
    last_updated = OcpiDateTimeField(not_future=True)

    def validate(self, attrs: dict) -> dict:
        if attrs["end_date_time"] < attrs["start_date_time"]:
            raise serializers.ValidationError({"end_date_time": ["is before start_date_time"]})
        if attrs.get("credit") and not attrs.get("credit_reference_id"):
            raise serializers.ValidationError({"credit_reference_id": ["required on a credit CDR"]})
        if not attrs.get("credit"):
            # Only a credit CDR gives money or energy back.
            negative = {
                name: ["negative on a CDR that is not a credit CDR"]
                for name, value in self._totals(attrs)
                if value is not None and value < 0
            }
            if negative:
                raise serializers.ValidationError(negative)
        return attrs

    @staticmethod
    def _totals(attrs: dict):
        yield "total_energy", attrs.get("total_energy")
        for name in (
            "total_cost",
            "total_fixed_cost",
            "total_energy_cost",
            "total_time_cost",
            "total_parking_cost",
            "total_reservation_cost",
        ):
            price = attrs.get(name) or {}
            yield f"{name}.excl_vat", price.get("excl_vat")
            yield f"{name}.incl_vat", price.get("incl_vat")


class DisplayTextSerializer(OcpiObjectSerializer):
    language = serializers.CharField(max_length=2)
    text = serializers.CharField(max_length=512)


class CommandResponseSerializer(OcpiObjectSerializer):
    result = serializers.ChoiceField(choices=Command.RESPONSE_RESULTS)
    timeout = BoundedIntegerField()
    message = DisplayTextSerializer(many=True, required=False)


class CommandResultSerializer(OcpiObjectSerializer):
    result = serializers.ChoiceField(choices=Command.RESULT_VALUES)
    message = DisplayTextSerializer(many=True, required=False)


class StartSessionSerializer(OcpiObjectSerializer):
    response_url = serializers.URLField(max_length=255)
    token = TokenSerializer()
    location_id = serializers.CharField(max_length=36)
    evse_uid = serializers.CharField(max_length=36, required=False, allow_null=True)
    connector_id = serializers.CharField(max_length=36, required=False, allow_null=True)
    authorization_reference = serializers.CharField(max_length=36, required=False, allow_null=True)

    def validate(self, attrs: dict) -> dict:
        if attrs.get("connector_id") and not attrs.get("evse_uid"):
            raise serializers.ValidationError({"evse_uid": ["required when connector_id is given"]})
        return attrs


class StopSessionSerializer(OcpiObjectSerializer):
    response_url = serializers.URLField(max_length=255)
    session_id = serializers.CharField(max_length=36)
