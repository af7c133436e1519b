"""OCPI Tariffs URLs (mounted under /ocpi/): the eMSP RECEIVER and our CPO SENDER."""

from django.urls import path

from tariffs import ocpi_views

urlpatterns = [
    path(
        "emsp/2.2.1/tariffs/<str:country_code>/<str:party_id>/<str:tariff_id>",
        ocpi_views.tariff_receiver,
        name="ocpi-emsp-tariff",
    ),
    path("cpo/2.2.1/tariffs", ocpi_views.tariff_sender_list, name="ocpi-cpo-tariffs"),
]
