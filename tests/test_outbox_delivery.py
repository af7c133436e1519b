"""The durable outbox: written with the change, delivered in order per object, kept until OCPI 1000, never a CDR twice.

Partners are real OCPI servers on 127.0.0.1 (tests/ocpi_peer.py) that go down and come back.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction
from django.utils import timezone

from mobilityplus.celery import app as celery_app
from roaming import outbox, selectors
from roaming.models import OutboxLane, OutboxMessage, Party
from roaming.ocpi.credentials import authorization_header
from tests.factories import PartnerConnectionFactory
from tests.ocpi_peer import PeerResponse, ok


def emsp_at(peer, *, path="/emsp", token="to-emsp", **fields):
    """A connected eMSP whose cdrs, sessions and locations RECEIVERs are on the peer."""
    return PartnerConnectionFactory(
        party__role=Party.Role.EMSP,
        endpoints=[
            {"identifier": module, "role": "RECEIVER", "url": peer.url(f"{path}/{module}")}
            for module in ("cdrs", "sessions", "locations", "tariffs")
        ],
        tokens__to_them=token,
        **fields,
    )


class Receiver:
    """A partner's CDR and session receivers: stores what it accepts, can be down (503) or refuse."""

    def __init__(self, peer, path="/emsp"):
        self.cdrs: dict[str, dict] = {}
        self.posts: list[str] = []
        self.down = False
        self.peer = peer
        peer.route("POST", rf"{path}/cdrs", self.post_cdr)
        peer.route("GET", rf"{path}/cdrs/(?P<cdr_id>[^/]+)", self.get_cdr)
        peer.route("PUT", rf"{path}/sessions/.*", self.other)
        peer.route("PATCH", rf"{path}/sessions/.*", self.other)
        peer.route("PATCH", rf"{path}/locations/.*", self.other)

    def post_cdr(self, request):
        if self.down:
            return PeerResponse(raw=b"<html>maintenance</html>", status=503)
        cdr = request.json()
        self.posts.append(cdr["id"])
        self.cdrs[cdr["id"]] = cdr
        return ok(None, Location=self.peer.url(f"/emsp/cdrs/{cdr['id']}"))

    def get_cdr(self, request):
        cdr = self.cdrs.get(request.match["cdr_id"])
        if cdr is None:
            return PeerResponse({"status_code": 2001, "status_message": "unknown CDR"}, status=404)
        return ok(cdr)

    def other(self, request):
        return PeerResponse(raw=b"down", status=503) if self.down else ok()


@pytest.fixture(autouse=True)
def _quick(settings):
    settings.OUTBOX_BACKOFF_S = 0
    settings.OUTBOX_PROBE_S = 0


