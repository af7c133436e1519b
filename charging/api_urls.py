"""REST API of the charging app (mounted under /api/v1/): our charge-point backend's hand-over."""

from django.urls import path

from charging import backend_api

app_name = "charging-api"

urlpatterns = [
    path("charge-point/sessions", backend_api.SessionStartView.as_view(), name="session-start"),
    path(
        "charge-point/sessions/<str:session_id>/meter-values",
        backend_api.MeterValueView.as_view(),
        name="session-meter-values",
    ),
    path("charge-point/sessions/<str:session_id>/end", backend_api.SessionEndView.as_view(), name="session-end"),
    path("charge-point/evse-status", backend_api.EvseStatusView.as_view(), name="evse-status"),
]
