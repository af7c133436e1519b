"""Starting and stopping a session from the app: OCPI START_SESSION / STOP_SESSION to a real CPO on 127.0.0.1.

What the driver sees for each outcome:
- the CPO answers ACCEPTED -> pending until its CommandResult: accepted / rejected / failed;
- the CPO cannot be reached -> failed (connection retried, nothing else);
- the CPO drops the connection after reading the command -> failed, never resent, and the driver is told
  it may still start;
- the CPO answers REJECTED, or an OCPI error -> rejected; HTTP 5xx or garbage -> failed, never resent;
- no CommandResult within the CPO's timeout -> timed out (a late result still tells the truth);
- one button press (one idempotency key) -> at most one command on the wire.
A CommandResult is taken only from the CPO the command was sent to.
"""

from __future__ import annotations

import socket
import time

import pytest
from django.test import override_settings
from django.utils import timezone

from cards.selectors import token_payload
from charging import services
from charging.models import Command
from roaming.models import Party, RoamingAgreement
from roaming.ocpi.credentials import authorization_header
from roaming.selectors import own_party
from tests.factories import (
    CardFactory,
    ConnectorFactory,
    DriverFactory,
    EVSEFactory,
    LocationFactory,
    PartnerConnectionFactory,
    PartyFactory,
    RoamingAgreementFactory,
    SessionFactory,
)
from tests.ocpi_peer import PeerResponse, dropped, ok

# Remotely startable (OCPI capability): the app start is offered only there (charging.startability).
REMOTE = ["RFID_READER", "REMOTE_START_STOP_CAPABLE"]
pytestmark = pytest.mark.django_db

