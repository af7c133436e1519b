from django.apps import AppConfig


class CardsConfig(AppConfig):
    name = "cards"
    verbose_name = "Cards and authorization"

    def ready(self) -> None:
        # Connects the signals that keep the per-process authorization cache true.
        from cards import authorization  # noqa: F401
        from cards.selectors import token_push_refusal
        from roaming.outbox import register_send_guard

        # A CPO no longer covered by an agreement (or no longer a CPO) gets no more Tokens: checked before each send.
        register_send_guard("tokens", token_push_refusal)
