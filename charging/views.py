"""The driver's charging pages: live session, history (and CSV), start and stop from the app."""

from __future__ import annotations

import csv
import datetime as dt
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import get_language_from_request
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from cards.models import Driver
from charging import selectors, services, startability
from charging.models import Session
from mobilityplus import display
from roaming.ocpi.envelope import format_datetime
from stations.models import EVSE, Location
from tariffs.selectors import evse_price


def _driver(request: HttpRequest) -> Driver | None:
    return Driver.objects.filter(user=request.user).first()


@login_required
@require_GET
def sessions_page(request: HttpRequest) -> HttpResponse:
    """The live session (updating by itself) and the history, filterable by month."""
    driver = _driver(request)
    month, month_error = _month(request)
    context = {
        "driver": driver,
        "month": month,
        "month_error": month_error,
        "live": None,
        "rows": [],
        "months": [],
        "stop_key": uuid.uuid4().hex,
        "poll_ms": int(getattr(settings, "CHARGING_LIVE_POLL_MS", 3000)),
    }
    if driver is not None:
        services.expire_overdue_commands(driver=driver)
        context.update(
            live=selectors.live_view(driver),
            rows=[] if month_error else selectors.history(driver, month),
            months=selectors.history_months(driver),
        )
    return render(request, "charging/sessions.html", context, status=400 if month_error else 200)


MONTH_ERROR = "Not a month: choose one from the list (or give it as YYYY-MM, e.g. 2026-10)."


def _month(request: HttpRequest) -> tuple[dt.date | None, str]:
    """The `month` filter, or the error to answer: a bad month is never read as "all months"."""
    raw = request.GET.get("month") or ""
    month = selectors.parse_month(raw)
    return month, (MONTH_ERROR if raw and month is None else "")


@require_GET
def live_json(request: HttpRequest) -> JsonResponse:
    """What the live panel polls: the current (or just ended) session and the latest command.

    A logged-out caller (a script, an expired login) gets a 401 in JSON, not a redirect to the HTML login page.
    """
    if not request.user.is_authenticated:
        response = JsonResponse(
            {"detail": "Log in to see your charging session.", "login_url": settings.LOGIN_URL}, status=401
        )
        response["WWW-Authenticate"] = 'Session realm="MobilityPlus", login="/accounts/login/"'
        return response
    driver = _driver(request)
    if driver is None:
        return JsonResponse({"session": None, "command": None})
    # Checked on read as well as by the periodic task, so a driver never waits on beat to see "timed out".
    services.expire_overdue_commands(driver=driver)
    response = JsonResponse(selectors.live_view(driver))
    response["Cache-Control"] = "no-store"
    return response


def _cell(value: str) -> str:
    """Partner-supplied text in a CSV: never let a spreadsheet read it as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@login_required
@require_GET
def history_csv(request: HttpRequest) -> HttpResponse:
    driver = _driver(request)
    month, month_error = _month(request)
    if month_error:
        return HttpResponse(month_error, status=400, content_type="text/plain; charset=utf-8")
    rows = selectors.history(driver, month) if driver else []
    name = f"charging-sessions-{month:%Y-%m}.csv" if month else "charging-sessions.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "start",
            "end",
            "station",
            "operator",
            "evse",
            "card",
            "kwh",
            "cost",
            "currency",
            "status",
            "session_id",
            "cdr_id",
        ]
    )
    for row in rows:
        writer.writerow(
            [
                format_datetime(row.date),
                format_datetime(row.end) or "",
                _cell(row.station),
                _cell(row.operator),
                _cell(row.evse),
                _cell(row.card),
                f"{row.kwh:.3f}",
                "" if row.cost is None else f"{row.cost:.2f}",
                row.currency,
                row.status,
                _cell(row.session_id),
                _cell(row.cdr_id),
            ]
        )
    return response


@login_required
@require_http_methods(["GET", "POST"])
def start_page(request: HttpRequest, location_pk: int, evse_uid: str) -> HttpResponse:
    """GET: confirm starting at this EVSE (choose a card). POST: send START_SESSION, once per press."""
    location = get_object_or_404(Location.objects.select_related("party"), pk=location_pk)
    evse = EVSE.objects.filter(location=location, uid__iexact=evse_uid).first()
    if evse is None:
        raise Http404("No such charge point")
    driver = _driver(request)
    cards = list(services.active_cards(driver)) if driver else []
    app = startability.app_start_at(location, evse)
    running = startability.running_session(driver)
    problem = None if cards else "You need an active MobilityPlus card to start charging."
    if problem is None:
        try:
            services.check_startable(location, evse)
        except services.CommandRefused as refused:
            problem = str(refused)
    # "Card only" said as such (not as an error) when that is all that stands in the way.
    card_only = not app.possible and (problem is None or problem == services.NO_COMMANDS_RECEIVER)
    if card_only:
        problem = app.reason
    blocking = problem  # nothing to press: no card, card only, or the charge point cannot start now
    if request.method == "POST" and problem is None:
        card = next((c for c in cards if str(c.pk) == request.POST.get("card")), None)
        key = request.POST.get("idempotency_key", "")
        if card is None or not key:
            problem = "Choose one of your active cards."
        elif running is not None and request.POST.get("second_session") != "yes":
            problem = "You are already charging: confirm that you want to start a second session."
        else:
            try:
                services.request_start(driver, card, location, evse, idempotency_key=f"start:{driver.pk}:{key}"[:64])
            except services.CommandRefused as refused:
                problem = str(refused)
            else:
                return redirect("charging:sessions")
    status = 200 if problem is None or request.method == "GET" else 400
    context = {
        "location": location,
        "evse": evse,
        "evse_status": display.status_text("evse", evse.status),
        "evse_pill": display.map_status_of_evse(evse.status),
        "cards": cards,
        "problem": problem,
        "blocking": blocking,
        "card_only": card_only,
        "app": app,
        "running": running,
        "running_since": selectors.station_time(running.start_date_time, running.location) if running else "",
        "key": uuid.uuid4().hex,
    }
    # tariffs: each connector's price and a typical session's estimated cost (tariffs/_start_price.html).
    context["prices"] = evse_price(evse, language=get_language_from_request(request))
    return render(request, "charging/start.html", context, status=status)


@login_required
@require_POST
def stop_session(request: HttpRequest, session_pk: int) -> HttpResponse:
    """Send STOP_SESSION for the driver's own live session, once per press."""
    driver = _driver(request)
    session = get_object_or_404(Session.objects.select_related("party", "card"), pk=session_pk, card__driver=driver)
    key = request.POST.get("idempotency_key") or uuid.uuid4().hex
    try:
        services.request_stop(driver, session, idempotency_key=f"stop:{driver.pk}:{key}"[:64])
    except services.CommandRefused as refused:
        messages.error(request, str(refused))
    return redirect("charging:sessions")
