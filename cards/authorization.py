"""Real-time authorization of our cards for CPOs (the eMSP side), kept fast by design.

What one request must read: the caller (the `ocpi_endpoint` connection cache), the card and
whether an agreement covers the caller today. The last two come from a per-process cache:

- cards: loaded on first use (or all at once by `card_directory.warm()` at worker start), kept as
  small tuples; a card saved in this process is evicted at once (signals), and every process polls
  the cards changed since its last look every CARDS_CACHE_POLL_S (one indexed query), so a blocked
  card is refused everywhere within that interval;
- agreements: `roaming.selectors.agreements_in_force`, the per-process copy of the one agreement
  rule that the OCPI gate reads too.

The decision log is written by `decision_log` in bulk, off the request path.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from cards.decision_log import decision_log
from cards.identifiers import lookup_uid
from cards.metrics import observe_realtime_call
from cards.models import AuthorizationDecision, Card, ForeignToken
from cards.realtime_circuit import Refused, Ticket, circuit_key, partner_circuits
from cards.selectors import foreign_token_for
from mobilityplus.db_outage import DATABASE_ERRORS, bounded_queries
from roaming.models import PartnerConnection, Party, RoamingAgreement
from roaming.ocpi.bounded_cache import BoundedCache
from roaming.ocpi.client import OcpiClient, OcpiClientError, join_url
from roaming.ocpi.envelope import format_datetime
from roaming.selectors import agreements_in_force, own_party, party_ids_whose_cards_we_accept
from stations.models import EVSE

logger = logging.getLogger(__name__)

# Changes committed slightly after a poll could carry an older last_updated: look back this far.
POLL_OVERLAP = dt.timedelta(seconds=5)
# A safety net for changes no poll sees (a row edited by hand in SQL without last_updated).
ENTRY_MAX_AGE_S = 600.0
MAX_ENTRIES = 2_000_000
# After a failed look for changes (database stalled or down) the next one waits this long, so requests
# do not each pay for the database's trouble.
POLL_RETRY_AFTER_DB_ERROR_S = 2.0
# Our EVSEs the backend named are remembered this long (a removed EVSE is refused again after it).
EVSE_MAX_AGE_S = 60.0

BLOCKED_STATUSES = {Card.Status.BLOCKED, Card.Status.LOST, Card.Status.STOLEN, Card.Status.REPLACED}
_FIELDS = (
    "id",
    "uid",
    "type",
    "contract_id",
    "visual_number",
    "issuer",
    "group_id",
    "whitelist",
    "language",
    "valid_from",
    "valid_until",
    "status",
    "last_updated",
)


class CardEntry(NamedTuple):
    id: int
    uid: str
    type: str
    contract_id: str
    visual_number: str
    issuer: str
    group_id: str
    whitelist: str
    language: str
    valid_from: dt.date | None
    valid_until: dt.date | None
    status: str
    last_updated: str  # already in OCPI DateTime form: formatted once, not per request
    loaded_at: float


def _entry(row: tuple, loaded_at: float) -> CardEntry:
    return CardEntry(*row[:-1], format_datetime(row[-1]), loaded_at)


_today: list = [0.0, None]


def today() -> dt.date:
    """The local date, recomputed at most once a second (timezone.localdate() costs more than the rest)."""
    now = time.monotonic()
    if now >= _today[0]:
        _today[0], _today[1] = now + 1.0, timezone.localdate()
    return _today[1]


_references = {"pid": 0, "prefix": "", "count": itertools.count()}


def new_authorization_reference() -> str:
    """A unique reference (CiString(36)): a random per-process prefix and a counter.

    uuid4() reads the kernel's random source each time, which costs more than the whole decision here.
    """
    if _references["pid"] != os.getpid():
        _references.update(pid=os.getpid(), prefix=secrets.token_hex(10), count=itertools.count(1))
    return f"{_references['prefix']}{next(_references['count']):012x}"


class CardDirectory:
    """The per-process cache of our cards and of the agreements that let a CPO use them."""

    def __init__(self) -> None:
        self._cards: dict[tuple[str, str], CardEntry | None] = {}
        # Uids that are not our cards, kept apart and bounded: they come from the caller (random or foreign uids).
        self._unknown = BoundedCache(max_entries=lambda: settings.CARDS_UNKNOWN_CACHE_MAX_ENTRIES)
        self._lock = threading.Lock()
        self._issuer: tuple[int, str, str] | None = None
        self._watermark: dt.datetime | None = None
        self._next_poll = 0.0
        self._evses: dict[tuple[str, str], float] = {}

    # -- reads -------------------------------------------------------------------------------------
    def issuer(self) -> tuple[int, str, str]:
        """(pk, country_code, party_id) of MobilityPlus."""
        if self._issuer is None:
            party = own_party()
            self._issuer = (party.pk, party.country_code, party.party_id)
        return self._issuer

    def card(self, uid: str, token_type: str) -> CardEntry | None:
        self._poll_if_due()
        key = (uid, token_type)
        entry = self._cards.get(key, False)
        if entry is False and self._unknown.get(key, False) is None:
            return None
        if entry is False or (entry is not None and time.monotonic() - entry.loaded_at > ENTRY_MAX_AGE_S):
            try:
                with bounded_queries():
                    row = (
                        Card.objects.filter(issuer_party_id=self.issuer()[0], uid=uid, type=token_type)
                        .values_list(*_FIELDS)
                        .first()
                    )
            except DATABASE_ERRORS:
                if entry:  # too old to trust without a look, but better than nothing while the database is away
                    return entry
                raise
            if row is None:
                self._cards.pop(key, None)
                self._unknown[key] = None
                return None
            entry = _entry(row, time.monotonic())
            if len(self._cards) >= MAX_ENTRIES:
                self._cards.clear()
            self._cards[key] = entry
        return entry

    def has_our_evse(self, location_id: str, evse_uid: str) -> bool:
        """Whether this EVSE is one of ours; remembered a while, and trusted when the database cannot say.

        The question comes from our own charge-point backend, so during a database outage its word is taken
        rather than refusing every driver.
        """
        key = (location_id.upper(), evse_uid.upper())
        seen = self._evses.get(key)
        if seen is not None and time.monotonic() - seen < EVSE_MAX_AGE_S:
            return True
        try:
            with bounded_queries():
                ours = EVSE.objects.filter(
                    location__party_id=self.issuer()[0], location__ocpi_id__iexact=location_id, uid__iexact=evse_uid
                ).exists()
        except DATABASE_ERRORS:
            logger.warning("EVSE %s/%s not checked: database unavailable", location_id, evse_uid)
            return True
        if ours:
            if len(self._evses) >= MAX_ENTRIES:
                self._evses.clear()
            self._evses[key] = time.monotonic()
        return ours

    def covers(self, party: Party) -> bool:
        """Whether an active agreement lets `party`'s stations take our cards today."""
        return party.pk in agreements_in_force.accepting_our_cards()

    # -- keeping it true -------------------------------------------------------------------------------
    def warm(self, chunk_size: int = 5000) -> int:
        """Load every card of ours (at worker start), so no request pays for a cache miss."""
        now = time.monotonic()
        started = timezone.now()
        cards = {}
        rows = Card.objects.filter(issuer_party_id=self.issuer()[0]).values_list(*_FIELDS)
        for row in rows.iterator(chunk_size=chunk_size):
            cards[(row[1], row[2])] = _entry(row, now)
        with self._lock:
            self._cards = cards
            self._unknown.clear()
            self._watermark = started
        return len(cards)

    def evict(self, uid: str, token_type: str) -> None:
        self._cards.pop((uid, token_type), None)
        self._unknown.pop((uid, token_type), None)

    def clear(self) -> None:
        with self._lock:
            self._cards = {}
            self._unknown.clear()
            self._issuer = None
            self._watermark = None
            self._next_poll = 0.0
            self._evses = {}
        _foreign_lookups.clear()

    def _poll_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_poll:
            return
        # Another thread looking already: answer from the cache rather than queue behind it.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if now < self._next_poll:
                return
            self._next_poll = now + settings.CARDS_CACHE_POLL_S
            polled_at = timezone.now()
            if self._watermark is not None:
                try:
                    with bounded_queries():
                        changed = list(
                            Card.objects.filter(last_updated__gte=self._watermark - POLL_OVERLAP).values_list(
                                "uid", "type"
                            )
                        )
                except DATABASE_ERRORS as error:
                    # The watermark stays: once the database is back, the changes missed meanwhile are seen.
                    logger.warning("Looking for changed cards failed (%s); answering from the cache", error)
                    self._next_poll = now + max(settings.CARDS_CACHE_POLL_S, POLL_RETRY_AFTER_DB_ERROR_S)
                    return
                for key in changed:
                    self._cards.pop(key, None)
                    self._unknown.pop(key, None)
            self._watermark = polled_at
        finally:
            self._lock.release()


