"""The durable outbox: written with the change, delivered in order per object, kept until OCPI 1000, never a CDR twice.

Partners are real OCPI servers on 127.0.0.1 (tests/ocpi_peer.py) that go down and come back.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from roaming import outbox
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
