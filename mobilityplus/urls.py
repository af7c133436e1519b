from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from console.views import LandingLoginView, staff_time_zone
from mobilityplus.api_errors import UnknownApiPath
from mobilityplus.health import healthz
from mobilityplus.metrics import metrics_view
from roaming.ocpi.endpoint import ocpi_not_found


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers and bots ask for /favicon.ico whatever the page says: send them to the (cache-busted) icon."""
    return HttpResponsePermanentRedirect(static("img/favicon.svg"))


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/time-zone/", admin.site.admin_view(staff_time_zone), name="staff-time-zone"),
    path("favicon.ico", favicon),
    path("admin/", admin.site.urls),
    # Staff land on the staff overview after logging in here, drivers on the map.
    path("accounts/login/", LandingLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's set-up as a script of its own (?script): no inline script under the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("roaming.urls")),
    path("", include("cards.urls")),
    path("ocpi/", include("stations.ocpi_urls")),
    path("", include("stations.urls")),  # the driver map at / and /map/
    path("api/v1/", include("stations.api_urls")),
    path("api/v1/", include("charging.api_urls")),
    path("ocpi/", include("charging.ocpi_urls")),
    path("charging/", include("charging.urls")),
    path("ocpi/", include("tariffs.ocpi_urls")),
    # Last: any other /ocpi/ URL (a segment with an encoded "/", an unknown module) gets the OCPI envelope.
    re_path(r"^ocpi/", ocpi_not_found),
    # Last: whatever no API view answered under /api/ is a JSON 404, not Django's HTML page.
    re_path(r"^api/", UnknownApiPath.as_view(), name="api-unknown"),
]