card_directory = CardDirectory()


def _card_saved(sender: type, instance: Card, **_: Any) -> None:
    card_directory.evict(instance.uid, instance.type)


def _party_saved(sender: type, instance: Party, **_: Any) -> None:
    if instance.is_self:
        card_directory.clear()


post_save.connect(_card_saved, sender=Card, dispatch_uid="cards-directory-card")
post_delete.connect(_card_saved, sender=Card, dispatch_uid="cards-directory-card-delete")
post_save.connect(_party_saved, sender=Party, dispatch_uid="cards-directory-party")


def token_from_entry(entry: CardEntry) -> dict:
    """The OCPI Token of a cached card (same content as `selectors.token_payload`)."""
    _, country_code, party_id = card_directory.issuer()
    token = {
        "country_code": country_code,
        "party_id": party_id,
        "uid": entry.uid,
        "type": entry.type,
        "contract_id": entry.contract_id,
        "issuer": entry.issuer,
        "valid": entry.status == Card.Status.ACTIVE,
        "whitelist": entry.whitelist,
        "last_updated": entry.last_updated,
    }
    if entry.visual_number:
        token["visual_number"] = entry.visual_number
    if entry.group_id:
        token["group_id"] = entry.group_id
    if entry.language:
        token["language"] = entry.language
    return token


