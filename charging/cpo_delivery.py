"""Sessions and CDRs of foreign drivers at our stations, sent to the driver's eMSP (we are the CPO).

Every call goes through the durable outbox (`roaming.outbox.enqueue`), written in the transaction of the change
it reports: nothing leaves on a request path, nothing is lost while the eMSP is down, and the outbox delivers in
order per object (a hub gets the routing headers). What the eMSP is sent:

* at the start: the whole `Session` (PUT);
* while charging: a PATCH with `kwh`, the new `charging_periods` and `total_cost` (when priced), at most one per
  session every CPO_SESSION_PATCH_INTERVAL_S; a change within that interval is flagged (`push_due`) and sent by
  the beat task `charging.flush_session_updates`;
* at the end: a PATCH with the final state (COMPLETED, `end_date_time`, last periods), then ONE `CDR` POSTed to its
  cdrs RECEIVER (the eMSP's `Location` answer is kept on the outbox message, see `cdr_location_at_emsp`).

An eMSP without a sessions (or cdrs) RECEIVER is sent nothing: it pulls our senders instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from charging.models import CDR, MeterSample, Session
from charging.selectors import session_ocpi
from roaming.models import PartnerConnection, Party
from roaming.ocpi.envelope import format_datetime

logger = logging.getLogger(__name__)


def patch_interval() -> dt.timedelta:
    """At most one Session PATCH per session in this time (CPO_SESSION_PATCH_INTERVAL_S)."""
    return dt.timedelta(seconds=float(getattr(settings, "CPO_SESSION_PATCH_INTERVAL_S", 60)))


def price_our_session(session: Session) -> Any | None:
    """The cost of a session at our stations with our tariff (`tariffs.engine.Cost`), or None when not priced.

    Our tariff of the session's connector at its start, priced on the session's meter values
    (`tariffs.selectors.price_our_session`); a connector naming none of our tariffs is not priced (a CDR's
    mandatory `total_cost` is then 0).
    """
    from tariffs.selectors import price_our_session as priced  # the tariffs capability owns the prices

    return priced(session, meter_samples(session))


# --- What we send --------------------------------------------------------------------------------------------


def _number(value: Decimal | float, places: str = "0.0001") -> float:
    return float(Decimal(str(value)).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def _price(excl: Decimal, incl: Decimal | None) -> dict:
    price: dict[str, float] = {"excl_vat": _number(excl)}
    if incl is not None:
        price["incl_vat"] = _number(incl)
    return price


def _period(start: dt.datetime, end: dt.datetime, kwh: Decimal) -> dict:
    """One OCPI ChargingPeriod: the energy charged and the time spent from `start` until `end`."""
    hours = Decimal(str(max((end - start).total_seconds(), 0) / 3600))
    return {
        "start_date_time": format_datetime(start),
        "dimensions": [
            {"type": "ENERGY", "volume": _number(max(kwh, Decimal(0)), "0.001")},
            {"type": "TIME", "volume": _number(hours, "0.0001")},
        ],
    }


def close_period(session: Session, until: dt.datetime) -> bool:
    """Close the open charging period at `until` (the latest meter value or the end). Returns whether one was added."""
    start = session.period_started_at or session.start_date_time
    if until <= start:
        return False
    charged = sum(
        (Decimal(str(d["volume"])) for p in session.charging_periods for d in p["dimensions"] if d["type"] == "ENERGY"),
        Decimal(0),
    )
    session.charging_periods = [*session.charging_periods, _period(start, until, session.kwh - charged)]
    session.period_started_at = until
    return True


def apply_cost(session: Session) -> Any | None:
    """Our tariff's cost so far on the session's cost fields (nothing when it cannot be priced)."""
    cost = price_our_session(session)
    if cost is not None:
        session.total_cost_excl_vat = cost.total.excl_vat
        session.total_cost_incl_vat = cost.total.incl_vat
    return cost


def session_patch(session: Session, *, final: bool = False) -> dict:
    """The PATCH body: what changed since the last push (charging_periods not sent yet are appended by the eMSP)."""
    body: dict[str, Any] = {
        "kwh": _number(session.kwh, "0.001"),
        "charging_periods": session.charging_periods[session.periods_pushed :],
        "status": session.status,
        "last_updated": format_datetime(session.last_updated),
    }
    if session.total_cost_excl_vat is not None:
        body["total_cost"] = _price(session.total_cost_excl_vat, session.total_cost_incl_vat)
    if final and session.end_date_time:
        body["end_date_time"] = format_datetime(session.end_date_time)
    return body


def cdr_location(session: Session) -> dict:
    """The OCPI CdrLocation of a session at one of our EVSEs (`location`, `evse` loaded)."""
    location, evse = session.location, session.evse
    connector = None
    if evse is not None:
        connectors = list(evse.connectors.all())
        connector = next((c for c in connectors if c.connector_id == session.connector_id), None) or (
            connectors[0] if connectors else None
        )
    body: dict[str, Any] = {"id": location.ocpi_id}
    if location.name:
        body["name"] = location.name[:255]
    body.update(address=location.address, city=location.city)
    if location.postal_code:
        body["postal_code"] = location.postal_code
    if location.state:
        body["state"] = location.state
    body.update(
        country=location.country,
        coordinates={"latitude": f"{location.latitude:.6f}", "longitude": f"{location.longitude:.6f}"},
        evse_uid=session.evse_uid,
        evse_id=(evse.evse_id if evse is not None and evse.evse_id else session.evse_uid)[:48],
        connector_id=session.connector_id,
        connector_standard=connector.standard if connector else "IEC_62196_T2",
        connector_format=connector.format if connector else "SOCKET",
        connector_power_type=connector.power_type if connector else "AC_3_PHASE",
    )
    return body


def new_cdr_id() -> str:
    """A fresh CDR id (CiString(39)): never reused, so a credit or a reissue never collides with the original."""
    return uuid.uuid4().hex


def cdr_object(cdr: CDR, *, session: Session | None = None, cost: Any | None = None) -> dict:
    """Our CDR as the OCPI object we send and serve (stored in `cdr.raw`, never changed afterwards)."""
    me = cdr.party
    body: dict[str, Any] = {
        "country_code": me.country_code,
        "party_id": me.party_id,
        "id": cdr.ocpi_id,
        "start_date_time": format_datetime(cdr.start_date_time),
        "end_date_time": format_datetime(cdr.end_date_time),
    }
    if cdr.session_ocpi_id:
        body["session_id"] = cdr.session_ocpi_id
    body["cdr_token"] = cdr.cdr_token
    body["auth_method"] = cdr.auth_method
    if cdr.authorization_reference:
        body["authorization_reference"] = cdr.authorization_reference
    body["cdr_location"] = cdr.cdr_location
    if session is not None and session.meter_id:
        body["meter_id"] = session.meter_id
    body["currency"] = cdr.currency
    periods = list(getattr(cost, "periods", None) or []) or list(session.charging_periods if session else [])
    if not periods:  # charging_periods is required (1..*): a session without meter values still lasted
        periods = [_period(cdr.start_date_time, cdr.end_date_time, cdr.total_energy)]
    body["charging_periods"] = periods
    body["total_cost"] = _price(cdr.total_cost_excl_vat, cdr.total_cost_incl_vat)
    body["total_energy"] = _number(cdr.total_energy, "0.001")
    body["total_time"] = _number(cdr.total_time)
    if cdr.total_parking_time is not None:
        body["total_parking_time"] = _number(cdr.total_parking_time)
    if cdr.remark:
        body["remark"] = cdr.remark
    if cdr.credit:
        body["credit"] = True
        body["credit_reference_id"] = cdr.credit_reference_id
    body["last_updated"] = format_datetime(cdr.last_updated)
    return body


# --- Where it goes --------------------------------------------------------------------------------------------


def receiver_of(emsp: Party | None, module: str) -> bool:
    """Whether `emsp` (a foreign party) has a RECEIVER for `module` we can push to."""
    if emsp is None or emsp.is_self:
        return False
    connection = PartnerConnection.objects.select_related("via_hub").filter(party=emsp).first()
    return connection is not None and bool(connection.endpoint_url(module, "RECEIVER"))


def _enqueue(partner: Party, **call: Any) -> None:
    from roaming import outbox  # the durable outbox: one row in this transaction, delivered after commit

    outbox.enqueue(partner, **call)


def _session_path(session: Session) -> str:
    me = session.party
    return f"/{me.country_code}/{me.party_id}/{session.ocpi_id}"


def push_session_started(session: Session) -> bool:
    """PUT the new session to the driver's eMSP (in the caller's transaction). Returns whether it was queued."""
    if not receiver_of(session.emsp, "sessions"):
        return False
    _enqueue(
        session.emsp,
        module="sessions",
        object_id=session.ocpi_id,
        method="PUT",
        path=_session_path(session),
        body=session_ocpi(session),
    )
    Session.objects.filter(pk=session.pk).update(
        pushed_at=timezone.now(), push_due=False, periods_pushed=len(session.charging_periods)
    )
    session.periods_pushed = len(session.charging_periods)
    return True


def push_session_update(session: Session, *, final: bool = False, now: dt.datetime | None = None) -> bool:
    """PATCH the session's progress to its eMSP, unless one went out less than the interval ago (then flagged).

    `final` (the end) is always sent. The caller holds the session row locked. Returns whether a PATCH was queued.
    """
    if not receiver_of(session.emsp, "sessions"):
        return False
    now = now or timezone.now()
    if not final and session.pushed_at is not None and now - session.pushed_at < patch_interval():
        Session.objects.filter(pk=session.pk).update(push_due=True)
        session.push_due = True
        return False
    if not final:
        close_period(session, session.metered_at or now)
        apply_cost(session)
    body = session_patch(session, final=final)
    _enqueue(
        session.emsp,
        module="sessions",
        object_id=session.ocpi_id,
        method="PATCH",
        path=_session_path(session),
        body=body,
    )
    session.pushed_at, session.push_due, session.periods_pushed = now, False, len(session.charging_periods)
    Session.objects.filter(pk=session.pk).update(
        pushed_at=now,
        push_due=False,
        periods_pushed=session.periods_pushed,
        charging_periods=session.charging_periods,
        period_started_at=session.period_started_at,
        total_cost_excl_vat=session.total_cost_excl_vat,
        total_cost_incl_vat=session.total_cost_incl_vat,
    )
    return True


def flush_session_updates(now: dt.datetime | None = None, batch: int = 500) -> int:
    """Beat task: send the throttled PATCHes whose interval has passed. Returns how many were queued."""
    now = now or timezone.now()
    due = list(
        Session.objects.filter(push_due=True, pushed_at__lt=now - patch_interval())
        .order_by("pushed_at")
        .values_list("pk", flat=True)[:batch]
    )
    sent = 0
    for pk in due:
        with transaction.atomic():
            session = (
                Session.objects.select_for_update(of=("self",))
                .select_related("party", "emsp")
                .filter(pk=pk, push_due=True)
                .first()
            )
            if session is None or session.status not in Session.LIVE_STATUSES:
                continue
            sent += push_session_update(session, now=now)
    return sent


def push_cdr(cdr: CDR) -> bool:
    """POST one CDR (final, credit or reissue) to the driver's eMSP: one outbox message, never a second one."""
    if not receiver_of(cdr.emsp, "cdrs"):
        return False
    _enqueue(cdr.emsp, module="cdrs", object_id=cdr.ocpi_id, method="POST", body=cdr.raw)
    return True


