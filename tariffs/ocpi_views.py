"""OCPI Tariffs endpoints: the eMSP RECEIVER (partners push their prices) and the CPO SENDER (ours).

Views stay thin: writes in tariffs.services, reads in tariffs.selectors.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse

from roaming.ocpi.endpoint import PartnerContext, ocpi_endpoint
from roaming.ocpi.envelope import CLIENT_ERROR, INVALID_PARAMETERS, OcpiError, ocpi_response
from roaming.ocpi.ownership import check_owner
from roaming.ocpi.pagination import paginated_response
from tariffs import selectors, services


@ocpi_endpoint("tariffs", methods=("GET", "PUT", "DELETE"))
def tariff_receiver(ctx: PartnerContext, country_code: str, party_id: str, tariff_id: str):
    """GET, PUT and DELETE of one of the caller's tariffs (2.2.1 has no PATCH); who may: roaming.ocpi.ownership."""
    owner = check_owner(ctx, country_code, party_id)
    method = ctx.request.method
    if method == "GET":
        tariff = services.find_tariff(owner, tariff_id)
        if tariff is None:
            raise OcpiError(CLIENT_ERROR, f"Unknown tariff {tariff_id}", http_status=404)
        return tariff.document
    if method == "DELETE":
        # Deleting a tariff we do not hold succeeds: a DELETE retried after a lost answer must not fail.
        services.delete_partner_tariff(owner, tariff_id)
        return None
    body = ctx.json()
    if not isinstance(body, dict):
        raise OcpiError(INVALID_PARAMETERS, "body: must be a JSON object")
    stored = services.store_partner_tariff(owner, tariff_id, body, source=ctx.connection)
    return ocpi_response(None, http_status=201 if stored.created else 200)


@ocpi_endpoint("tariffs", methods=("GET",))
def tariff_sender_list(ctx: PartnerContext) -> JsonResponse:
    """Our own tariffs, in cursor pages with date_from / date_to (roaming.ocpi.pagination)."""
    limit = settings.TARIFFS_SENDER_MAX_LIMIT
    return paginated_response(
        ctx.request, selectors.our_tariffs(), selectors.tariffs_to_ocpi, default_limit=limit, max_limit=limit
    )
