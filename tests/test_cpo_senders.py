"""Our CPO senders: `GET /ocpi/cpo/2.2.1/sessions` and `/cdrs`, paginated, date_from/date_to, each eMSP seeing
only the sessions and CDRs of its own drivers at our stations; listed in our version details."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from charging.models import CDR, Session
from charging.serializers import CdrSerializer, SessionSerializer
from roaming.selectors import own_party
from tests.conftest import make_ocpi_partner
from tests.cpo_world import BACKEND_TOKEN, at, call_backend, foreign_token, our_station, start_body
from tests.factories import CardFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CARDS_BACKEND_API_TOKEN = BACKEND_TOKEN


@pytest.fixture
def world(client):
    """Two eMSPs (one through a hub) whose drivers charged at our station: 3 sessions of A's, 1 of B's, 1 ours."""
    our_station()
    a = make_ocpi_partner(party_id="AAA", role="EMSP")
    b = make_ocpi_partner(party_id="BBB", role="EMSP", via_hub=True)
    foreign_token(a.party, uid="A1")
    foreign_token(b.party, uid="B1")
    CardFactory(uid="04A1B2C3")
    for n, uid in enumerate(["A1", "A1", "A1", "B1", "04A1B2C3"]):
        sid = f"TX-{n}"
        started = call_backend(client, "/sessions", start_body(session_id=sid, token_uid=uid, started_at=at(n)))
        assert started.status_code == 201, started.content
        assert call_backend(client, f"/sessions/{sid}/end", {"ended_at": at(n + 30), "kwh": "5"}).status_code == 200
    return a, b


def test_each_emsp_lists_only_its_own_drivers_sessions_and_cdrs(ocpi, world):
    a, b = world
    for path, serializer in (("/ocpi/cpo/2.2.1/sessions", SessionSerializer), ("/ocpi/cpo/2.2.1/cdrs", CdrSerializer)):
        mine = ocpi("GET", path, partner=a)
        assert mine.status_code == 200 and mine.envelope["status_code"] == 1000
        assert [o["cdr_token"]["uid"] for o in mine.data] == ["A1"] * 3
        assert mine["X-Total-Count"] == "3"
        for obj in mine.data:
            checked = serializer(data=obj)
            assert checked.is_valid(), checked.errors
            assert (obj["country_code"], obj["party_id"]) == ("BE", "MBP")
        theirs = ocpi("GET", path, partner=b)  # through the hub, for its client
        assert [o["cdr_token"]["uid"] for o in theirs.data] == ["B1"]
    sessions = ocpi("GET", "/ocpi/cpo/2.2.1/sessions", partner=a).data
    assert {s["id"] for s in sessions} == {"TX-0", "TX-1", "TX-2"} and {s["status"] for s in sessions} == {"COMPLETED"}


def test_pages_follow_the_link_and_date_window_filters(ocpi, world):
    a, _ = world
    first = ocpi("GET", "/ocpi/cpo/2.2.1/sessions", partner=a, limit="2")
    assert len(first.data) == 2 and first["X-Total-Count"] == "3" and 'rel="next"' in first["Link"]
    link = first["Link"].split(";")[0].strip("<>")
    second = ocpi("GET", link, partner=a)
    assert len(second.data) == 1 and "Link" not in second
    assert {s["id"] for s in first.data + second.data} == {"TX-0", "TX-1", "TX-2"}
    Session.objects.filter(ocpi_id="TX-0").update(last_updated=timezone.now() - dt.timedelta(days=2))
    CDR.objects.filter(session_ocpi_id="TX-0").update(last_updated=timezone.now() - dt.timedelta(days=2))
    since = (timezone.now() - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    for path in ("/ocpi/cpo/2.2.1/sessions", "/ocpi/cpo/2.2.1/cdrs"):
        recent = ocpi("GET", path, partner=a, date_from=since)
        assert recent["X-Total-Count"] == "2"
        before = ocpi("GET", path, partner=a, date_to=since)
        assert before["X-Total-Count"] == "1"
    bad = ocpi("GET", "/ocpi/cpo/2.2.1/cdrs", partner=a, date_from="yesterday")
    assert bad.status_code == 400 and bad.envelope["status_code"] == 2001
    assert "date_from" in bad.envelope["status_message"]


@pytest.mark.parametrize("path", ["/ocpi/cpo/2.2.1/sessions", "/ocpi/cpo/2.2.1/cdrs"])
def test_a_page_costs_the_same_few_queries_whatever_its_size(ocpi, world, path):
    """The window's count and the page itself: two queries on the charging tables, for 1 object or 23."""
    a, _ = world

    def charging_queries(**query) -> tuple[int, list]:
        with CaptureQueriesContext(connection) as captured:
            page = ocpi("GET", path, partner=a, **query)
        return sum('"charging_' in q["sql"] for q in captured.captured_queries), page.data

    ocpi("GET", path, partner=a)  # warm the connection cache
    assert charging_queries(limit="1")[0] == 2
    for n in range(20):  # many more objects of A's on one page
        session = Session.objects.filter(emsp=a.party).first()
        session.pk, session.ocpi_id = None, f"MORE-{n}"
        session.save()
        cdr = CDR.objects.filter(emsp=a.party).first()
        cdr.pk, cdr.ocpi_id, cdr.total_energy = None, f"MORE-{n}", Decimal(1)
        cdr.save()
    count, data = charging_queries(limit="100")
    assert count == 2 and len(data) == 23


def test_our_version_details_list_both_senders(ocpi, world):
    a, _ = world
    details = ocpi("GET", "/ocpi/2.2.1", partner=a).data
    endpoints = {(e["identifier"], e["role"]): e["url"] for e in details["endpoints"]}
    assert endpoints[("sessions", "SENDER")].endswith("/ocpi/cpo/2.2.1/sessions")
    assert endpoints[("cdrs", "SENDER")].endswith("/ocpi/cpo/2.2.1/cdrs")
    assert own_party().sessions.count() == 5