def cdr_location_at_emsp(cdr: CDR) -> str:
    """The URL the eMSP answered in `Location` when it took our CDR ("" while not delivered)."""
    from roaming.outbox_models import OutboxMessage

    message = (
        OutboxMessage.objects.filter(partner=cdr.emsp, module="cdrs", object_id=cdr.ocpi_id)
        .exclude(reply_location="")
        .exclude(reply_location__isnull=True)
        .order_by("-pk")
        .first()
    )
    return (message.reply_location or "") if message else ""


# --- CDRs of our own stations ----------------------------------------------------------------------------------


def issue_cdr(session: Session, cost: Any | None = None) -> CDR:
    """The final CDR of an ended session at our stations (priced with our tariff when possible), pushed once.

    `cost`: the session's price when the caller has just computed it (`apply_cost`), so it is not priced twice."""
    existing = CDR.objects.filter(party=session.party, session=session, credit=False).first()
    if existing is not None:
        return existing
    if cost is None:
        cost = apply_cost(session)
    excl = cost.total.excl_vat if cost is not None else Decimal(0)
    incl = cost.total.incl_vat if cost is not None else None
    end = session.end_date_time or session.last_updated
    cdr = CDR(
        party=session.party,
        ocpi_id=new_cdr_id(),
        session_ocpi_id=session.ocpi_id,
        session=session,
        start_date_time=session.start_date_time,
        end_date_time=end,
        cdr_token=session.cdr_token,
        card=session.card,
        emsp=session.emsp,
        auth_method=session.auth_method,
        authorization_reference=session.authorization_reference,
        cdr_location=cdr_location(session),
        location=session.location,
        evse=session.evse,
        currency=session.currency,
        total_cost_excl_vat=excl,
        total_cost_incl_vat=incl,
        total_energy=session.kwh,
        total_time=Decimal(str(round((end - session.start_date_time).total_seconds() / 3600, 4))),
        last_updated=timezone.now(),
    )
    cdr.raw = cdr_object(cdr, session=session, cost=cost)
    cdr.save()
    push_cdr(cdr)
    return cdr


