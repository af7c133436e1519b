"""Our EVSEs' status (and location changes) reach every connected eMSP or hub served by our stations, through the
outbox: PATCH within seconds, only the latest status of an EVSE once a partner is back, never a partner's station."""

from __future__ import annotations

import datetime as dt
import time
from html.parser import HTMLParser

import pytest
from django.utils import timezone

from roaming import outbox
from roaming.models import OutboxMessage, Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import emsps_served_by_our_stations, own_party
from stations.models import EVSE, EvseStatusChange
from stations.services import record_our_evse_status
from tests.factories import (
    ConnectorFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
)
from tests.ocpi_peer import PeerResponse, ok

THEIR_CARDS = RoamingAgreement.Direction.THEIR_CARDS_AT_OUR_STATIONS


def partner_at(peer, path, *, role=Party.Role.EMSP, direction=THEIR_CARDS, token=None, **party):
    connection = PartnerConnectionFactory(
        party__role=role,
        endpoints=[{"identifier": "locations", "role": "RECEIVER", "url": peer.url(f"{path}/locations")}],
        tokens__to_them=token or f"to{path}",
        **{f"party__{k}": v for k, v in party.items()},
    )
    if direction:
        RoamingAgreementFactory(partner=connection.party, direction=direction)
    return connection


class LocationsReceiver:
    """A partner's locations RECEIVER: answers 1000, or 503 while down."""

    def __init__(self, peer, prefix=r"/\w+"):
        self.down = False
        for method in ("PATCH", "PUT"):
            peer.route(method, rf"{prefix}/locations/.*", self)

    def __call__(self, request):
        return PeerResponse(raw=b"<html>maintenance</html>", status=503) if self.down else ok()


@pytest.fixture(autouse=True)
def _quick(settings):
    settings.OUTBOX_BACKOFF_S = 0
    settings.OUTBOX_PROBE_S = 0


@pytest.fixture
def our_evse(db):
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT")
    evse = EVSEFactory(location=location, uid="MBP-GENT-1", status="AVAILABLE")
    ConnectorFactory(evse=evse)
    return evse


def test_the_partners_served_by_our_stations(ocpi_peer, db):
    served = partner_at(ocpi_peer, "/a")
    both = partner_at(ocpi_peer, "/b", direction=RoamingAgreement.Direction.BOTH)
    partner_at(ocpi_peer, "/c", direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)  # we charge there
    partner_at(ocpi_peer, "/d", direction=None)  # no agreement
    partner_at(ocpi_peer, "/e", role=Party.Role.CPO)  # not an eMSP
    suspended = partner_at(ocpi_peer, "/f")
    suspended.status = "suspended"
    suspended.save()
    PartnerConnectionFactory(party__role=Party.Role.EMSP, endpoints=[])  # no locations RECEIVER
    hub = partner_at(ocpi_peer, "/hub", role=Party.Role.HUB, direction=None, country_code="DE", party_id="HUB")
    client = PartyFactory(role=Party.Role.EMSP)
    PartnerConnectionFactory(party=client, via_hub=hub)  # reached through the hub: the hub's copy serves it
    RoamingAgreementFactory(partner=client, hub=hub.party, direction=THEIR_CARDS)
    assert {p.pk for p in emsps_served_by_our_stations("locations")} == {served.party.pk, both.party.pk, hub.party.pk}


