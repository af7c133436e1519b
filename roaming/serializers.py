"""OCPI objects of the configuration modules (Credentials, ClientInfo), as partners send them."""

from __future__ import annotations

from rest_framework import serializers

from roaming.ocpi.fields import BoundedIntegerField, OcpiDateTimeField, OcpiObjectSerializer

OCPI_ROLES = ("CPO", "EMSP", "HUB", "NAP", "NSP", "OTHER", "SCSP")
CONNECTION_STATUSES = ("CONNECTED", "OFFLINE", "PLANNED", "SUSPENDED")


class ImageSerializer(OcpiObjectSerializer):
    url = serializers.URLField(max_length=255)
    thumbnail = serializers.URLField(max_length=255, required=False)
    category = serializers.CharField()
    type = serializers.CharField(max_length=4)
    width = BoundedIntegerField(required=False)
    height = BoundedIntegerField(required=False)


class BusinessDetailsSerializer(OcpiObjectSerializer):
    name = serializers.CharField(max_length=100)
    website = serializers.URLField(max_length=255, required=False)
    logo = ImageSerializer(required=False)


class CredentialsRoleSerializer(OcpiObjectSerializer):
    role = serializers.ChoiceField(choices=OCPI_ROLES)
    business_details = BusinessDetailsSerializer()
    party_id = serializers.CharField(min_length=1, max_length=3)
    country_code = serializers.CharField(min_length=2, max_length=2)


class CredentialsSerializer(OcpiObjectSerializer):
    """OCPI 2.2.1 Credentials: the token to call its owner with, its versions URL, its roles."""

    token = serializers.CharField(max_length=64, trim_whitespace=False)
    url = serializers.URLField(max_length=255)
    roles = CredentialsRoleSerializer(many=True, allow_empty=False)

    def validate_token(self, value: str) -> str:
        # OCPI: printable ASCII without space (U+0021..U+007E).
        if not all(0x21 <= ord(char) <= 0x7E for char in value):
            raise serializers.ValidationError("must be printable ASCII without spaces")
        return value


class ClientInfoSerializer(OcpiObjectSerializer):
    party_id = serializers.CharField(min_length=1, max_length=3)
    country_code = serializers.CharField(min_length=2, max_length=2)
    role = serializers.ChoiceField(choices=OCPI_ROLES)
    status = serializers.ChoiceField(choices=CONNECTION_STATUSES)
    # From the future it would make every later report look older (and be ignored).
    last_updated = OcpiDateTimeField(not_future=True)
