"""Sessions and CDRs as partners' CPOs push them to us (we are the eMSP): store, order, match to our cards.

Split out of charging/services.py (which still re-exports every name): sessions here, the commands we send in
charging/commands_out.py, the commands partners send to our stations in charging/commands_in.py.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q

from cards.models import Card
from charging.models import CDR, Command, Session
from roaming.models import Party
from roaming.ocpi.envelope import CLIENT_ERROR, INVALID_PARAMETERS, OcpiError
from roaming.selectors import own_party
from stations.models import EVSE, Location

logger = logging.getLogger(__name__)


def _money(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(round(value, 4)))


def find_card(cdr_token: dict) -> Card | None:
    """Our card behind an OCPI CdrToken, when the token is ours."""
    me = own_party()
    if (cdr_token.get("country_code", "").upper(), cdr_token.get("party_id", "").upper()) != (
        me.country_code,
        me.party_id,
    ):
        return None
    return (
        Card.objects.filter(issuer_party=me, uid__iexact=cdr_token.get("uid", ""), type=cdr_token.get("type"))
        .select_related("driver")
        .first()
    )


def _place(party: Party, location_id: str, evse_uid: str) -> tuple[Location | None, EVSE | None]:
    location = Location.objects.filter(party=party, ocpi_id__iexact=location_id).first()
    evse = None
    if location is not None and evse_uid and evse_uid != "#NA":
        evse = EVSE.objects.filter(location=location, uid__iexact=evse_uid).first()
    return location, evse


def _apply_session_fields(session: Session, data: dict) -> None:
    simple = {
        "start_date_time": "start_date_time",
        "end_date_time": "end_date_time",
        "auth_method": "auth_method",
        "currency": "currency",
        "status": "status",
        "last_updated": "last_updated",
        "location_id": "location_ocpi_id",
        "evse_uid": "evse_uid",
        "connector_id": "connector_id",
    }
    for key, attr in simple.items():
        if key in data:
            setattr(session, attr, data[key])
    for key in ("authorization_reference", "meter_id"):
        if key in data:
            setattr(session, key, data[key] or "")
    if "kwh" in data:
        session.kwh = _money(data["kwh"])
    if "cdr_token" in data:
        session.cdr_token = dict(data["cdr_token"])
        session.card = find_card(session.cdr_token)
    if "total_cost" in data:
        cost = data["total_cost"] or {}
        session.total_cost_excl_vat = _money(cost.get("excl_vat"))
        session.total_cost_incl_vat = _money(cost.get("incl_vat"))
    if "location_id" in data or "evse_uid" in data:
        session.location, session.evse = _place(session.party, session.location_ocpi_id, session.evse_uid)


def _refuse_reopening(session: Session, new_status: str | None) -> None:
    if session.status == Session.Status.COMPLETED and new_status not in (None, Session.Status.COMPLETED):
        raise OcpiError(INVALID_PARAMETERS, f"status: session {session.ocpi_id} is COMPLETED, which is final")


def _link_command(session: Session) -> None:
    """A session started by one of our commands: tie it to the command (by authorization_reference)."""
    if session.authorization_reference:
        Command.objects.filter(
            _authorization_reference_q(session.authorization_reference), partner=session.party, session__isnull=True
        ).update(session=session)


def _authorization_reference_q(reference: str) -> Q:
    return Q(request_payload__authorization_reference=reference)


@transaction.atomic
def put_session(party: Party, session_id: str, data: dict, raw: dict) -> tuple[Session, bool]:
    """Store a whole Session (OCPI PUT). Older than what we hold: ignored. Returns (session, created)."""
    session = Session.objects.select_for_update().filter(party=party, ocpi_id__iexact=session_id).first()
    created = session is None
    if session is None:
        session = Session(party=party, ocpi_id=session_id)
    elif data["last_updated"] < session.last_updated:
        return session, False  # a late duplicate: what we hold is newer
    else:
        _refuse_reopening(session, data["status"])
    # PUT replaces everything: fields the partner left out go back to their defaults.
    session.end_date_time = None
    session.authorization_reference = session.meter_id = ""
    session.charging_periods = list(data.get("charging_periods") and raw.get("charging_periods") or [])
    session.total_cost_excl_vat = session.total_cost_incl_vat = None
    _apply_session_fields(session, data)
    session.raw = raw
    if created:
        try:
            with transaction.atomic():
                session.save()
        except IntegrityError:  # a concurrent PUT created it first: apply ours on top
            return put_session(party, session_id, data, raw)
    else:
        session.save()
    if created:
        # A CDR may have come first (pushes cross on the wire): it now has its session.
        CDR.objects.filter(party=party, session__isnull=True, session_ocpi_id__iexact=session_id).update(
            session=session, unknown_session=False
        )
    _end_if_billed(session)
    _link_command(session)
    return session, created


def _end_if_billed(session: Session) -> None:
    """A live session that already has its final CDR is over, whatever status the CPO's push still carried.

    Same rule as a CDR arriving for a live session (see store_cdr), for the other order: the CDR first, then
    a PUT still saying ACTIVE or PENDING. Otherwise the driver sees "Charging" and a Stop button next to a
    final bill. Credit CDRs do not count: they correct a bill, they do not end a session.
    """
    if session.status not in Session.LIVE_STATUSES:
        return
    final = session.cdrs.filter(credit=False).order_by("-end_date_time").first()
    if final is None:
        return
    session.status = Session.Status.COMPLETED
    session.end_date_time = session.end_date_time or final.end_date_time
    session.save(update_fields=["status", "end_date_time", "updated_at"])


@transaction.atomic
def patch_session(party: Party, session_id: str, data: dict, raw: dict) -> Session:
    """Apply a Session PATCH: given fields replace, `charging_periods` are appended (duplicates skipped)."""
    session = Session.objects.select_for_update().filter(party=party, ocpi_id__iexact=session_id).first()
    if session is None:
        raise OcpiError(CLIENT_ERROR, f"Unknown session {session_id}: PUT it first", http_status=404)
    if data["last_updated"] < session.last_updated:
        return session  # stale: already superseded
    for key in ("id", "country_code", "party_id"):
        if key in data and str(data[key]).upper() != str(_url_value(session, key)).upper():
            raise OcpiError(INVALID_PARAMETERS, f"{key}: {data[key]!r} does not match the URL")
    _refuse_reopening(session, data.get("status"))
    periods = [p for p in raw.get("charging_periods") or [] if p not in session.charging_periods]
    fields = {k: v for k, v in data.items() if k != "charging_periods"}
    _apply_session_fields(session, fields)
    session.charging_periods = [*session.charging_periods, *periods]
    merged = {**session.raw, **{k: v for k, v in raw.items() if k != "charging_periods"}}
    merged["charging_periods"] = session.charging_periods
    session.raw = merged
    session.save()
    _link_command(session)
    return session


def _url_value(session: Session, key: str) -> str:
    return {"id": session.ocpi_id, "country_code": session.party.country_code, "party_id": session.party.party_id}[key]


@transaction.atomic
def store_cdr(party: Party, data: dict, raw: dict) -> tuple[CDR, bool]:
    """Store a CDR (OCPI POST). Never dropped: unknown session or token only flags it. Duplicates: the first stays."""
    existing = CDR.objects.filter(party=party, ocpi_id__iexact=data["id"]).first()
    if existing is not None:
        return existing, False
    location_data = data["cdr_location"]
    session = None
    if data.get("session_id"):
        session = Session.objects.filter(party=party, ocpi_id__iexact=data["session_id"]).first()
    card = find_card(data["cdr_token"])
    location, evse = _place(party, location_data["id"], location_data["evse_uid"])
    credited = None
    if data.get("credit") and data.get("credit_reference_id"):
        credited = CDR.objects.filter(party=party, ocpi_id__iexact=data["credit_reference_id"]).first()
    cost = data["total_cost"]
    cdr = CDR(
        party=party,
        ocpi_id=data["id"],
        session_ocpi_id=data.get("session_id") or "",
        session=session,
        start_date_time=data["start_date_time"],
        end_date_time=data["end_date_time"],
        cdr_token=dict(data["cdr_token"]),
        card=card,
        auth_method=data["auth_method"],
        authorization_reference=data.get("authorization_reference") or "",
        cdr_location=raw.get("cdr_location") or {},
        location=location,
        evse=evse,
        currency=data["currency"],
        total_cost_excl_vat=_money(cost["excl_vat"]),
        total_cost_incl_vat=_money(cost.get("incl_vat")),
        total_energy=_money(data["total_energy"]),
        total_time=_money(data["total_time"]),
        total_parking_time=_money(data.get("total_parking_time")),
        credit=bool(data.get("credit")),
        credit_reference_id=data.get("credit_reference_id") or "",
        credited_cdr=credited,
        remark=data.get("remark") or "",
        last_updated=data["last_updated"],
        raw=raw,
        unknown_session=session is None,
        unknown_token=card is None,
    )
    try:
        with transaction.atomic():
            cdr.save()
    except IntegrityError:  # the same CDR pushed twice at once
        return CDR.objects.get(party=party, ocpi_id=data["id"]), False
    if session is not None and session.status in Session.LIVE_STATUSES:
        # The CDR is the final word: the session is over even if its COMPLETED push never reached us.
        Session.objects.filter(pk=session.pk).update(
            status=Session.Status.COMPLETED, end_date_time=session.end_date_time or cdr.end_date_time
        )
    from tariffs.billing_check import check_stored_cdr  # tariffs recomputes the total ("price differs")

    check_stored_cdr(cdr)
    if cdr.flagged:
        logger.warning("CDR %s stored with flags: unknown session=%s token=%s", cdr, cdr.unknown_session, card is None)
    return cdr, True
