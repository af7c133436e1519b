"""The server-wide bulkhead on waits for eMSPs' real-time answers (cards/realtime_waits.py).

Only CARDS_REALTIME_PARTNER_WAITING requests of the server may wait on one eMSP and CARDS_REALTIME_WAITING_TOTAL
on all: the slots hold across processes, between threads, and free themselves when their holder dies. Against
gunicorn from mobilityplus/gunicorn.conf.py (3 workers: gthread as in production, and sync, where each waiting
request holds a whole worker; Redis, PostgreSQL) with an eMSP on 127.0.0.1 that stalls: our own cards and a
healthy eMSP keep being answered at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection as db_connection

from cards.decision_log import decision_log
from cards.realtime_circuit import circuit_key, partner_circuits
from cards.realtime_waits import NoSlot, held_slots, take_wait_slot
from roaming.selectors import own_party
from tests.conftest import TEST_REDIS_URL
from tests.factories import CardFactory, EVSEFactory
from tests.ocpi_peer import OcpiPeer, ok
from tests.served_platform import free_port
from tests.test_faults_authorization import SERVICE_TOKEN, StallingEmsp, ask, emsp

ROOT = Path(__file__).resolve().parent.parent

HOLDER = """
import sys, time, django
django.setup()
from cards.realtime_waits import take_wait_slot
slot = take_wait_slot(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_slots_hold_across_processes_and_threads_and_a_killed_holder_frees_them(settings, tmp_path):
    settings.CARDS_REALTIME_WAITS_DIR = str(tmp_path)
    settings.CARDS_REALTIME_PARTNER_WAITING = 1
    settings.CARDS_REALTIME_WAITING_TOTAL = 2
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mobilityplus.settings", "CARDS_REALTIME_WAITS_DIR": str(tmp_path)}
    # Another worker process waits on eMSP 7.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "7:aaaa"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert held_slots("7:aaaa") == 1 and held_slots() == 1
        with pytest.raises(NoSlot, match="1 request\\(s\\) of this server already waiting for it"):
            take_wait_slot("7:aaaa")
        # Another eMSP has its own slot; it takes the second (and last) of the total.
        other = take_wait_slot("8:bbbb")
        assert held_slots() == 2
        with pytest.raises(NoSlot, match="2 request\\(s\\) of this server already waiting for eMSPs"):
            take_wait_slot("9:cccc")
        assert held_slots("9:cccc") == 0  # refused by the total: its own slot was given back
        # A thread of this very process is refused eMSP 8's slot too (locks per open file, not per process).
        refused: list[Exception] = []
        thread = threading.Thread(target=lambda: refused.extend(_refusal("8:bbbb")))
        thread.start()
        thread.join()
        assert len(refused) == 1
        other.release()
        other.release()  # twice is harmless
        assert held_slots("8:bbbb") == 0 and held_slots() == 1
    finally:
        holder.kill()  # the worker dies (SIGKILL): the kernel drops its locks
        holder.wait()
    slot = take_wait_slot("7:aaaa")
    assert held_slots("7:aaaa") == 1
    slot.release()


def _refusal(key: str) -> list[Exception]:
    try:
        take_wait_slot(key).release()
    except NoSlot as refusal:
        return [refusal]
    return []


def test_without_a_usable_directory_the_wait_goes_ahead_under_the_per_process_limits(settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings.CARDS_REALTIME_WAITS_DIR = str(blocker / "waits")  # cannot be created: a file is in the way
    slot = take_wait_slot("7:aaaa")
    assert slot.descriptors == []
    slot.release()


@pytest.fixture
def decisions_written():
    yield
    # Nothing buffered outlives this test's database (a row written late would land in a later test's tables).
    deadline = time.monotonic() + 10
    while decision_log.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    decision_log.discard()


def test_an_emsp_whose_slot_is_held_is_answered_from_the_cache_then_asked_again_once_it_is_free(
    live_server, settings, tmp_path, decisions_written
):
    """A request refused a slot gives its per-process ticket back: more refusals than the per-process limit (4)
    still leave the eMSP askable once the waiting request is done."""
    settings.CARDS_BACKEND_API_TOKEN = SERVICE_TOKEN
    settings.CARDS_REALTIME_WAITS_DIR = str(tmp_path)
    settings.CARDS_REALTIME_PARTNER_WAITING = 1  # as for sync workers
    partner_circuits.reset()
    peer = OcpiPeer().start()
    try:
        peer.route("POST", r"/emsp/tokens/.*/authorize", lambda r: ok({"allowed": "ALLOWED"}))
        party = emsp(peer, "0K0K0002", "HEB")
        evse = EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GENT-02", uid="BE*MBP*E0043")
        waiting = take_wait_slot(circuit_key(party.pk, peer.url("/emsp/tokens")))  # another worker waits on it
        for _ in range(6):
            answer, elapsed = ask(live_server.url, evse, "0K0K0002")
            assert answer["path"] == "fallback" and answer["allowed"] == "ALLOWED"
            assert "1 request(s) of this server already waiting for it" in answer["reason"]
        assert peer.requests == []
        waiting.release()
        answer, _ = ask(live_server.url, evse, "0K0K0002")
        assert answer["path"] == "realtime" and len(peer.requests) == 1
    finally:
        peer.stop()
        partner_circuits.reset()


# -- gunicorn as in production, one eMSP stalling ------------------------------------------------------------------


SYNC = {
    "GUNICORN_WORKER_CLASS": "sync",
    "GUNICORN_THREADS": "1",  # more threads would make gunicorn use gthread
    "CARDS_REALTIME_PARTNER_WAITING": "1",
    "CARDS_REALTIME_WAITING_TOTAL": "2",
}


@pytest.fixture
def production_gunicorn(transactional_db, tmp_path):
    """Start gunicorn from mobilityplus/gunicorn.conf.py (3 workers) with extra environment; yields its URL."""
    started = []

    def start(**extra: str) -> str:
        database = db_connection.settings_dict
        credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
        port = free_port()
        env = {
            **os.environ,
            "DEBUG": "true",  # the test process's keys (partner tokens it encrypted), eMSPs on 127.0.0.1
            "OCPI_ALLOW_PRIVATE_NETWORK_URLS": "true",
            "DATABASE_URL": f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
            "REDIS_URL": TEST_REDIS_URL,
            "CARDS_BACKEND_API_TOKEN": SERVICE_TOKEN,
            "CARDS_REALTIME_DEADLINE_S": "2.0",
            "CARDS_REALTIME_WAITS_DIR": str(tmp_path / f"waits-{port}"),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "3",
            "LOG_LEVEL": "WARNING",
            **extra,
        }
        for name in ("GUNICORN_WORKER_CLASS", "GUNICORN_THREADS"):  # production's defaults unless `extra` says
            if name not in extra:
                env.pop(name, None)
        log_path = tmp_path / f"gunicorn-{port}.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "mobilityplus/gunicorn.conf.py", "mobilityplus.wsgi"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(server)
        deadline = time.monotonic() + 90
        # Every worker serves (its card cache warmed) before the test begins.
        while log_path.read_text().count("cards cached") < 3:
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        worker_class = extra.get("GUNICORN_WORKER_CLASS", "gthread")  # gthread: the production default
        assert f"Using worker: {worker_class}" in log_path.read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for server in started:
        server.terminate()
        server.wait(timeout=30)


def stall_while_probing(url: str, evse, stalling_uid: str, own_uid: str, healthy_uid: str) -> tuple[list, list, list]:
    """20 clients keep asking for the stalling eMSP's token while one asks, in turn, for our own card and
    a healthy eMSP's token for 1.5 s; (own answers, healthy answers, stalled answers), each (answer, seconds)."""
    stop = threading.Event()
    stalled: list[tuple[dict, float]] = []

    def stalling_client() -> None:
        while not stop.is_set():
            stalled.append(ask(url, evse, stalling_uid))
            stop.wait(0.1)

    clients = [threading.Thread(target=stalling_client) for _ in range(20)]
    for client in clients:
        client.start()
    time.sleep(0.3)  # the burst is in: the calls to the stalling eMSP hang now
    own, healthy = [], []
    timer = threading.Timer(1.5, stop.set)  # all stop before the first wait's 2 s deadline
    timer.start()
    while not stop.is_set():
        own.append(ask(url, evse, own_uid))
        healthy.append(ask(url, evse, healthy_uid))
        time.sleep(0.05)
    timer.join()
    for client in clients:
        client.join(timeout=30)
    return own, healthy, stalled


@pytest.fixture
def stalling_world(transactional_db):
    slow, healthy = StallingEmsp(), OcpiPeer().start()
    healthy.route("POST", r"/emsp/tokens/.*/authorize", lambda r: ok({"allowed": "ALLOWED"}))
    emsp(slow, "5L0W0001", "SLO")
    emsp(healthy, "0K0K0001", "HEA")
    evse = EVSEFactory(location__party=own_party(), location__ocpi_id="BE-GENT-01", uid="BE*MBP*E0042")
    own = CardFactory(uid="04AA0001")
    yield slow, healthy, evse, own
    slow.stop()
    healthy.stop()


def test_with_sync_workers_a_stalling_emsp_holds_one_worker_and_our_cards_are_answered_at_once(
    production_gunicorn, stalling_world
):
    slow, healthy_peer, evse, own_card = stalling_world
    url = production_gunicorn(**SYNC)
    own, healthy, stalled = stall_while_probing(url, evse, "5L0W0001", own_card.uid, "0K0K0001")
    # Our own cards: decided locally by the workers no eMSP holds, never queued behind the stall.
    assert {answer["path"] for answer, _ in own} == {"local"} and len(own) >= 5
    assert max(elapsed for _, elapsed in own) < 1.0  # half the 2 s deadline every held worker would cost
    # The healthy eMSP is asked every time (its server saw each call) and answers.
    assert {answer["path"] for answer, _ in healthy} == {"realtime"}
    assert len([r for r in healthy_peer.requests if "0K0K0001" in r.path]) == len(healthy)
    # One request of the server at a time waits on the stalling eMSP: in 1.8 s with a 2 s deadline, one call
    # (a second only if a client's request outlived the 0.2 s margin on a loaded machine).
    assert 1 <= len(slow.requests) <= 2
    assert {answer["path"] for answer, _ in stalled} == {"fallback"}
    assert {answer["allowed"] for answer, _ in stalled} == {"ALLOWED"}  # its drivers charge on the cached token
    assert any("of this server already waiting for it" in answer["reason"] for answer, _ in stalled)


def test_with_the_default_thread_workers_a_stalling_emsp_gets_the_servers_few_waits_and_nobody_queues(
    production_gunicorn, stalling_world
):
    slow, healthy_peer, evse, own_card = stalling_world
    url = production_gunicorn()  # 3 gthread workers x 8 threads, 4 waits per eMSP and 12 in all for the server
    own, healthy, stalled = stall_while_probing(url, evse, "5L0W0001", own_card.uid, "0K0K0001")
    assert {answer["path"] for answer, _ in own} == {"local"} and max(elapsed for _, elapsed in own) < 1.0
    assert {answer["path"] for answer, _ in healthy} == {"realtime"}
    # 4 waits for the whole server (not 4 per worker, 12): the rest of the burst is answered from the cache.
    assert 1 <= len(slow.requests) <= 4
    assert {answer["path"] for answer, _ in stalled} == {"fallback"}
    assert any("4 request(s) of this server already waiting for it" in answer["reason"] for answer, _ in stalled)


def test_without_the_server_wide_limit_the_stall_holds_every_sync_worker(production_gunicorn, stalling_world):
    """The same stall with one wait allowed per worker (the per-process limits only): our cards queue."""
    slow, _, evse, own_card = stalling_world
    url = production_gunicorn(**{**SYNC, "CARDS_REALTIME_PARTNER_WAITING": "3", "CARDS_REALTIME_WAITING_TOTAL": "3"})
    own, _, _ = stall_while_probing(url, evse, "5L0W0001", own_card.uid, "0K0K0001")
    assert len(slow.requests) >= 3  # every worker waits on it
    assert own[0][1] > 1.0  # the first of our cards waited for a worker to come free