def test_a_message_is_written_with_the_change_and_delivered_after_commit(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    receiver = Receiver(ocpi_peer)
    with transaction.atomic():
        message = outbox.enqueue(
            connection.party, module="cdrs", object_id="CDR1", method="POST", body={"id": "CDR1", "x": 1}
        )
        assert ocpi_peer.requests == []  # nothing leaves before commit
    # pytest-django's db fixture wraps the test in a transaction: run the lane as the on-commit kick would.
    outbox.deliver(connection.party.pk)
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.DELIVERED and message.attempts == 1
    assert message.reply_location == ocpi_peer.url("/emsp/cdrs/CDR1") and message.delivered_at
    assert receiver.posts == ["CDR1"]
    assert ocpi_peer.requests[0].header("Authorization") == authorization_header("to-emsp")


def test_a_rolled_back_change_sends_nothing(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    Receiver(ocpi_peer)
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.enqueue(connection.party, module="cdrs", object_id="CDR1", method="POST", body={"id": "CDR1"})
        raise RuntimeError("the session could not be closed")
    outbox.deliver(connection.party.pk)
    assert not OutboxMessage.objects.exists() and ocpi_peer.requests == []


def test_a_partner_down_gets_everything_in_order_once_it_is_back(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    receiver = Receiver(ocpi_peer)
    receiver.down = True
    for n in range(5):
        outbox.enqueue(connection.party, module="cdrs", object_id=f"CDR{n}", method="POST", body={"id": f"CDR{n}"})
    assert outbox.deliver(connection.party.pk).status == "down"
    lane = OutboxLane.objects.get(partner=connection.party)
    assert lane.down_since is not None and "503" in lane.last_error
    assert OutboxMessage.objects.filter(status="pending").count() == 5
    receiver.down = False
    assert outbox.deliver(connection.party.pk).delivered == 5
    assert receiver.posts == [f"CDR{n}" for n in range(5)]
    lane.refresh_from_db()
    assert lane.down_since is None


def test_an_ocpi_refusal_is_failed_with_the_partners_words(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    ocpi_peer.route("POST", r"/emsp/cdrs", lambda r: PeerResponse({"status_code": 2001, "status_message": "no tariff"}))
    message = outbox.enqueue(connection.party, module="cdrs", object_id="C", method="POST", body={"id": "C"})
    outbox.deliver(connection.party.pk)
    message.refresh_from_db()
    assert message.status == OutboxMessage.Status.FAILED and "no tariff" in message.last_error


def test_a_cdr_whose_answer_was_lost_is_checked_not_posted_again(ocpi_peer, db, settings):
    settings.OUTBOX_HTTP_TIMEOUT_S = 0.5
    connection = emsp_at(ocpi_peer)
    receiver = Receiver(ocpi_peer)
    slow = [True]

    def stores_then_hangs(request):
        answer = receiver.post_cdr(request)
        if slow[0]:
            time.sleep(1.5)  # stored, but the answer comes after our timeout
        return answer

    ocpi_peer.route("POST", r"/emsp/cdrs", stores_then_hangs)
    message = outbox.enqueue(connection.party, module="cdrs", object_id="C1", method="POST", body={"id": "C1"})
    assert outbox.deliver(connection.party.pk).status == "down"
    message.refresh_from_db()
    assert message.status == "pending" and message.sending_since is not None
    assert message.last_error.startswith("outcome unknown")
    slow[0] = False
    outbox.deliver(connection.party.pk)
    message.refresh_from_db()
    assert message.status == "delivered" and message.reply_location == ocpi_peer.url("/emsp/cdrs/C1")
    assert receiver.posts == ["C1"]  # asked, not POSTed again
    assert [r.method for r in ocpi_peer.requests] == ["POST", "GET"]


def test_a_cdr_the_partner_says_it_lacks_is_posted_again_and_one_it_cannot_tell_is_left_to_staff(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    receiver = Receiver(ocpi_peer)
    lacking = outbox.enqueue(connection.party, module="cdrs", object_id="C1", method="POST", body={"id": "C1"})
    unknowable = outbox.enqueue(connection.party, module="cdrs", object_id="C2", method="POST", body={"id": "C2"})
    # What a worker killed mid-POST leaves: claimed, no outcome.
    OutboxMessage.objects.update(sending_since=timezone.now())
    ocpi_peer.route("GET", r"/emsp/cdrs/C2", lambda r: PeerResponse(raw=b"Method Not Allowed", status=405))
    outbox.deliver(connection.party.pk)
    lacking.refresh_from_db()
    unknowable.refresh_from_db()
    assert lacking.status == "delivered" and receiver.posts == ["C1"]
    assert unknowable.status == "failed" and unknowable.last_error.startswith("outcome unknown")
    assert "confirm with them" in unknowable.last_error

    # Staff confirmed with the partner that it never got C2: resent, it is POSTed (no check).
    outbox.resend([unknowable])
    outbox.deliver(connection.party.pk)
    unknowable.refresh_from_db()
    assert unknowable.status == "delivered" and receiver.posts == ["C1", "C2"]


def test_order_is_kept_per_object_across_retries(ocpi_peer, db):
    connection = emsp_at(ocpi_peer)
    seen = []
    answers = iter([PeerResponse(raw=b"busy", status=500)])

    def session_receiver(request):
        answer = next(answers, None) if request.json()["n"] == 1 else None
        if answer is None:
            seen.append((request.path, request.json()["n"]))
        return answer or ok()

    ocpi_peer.route("PATCH", r"/emsp/sessions/.*", session_receiver)
    ocpi_peer.route("PUT", r"/emsp/sessions/.*", session_receiver)
    for n in range(1, 4):
        for session in ("S1", "S2"):
            method = "PUT" if n == 1 else "PATCH"
            outbox.enqueue(
                connection.party,
                module="sessions",
                object_id=session,
                method=method,
                path=f"/BE/MBP/{session}",
                body={"n": n},
            )
    outbox.deliver(connection.party.pk)
    assert [n for path, n in seen if path.endswith("S1")] == [1, 2, 3]
    assert [n for path, n in seen if path.endswith("S2")] == [1, 2, 3]


def test_staff_see_the_backlog_per_partner(ocpi_peer, db, admin_client):
    up, down = emsp_at(ocpi_peer, path="/up"), emsp_at(ocpi_peer, path="/down")
    ocpi_peer.route("POST", r"/up/cdrs", lambda r: ok())
    ocpi_peer.route("POST", r"/down/cdrs", lambda r: PeerResponse(raw=b"down", status=503))
    for n in range(3):
        for connection in (up, down):
            outbox.enqueue(connection.party, module="cdrs", object_id=f"C{n}", method="POST", body={"id": f"C{n}"})
    outbox.deliver(up.party.pk)
    outbox.deliver(down.party.pk)
    backlog = {b.partner.pk: b for b in selectors.outbox_backlog_by_partner()}
    assert (backlog[down.party.pk].waiting, backlog[down.party.pk].delivered) == (3, 0)
    assert backlog[down.party.pk].down_since is not None and "503" in backlog[down.party.pk].last_error
    assert (backlog[up.party.pk].waiting, backlog[up.party.pk].delivered) == (0, 3)
    assert list(backlog)[0] == down.party.pk  # largest backlog first
    page = admin_client.get("/admin/roaming/outboxlane/").content.decode()
    assert "down since" in page and "answering" in page
    page = admin_client.get(f"/admin/roaming/outboxmessage/?partner__id__exact={down.party.pk}&status__exact=pending")
    assert page.status_code == 200 and "HTTP 503" in page.content.decode()


# --- a real worker (a `celery -A mobilityplus worker` process) killed with SIGKILL in the middle of a delivery ------


@pytest.fixture
def workers(transactional_db, tmp_path, monkeypatch):
    from tests.test_feeds_worker_killed import Worker, forget_queued_tasks

    monkeypatch.setenv("OUTBOX_BACKOFF_S", "0.2")
    monkeypatch.setenv("OUTBOX_PROBE_S", "0.5")
    started: list = []
    forget_queued_tasks()
    celery_app.conf.task_always_eager = False
    try:
        yield lambda name: started.append(Worker(name, tmp_path)) or started[-1]
    finally:
        celery_app.conf.task_always_eager = True
        for worker in started:
            worker.kill()
        forget_queued_tasks()


def test_a_worker_killed_mid_delivery_loses_nothing_and_posts_no_cdr_twice(ocpi_peer, workers):
    from tests.test_feeds_worker_killed import wait_for

    connection = emsp_at(ocpi_peer)
    receiver = Receiver(ocpi_peer)

    def slow_first(request):
        answer = receiver.post_cdr(request)
        if request.json()["id"] == "CDR0":
            time.sleep(5)  # stored; the worker is killed before the answer comes
        return answer

    ocpi_peer.route("POST", r"/emsp/cdrs", slow_first)
    first = workers("outbox-first")
    for n in range(5):
        outbox.enqueue(connection.party, module="cdrs", object_id=f"CDR{n}", method="POST", body={"id": f"CDR{n}"})
    wait_for(lambda: "CDR0" in receiver.cdrs, timeout=30, what="the first CDR to be stored", workers=[first])
    first.kill()
    killed = OutboxMessage.objects.get(object_id="CDR0")
    assert killed.status == "pending" and killed.sending_since is not None  # claimed, outcome unknown
    assert receiver.posts == ["CDR0"]

    second = workers("outbox-second")
    outbox.sweep()  # beat's sweeper: the dead worker's lane (its advisory lock died with its connection)
    wait_for(
        lambda: OutboxMessage.objects.filter(status="delivered").count() == 5,
        timeout=30,
        what="every CDR delivered",
        workers=[second],
    )
    assert sorted(receiver.posts) == [f"CDR{n}" for n in range(5)]  # each POSTed once: CDR0 was checked
    killed.refresh_from_db()
    assert killed.reply_location == ocpi_peer.url("/emsp/cdrs/CDR0") and killed.sending_since is None


def test_delivered_messages_are_forgotten_after_the_keeping_time_refused_ones_kept(ocpi_peer, db, settings):
    settings.OUTBOX_KEEP_DELIVERED_DAYS = 30
    connection = emsp_at(ocpi_peer)
    for object_id, status in (("old", "delivered"), ("recent", "delivered"), ("refused", "failed"), ("w", "pending")):
        outbox.enqueue(connection.party, module="cdrs", object_id=object_id, method="POST", body={"id": object_id})
        OutboxMessage.objects.filter(object_id=object_id).update(status=status, delivered_at=timezone.now())
    OutboxMessage.objects.filter(object_id__in=["old", "refused"]).update(
        delivered_at=timezone.now() - dt.timedelta(days=31)
    )
    assert outbox.purge_delivered() == 1
    assert sorted(OutboxMessage.objects.values_list("object_id", flat=True)) == ["recent", "refused", "w"]
