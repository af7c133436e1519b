"""A foreign driver at our station: the Session and then one CDR reach the driver's eMSP (a loopback OCPI server).

PUT at the start, throttled PATCHes with kwh and charging_periods, the final state at the end, then one CDR POSTed
to its cdrs RECEIVER whose `Location` answer is kept; through a hub with the routing headers. Every payload is
checked by the receiver with the serializers our own eMSP receivers use, and against the spec's examples.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from django.utils import timezone

from charging import cpo_delivery
from charging.models import CDR, Session
from roaming import outbox
from roaming.models import PartnerConnection
from roaming.outbox_models import OutboxMessage
from tests.cpo_world import (
    BACKEND_TOKEN,
    EmspReceivers,
    at,
    call_backend,
    foreign_emsp,
    foreign_token,
    our_station,
    start_body,
)

pytestmark = pytest.mark.django_db
EXAMPLES = Path("/work/shared/ocpi/examples")


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN
    settings.CPO_SESSION_PATCH_INTERVAL_S = 60
    settings.OUTBOX_BACKOFF_S = 0
    settings.OUTBOX_PROBE_S = 0


@pytest.fixture
def station():
    return our_station()


def deliver(party) -> None:
    """Run the eMSP's outbox lane as the after-commit kick does (the test runs inside one transaction)."""
    outbox.deliver(party.pk)


def play_session(client, kwh_by_minute: list[tuple[int, str]], end: tuple[int, str] | None = (45, "11.2")):
    assert call_backend(client, "/sessions", start_body(token_uid="0102AABB")).status_code == 201
    for minute, kwh in kwh_by_minute:
        answer = call_backend(client, "/sessions/TX-1/meter-values", {"at": at(minute), "kwh": kwh, "power_kw": 11})
        assert answer.status_code == 200, answer.content
    if end:
        assert call_backend(client, "/sessions/TX-1/end", {"ended_at": at(end[0]), "kwh": end[1]}).status_code == 200


def flush_later(seconds: float = 61) -> int:
    return cpo_delivery.flush_session_updates(now=timezone.now() + dt.timedelta(seconds=seconds))


