from django.urls import path

from stations import views

urlpatterns = [
    path("", views.map_page, name="home"),
    path("map/", views.map_page, name="map"),
    path("roaming-partners/", views.roaming_partners, name="roaming-partners"),
]
