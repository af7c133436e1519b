"""OCPI URLs of the charging app (included under /ocpi/)."""

from django.urls import path

from charging import ocpi_views

urlpatterns = [
    path(
        "emsp/2.2.1/sessions/<str:country_code>/<str:party_id>/<str:session_id>",
        ocpi_views.session_receiver,
        name="ocpi-emsp-session",
    ),
    path("emsp/2.2.1/cdrs", ocpi_views.cdr_receiver, name="ocpi-emsp-cdrs"),
    path("emsp/2.2.1/cdrs/<int:cdr_pk>", ocpi_views.cdr_detail, name="ocpi-emsp-cdr"),
    path(
        "emsp/2.2.1/commands/<str:command>/<uuid:command_uid>",
        ocpi_views.command_result_receiver,
        name="ocpi-emsp-command-result",
    ),
    path("cpo/2.2.1/commands/<str:command>", ocpi_views.command_receiver, name="ocpi-cpo-commands"),
    path("cpo/2.2.1/sessions", ocpi_views.session_sender, name="ocpi-cpo-sessions"),
    path("cpo/2.2.1/cdrs", ocpi_views.cdr_sender, name="ocpi-cpo-cdrs"),
]
