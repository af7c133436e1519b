"""Reads about sessions, CDRs and commands: the OCPI view of what we stored, and the driver's pages."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.db.models.functions import TruncMonth
from django.urls import reverse
from django.utils import timezone

from cards.models import Driver
from charging.models import CDR, Command, Session
from mobilityplus import display
from roaming.models import Party
from roaming.ocpi.envelope import format_datetime
from tariffs.selectors import estimated_cost_so_far

# How long an ended session stays on the live panel, and a finished command's outcome with it.
RECENT_END = dt.timedelta(hours=12)
RECENT_COMMAND = dt.timedelta(minutes=30)


def session_ocpi(session: Session) -> dict:
    """Our stored Session as an OCPI object (GET on the receiver)."""
    body: dict[str, Any] = {
        "country_code": session.party.country_code,
        "party_id": session.party.party_id,
        "id": session.ocpi_id,
        "start_date_time": format_datetime(session.start_date_time),
        "kwh": float(session.kwh),
        "cdr_token": session.cdr_token,
        "auth_method": session.auth_method,
        "location_id": session.location_ocpi_id,
        "evse_uid": session.evse_uid,
        "connector_id": session.connector_id,
        "currency": session.currency,
        "charging_periods": session.charging_periods,
        "status": session.status,
        "last_updated": format_datetime(session.last_updated),
    }
    if session.end_date_time:
        body["end_date_time"] = format_datetime(session.end_date_time)
    if session.authorization_reference:
        body["authorization_reference"] = session.authorization_reference
    if session.meter_id:
        body["meter_id"] = session.meter_id
    if session.total_cost_excl_vat is not None:
        body["total_cost"] = {"excl_vat": float(session.total_cost_excl_vat)}
        if session.total_cost_incl_vat is not None:
            body["total_cost"]["incl_vat"] = float(session.total_cost_incl_vat)
    return body


def driver_sessions(driver: Driver) -> QuerySet[Session]:
    """A driver's sessions: those charged with one of their cards."""
    return Session.objects.filter(card__driver=driver).select_related("party", "location", "evse", "card")


def charge_point_commands() -> QuerySet[Command]:
    """Commands waiting for our own charge points (what the charge-point backend works through)."""
    return Command.objects.filter(status=Command.Status.SENT).filter(
        Q(direction=Command.Direction.INCOMING) | Q(direction=Command.Direction.OUTGOING, partner__is_self=True)
    )


def start_url(evse) -> str | None:
    """Where a driver starts charging at this EVSE from the app."""
    if evse is None:
        return None
    return reverse("charging:start", kwargs={"location_pk": evse.location_id, "evse_uid": evse.uid})


def format_money(amount: Decimal | None, currency: str) -> str | None:
    if amount is None:
        return None
    symbol = {"EUR": "€", "GBP": "£", "USD": "$"}.get(currency, currency + " ")
    return f"{symbol}{amount:.2f}"


def format_duration(seconds: float) -> str:
    """The site's one duration format (`mobilityplus.display`)."""
    return display.duration_text(seconds)


def station_time(value: dt.datetime | None, location=None) -> str:
    """A moment on the station's clock, labelled with its zone (ours when the station gives none)."""
    return display.time_text(value, location.time_zone if location is not None else None)


