"""Writes about cards: issuing, lifecycle changes (each recorded and pushed to CPOs), CSV import, foreign tokens."""

from __future__ import annotations

import contextvars
import csv
import datetime as dt
import io
import logging
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from cards.identifiers import InvalidIdentifier, foreign_uid, normalise_contract_id, normalise_uid
from cards.models import Card, CardStatusChange, Driver, ForeignToken
from roaming import outbox
from roaming.models import Party
from roaming.selectors import own_party

logger = logging.getLogger(__name__)


class CardError(ValueError):
    """A card change that is not possible; the message says why (shown to staff or the driver)."""


def default_whitelist(token_type: str) -> str:
    # The spec advises NEVER for app tokens (always ask us); RFID follows the setting, so that
    # a CPO that cannot reach us still lets the driver charge.
    if token_type == Card.Type.RFID:
        return settings.CARDS_DEFAULT_RFID_WHITELIST
    return Card.Whitelist.NEVER


# Set by `change_cards` for its batch: the push targets, read once.
_batch_targets: contextvars.ContextVar[list | None] = contextvars.ContextVar("cards_batch_targets", default=None)


def _queue_push(card: Card, targets: list | None = None) -> None:
    """Write the card's current Token for every CPO it must reach, in the caller's transaction (roaming/outbox.py).

    Delivered after commit by the partner's outbox lane, kept until the CPO answers OCPI 1000; a later change of
    the card not yet sent replaces it (coalesce), so a CPO gets the latest state. With the broker down the change is
    saved all the same: the rows wait for the outbox sweeper (beat), and a block never fails for Redis.
    """
    from cards import selectors

    if targets is None:
        targets = _batch_targets.get()
    if targets is None:
        targets = selectors.token_push_targets(suspended=True)
    outbox.enqueue_to_many(
        [connection.party for connection in targets],
        module="tokens",
        object_id=selectors.token_object_id(card),
        method="PUT",
        path=selectors.token_path(card),
        body=selectors.token_payload(card),
        coalesce=True,
    )


def _change_status(card: Card, new_status: str, *, by, reason: str, push: bool = True) -> Card:
    """Set a card's status, record who/when/why, and push the new Token to CPOs after commit."""
    if not reason or not reason.strip():
        raise CardError("A reason is required for every status change.")
    old_status = card.status
    card.status = new_status
    card.last_updated = timezone.now()
    card.save(update_fields=["status", "last_updated", "replaced_by"])
    CardStatusChange.objects.create(
        card=card, old_status=old_status, new_status=new_status, changed_by=by, reason=reason.strip()[:255]
    )
    if push:
        _queue_push(card)
    return card


@transaction.atomic
def issue_card(
    *,
    uid: str,
    contract_id: str | None = None,
    driver: Driver | None = None,
    token_type: str = Card.Type.RFID,
    whitelist: str | None = None,
    visual_number: str = "",
    group_id: str = "",
    language: str = "",
    valid_from: dt.date | None = None,
    valid_until: dt.date | None = None,
    by=None,
    reason: str = "Card issued",
) -> Card:
    """A new active card of ours; the UID is normalised and the eMAID checked (or generated)."""
    try:
        uid = normalise_uid(uid, token_type)
        contract_id = normalise_contract_id(contract_id) if contract_id else new_contract_id()
    except InvalidIdentifier as exc:
        raise CardError(str(exc)) from exc
    issuer = own_party()
    if Card.objects.filter(issuer_party=issuer, uid=uid, type=token_type).exists():
        raise CardError(f"A card with UID {uid} already exists.")
    if Card.objects.filter(contract_id=contract_id).exists():
        raise CardError(f"A card with contract id {contract_id} already exists.")
    card = Card.objects.create(
        issuer_party=issuer,
        driver=driver,
        uid=uid,
        type=token_type,
        contract_id=contract_id,
        visual_number=visual_number,
        issuer=settings.OCPI_BUSINESS_NAME,
        group_id=group_id,
        whitelist=whitelist or default_whitelist(token_type),
        language=language,
        valid_from=valid_from,
        valid_until=valid_until,
        status=Card.Status.ACTIVE,
        last_updated=timezone.now(),
    )
    CardStatusChange.objects.create(card=card, old_status="", new_status=card.status, changed_by=by, reason=reason)
    _queue_push(card)
    return card