def meter_samples(session: Session) -> list[MeterSample]:
    """The session's meter values, oldest first (what our tariff prices)."""
    return list(session.meter_samples.order_by("at"))


# --- Corrections: a credit CDR, and a new one --------------------------------------------------------------------


class CannotCredit(Exception):
    """A CDR staff may not credit (a partner's, a credit itself, or already credited)."""


def _negative(price: dict) -> dict:
    return {key: -abs(value) for key, value in price.items()}


@transaction.atomic
def credit_cdr(cdr: CDR, *, corrected: dict | None = None, reason: str = "") -> tuple[CDR, CDR | None]:
    """Cancel one of our CDRs as OCPI 2.2.1 prescribes, and optionally issue its corrected replacement.

    CDRs are never edited: the credit CDR is a copy with a new id, `credit: true`, `credit_reference_id` = the
    original's id and negative costs; the replacement (`corrected`: total_energy, total_cost_excl_vat,
    total_cost_incl_vat) is a new CDR with a new id. Both go to the eMSP through the outbox. Returns (credit, new).
    """
    cdr = CDR.objects.select_for_update(of=("self",)).select_related("party", "emsp").get(pk=cdr.pk)
    if not cdr.party.is_self or cdr.credit:
        raise CannotCredit("Only a final CDR of our own stations can be credited.")
    if cdr.credits.exists():
        raise CannotCredit(f"CDR {cdr.ocpi_id} is already credited.")
    now = timezone.now()
    remark = (reason or "Credit of a wrong CDR")[:255]
    credit = _copy_of(cdr)
    credit.ocpi_id = new_cdr_id()
    credit.credit, credit.credit_reference_id, credit.credited_cdr = True, cdr.ocpi_id, cdr
    credit.total_cost_excl_vat = -abs(cdr.total_cost_excl_vat)
    credit.total_cost_incl_vat = None if cdr.total_cost_incl_vat is None else -abs(cdr.total_cost_incl_vat)
    credit.remark, credit.last_updated = remark, now
    raw = dict(cdr.raw)
    raw.update(id=credit.ocpi_id, credit=True, credit_reference_id=cdr.ocpi_id, remark=remark)
    raw["last_updated"] = format_datetime(now)
    for key in [k for k in raw if k.startswith("total_") and k.endswith("_cost") or k == "total_cost"]:
        if isinstance(raw[key], dict):
            raw[key] = _negative(raw[key])
    credit.raw = raw
    credit.save()
    push_cdr(credit)
    if corrected is None:
        return credit, None
    reissue = _copy_of(cdr)
    reissue.ocpi_id = new_cdr_id()
    reissue.total_energy = corrected.get("total_energy", cdr.total_energy)
    reissue.total_cost_excl_vat = corrected.get("total_cost_excl_vat", cdr.total_cost_excl_vat)
    reissue.total_cost_incl_vat = corrected.get("total_cost_incl_vat", cdr.total_cost_incl_vat)
    reissue.remark = (corrected.get("remark") or f"Replaces CDR {cdr.ocpi_id}")[:255]
    reissue.last_updated = now
    raw = dict(cdr.raw)
    raw.update(
        id=reissue.ocpi_id,
        total_energy=_number(reissue.total_energy, "0.001"),
        total_cost=_price(reissue.total_cost_excl_vat, reissue.total_cost_incl_vat),
        remark=reissue.remark,
        last_updated=format_datetime(now),
    )
    for key in ("total_energy_cost", "total_time_cost", "total_fixed_cost", "total_parking_cost"):
        raw.pop(key, None)  # the breakdown of the wrong bill no longer adds up
    reissue.raw = raw
    reissue.save()
    push_cdr(reissue)
    return credit, reissue


def _copy_of(cdr: CDR) -> CDR:
    """An unsaved copy of a CDR (every stored field but its primary key and reception time)."""
    copied = (f.name for f in CDR._meta.concrete_fields if f.name not in ("id", "received_at"))
    return CDR(**{name: getattr(cdr, name) for name in copied})
