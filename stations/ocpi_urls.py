"""OCPI Locations URLs (mounted under /ocpi/): the eMSP RECEIVER and our CPO SENDER."""

from django.urls import path

from stations import ocpi_views

receiver = "emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>"
sender = "cpo/2.2.1/locations"

urlpatterns = [
    path(receiver, ocpi_views.location_receiver, name="ocpi-emsp-location"),
    path(f"{receiver}/<str:evse_uid>", ocpi_views.location_receiver, name="ocpi-emsp-evse"),
    path(f"{receiver}/<str:evse_uid>/<str:connector_id>", ocpi_views.location_receiver, name="ocpi-emsp-connector"),
    path(sender, ocpi_views.location_sender_list, name="ocpi-cpo-locations"),
    path(f"{sender}/<str:location_id>", ocpi_views.location_sender_object, name="ocpi-cpo-location"),
    path(f"{sender}/<str:location_id>/<str:evse_uid>", ocpi_views.location_sender_object, name="ocpi-cpo-evse"),
    path(
        f"{sender}/<str:location_id>/<str:evse_uid>/<str:connector_id>",
        ocpi_views.location_sender_object,
        name="ocpi-cpo-connector",
    ),
]
