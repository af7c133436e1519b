"""Two pools on one machine (docs/scaling.md): the status ingest pool yields the CPU, the main pool does not.

`GUNICORN_NICE` nices the server's workers and, when the server leads a session of its own (as a service manager
starts it), its scheduling group: Linux shares the CPU between sessions before it looks at a process's nice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from django.db import connection as db_connection

from tests.conftest import TEST_REDIS_URL
from tests.served_platform import production_env, served

pytestmark = pytest.mark.django_db(transaction=True)


def _env(**overrides: str) -> dict[str, str]:
    database = db_connection.settings_dict
    credentials = database["USER"] + (f":{database['PASSWORD']}" if database.get("PASSWORD") else "")
    url = f"postgres://{credentials}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
    return production_env(DATABASE_URL=url, REDIS_URL=TEST_REDIS_URL, **overrides)


def _workers(arbiter: int) -> list[int]:
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == arbiter:
                workers.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return workers


def _autogroup_nice(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None  # a kernel without autogroups


def test_the_ingest_pool_runs_nicer_than_the_main_pool_and_both_answer(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with (
        served(_env(GUNICORN_NICE="7"), tmp_path / "ingest.log", production_config=True) as ingest,
        served(_env(), tmp_path / "main.log", production_config=True) as main,
    ):
        ingest_workers, main_workers = _workers(ingest.pid), _workers(main.pid)
        assert ingest_workers and main_workers
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in ingest_workers} == {min(19, base + 7)}
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in main_workers} == {base}
        if _autogroup_nice(ingest.pid) is not None:
            assert _autogroup_nice(ingest.pid) == 7 and _autogroup_nice(main.pid) == 0
        for pool in (ingest, main):
            assert requests.get(pool.url + "/healthz", timeout=10).status_code == 200
    # The test's own session is left alone (the servers led their own).
    assert _autogroup_nice(os.getpid()) in (None, 0)
