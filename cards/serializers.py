"""The OCPI Token object as partners send it: the one serializer for the tokens receiver and StartSession."""

from __future__ import annotations

from rest_framework import serializers

from cards.models import Card
from roaming.ocpi.fields import OcpiDateTimeField, OcpiObjectSerializer

TOKEN_TYPES = tuple(Card.Type.values)


class EnergyContractSerializer(OcpiObjectSerializer):
    supplier_name = serializers.CharField(max_length=64)
    contract_id = serializers.CharField(max_length=64, required=False, allow_null=True)


class TokenSerializer(OcpiObjectSerializer):
    country_code = serializers.CharField(max_length=2, min_length=2)
    party_id = serializers.CharField(max_length=3, min_length=3)
    uid = serializers.CharField(max_length=36)
    type = serializers.ChoiceField(choices=TOKEN_TYPES)
    contract_id = serializers.CharField(max_length=36)
    visual_number = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    issuer = serializers.CharField(max_length=64)
    group_id = serializers.CharField(max_length=36, required=False, allow_null=True, allow_blank=True)
    valid = serializers.BooleanField()
    whitelist = serializers.ChoiceField(choices=tuple(Card.Whitelist.values))
    language = serializers.CharField(max_length=2, required=False, allow_null=True, allow_blank=True)
    default_profile_type = serializers.ChoiceField(
        choices=("CHEAP", "FAST", "GREEN", "REGULAR"), required=False, allow_null=True
    )
    energy_contract = EnergyContractSerializer(required=False, allow_null=True)
    last_updated = OcpiDateTimeField(not_future=True)