def local_time(value: dt.datetime, location=None) -> dt.datetime:
    """A moment as the clock at the station showed it (its OCPI time_zone), else in our own time zone."""
    if location is not None and location.time_zone:
        try:
            return value.astimezone(zoneinfo.ZoneInfo(location.time_zone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return timezone.localtime(value)


def _cost(excl: Decimal | None, incl: Decimal | None) -> Decimal | None:
    """What the driver pays: incl. VAT when the CPO gives it."""
    return incl if incl is not None else excl


def _station(session: Session) -> str:
    if session.location is not None:
        return session.location.name or session.location.address
    return session.location_ocpi_id


def session_card(session: Session, cdrs: list[CDR] | None = None, now: dt.datetime | None = None) -> dict:
    """What the live panel shows of one session (also the JSON the page polls)."""
    now = now or timezone.now()
    if cdrs is None:
        cdrs = list(session.cdrs.all())
    ended = session.status in (Session.Status.COMPLETED, Session.Status.INVALID)
    end = session.end_date_time or (session.last_updated if ended else None)
    duration = ((end or now) - session.start_date_time).total_seconds()
    final = [c for c in cdrs if not c.credit]
    cdr = None
    if final:
        total = sum((_cost(c.total_cost_excl_vat, c.total_cost_incl_vat) for c in cdrs), Decimal(0))
        cdr = {
            "total_energy": f"{final[0].total_energy:.2f}",
            "total_cost": format_money(total, final[0].currency),
            "credited": any(c.credit for c in cdrs),
        }
    cost = format_money(_cost(session.total_cost_excl_vat, session.total_cost_incl_vat), session.currency)
    estimated = None if cost is not None or cdr else estimated_cost_so_far(session, now)  # tariffs: from the tariff
    return {
        "id": session.pk,
        "station": _station(session),
        "address": f"{session.location.address}, {session.location.city}" if session.location else "",
        "operator": session.party.name,
        "evse": (session.evse.evse_id or session.evse.uid) if session.evse else session.evse_uid,
        "connector": session.connector_id,
        "start": format_datetime(session.start_date_time),
        "start_display": station_time(session.start_date_time, session.location),
        "end_display": station_time(end, session.location) if end else None,
        "kwh": f"{session.kwh:.2f}",
        "duration": format_duration(duration),
        "cost": estimated["text"] if estimated else cost,
        "cost_estimated": bool(estimated),
        "status": session.status,
        "status_label": display.status_text("session", session.status),
        "ended": ended,
        "can_stop": session.status in (Session.Status.ACTIVE, Session.Status.PENDING),
        "cdr": cdr,
        "again_url": start_url(session.evse) if ended else None,
    }


COMMAND_LABELS = {
    (Command.Type.START_SESSION, Command.Status.PENDING): "Asking the operator to start…",
    (Command.Type.START_SESSION, Command.Status.SENT): "The operator accepted; waiting for the charge point…",
    (Command.Type.START_SESSION, Command.Status.ACCEPTED): "The charge point accepted: plug in and charge.",
    (Command.Type.START_SESSION, Command.Status.REJECTED): "The start was rejected.",
    (Command.Type.START_SESSION, Command.Status.FAILED): "The start failed: the operator could not be reached.",
    (Command.Type.START_SESSION, Command.Status.TIMED_OUT): "No answer from the charge point in time.",
    (Command.Type.STOP_SESSION, Command.Status.PENDING): "Asking the operator to stop…",
    (Command.Type.STOP_SESSION, Command.Status.SENT): "The operator accepted; waiting for the charge point…",
    (Command.Type.STOP_SESSION, Command.Status.ACCEPTED): "The charge point is stopping the session.",
    (Command.Type.STOP_SESSION, Command.Status.REJECTED): "The stop was rejected.",
    (Command.Type.STOP_SESSION, Command.Status.FAILED): "The stop failed: the operator could not be reached.",
    (Command.Type.STOP_SESSION, Command.Status.TIMED_OUT): "No answer from the charge point in time.",
}

# A failure after the request may have reached the CPO (it dropped the connection, timed out, or answered
# garbage): "could not be reached" would be wrong, and the charge point may still act on the command.
UNCLEAR_FAILURE_LABELS = {
    Command.Type.START_SESSION: "The operator's system did not answer; it may still start — "
    "check the session or try again.",
    Command.Type.STOP_SESSION: "The operator's system did not answer; it may still stop — "
    "check the session or try again.",
}


def command_text(command: Command) -> str:
    if command.status == Command.Status.FAILED and command.maybe_delivered:
        return UNCLEAR_FAILURE_LABELS[command.type]
    return COMMAND_LABELS[(command.type, command.status)]


def command_card(command: Command) -> dict:
    """What the driver sees of a command: pending / accepted / rejected / failed / timed out, and why."""
    messages = [m.get("text", "") for m in (command.result_message or command.response_message or [])]
    reason = command.result or (command.response_result if command.response_result != "ACCEPTED" else "")
    shown_status = "pending" if command.status == Command.Status.SENT else command.status
    return {
        "uid": str(command.uid),
        "type": command.type,
        "action": "Start" if command.type == Command.Type.START_SESSION else "Stop",
        "status": shown_status,
        "status_label": display.status_text("command", command.status),
        "text": command_text(command),
        "reason": " ".join(m for m in messages if m) or (reason if reason not in ("", "ACCEPTED") else ""),
        "station": (command.location.name or command.location.address) if command.location else "",
        "evse": (command.evse.evse_id or command.evse.uid) if command.evse else "",
        "retry_url": start_url(command.evse)
        if command.type == Command.Type.START_SESSION
        and command.status in (Command.Status.REJECTED, Command.Status.FAILED, Command.Status.TIMED_OUT)
        else None,
    }


def live_view(driver: Driver, now: dt.datetime | None = None) -> dict:
    """The driver's live panel: the session going on (or just ended) and the latest command's outcome."""
    now = now or timezone.now()
    sessions = driver_sessions(driver).prefetch_related("cdrs")
    session = sessions.filter(status__in=Session.LIVE_STATUSES).order_by("-start_date_time").first()
    if session is None:
        session = (
            sessions.filter(status__in=(Session.Status.COMPLETED, Session.Status.INVALID))
            .filter(
                Q(end_date_time__gte=now - RECENT_END)
                | Q(end_date_time__isnull=True, last_updated__gte=now - RECENT_END)
            )
            .order_by("-start_date_time")
            .first()
        )
    command = (
        Command.objects.filter(driver=driver, created_at__gte=now - RECENT_COMMAND)
        .select_related("location", "evse")
        .order_by("-created_at")
        .first()
    )
    if (
        command is not None
        and session is not None
        and command.status not in Command.OPEN_STATUSES
        and command.session_id != session.pk
        and command.created_at < session.start_date_time
    ):
        # An older request's outcome ("No answer") above a later session would contradict it: the session wins.
        command = None
    return {
        "session": session_card(session, now=now) if session else None,
        "command": command_card(command) if command else None,
        "now": format_datetime(now),
    }


@dataclass
class HistoryRow:
    date: dt.datetime
    end: dt.datetime | None
    station: str
    operator: str
    evse: str
    card: str
    kwh: Decimal
    cost: Decimal | None
    currency: str
    status: str
    billed: bool
    session_id: str
    cdr_id: str

    location: object = None

    @property
    def date_display(self) -> str:
        return station_time(self.date, self.location)

    @property
    def cost_display(self) -> str:
        return format_money(self.cost, self.currency) or "—"


def history_months(driver: Driver) -> list[dt.date]:
    """Months in which the driver charged, newest first (for the filter).

    The history also lists CDRs of the driver's cards whose session never reached us, so their months count
    too (by start, as `history` filters them); otherwise such a month could not be picked at all.
    """
    # order_by(): no default ordering column in the SELECT, so the UNION (one query) dedups by month alone.
    session_months = (
        Session.objects.filter(card__driver=driver)
        .annotate(month=TruncMonth("start_date_time"))
        .order_by()
        .values_list("month", flat=True)
    )
    orphan_months = (
        CDR.objects.filter(card__driver=driver, session__isnull=True)
        .annotate(month=TruncMonth("start_date_time"))
        .order_by()
        .values_list("month", flat=True)
    )
    months = session_months.union(orphan_months)
    return sorted({m.date() if isinstance(m, dt.datetime) else m for m in months if m}, reverse=True)


def parse_month(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        return None


def history(driver: Driver, month: dt.date | None = None) -> list[HistoryRow]:
    """A driver's past sessions with their CDR totals, plus CDRs of their cards whose session never reached us."""
    sessions = (
        driver_sessions(driver)
        .exclude(status__in=Session.LIVE_STATUSES)
        .prefetch_related(Prefetch("cdrs", queryset=CDR.objects.order_by("received_at")))
    )
    orphans = CDR.objects.filter(card__driver=driver, session__isnull=True).select_related(
        "party", "location", "evse", "card"
    )
    if month is not None:
        start = timezone.make_aware(dt.datetime(month.year, month.month, 1))
        end = timezone.make_aware(dt.datetime(month.year + month.month // 12, month.month % 12 + 1, 1))
        sessions = sessions.filter(start_date_time__gte=start, start_date_time__lt=end)
        orphans = orphans.filter(start_date_time__gte=start, start_date_time__lt=end)
    rows = []
    for session in sessions:
        cdrs = list(session.cdrs.all())
        billed = [c for c in cdrs if not c.credit]
        if billed:
            cost = sum((_cost(c.total_cost_excl_vat, c.total_cost_incl_vat) for c in cdrs), Decimal(0))
            kwh, currency = billed[0].total_energy, billed[0].currency
        else:
            cost = _cost(session.total_cost_excl_vat, session.total_cost_incl_vat)
            kwh, currency = session.kwh, session.currency
        rows.append(
            HistoryRow(
                date=session.start_date_time,
                end=session.end_date_time,
                station=_station(session),
                operator=session.party.name,
                evse=(session.evse.evse_id or session.evse.uid) if session.evse else session.evse_uid,
                card=session.card.visual_number or session.card.contract_id,
                kwh=kwh,
                cost=cost,
                currency=currency,
                status=display.status_text("session", session.status),
                billed=bool(billed),
                session_id=session.ocpi_id,
                cdr_id=billed[0].ocpi_id if billed else "",
                location=session.location,
            )
        )
    for cdr in orphans:
        rows.append(
            HistoryRow(
                date=cdr.start_date_time,
                end=cdr.end_date_time,
                station=(cdr.location.name if cdr.location else "")
                or cdr.cdr_location.get("name")
                or cdr.cdr_location.get("address", ""),
                operator=cdr.party.name,
                evse=cdr.cdr_location.get("evse_id", ""),
                card=cdr.card.visual_number or cdr.card.contract_id,
                kwh=cdr.total_energy,
                cost=_cost(cdr.total_cost_excl_vat, cdr.total_cost_incl_vat),
                currency=cdr.currency,
                status="Credit" if cdr.credit else "Ended",
                billed=True,
                session_id=cdr.session_ocpi_id,
                cdr_id=cdr.ocpi_id,
                location=cdr.location,
            )
        )
    rows.sort(key=lambda row: row.date, reverse=True)
    return rows


# Results older than this are not posted again: the partner has long given up on the command.
REPOST_RESULTS_WITHIN = dt.timedelta(hours=24)


def results_to_repost(now: dt.datetime | None = None) -> list[int]:
    """Incoming commands whose result we have but never posted and whose post was not tried and refused."""
    now = now or timezone.now()
    return list(
        Command.objects.filter(
            direction=Command.Direction.INCOMING,
            result_at__gte=now - REPOST_RESULTS_WITHIN,
            result_at__lt=now - dt.timedelta(seconds=30),  # a post just queued is still on its way
            result_reported_at__isnull=True,
        )
        .exclude(response_url="")
        .exclude(error__startswith="Reporting the result failed")
        .values_list("pk", flat=True)
    )


# --- staff console figures ---------------------------------------------------------------------------------------


def partner_charging(party: Party, since: dt.datetime) -> dict[str, int]:
    """Sessions and CDRs at one partner's stations since `since` (this month, on its page)."""
    return {
        "sessions": Session.objects.filter(party=party, start_date_time__gte=since).count(),
        "active_sessions": Session.objects.filter(party=party, status=Session.Status.ACTIVE).count(),
        "cdrs": CDR.objects.filter(party=party, start_date_time__gte=since).count(),
    }


def sessions_since(since: dt.datetime) -> dict[str, int]:
    """Sessions started since `since` and those active now, for the staff overview."""
    return Session.objects.aggregate(
        started=Count("pk", filter=Q(start_date_time__gte=since)),
        active=Count("pk", filter=Q(status=Session.Status.ACTIVE)),
    )
