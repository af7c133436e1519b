"""Reads: can a driver start at this charge point from the app, and is one of their sessions already running?

The station panel, the station API and the start page all ask here, so the app start is offered only where it can
work, and "card only" is said up front everywhere else:

* the EVSE says it can be started remotely (OCPI capability `REMOTE_START_STOP_CAPABLE`), and
* a partner's station: the operator's connection is up and has a commands RECEIVER (where `request_start` sends
  START_SESSION); our own station: our charge-point backend is configured (`CHARGE_POINT_BACKEND_URL`), the
  system `charging.services.send_to_charge_point` hands commands to.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from cards.models import Driver
from charging.models import Session
from charging.services import EVSE_STATE_WORDS, UNUSABLE_EVSE, commands_url
from stations.models import EVSE, Location

REMOTE_START = "REMOTE_START_STOP_CAPABLE"
CARD_ONLY_EVSE = "Card only: this charge point cannot be started from an app."
CARD_ONLY_OPERATOR = "Card only: this operator does not take starts from the app."
CARD_ONLY_OURS = "Card only: starting our own charge points from the app is not switched on yet."


@dataclass(frozen=True)
class AppStart:
    possible: bool
    reason: str = ""  # why not, in words, when not possible


def charge_point_backend_ready() -> bool:
    """Our own charge points take app starts once the charge-point backend (our OCPP central system) is set."""
    return bool(getattr(settings, "CHARGE_POINT_BACKEND_URL", ""))


def operator_takes_app_starts(location: Location) -> AppStart:
    """The operator side, once per location (one query for a partner's connection)."""
    if location.party.is_self:
        return AppStart(True) if charge_point_backend_ready() else AppStart(False, CARD_ONLY_OURS)
    return AppStart(True) if commands_url(location.party) else AppStart(False, CARD_ONLY_OPERATOR)


def app_start(evse: EVSE, operator: AppStart) -> AppStart:
    """The EVSE side, given what the operator side allows."""
    if REMOTE_START not in (evse.capabilities or []):
        return AppStart(False, CARD_ONLY_EVSE)
    if not operator.possible:
        return operator
    if evse.status in UNUSABLE_EVSE:
        return AppStart(False, f"This charge point is {EVSE_STATE_WORDS.get(evse.status, 'not usable')}.")
    return AppStart(True)


def app_start_at(location: Location, evse: EVSE) -> AppStart:
    return app_start(evse, operator_takes_app_starts(location))


def running_session(driver: Driver | None) -> Session | None:
    """The driver's session going on now (starting or charging), if any: warned about before a second start."""
    if driver is None:
        return None
    return (
        Session.objects.filter(card__driver=driver, status__in=(Session.Status.PENDING, Session.Status.ACTIVE))
        .select_related("location")
        .order_by("-start_date_time")
        .first()
    )