def test_a_status_change_of_ours_is_patched_to_every_partner_served(
    ocpi_peer, our_evse, django_capture_on_commit_callbacks
):
    partner_at(ocpi_peer, "/a", token="to-a")
    partner_at(ocpi_peer, "/b", direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
    hub = partner_at(ocpi_peer, "/hub", role=Party.Role.HUB, country_code="DE", party_id="HUB")
    LocationsReceiver(ocpi_peer)
    at = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert record_our_evse_status(our_evse, "CHARGING", at) is True
    sent = {r.path: r for r in ocpi_peer.requests}
    assert set(sent) == {"/a/locations/BE/MBP/MBP-GENT/MBP-GENT-1", "/hub/locations/BE/MBP/MBP-GENT/MBP-GENT-1"}
    patch = sent["/a/locations/BE/MBP/MBP-GENT/MBP-GENT-1"]
    assert patch.method == "PATCH" and patch.header("Authorization") == authorization_header("to-a")
    assert patch.json()["status"] == "CHARGING" and patch.json()["last_updated"]
    assert patch.header("OCPI-to-party-id") is None  # a direct peer: no routing headers
    through_hub = sent["/hub/locations/BE/MBP/MBP-GENT/MBP-GENT-1"]
    assert through_hub.header("OCPI-to-party-id") == hub.party.party_id
    assert through_hub.header("OCPI-from-party-id") == "MBP"
    our_evse.refresh_from_db()
    assert our_evse.status == "CHARGING" and our_evse.status_changed_at == at
    assert EvseStatusChange.objects.filter(evse=our_evse, status="CHARGING").count() == 1
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {"delivered"}


def test_the_backend_repeating_or_reordering_reports_changes_nothing(ocpi_peer, our_evse):
    partner_at(ocpi_peer, "/a")
    at = timezone.now()
    assert record_our_evse_status(our_evse, "CHARGING", at) is True
    assert record_our_evse_status(our_evse, "CHARGING", at) is False  # the same report again (a retry)
    assert record_our_evse_status(our_evse, "AVAILABLE", at - dt.timedelta(seconds=5)) is False  # an older one
    our_evse.refresh_from_db()
    assert our_evse.status == "CHARGING"
    assert OutboxMessage.objects.count() == 1
    with pytest.raises(ValueError, match="unknown EVSE status"):
        record_our_evse_status(our_evse, "PARTY", at + dt.timedelta(seconds=1))


def test_a_partner_back_gets_only_the_latest_status_of_each_evse(ocpi_peer, our_evse):
    partner_at(ocpi_peer, "/a")
    receiver = LocationsReceiver(ocpi_peer)
    other = EVSEFactory(location=our_evse.location, uid="MBP-GENT-2", status="AVAILABLE")
    receiver.down = True
    start = timezone.now()
    record_our_evse_status(our_evse, "CHARGING", start)  # autocommit: the lane runs at once, the partner is down
    for n, status in enumerate(["AVAILABLE", "CHARGING", "OUTOFORDER"], start=1):
        record_our_evse_status(our_evse, status, start + dt.timedelta(seconds=n))
    record_our_evse_status(other, "CHARGING", start + dt.timedelta(seconds=5))
    waiting = OutboxMessage.objects.filter(status="pending")
    assert sorted(m.body["status"] for m in waiting) == ["CHARGING", "OUTOFORDER"]  # one per EVSE: the latest
    receiver.down = False
    ocpi_peer.requests.clear()
    outbox.sweep()
    assert [(r.path.rsplit("/", 1)[1], r.json()["status"]) for r in ocpi_peer.requests] == [
        ("MBP-GENT-1", "OUTOFORDER"),
        ("MBP-GENT-2", "CHARGING"),
    ]


def test_a_partners_station_is_never_pushed(ocpi_peer, db):
    partner_at(ocpi_peer, "/a")
    theirs = EVSEFactory(location=LocationFactory(party=PartyFactory(role=Party.Role.CPO)))
    with pytest.raises(ValueError, match="not an EVSE of our own"):
        record_our_evse_status(theirs, "CHARGING", timezone.now())
    assert not OutboxMessage.objects.exists()


class FormValues(HTMLParser):
    """Every field of an admin change form with the value the page shows (what a browser would post back)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "checkbox", "file"):
            self.values[name] = a.get("value") or ""
        elif tag == "input" and name and a.get("type") == "checkbox" and "checked" in a:
            self.values[name] = a.get("value") or "on"
        elif tag == "select" and name:
            self._select = name
            self.values.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data


def admin_form(admin_client, url) -> dict[str, str]:
    parser = FormValues()
    parser.feed(admin_client.get(url).content.decode())
    return parser.values


def test_staff_setting_a_status_or_opening_hours_in_the_admin_reach_partners(
    ocpi_peer, our_evse, admin_client, django_capture_on_commit_callbacks
):
    partner_at(ocpi_peer, "/a")
    LocationsReceiver(ocpi_peer)
    url = f"/admin/stations/evse/{our_evse.pk}/change/"
    form = admin_form(admin_client, url)
    form["status"] = "OUTOFORDER"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    [patch] = ocpi_peer.requests
    assert patch.method == "PATCH" and patch.path == "/a/locations/BE/MBP/MBP-GENT/MBP-GENT-1"
    assert patch.json()["status"] == "OUTOFORDER"

    ocpi_peer.requests.clear()
    url = f"/admin/stations/location/{our_evse.location.pk}/change/"
    form = admin_form(admin_client, url)
    form["opening_times"] = (
        '{"twentyfourseven": false, "regular_hours": [{"weekday": 1, "period_begin": "08:00", "period_end": "20:00"}]}'
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    [put] = ocpi_peer.requests
    assert put.method == "PUT" and put.path == "/a/locations/BE/MBP/MBP-GENT"
    assert put.json()["opening_times"]["regular_hours"][0]["period_begin"] == "08:00"
    assert put.json()["evses"][0]["status"] == "OUTOFORDER"


def test_through_the_real_worker_a_status_reaches_partners_within_seconds(ocpi_peer, redis_celery_worker):
    location = LocationFactory(party=own_party(), ocpi_id="MBP-GENT")
    evse = EVSEFactory(location=location, uid="MBP-GENT-1", status="AVAILABLE")
    for path in ("/a", "/b", "/c"):
        partner_at(ocpi_peer, path)
    LocationsReceiver(ocpi_peer)
    started = time.monotonic()
    record_our_evse_status(evse, "CHARGING", timezone.now())
    while time.monotonic() - started < 10 and len(ocpi_peer.requests) < 3:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert sorted(r.path.split("/")[1] for r in ocpi_peer.requests) == ["a", "b", "c"]
    assert elapsed < 3, elapsed
    assert EVSE.objects.get(pk=evse.pk).status == "CHARGING"
