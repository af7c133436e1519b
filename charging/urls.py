"""The driver's charging pages (included under /charging/)."""

from django.urls import path

from charging import views

app_name = "charging"

urlpatterns = [
    path("", views.sessions_page, name="sessions"),
    path("live.json", views.live_json, name="live"),
    path("history.csv", views.history_csv, name="history-csv"),
    path("start/<int:location_pk>/<str:evse_uid>/", views.start_page, name="start"),
    path("stop/<int:session_pk>/", views.stop_session, name="stop"),
]
