from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from roaming.models import PartnerConnection, Party, RoamingAgreement


@admin.register(Party)
class PartyAdmin(SimpleHistoryAdmin):
    list_display = ("name", "country_code", "party_id", "role")
    list_filter = ("role",)
    search_fields = ("name", "party_id", "country_code")


@admin.register(PartnerConnection)
class PartnerConnectionAdmin(SimpleHistoryAdmin):
    list_display = ("party", "status", "version", "last_contact_at")
    list_filter = ("status",)
    exclude = ("token_to_them_encrypted", "token_from_them_hash", "registration_token_hash")


@admin.register(RoamingAgreement)
class RoamingAgreementAdmin(SimpleHistoryAdmin):
    list_display = ("partner", "direction", "status", "valid_from", "valid_until", "hub")
    list_filter = ("status", "direction")
