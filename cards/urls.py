from django.urls import path, re_path

from cards import api, ocpi_views, views

app_name = "cards"

urlpatterns = [
    re_path(r"^ocpi/emsp/2\.2\.1/tokens/?$", ocpi_views.tokens_list, name="ocpi-tokens"),
    path("ocpi/emsp/2.2.1/tokens/<str:token_uid>/authorize", ocpi_views.authorize, name="ocpi-authorize"),
    path(
        "ocpi/cpo/2.2.1/tokens/<str:country_code>/<str:party_id>/<str:token_uid>",
        ocpi_views.token_receiver,
        name="ocpi-token-receiver",
    ),
    path("api/v1/authorizations", api.AuthorizationView.as_view(), name="api-authorizations"),
    path("cards/", views.my_cards, name="my-cards"),
    path("cards/<int:pk>/block/", views.block_my_card, name="block-my-card"),
]
