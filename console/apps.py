from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The staff console: the partner dashboard, the staff overview and /metrics, composed from every app's figures.

    It stands on top of roaming, cards, stations and charging (it imports them; none of them imports it).
    """

    default_auto_field = "django.db.models.BigAutoField"
    name = "console"
    verbose_name = "Staff console"