CPO_TOKEN = OCPI_TOKEN = "cpo-calls-us"
OUR_TOKEN = "we-call-cpo"
FAST = {"CHARGING_COMMAND_RETRY_BACKOFF_S": 0.01, "OCPI_BASE_URL": "https://roaming.example"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class World:
    """A CPO with a commands endpoint, its station, and our driver with an active card."""

    def __init__(self, commands_url: str):
        self.cpo = PartyFactory(country_code="NL", party_id="ALL", role=Party.Role.CPO, name="Allego")
        self.connection = PartnerConnectionFactory(
            party=self.cpo,
            endpoints=[{"identifier": "commands", "role": "RECEIVER", "url": commands_url}],
            tokens__from_them=CPO_TOKEN,
            tokens__to_them=OUR_TOKEN,
        )
        RoamingAgreementFactory(partner=self.cpo, direction=RoamingAgreement.Direction.OUR_CARDS_AT_THEIR_STATIONS)
        self.location = LocationFactory(party=self.cpo, ocpi_id="LOC1", name="Gent Zuid")
        self.evse = EVSEFactory(location=self.location, uid="3256", evse_id="NL*ALL*E3256", capabilities=REMOTE)
        ConnectorFactory(evse=self.evse)
        self.driver = DriverFactory()
        self.card = CardFactory(driver=self.driver)

    @property
    def start_url(self) -> str:
        return f"/charging/start/{self.location.pk}/{self.evse.uid}/"


@pytest.fixture
def world(ocpi_peer):
    return World(ocpi_peer.url("/ocpi/cpo/2.2.1/commands"))


def accept(timeout: int = 30):
    return lambda request: ok({"result": "ACCEPTED", "timeout": timeout})


def press_start(client, world, capture, key: str = "press-1"):
    with capture(execute=True):
        return client.post(world.start_url, {"card": world.card.pk, "idempotency_key": key})


def live(client) -> dict:
    return client.get("/charging/live.json").json()


def post_result(ocpi, command: Command, result: dict, **kwargs):
    """The CPO's CommandResult at our response_url for `command` (the shared `ocpi` call)."""
    return ocpi("POST", f"/ocpi/emsp/2.2.1/commands/{command.type}/{command.uid}", result, **kwargs)


@override_settings(**FAST)
def test_start_sends_one_start_session_and_follows_the_result(
    ocpi, client, world, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", accept(30))
    client.force_login(world.driver.user)
    confirm = client.get(world.start_url)
    assert confirm.status_code == 200 and "Start charging" in confirm.content.decode()

    assert press_start(client, world, django_capture_on_commit_callbacks).status_code == 302
    assert press_start(client, world, django_capture_on_commit_callbacks).status_code == 302  # double press
    command = Command.objects.get()
    assert len(ocpi_peer.requests) == 1
    request = ocpi_peer.requests[0]
    assert request.header("Authorization") == authorization_header(OUR_TOKEN)
    body = request.json()
    assert body["response_url"] == f"https://roaming.example/ocpi/emsp/2.2.1/commands/START_SESSION/{command.uid}"
    assert body["token"] == token_payload(world.card)
    assert (body["location_id"], body["evse_uid"]) == ("LOC1", "3256")
    assert command.status == Command.Status.SENT and command.timeout_seconds == 30
    assert live(client)["command"]["status"] == "pending"

    # Only the CPO we sent it to may answer; anyone else gets the same 404 as for an unknown command.
    intruder = PartyFactory(country_code="BE", party_id="EVL", role=Party.Role.CPO)
    PartnerConnectionFactory(party=intruder, tokens__from_them="intruder")
    RoamingAgreementFactory(partner=intruder)
    refused = post_result(ocpi, command, {"result": "REJECTED"}, token="intruder")
    assert refused.status_code == 404 and refused.json()["status_code"] == 2000
    bad = post_result(ocpi, command, {"result": "MAYBE"})
    assert bad.json()["status_code"] == 2001 and "result" in bad.json()["status_message"]
    assert live(client)["command"]["status"] == "pending"

    answered = post_result(ocpi, command, {"result": "ACCEPTED"})
    assert answered.status_code == 200 and answered.json()["status_code"] == 1000
    shown = live(client)["command"]
    assert shown["status"] == "accepted" and "plug in" in shown["text"]


@override_settings(**FAST)
def test_cpo_unreachable_is_failed_after_connection_retries(client, django_capture_on_commit_callbacks):
    world = World(f"http://127.0.0.1:{closed_port()}/ocpi/cpo/2.2.1/commands")
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    command = Command.objects.get()
    assert command.status == Command.Status.FAILED and command.attempts == 3
    assert "transport" in command.error
    shown = live(client)["command"]
    assert shown["status"] == "failed" and "could not be reached" in shown["text"]


@override_settings(**FAST)
def test_cpo_closing_the_connection_after_reading_the_command_is_not_resent(
    ocpi, client, world, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", lambda r: dropped())
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    command = Command.objects.get()
    # The CPO read the whole command before hanging up: it may be starting the charge point, so no resend.
    starts = [r for r in ocpi_peer.requests if r.path == "/ocpi/cpo/2.2.1/commands/START_SESSION"]
    assert len(starts) == 1 and len(ocpi_peer.requests) == 1
    assert starts[0].json()["authorization_reference"] == command.uid.hex
    assert command.status == Command.Status.FAILED and command.attempts == 1
    assert "Connection aborted" in command.error
    shown = live(client)["command"]
    assert shown["status"] == "failed" and shown["status_label"] == "Failed"
    assert shown["text"] == (
        "The operator's system did not answer; it may still start — check the session or try again."
    )
    assert shown["retry_url"] == world.start_url
    # It did start after all: the CPO's result on our response_url is the truth.
    post_result(ocpi, command, {"result": "ACCEPTED"})
    assert live(client)["command"]["status"] == "accepted"


@override_settings(**FAST)
def test_cpo_rejects(client, world, ocpi_peer, django_capture_on_commit_callbacks):
    ocpi_peer.route(
        "POST",
        r"/ocpi/cpo/2\.2\.1/commands/START_SESSION",
        lambda r: ok({"result": "REJECTED", "timeout": 0, "message": [{"language": "en", "text": "EVSE reserved"}]}),
    )
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    shown = live(client)["command"]
    assert shown["status"] == "rejected" and shown["reason"] == "EVSE reserved"
    assert shown["retry_url"] == world.start_url  # the driver can try again from the session page


@override_settings(**FAST)
@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (PeerResponse({"status_code": 2003, "status_message": "Unknown location"}), Command.Status.REJECTED),
        (PeerResponse(raw=b"<html>bad gateway</html>", status=502), Command.Status.FAILED),
        (ok({"result": "ACCEPTED"}), Command.Status.FAILED),  # no timeout: not a CommandResponse
    ],
)
def test_cpo_errors_are_not_resent(client, world, ocpi_peer, django_capture_on_commit_callbacks, answer, status):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", lambda r: answer)
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    assert Command.objects.get().status == status
    assert len(ocpi_peer.requests) == 1  # a request that may have reached the CPO is never sent again


@override_settings(**FAST)
def test_no_result_within_the_cpos_timeout_is_timed_out(
    ocpi, client, world, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", accept(timeout=1))
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    assert live(client)["command"]["status"] == "pending"
    time.sleep(1.2)
    shown = live(client)["command"]  # checked on read: no need to wait for the periodic task
    assert shown["status"] == "timed_out" and shown["text"] == "No answer from the charge point in time."
    # The result arrives after all: it is the truth, so it is recorded.
    post_result(ocpi, Command.objects.get(), {"result": "ACCEPTED"})
    assert live(client)["command"]["status"] == "accepted"


def test_periodic_expiry_times_out_and_fails_unsent_commands(world):
    now = timezone.now()
    waiting = Command.objects.create(
        type="START_SESSION",
        partner=world.cpo,
        driver=world.driver,
        status=Command.Status.SENT,
        deadline_at=now - timezone.timedelta(seconds=1),
    )
    stuck = Command.objects.create(type="START_SESSION", partner=world.cpo, driver=world.driver)
    Command.objects.filter(pk=stuck.pk).update(created_at=now - timezone.timedelta(minutes=10))
    from charging.tasks import expire_commands

    assert expire_commands.delay().get() == 2
    waiting.refresh_from_db()
    stuck.refresh_from_db()
    assert (waiting.status, stuck.status) == (Command.Status.TIMED_OUT, Command.Status.FAILED)
    # A command given up on can no longer be sent by a late worker.
    assert services.send_command(stuck.pk).status == Command.Status.FAILED and stuck.send_started_at is None


@override_settings(**FAST)
def test_cannot_start_without_an_active_card_or_where_it_cannot_work(client, world, ocpi_peer):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", accept())
    client.force_login(world.driver.user)
    world.card.status = "blocked"
    world.card.save()
    page = client.get(world.start_url)
    assert "active MobilityPlus card" in page.content.decode()
    assert client.post(world.start_url, {"card": world.card.pk, "idempotency_key": "k"}).status_code == 400

    world.card.status = "active"
    world.card.save()
    world.evse.status = "OUTOFORDER"
    world.evse.save()
    assert "out of order" in client.get(world.start_url).content.decode().lower()
    world.evse.status = "AVAILABLE"
    world.evse.save()
    world.connection.endpoints = []
    world.connection.save()
    assert "does not take starts from the app" in client.get(world.start_url).content.decode()

    other_driver_card = CardFactory()
    world.connection.endpoints = [{"identifier": "commands", "role": "RECEIVER", "url": ocpi_peer.url("/x")}]
    world.connection.save()
    forged = client.post(world.start_url, {"card": other_driver_card.pk, "idempotency_key": "k2"})
    assert forged.status_code == 400
    no_agreement = LocationFactory()
    evse = EVSEFactory(location=no_agreement)
    assert "does not accept" in client.get(f"/charging/start/{no_agreement.pk}/{evse.uid}/").content.decode()
    assert client.get(f"/charging/start/{world.location.pk}/NOPE/").status_code == 404
    assert not Command.objects.exists() and not ocpi_peer.requests


@override_settings(**FAST)
def test_stop_sends_stop_session_once(ocpi, client, world, ocpi_peer, django_capture_on_commit_callbacks):
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/STOP_SESSION", accept(20))
    session = SessionFactory(party=world.cpo, ocpi_id="S-77", card=world.card, location=world.location, evse=world.evse)
    client.force_login(world.driver.user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/charging/stop/{session.pk}/", {"idempotency_key": "stop-1"})
        client.post(f"/charging/stop/{session.pk}/", {"idempotency_key": "stop-1"})
    assert len(ocpi_peer.requests) == 1
    command = Command.objects.get()
    assert ocpi_peer.requests[0].path == "/ocpi/cpo/2.2.1/commands/STOP_SESSION"
    assert ocpi_peer.requests[0].json() == {"response_url": services.response_url(command), "session_id": "S-77"}
    post_result(ocpi, command, {"result": "ACCEPTED"})
    assert live(client)["command"]["text"] == "The charge point is stopping the session."


@override_settings(CHARGE_POINT_BACKEND_URL="http://127.0.0.1:9/ocpp")  # nothing listens on port 9
def test_start_at_our_own_station_with_our_central_system_unreachable_fails_and_says_so(
    client, django_capture_on_commit_callbacks
):
    """The reachable case (a real session follows) is in tests/test_charge_point_backend.py."""
    location = LocationFactory(party=own_party(), ocpi_id="MBP-1")
    evse = EVSEFactory(location=location, uid="MBP-1-1", capabilities=REMOTE)
    driver = DriverFactory()
    card = CardFactory(driver=driver)
    client.force_login(driver.user)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/charging/start/{location.pk}/{evse.uid}/", {"card": card.pk, "idempotency_key": "own"})
    command = Command.objects.get()
    assert command.status == Command.Status.FAILED and command.request_payload["token"]["uid"] == card.uid
    assert not command.maybe_delivered  # a connection never made: the driver may simply try again
    assert live(client)["command"]["status"] == "failed"


@override_settings(OCPI_BASE_URL="https://roaming.example")
def test_command_goes_through_a_real_celery_worker(client, ocpi_peer, redis_celery_worker):
    world = World(ocpi_peer.url("/ocpi/cpo/2.2.1/commands"))
    ocpi_peer.route("POST", r"/ocpi/cpo/2\.2\.1/commands/START_SESSION", accept(30))
    client.force_login(world.driver.user)
    client.post(world.start_url, {"card": world.card.pk, "idempotency_key": "via-redis"})
    client.post(world.start_url, {"card": world.card.pk, "idempotency_key": "via-redis"})
    for _ in range(100):
        if Command.objects.get().status != Command.Status.PENDING:
            break
        time.sleep(0.1)
    assert Command.objects.get().status == Command.Status.SENT
    time.sleep(0.3)
    assert len(ocpi_peer.requests) == 1


@override_settings(**FAST, CHARGING_COMMAND_HTTP_TIMEOUT_S=0.3)
def test_cpo_too_slow_to_answer_is_failed_not_resent_and_a_later_result_still_counts(
    ocpi, client, world, ocpi_peer, django_capture_on_commit_callbacks
):
    ocpi_peer.route(
        "POST",
        r"/ocpi/cpo/2\.2\.1/commands/START_SESSION",
        lambda r: (time.sleep(1), ok({"result": "ACCEPTED", "timeout": 30}))[1],
    )
    client.force_login(world.driver.user)
    press_start(client, world, django_capture_on_commit_callbacks)
    command = Command.objects.get()
    # The request may have reached the CPO: resending could start the charge point twice, so it is not resent.
    assert command.status == Command.Status.FAILED and command.attempts == 1
    time.sleep(0.8)
    assert len(ocpi_peer.requests) == 1
    # The CPO did get it and reports the charge point started: the driver sees the truth.
    post_result(ocpi, command, {"result": "ACCEPTED"})
    assert live(client)["command"]["status"] == "accepted"
