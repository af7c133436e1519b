from django.apps import AppConfig


class RoamingConfig(AppConfig):
    name = "roaming"
    verbose_name = "Roaming partners and agreements"
