"""`make demo` on a fresh checkout: migrate, load demo data, serve the admin and /healthz."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env() -> dict[str, str]:
    """The environment the Makefile's demo target gives its commands."""
    makefile = (ROOT / "Makefile").read_text()
    assignments = re.search(r"^DEMO_ENV := (.*)$", makefile, re.MULTILINE).group(1)
    assert makefile.count("$(DEMO_ENV) $(PY) manage.py") == 3  # migrate, load_demo, runserver
    return dict(item.split("=", 1) for item in assignments.split())


def test_demo_serves_admin_login_and_health(tmp_path):
    # The embedded default: no DATABASE_URL server, no REDIS_URL; the variables `make demo` sets (DEMO_ENV).
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}", **demo_env()}
    assert env["DEBUG"] == "true"  # the demo asks for development mode; nothing else turns it on
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput"], ["load_demo"]):
        done = subprocess.run(manage + command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert "staff / mobilityplus-demo" in done.stdout

    port = free_port()
    server = subprocess.Popen(
        manage + ["runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        login = requests.get(f"{base}/admin/login/", timeout=5)
        assert login.status_code == 200
        assert 'name="username"' in login.text
        session = requests.Session()
        page = session.get(f"{base}/admin/login/", timeout=5)
        token = session.cookies["csrftoken"]
        logged_in = session.post(
            f"{base}/admin/login/?next=/admin/",
            data={"username": "staff", "password": "mobilityplus-demo", "csrfmiddlewaretoken": token},
            headers={"Referer": page.url},
            timeout=5,
        )
        assert logged_in.url.endswith("/admin/")
        assert "Roaming partners and agreements" in logged_in.text
    finally:
        server.terminate()
        server.wait(timeout=10)
