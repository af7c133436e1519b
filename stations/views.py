"""The driver map page and the drivers' list of roaming partners."""

from __future__ import annotations

from csp.decorators import csp_update
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from stations import selectors
from stations.filters import CONNECTOR_STANDARDS, POWER_STEPS, operator_choices

# The standards offered in the filter menu (the API accepts every OCPI ConnectorType).
MENU_STANDARDS = ["IEC_62196_T2", "IEC_62196_T2_COMBO", "CHADEMO", "IEC_62196_T1", "TESLA_S", "DOMESTIC_F"]


def map_page(request: HttpRequest) -> HttpResponse:
    labels = dict(CONNECTOR_STANDARDS)
    return render(
        request,
        "stations/map.html",
        {
            "standards": [(code, labels[code]) for code in MENU_STANDARDS],
            "power_steps": [f"{step:g}" for step in POWER_STEPS if step],
            "operators": operator_choices(),
            "stale_after_minutes": settings.MAP_STATUS_STALE_AFTER_MINUTES,
        },
    )


# Partners' logos are on their own HTTPS hosts (credentials business_details.logo); this page alone admits them.
@csp_update({"img-src": ["https:"]})
def roaming_partners(request: HttpRequest) -> HttpResponse:
    """The drivers' overview of roaming partners whose stations take the MobilityPlus card."""
    return render(request, "roaming/roaming_partners.html", {"partners": selectors.roaming_partners_for_drivers()})
