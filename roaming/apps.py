from django.apps import AppConfig


class RoamingConfig(AppConfig):
    name = "roaming"
    verbose_name = "Roaming partners and agreements"

    def ready(self) -> None:
        from roaming.data_version import connect_signals

        connect_signals()