STATUS_TEXT = {
    Card.Status.BLOCKED: "This card is blocked. Please contact MobilityPlus.",
    Card.Status.LOST: "This card was reported lost and is blocked.",
    Card.Status.STOLEN: "This card was reported stolen and is blocked.",
    Card.Status.REPLACED: "This card was replaced by a new card; please use the new one.",
}


def card_verdict(entry: CardEntry, today: dt.date) -> tuple[str, str]:
    """ALLOWED/BLOCKED/EXPIRED/NOT_ALLOWED from the card alone, with the text for the driver."""
    if entry.status in BLOCKED_STATUSES:
        return "BLOCKED", STATUS_TEXT[entry.status]
    if entry.status == Card.Status.EXPIRED or (entry.valid_until and entry.valid_until < today):
        return "EXPIRED", "This card has expired. Please contact MobilityPlus for a new one."
    if entry.valid_from and entry.valid_from > today:
        return "NOT_ALLOWED", f"This card is valid from {entry.valid_from.isoformat()}."
    return "ALLOWED", "Enjoy your charge with MobilityPlus."


class CannotCheckNow(Exception):
    """The card is not in the warm cache and the database cannot say (stalled or down): ask again later."""


def authorize_token(party: Party, token_uid: str, token_type: str, location: dict | None) -> tuple[dict | None, str]:
    """Decide whether `party` (a CPO) may let our card charge; (AuthorizationInfo or None if unknown, reason).

    Cards in the warm cache are decided without the database; one that is not, while the database is stalled
    or down, raises CannotCheckNow (the decision is logged either way, written once the database is back).
    """
    started = time.perf_counter()
    uid = lookup_uid(token_uid, token_type)
    reference = ""
    try:
        entry = card_directory.card(uid, token_type)
        covered = entry is not None and card_directory.covers(party)
    except DATABASE_ERRORS as error:
        logger.warning("Authorization of %s for %s without the database: %s", uid, party.ocpi_id, error)
        entry, covered = None, False
        unavailable = True
    else:
        unavailable = False
    if unavailable:
        info, allowed, reason = None, "NOT_ALLOWED", "This card cannot be checked right now; please try again."
    elif entry is None:
        info, allowed, reason = None, "UNKNOWN", "Unknown token"
    else:
        allowed, reason = card_verdict(entry, today())
        if allowed == "ALLOWED" and not covered:
            allowed, reason = "NOT_ALLOWED", "MobilityPlus cards cannot be used at this operator's stations."
        reference = new_authorization_reference()
        info = {
            "allowed": allowed,
            "token": token_from_entry(entry),
            "authorization_reference": reference,
            "info": {"language": entry.language or "en", "text": reason},
        }
        if location is not None and allowed == "ALLOWED":
            info["location"] = location
    decision_log.record(
        direction=AuthorizationDecision.Direction.EMSP,
        partner=f"{party.country_code}*{party.party_id}",
        token_uid=uid[:36],
        token_type=token_type,
        location_id=(location or {}).get("location_id", ""),
        evse_uids=(location or {}).get("evse_uids", []),
        result=allowed,
        reason=reason[:255],
        path=AuthorizationDecision.Path.LOCAL if entry else AuthorizationDecision.Path.UNKNOWN,
        authorization_reference=reference,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    if unavailable:
        raise CannotCheckNow(reason)
    return info, reason


# -- our stations (CPO side) -------------------------------------------------------------------------------

# Real-time calls run here so the answer keeps its deadline even when a partner trickles bytes
# (requests' timeout bounds each socket read, not the whole call). Each partner may hold at most
# CARDS_REALTIME_PARTNER_CONCURRENCY of these threads (realtime_circuit), so one cannot fill it for all.
_realtime_pool = ThreadPoolExecutor(max_workers=settings.CARDS_REALTIME_POOL_SIZE, thread_name_prefix="emsp-authorize")


@dataclass
class StationDecision:
    allowed: str
    path: str
    reason: str
    authorization_reference: str = ""
    token: dict | None = None
    issuer: str = ""
    elapsed_ms: float = 0.0

    @property
    def may_charge(self) -> bool:
        return self.allowed == "ALLOWED"


def _issuer_call(token: ForeignToken, connection: PartnerConnection | None, location: dict, deadline_s: float):
    """(circuit key, a prepared call to the issuing eMSP's authorize endpoint)."""
    if connection is None or connection.status != PartnerConnection.Status.CONNECTED:
        raise OcpiClientError("transport", f"no connected link to {token.party.ocpi_id}")
    url = connection.endpoint_url("tokens", "SENDER")
    if not url:
        raise OcpiClientError("transport", f"{token.party.ocpi_id} has no tokens SENDER endpoint")
    client = OcpiClient.for_connection(connection, retries=0, timeout=deadline_s)
    target = join_url(url, token.uid, "authorize")

    def call() -> dict:
        reply = client.post(target, body=location, params={"type": token.type}, accept_status=(2004,))
        if reply.status_code == 2004:
            text = "The issuer does not know this token."
            return {"allowed": "NOT_ALLOWED", "info": {"language": "en", "text": text}}
        if not isinstance(reply.data, dict) or reply.data.get("allowed") not in ALLOWED_VALUES:
            raise OcpiClientError("json", "AuthorizationInfo without a valid `allowed`")
        return reply.data

    return circuit_key(token.party_id, url), call


def _guarded(ticket: Ticket, call, deadline_s: float):
    """The call as the pool runs it: its outcome feeds the partner's circuit, and its slot is freed at its end."""

    def run() -> dict:
        try:
            result = call()
        except BaseException:
            partner_circuits.failed(ticket)
            raise
        else:
            if time.monotonic() - ticket.started > deadline_s:
                partner_circuits.failed(ticket)  # answered, but too late for the driver waiting
            else:
                partner_circuits.succeeded(ticket)
            return result
        finally:
            partner_circuits.release(ticket)

    return run


ALLOWED_VALUES = {"ALLOWED", "BLOCKED", "EXPIRED", "NO_CREDIT", "NOT_ALLOWED"}


def _foreign_decision(
    token: ForeignToken, accepted: bool, connection: PartnerConnection | None, location: dict, deadline_s: float
) -> StationDecision:
    issuer = token.party.ocpi_id
    if not accepted:
        return StationDecision("NOT_ALLOWED", AuthorizationDecision.Path.AGREEMENT, f"No agreement with {issuer}")
    if token.whitelist == Card.Whitelist.ALWAYS:
        if token.valid:
            return StationDecision("ALLOWED", AuthorizationDecision.Path.CACHE, "Whitelisted (ALWAYS) and valid")
        return StationDecision("BLOCKED", AuthorizationDecision.Path.CACHE, "Whitelisted (ALWAYS) but not valid")
    called_at = None
    try:
        key, call = _issuer_call(token, connection, location, deadline_s)
        ticket = partner_circuits.admit(key)  # Refused at once while the partner is failing or saturated
        future = _realtime_pool.submit(_guarded(ticket, call, deadline_s))
        if ticket.trial:
            # Nobody waits for a partner known to be failing: the trial's outcome only moves the circuit.
            raise Refused("failing, asked again in the background (circuit half-open)")
        called_at = time.perf_counter()
        try:
            info = future.result(timeout=deadline_s)
        except FutureTimeout:
            partner_circuits.failed(ticket)  # counted now: a trickling call may hold its thread much longer
            raise
    except (FutureTimeout, OcpiClientError, ValueError, Refused) as error:
        problem = "no answer in time" if isinstance(error, FutureTimeout) else str(error)
        waited = time.perf_counter() - called_at if called_at is not None else None
        # not_called: the circuit is open, or no connection or endpoint to call
        called = "error" if called_at is not None else "not_called"
        # Our deadline, or the client's read timeout (the same length) when it fires first.
        late = isinstance(error, FutureTimeout) or (isinstance(error, OcpiClientError) and "Timeout" in str(error))
        outcome = "timeout" if late else called
        observe_realtime_call(issuer, outcome, waited)
        if token.whitelist in (Card.Whitelist.ALLOWED, Card.Whitelist.ALLOWED_OFFLINE) and token.valid:
            return StationDecision(
                "ALLOWED", AuthorizationDecision.Path.FALLBACK, f"{issuer}: {problem}; cached {token.whitelist}"
            )
        why = "not valid" if not token.valid else token.whitelist
        return StationDecision(
            "NOT_ALLOWED", AuthorizationDecision.Path.FALLBACK, f"{issuer}: {problem}; cached token {why}"
        )
    observe_realtime_call(issuer, "answered", time.perf_counter() - called_at)
    text = (info.get("info") or {}).get("text") or f"Answer of {issuer}"
    return StationDecision(
        info["allowed"],
        AuthorizationDecision.Path.REALTIME,
        str(text)[:255],
        authorization_reference=str(info.get("authorization_reference") or "")[:36],
    )


class ForeignLookup(NamedTuple):
    token: ForeignToken | None
    accepted: bool  # an agreement in force lets its eMSP's cards charge at our stations
    connection: PartnerConnection | None
    expires: float


# A foreign token's reads are remembered this long per process (saves in this process evict them at once), so a
# burst for one token, such as a stalling eMSP's drivers trying again and again, costs no database work.
FOREIGN_LOOKUP_TTL_S = 1.0
_foreign_lookups: dict[tuple[str, str], ForeignLookup] = {}


def _foreign_lookup(uid: str, token_type: str) -> ForeignLookup:
    key = (uid, token_type)
    now = time.monotonic()
    found = _foreign_lookups.get(key)
    if found is not None and found.expires > now:
        return found
    with bounded_queries():  # all of it in one bounded transaction
        token = foreign_token_for(uid, token_type)
        accepted, connection = False, None
        if token is not None:
            accepted = token.party_id in party_ids_whose_cards_we_accept()
            connection = PartnerConnection.objects.select_related("party", "via_hub").filter(party=token.party).first()
    found = ForeignLookup(token, accepted, connection, now + FOREIGN_LOOKUP_TTL_S)
    if len(_foreign_lookups) >= 10_000:
        _foreign_lookups.clear()
    _foreign_lookups[key] = found
    return found


def _forget_foreign_lookups(sender: type, **_: Any) -> None:
    _foreign_lookups.clear()


for _model in (ForeignToken, PartnerConnection, RoamingAgreement):
    post_save.connect(_forget_foreign_lookups, sender=_model, dispatch_uid=f"cards-foreign-lookup-{_model.__name__}")
    post_delete.connect(
        _forget_foreign_lookups, sender=_model, dispatch_uid=f"cards-foreign-lookup-delete-{_model.__name__}"
    )


def _station_decision(
    uid: str, lookup: str, token_type: str, location_id: str, evse_uid: str, deadline_s: float
) -> tuple[StationDecision, str]:
    entry = card_directory.card(lookup, token_type)
    issuer = ""
    if entry is not None:
        allowed, reason = card_verdict(entry, today())
        decision = StationDecision(allowed, AuthorizationDecision.Path.LOCAL, reason, token=token_from_entry(entry))
        if allowed == "ALLOWED":
            decision.authorization_reference = new_authorization_reference()
        issuer = "{}*{}".format(*card_directory.issuer()[1:])
        return decision, issuer
    found = _foreign_lookup(uid, token_type)  # a foreign uid is kept as sent, not normalised
    token = found.token
    if token is None:
        return StationDecision("NOT_ALLOWED", AuthorizationDecision.Path.UNKNOWN, "Unknown token"), issuer
    issuer = token.party.ocpi_id
    location = {"location_id": location_id, "evse_uids": [evse_uid]}
    decision = _foreign_decision(token, found.accepted, found.connection, location, deadline_s)
    decision.token = token.data
    return decision, issuer


def authorize_at_station(uid: str, token_type: str, location_id: str, evse_uid: str) -> StationDecision:
    """May this card charge at our EVSE? Our cards locally; foreign ones by cache, issuer, or fallback.

    Answers within CARDS_REALTIME_DEADLINE_S plus local work, whatever the issuer does.
    """
    started = time.perf_counter()
    deadline_s = settings.CARDS_REALTIME_DEADLINE_S
    lookup = lookup_uid(uid, token_type)
    try:
        decision, issuer = _station_decision(uid, lookup, token_type, location_id, evse_uid, deadline_s)
    except DATABASE_ERRORS as error:
        # Only reached for a card not in the warm cache: our cached cards never need the database here.
        logger.warning("Authorization of %s without the database: %s", lookup, error)
        reason = "This card cannot be checked right now; please try again in a few minutes."
        decision, issuer = StationDecision("NOT_ALLOWED", AuthorizationDecision.Path.UNKNOWN, reason), ""
    decision.issuer = issuer
    decision.elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    decision_log.record(
        direction=AuthorizationDecision.Direction.CPO,
        partner=issuer,
        token_uid=lookup[:36],
        token_type=token_type,
        location_id=location_id,
        evse_uids=[evse_uid],
        result=decision.allowed,
        reason=decision.reason[:255],
        path=decision.path,
        authorization_reference=decision.authorization_reference,
        elapsed_ms=decision.elapsed_ms,
    )
    return decision
