from django.urls import path

from stations import api

app_name = "stations-api"

urlpatterns = [
    path("stations", api.StationListView.as_view(), name="stations"),
    path("stations/nearby", api.NearbyView.as_view(), name="nearby"),
    path("stations/search", api.SearchView.as_view(), name="search"),
    path("stations/<int:pk>", api.StationDetailView.as_view(), name="station"),
    path("favourites", api.FavouritesView.as_view(), name="favourites"),
    path("favourites/<int:pk>", api.FavouriteView.as_view(), name="favourite"),
]
