"""Reads about drivers and cards."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.db import connection as db
from django.db.models import Aggregate, Count, FloatField, Q, QuerySet

from cards.identifiers import foreign_uid_lookups
from cards.models import AuthorizationDecision, Card
from roaming.ocpi.envelope import format_datetime


def token_payload(card: Card) -> dict:
    """The OCPI 2.2.1 Token object for one of our cards (issuer party must be loaded)."""
    payload = {
        "country_code": card.issuer_party.country_code,
        "party_id": card.issuer_party.party_id,
        "uid": card.uid,
        "type": card.type,
        "contract_id": card.contract_id,
        "issuer": card.issuer,
        "valid": card.valid,
        "whitelist": card.whitelist,
        "last_updated": format_datetime(card.last_updated),
    }
    for field in ("visual_number", "group_id", "language"):
        if getattr(card, field):
            payload[field] = getattr(card, field)
    return payload


def token_push_refusal(connection, covered: set[int] | None = None, *, any_status: bool = False) -> str:
    """Why our Tokens may not be pushed over this connection now; "" when they may.

    The one rule for choosing push targets and for stopping a retry chain, so the two never disagree.
    `covered` (party ids whose agreement takes our cards) may be passed in when checking many connections.
    """
    from roaming.models import PartnerConnection
    from roaming.selectors import party_ids_accepting_our_cards

    if connection is None:
        return "We have no connection to this partner"
    if not any_status and connection.status != PartnerConnection.Status.CONNECTED:
        return f"The connection is {connection.get_status_display().lower()}"
    if not connection.party.acts_as_cpo:
        return "The partner is not a CPO"
    if connection.party_id not in (party_ids_accepting_our_cards() if covered is None else covered):
        return "No agreement in force takes our cards at this partner's stations"
    if not connection.endpoint_url("tokens", "RECEIVER"):
        return "The partner has no tokens RECEIVER endpoint"
    return ""


def token_push_targets(*, suspended: bool = False) -> list:
    """Connected CPO partners whose agreement takes our cards today and who have a tokens RECEIVER endpoint.

    `suspended=True` adds suspended connections otherwise eligible: a card change is written for them too, kept by
    the outbox while they are suspended and delivered once they are resumed (only each card's latest state).
    """
    from roaming.models import PartnerConnection
    from roaming.selectors import party_ids_accepting_our_cards

    statuses = [PartnerConnection.Status.CONNECTED] + ([PartnerConnection.Status.SUSPENDED] if suspended else [])
    covered = party_ids_accepting_our_cards()
    connections = PartnerConnection.objects.filter(status__in=statuses).select_related("party", "via_hub")
    return [c for c in connections if not token_push_refusal(c, covered, any_status=suspended)]


def token_object_id(card: Card) -> str:
    """The outbox's object id of a card's Token: order and coalescing are per token (uid and type)."""
    return f"{card.uid}/{card.type}"


def token_path(card: Card) -> str:
    """Where the Token goes under a CPO's tokens RECEIVER: /{country_code}/{party_id}/{uid}?type={type}."""
    return f"/{card.issuer_party.country_code}/{card.issuer_party.party_id}/{card.uid}?type={card.type}"


def token_pushes(card: Card) -> list:
    """Per CPO, the latest push of this card's Token (the outbox message), newest first: what staff see per card."""
    from roaming.models import OutboxMessage

    latest: dict[int, OutboxMessage] = {}
    messages = (
        OutboxMessage.objects.filter(module="tokens", object_id=token_object_id(card))
        .select_related("partner")
        .order_by("-id")
    )
    for message in messages[:200]:
        latest.setdefault(message.partner_id, message)
    return list(latest.values())


def tokens_visible_to(party) -> QuerySet[Card]:
    """Our tokens a CPO may cache: all of them when an agreement takes our cards at its stations, else none."""
    from cards.authorization import card_directory

    cards = Card.objects.filter(issuer_party__is_self=True).select_related("issuer_party")
    return cards if card_directory.covers(party) else cards.none()


def foreign_token_for(uid: str, token_type: str):
    """The cached foreign token with this UID (newest when two eMSPs share one), or None."""
    from cards.models import ForeignToken

    return (
        ForeignToken.objects.select_related("party")
        .filter(uid__in=foreign_uid_lookups(uid, token_type), type=token_type)
        .order_by("-last_updated")
        .first()
    )


def cards_of_driver(user) -> QuerySet[Card]:
    return Card.objects.filter(driver__user=user).select_related("replaced_by").order_by("-created_at")


# --- staff console figures ---------------------------------------------------------------------------------------


@dataclass
class AuthorizationFigures:
    """Authorizations with one partner over a window, both directions."""

    asked_by_them: int = 0  # they (a CPO) asked us about our cards
    allowed_by_us: int = 0
    about_their_cards: int = 0  # our stations asked about their (eMSP) cards
    allowed_their_cards: int = 0
    realtime_calls: int = 0  # of those, asked to them in real time
    realtime_p95_ms: float | None = None
    timeouts: int = 0  # real-time calls they did not answer in time (decided from the cached token)

    @property
    def allowed_share_by_us(self) -> float | None:
        return self.allowed_by_us / self.asked_by_them if self.asked_by_them else None

    @property
    def allowed_share_their_cards(self) -> float | None:
        return self.allowed_their_cards / self.about_their_cards if self.about_their_cards else None


# cards.authorization's fallback reason when the eMSP's answer was late (or "...ReadTimeout..." from the client)
TIMEOUT_REASON = "no answer in time"


def _p95(values: QuerySet) -> float | None:
    """95th percentile of elapsed_ms in the database (PostgreSQL), or in Python elsewhere."""
    if db.vendor == "postgresql":
        return values.aggregate(p95=Percentile95("elapsed_ms"))["p95"]
    ordered = sorted(v for v in values.values_list("elapsed_ms", flat=True) if v is not None)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else None


class Percentile95(Aggregate):
    function = "percentile_cont"
    template = "percentile_cont(0.95) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def partner_authorizations(party, since: dt.datetime) -> AuthorizationFigures:
    """Authorizations for and from one partner since `since` (3 queries on the decision log's time index)."""
    decisions = AuthorizationDecision.objects.filter(partner=party.ocpi_id, decided_at__gte=since)
    Direction, Path = AuthorizationDecision.Direction, AuthorizationDecision.Path
    counts = decisions.aggregate(
        asked_by_them=Count("pk", filter=Q(direction=Direction.EMSP)),
        allowed_by_us=Count("pk", filter=Q(direction=Direction.EMSP, result="ALLOWED")),
        about_their_cards=Count("pk", filter=Q(direction=Direction.CPO)),
        allowed_their_cards=Count("pk", filter=Q(direction=Direction.CPO, result="ALLOWED")),
        realtime_calls=Count("pk", filter=Q(direction=Direction.CPO, path__in=(Path.REALTIME, Path.FALLBACK))),
        timeouts=Count(
            "pk",
            filter=Q(direction=Direction.CPO, path=Path.FALLBACK)
            & (Q(reason__contains=TIMEOUT_REASON) | Q(reason__contains="Timeout")),
        ),
    )
    p95 = _p95(decisions.filter(direction=Direction.CPO, path=Path.REALTIME))
    return AuthorizationFigures(realtime_p95_ms=p95, **counts)


def authorizations_since(since: dt.datetime) -> dict[str, int]:
    """All authorizations since `since`: asked (both directions) and allowed, for the staff overview."""
    return AuthorizationDecision.objects.filter(decided_at__gte=since).aggregate(
        total=Count("pk"),
        allowed=Count("pk", filter=Q(result="ALLOWED")),
        for_our_cards=Count("pk", filter=Q(direction=AuthorizationDecision.Direction.EMSP)),
        at_our_stations=Count("pk", filter=Q(direction=AuthorizationDecision.Direction.CPO)),
        fallbacks=Count("pk", filter=Q(path=AuthorizationDecision.Path.FALLBACK)),
    )