@transaction.atomic
def save_card_details(card: Card) -> Card:
    """Save edited Token fields (whitelist, validity, visual number...) and push the new Token to CPOs."""
    card.full_clean(exclude=["issuer_party", "driver", "replaced_by"])
    card.last_updated = timezone.now()
    card.save()
    _queue_push(card)
    return card


def new_contract_id() -> str:
    """A fresh eMAID of ours: our country and party id, `C` and 8 random digits, check digit."""
    me = own_party()
    while True:
        candidate = normalise_contract_id(f"{me.country_code}{me.party_id}C{secrets.randbelow(10**8):08d}")
        if not Card.objects.filter(contract_id=candidate).exists():
            return candidate


def _locked(card: Card) -> Card:
    return Card.objects.select_for_update().get(pk=card.pk)


@transaction.atomic
def block_card(card: Card, *, by=None, reason: str) -> Card:
    card = _locked(card)
    if card.status != Card.Status.ACTIVE:
        raise CardError(f"Only an active card can be blocked; this one is {card.get_status_display().lower()}.")
    return _change_status(card, Card.Status.BLOCKED, by=by, reason=reason)


@transaction.atomic
def unblock_card(card: Card, *, by=None, reason: str) -> Card:
    card = _locked(card)
    if card.status != Card.Status.BLOCKED:
        raise CardError("Only a blocked card can be unblocked (lost, stolen, expired or replaced cards stay so).")
    if card.valid_until and card.valid_until < timezone.localdate():
        raise CardError("This card is past its validity; it cannot be unblocked.")
    return _change_status(card, Card.Status.ACTIVE, by=by, reason=reason)


@transaction.atomic
def report_lost(card: Card, *, by=None, reason: str = "Reported lost", stolen: bool = False) -> Card:
    """Lost or stolen: the card is refused from now on (the status itself blocks it)."""
    card = _locked(card)
    if card.status in (Card.Status.LOST, Card.Status.STOLEN, Card.Status.REPLACED):
        raise CardError(f"This card is already {card.get_status_display().lower()}.")
    return _change_status(card, Card.Status.STOLEN if stolen else Card.Status.LOST, by=by, reason=reason)


@transaction.atomic
def replace_card(card: Card, *, new_uid: str, by=None, reason: str = "Replaced") -> Card:
    """Issue a new card for the same driver, block the old one (status replaced) and link them."""
    card = _locked(card)
    if card.status == Card.Status.REPLACED:
        raise CardError("This card was already replaced.")
    new = issue_card(
        uid=new_uid,
        driver=card.driver,
        token_type=card.type,
        whitelist=card.whitelist,
        group_id=card.group_id,
        language=card.language,
        by=by,
        reason=f"Replaces {card.contract_id}: {reason}",
    )
    card.replaced_by = new
    _change_status(card, Card.Status.REPLACED, by=by, reason=f"Replaced by {new.contract_id}: {reason}")
    return new


@transaction.atomic
def expire_card(card: Card, *, by=None, reason: str = "Validity ended") -> Card:
    card = _locked(card)
    if card.status in (Card.Status.EXPIRED, Card.Status.REPLACED):
        raise CardError(f"This card is already {card.get_status_display().lower()}.")
    return _change_status(card, Card.Status.EXPIRED, by=by, reason=reason)


@transaction.atomic
def change_cards(cards, change, *, by=None, reason: str) -> tuple[int, list[tuple[Card, str]]]:
    """Apply one lifecycle change (block_card, unblock_card, report_lost...) to many cards in one transaction.

    Staff's bulk actions: one commit for the batch (a card the change does not apply to is skipped with the reason,
    the others go on), and their Token pushes are written with it. Returns (cards changed, [(card, why not)]).
    """
    from cards.selectors import token_push_targets

    changed, refused = 0, []
    # The CPOs to push to, read once for the batch (they cannot change within its transaction in a way that matters).
    reset = _batch_targets.set(token_push_targets(suspended=True))
    try:
        for card in cards:
            try:
                change(card, by=by, reason=reason)  # each in its own savepoint: a refusal undoes only that card
                changed += 1
            except CardError as error:
                refused.append((card, str(error)))
    finally:
        _batch_targets.reset(reset)
    return changed, refused