def test_the_emsp_gets_the_session_its_progress_the_final_state_and_one_cdr(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    play_session(client, [(10, "2.5"), (20, "5.0"), (30, "8.0")], end=None)
    deliver(emsp)
    # The meter values came within the interval after the PUT: flagged, not sent.
    assert [call[0] for call in receivers.calls] == ["PUT"]
    assert Session.objects.get().push_due
    assert flush_later() == 1
    deliver(emsp)
    method, session_id, patch = receivers.calls[-1]
    assert (method, session_id) == ("PATCH", "TX-1")
    assert patch["kwh"] == 8.0 and patch["status"] == "ACTIVE" and "last_updated" in patch
    assert patch["charging_periods"] == [
        {
            "start_date_time": at(0),
            "dimensions": [{"type": "ENERGY", "volume": 8.0}, {"type": "TIME", "volume": 0.5}],
        }
    ]
    assert "total_cost" not in patch  # not priced until our tariff is wired (price_our_session)

    call_backend(client, "/sessions/TX-1/end", {"ended_at": at(45), "kwh": "11.2"})
    deliver(emsp)
    assert sorted(call[0] for call in receivers.calls[2:]) == ["PATCH", "POST"]
    final = receivers.sessions["TX-1"]
    assert final["status"] == "COMPLETED" and final["end_date_time"] == at(45) and final["kwh"] == 11.2
    assert [p["start_date_time"] for p in final["charging_periods"]] == [at(0), at(30)]
    assert sum(p["dimensions"][0]["volume"] for p in final["charging_periods"]) == pytest.approx(11.2)
    cdr = CDR.objects.get()
    assert list(receivers.cdrs) == [cdr.ocpi_id]
    sent = receivers.cdrs[cdr.ocpi_id]
    assert sent["session_id"] == "TX-1" and sent["total_energy"] == 11.2 and sent["total_time"] == 0.75
    assert sent["cdr_token"] == {
        "country_code": "NL",
        "party_id": "TNM",
        "uid": "0102AABB",
        "type": "RFID",
        "contract_id": sent["cdr_token"]["contract_id"],
    }
    assert sent["charging_periods"] == final["charging_periods"]
    assert cpo_delivery.cdr_location_at_emsp(cdr) == ocpi_peer.url(f"/emsp/cdrs/{cdr.ocpi_id}")
    # Everything delivered once: nothing waits, nothing was sent twice.
    assert not OutboxMessage.objects.exclude(status="delivered").exists()
    deliver(emsp)
    assert len(receivers.calls) == 4


def test_at_most_one_patch_per_session_per_interval(client, station, ocpi_peer, settings):
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    settings.CPO_SESSION_PATCH_INTERVAL_S = 0  # every meter value may go: this one is sent at once
    play_session(client, [(5, "1.0")], end=None)
    settings.CPO_SESSION_PATCH_INTERVAL_S = 60
    for minute in range(6, 16):
        call_backend(client, "/sessions/TX-1/meter-values", {"at": at(minute), "kwh": f"{minute / 5:.1f}"})
    deliver(emsp)
    assert [c[0] for c in receivers.calls] == ["PUT", "PATCH"]
    assert flush_later(30) == 0  # the interval has not passed yet
    assert flush_later(61) == 1 and flush_later(62) == 0
    deliver(emsp)
    assert [c[0] for c in receivers.calls] == ["PUT", "PATCH", "PATCH"] and receivers.sessions["TX-1"]["kwh"] == 3.0


def test_through_a_hub_every_call_carries_the_routing_headers(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer, via_hub=True)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    play_session(client, [(10, "3")])
    deliver(emsp)
    # In order per object (the session's PUT before its PATCH); the CDR is another object and may pass it.
    assert sorted(c[0] for c in receivers.calls) == ["PATCH", "POST", "PUT"] and receivers.calls[0][0] == "PUT"
    for request in ocpi_peer.requests:
        assert (request.header("OCPI-to-country-code"), request.header("OCPI-to-party-id")) == ("NL", "TNM")
        assert (request.header("OCPI-from-country-code"), request.header("OCPI-from-party-id")) == ("BE", "MBP")


def _required(example: dict, optional: set[str]) -> set[str]:
    return set(example) - optional


def test_what_we_send_has_the_spec_examples_fields_and_types(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer)
    receivers = EmspReceivers(ocpi_peer)
    foreign_token(emsp, uid="0102AABB")
    play_session(client, [(10, "3")])
    deliver(emsp)
    session_example = json.loads((EXAMPLES / "session_example_1_simple_start.json").read_text())
    put = next(body for method, _id, body in receivers.calls if method == "PUT")
    assert _required(session_example, {"total_cost"}) <= set(put)
    cdr_example = json.loads((EXAMPLES / "cdr_example.json").read_text())
    cdr = next(body for method, _id, body in receivers.calls if method == "POST")
    assert _required(cdr_example, {"tariffs", "total_time_cost"}) <= set(cdr)
    assert set(cdr["cdr_location"]) == set(cdr_example["cdr_location"])
    assert set(cdr["cdr_token"]) == set(cdr_example["cdr_token"])
    for name, value in [*put.items(), *cdr.items()]:
        assert type(value) is type({**session_example, **cdr_example}.get(name, value)), name
    assert all(isinstance(v, str) for v in cdr["cdr_location"]["coordinates"].values())
    assert len(cdr["id"]) <= 39 and cdr["total_cost"] == {"excl_vat": 0.0}


def test_an_emsp_without_receivers_is_sent_nothing_and_pulls_instead(client, station, ocpi_peer):
    emsp = foreign_emsp(ocpi_peer)
    PartnerConnection.objects.filter(party=emsp).update(endpoints=[])
    foreign_token(emsp, uid="0102AABB")
    play_session(client, [(10, "3")])
    assert not OutboxMessage.objects.exists()
    assert CDR.objects.get().emsp == emsp and Session.objects.get().emsp == emsp
