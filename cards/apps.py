from django.apps import AppConfig


class CardsConfig(AppConfig):
    name = "cards"
    verbose_name = "Cards and authorization"

    def ready(self) -> None:
        # Connects the signals that keep the per-process authorization cache true.
        from cards import authorization  # noqa: F401