def expire_cards(today: dt.date | None = None) -> int:
    """Mark every card past its valid_until as expired (each change recorded and pushed)."""
    today = today or timezone.localdate()
    count = 0
    due = Card.objects.filter(valid_until__lt=today).exclude(status__in=[Card.Status.EXPIRED, Card.Status.REPLACED])
    for card in due.iterator():
        expire_card(card, reason=f"Validity ended on {card.valid_until.isoformat()}")
        count += 1
    return count


# -- CSV import -------------------------------------------------------------------------------------------

CSV_COLUMNS = ("uid", "contract_id", "type", "whitelist", "visual_number", "driver", "valid_from", "valid_until")
REQUIRED_COLUMNS = ("uid",)


@dataclass
class ImportResult:
    created: list[Card]
    errors: list[str]


def import_cards_csv(text: str, *, by=None) -> ImportResult:
    """Create a batch of new cards from CSV; any bad line rejects the whole file with line-numbered errors.

    Columns (header row required): uid (required), contract_id (generated when empty), type (RFID),
    whitelist (per type default), visual_number, driver (username), valid_from, valid_until (YYYY-MM-DD).
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in (reader.fieldnames or [])]
    errors: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        if missing:
            errors.append(f"line 1: missing column(s) {', '.join(missing)}")
        if unknown:
            errors.append(f"line 1: unknown column(s) {', '.join(unknown)} (allowed: {', '.join(CSV_COLUMNS)})")
        return ImportResult([], errors)
    reader.fieldnames = header
    users = {u.get_username(): u for u in get_user_model().objects.select_related("driver")}
    issuer = own_party()
    seen_uids: dict[tuple[str, str], int] = {}
    seen_contracts: dict[str, int] = {}
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in raw.items() if k}
        if not any(row.values()):
            continue
        problems = []
        token_type = row.get("type") or Card.Type.RFID
        if token_type not in Card.Type.values:
            problems.append(f"type {token_type!r} is not one of {', '.join(Card.Type.values)}")
            token_type = Card.Type.RFID
        try:
            uid = normalise_uid(row.get("uid", ""), token_type)
        except InvalidIdentifier as exc:
            problems.append(f"uid: {exc}")
            uid = None
        contract_id = None
        if row.get("contract_id"):
            try:
                contract_id = normalise_contract_id(row["contract_id"])
            except InvalidIdentifier as exc:
                problems.append(f"contract_id: {exc}")
        whitelist = row.get("whitelist") or default_whitelist(token_type)
        if whitelist not in Card.Whitelist.values:
            problems.append(f"whitelist {whitelist!r} is not one of {', '.join(Card.Whitelist.values)}")
        dates = {}
        for name in ("valid_from", "valid_until"):
            try:
                dates[name] = dt.date.fromisoformat(row[name]) if row.get(name) else None
            except ValueError:
                problems.append(f"{name} {row[name]!r} is not a date (YYYY-MM-DD)")
        if dates.get("valid_from") and dates.get("valid_until") and dates["valid_until"] < dates["valid_from"]:
            problems.append("valid_until is before valid_from")
        driver = None
        if row.get("driver"):
            user = users.get(row["driver"])
            if user is None:
                problems.append(f"driver: no user {row['driver']!r}")
            else:
                driver = getattr(user, "driver", None) or Driver(user=user)
        if uid:
            if (uid, token_type) in seen_uids:
                problems.append(f"uid {uid} also on line {seen_uids[(uid, token_type)]}")
            seen_uids.setdefault((uid, token_type), line_no)
        if contract_id:
            if contract_id in seen_contracts:
                problems.append(f"contract_id {contract_id} also on line {seen_contracts[contract_id]}")
            seen_contracts.setdefault(contract_id, line_no)
        visual_number = row.get("visual_number", "")
        # Values as they would be stored; those already refused above are not measured again.
        stored = {"uid": uid, "contract_id": contract_id, "type": token_type, "visual_number": visual_number}
        if whitelist in Card.Whitelist.values:
            stored["whitelist"] = whitelist
        problems.extend(_too_long(stored))
        if problems:
            errors.extend(f"line {line_no}: {p}" for p in problems)
            continue
        rows.append((line_no, uid, token_type, contract_id, whitelist, visual_number, driver, dates))
    errors.extend(_clashes_with_stored_cards(rows, issuer))
    if errors:
        return ImportResult([], sorted(errors, key=_line_number))
    if not rows:
        return ImportResult([], ["the file has no cards"])
    try:
        return ImportResult(_create_imported(rows, issuer, by), [])
    except IntegrityError:
        # Someone stored a card with one of these UIDs or contract ids between our check and the insert
        # (or a generated contract id was taken meanwhile); the whole insert was rolled back.
        clashes = sorted(_clashes_with_stored_cards(rows, issuer), key=_line_number)
        return ImportResult(
            [], ["a card with the same UID or contract id was stored meanwhile; nothing was imported", *clashes]
        )


def _too_long(values: dict[str, str | None]) -> list[str]:
    """Values longer than their Card column allows: the database would refuse the whole insert (500)."""
    problems = []
    for name, value in values.items():
        max_length = Card._meta.get_field(name).max_length
        if value and max_length and len(value) > max_length:
            problems.append(f"{name} is {len(value)} characters long, at most {max_length} allowed")
    return problems


def _clashes_with_stored_cards(rows: list, issuer: Party) -> list[str]:
    """Line errors for UIDs and contract ids already stored, in two queries for the whole file."""
    existing_uids = set(
        Card.objects.filter(issuer_party=issuer, uid__in=[r[1] for r in rows]).values_list("uid", "type")
    )
    existing_contracts = set(
        Card.objects.filter(contract_id__in=[r[3] for r in rows if r[3]]).values_list("contract_id", flat=True)
    )
    errors = []
    for line_no, uid, token_type, contract_id, *_ in rows:
        if (uid, token_type) in existing_uids:
            errors.append(f"line {line_no}: uid {uid} already belongs to a card")
        if contract_id in existing_contracts:
            errors.append(f"line {line_no}: contract_id {contract_id} already belongs to a card")
    return errors


def _line_number(error: str) -> int:
    return int(error.split(":", 1)[0].removeprefix("line "))


@transaction.atomic
def _create_imported(rows: list, issuer: Party, by) -> list[Card]:
    now = timezone.now()
    cards = []
    for _line, uid, token_type, contract_id, whitelist, visual_number, driver, dates in rows:
        if driver is not None and driver.pk is None:
            driver.save()
        cards.append(
            Card(
                issuer_party=issuer,
                driver=driver,
                uid=uid,
                type=token_type,
                contract_id=contract_id or new_contract_id(),
                visual_number=visual_number,
                issuer=settings.OCPI_BUSINESS_NAME,
                whitelist=whitelist,
                valid_from=dates.get("valid_from"),
                valid_until=dates.get("valid_until"),
                status=Card.Status.ACTIVE,
                last_updated=now,
            )
        )
    created = Card.objects.bulk_create(cards)
    if not all(c.pk for c in created):  # backends that do not return ids (older SQLite)
        created = list(Card.objects.filter(issuer_party=issuer, uid__in=[c.uid for c in cards]))
    CardStatusChange.objects.bulk_create(
        [
            CardStatusChange(card=c, old_status="", new_status=c.status, changed_by=by, reason="Imported from CSV")
            for c in created
        ]
    )
    from cards.selectors import token_push_targets

    targets = token_push_targets(suspended=True)
    issuer_cards = Card.objects.select_related("issuer_party").filter(pk__in=[c.pk for c in created])
    for card in issuer_cards:
        _queue_push(card, targets)
    return created


# -- foreign tokens (CPO side) --------------------------------------------------------------------------


def store_foreign_token(party: Party, token: dict) -> tuple[ForeignToken, bool]:
    """Insert or replace a token an eMSP pushed (already validated); returns (token, created)."""
    uid = foreign_uid(token["uid"])
    values = {
        "contract_id": token["contract_id"],
        "visual_number": token.get("visual_number") or "",
        "issuer": token["issuer"],
        "group_id": token.get("group_id") or "",
        "valid": token["valid"],
        "whitelist": token["whitelist"],
        "language": token.get("language") or "",
        "data": token["data"],
        "last_updated": token["last_updated"],
    }
    return ForeignToken.objects.update_or_create(party=party, uid=uid, type=token["type"], defaults=values)


def patch_foreign_token(existing: ForeignToken, changes: dict) -> ForeignToken:
    """Apply validated PATCH fields to a cached foreign token."""
    for name in ("contract_id", "visual_number", "issuer", "group_id", "valid", "whitelist", "language"):
        if name in changes:
            setattr(existing, name, changes[name] if changes[name] is not None else "")
    existing.last_updated = changes["last_updated"]
    existing.data = {**existing.data, **changes["data"]}
    existing.save()
    return existing
