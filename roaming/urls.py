from django.urls import path

from roaming import views

urlpatterns = [
    path("ocpi/versions", views.versions, name="ocpi-versions"),
    path("ocpi/2.2.1", views.version_details, name="ocpi-version-details"),
    path("ocpi/2.2.1/credentials", views.credentials_module, name="ocpi-credentials"),
    path(
        "ocpi/2.2.1/hubclientinfo/<str:country_code>/<str:party_id>",
        views.hub_client_info,
        name="ocpi-hubclientinfo",
    ),
]
