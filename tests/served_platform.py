"""The platform served by gunicorn in a process of its own, configured only by the environment given to it.

For tests of what a real server does at start-up and answers over HTTP (production settings, a stalled database).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Test-only keys: what a production environment must provide, and nothing else.
PRODUCTION_KEYS = {
    "SECRET_KEY": "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "OCPI_TOKEN_ENCRYPTION_KEY": "dGVzdHMtb25seS1rZXktbm90LWZvci1wcm9kdWN0aW8=",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(**overrides: str) -> dict[str, str]:
    """A production environment (DEBUG unset) served over plain HTTP on 127.0.0.1, as behind a TLS proxy."""
    import os

    env = {
        "PATH": os.environ["PATH"],
        **PRODUCTION_KEYS,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


class ServedPlatform:
    def __init__(self, url: str, log_path: Path, pid: int):
        self.url = url
        self.log_path = log_path
        self.pid = pid  # the server's main process (gunicorn's arbiter, granian's)

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def served(env: dict[str, str], log_path: Path, *, production_config: bool = False) -> Iterator[ServedPlatform]:
    """gunicorn (one sync worker; or with `production_config`, mobilityplus/gunicorn.conf.py, in a session of its
    own as a service manager starts it) on a free port; yields once its worker answers HTTP."""
    port = free_port()
    config = ["-c", "mobilityplus/gunicorn.conf.py"] if production_config else []
    command = [sys.executable, "-m", "gunicorn", *config, "mobilityplus.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", "1"]
    with _running(command, env, log_path, port, session=production_config) as platform:
        yield platform


@contextmanager
def served_ingest(env: dict[str, str], log_path: Path, *, workers: int = 1) -> Iterator[ServedPlatform]:
    """The status ingest pool's server (`python -m mobilityplus.ingest_server`: granian) on a free port, in a
    session of its own as a service manager starts it; yields once a worker answers HTTP."""
    port = free_port()
    env = {**env, "INGEST_BIND": f"127.0.0.1:{port}", "INGEST_WORKERS": str(workers)}
    with _running([sys.executable, "-m", "mobilityplus.ingest_server"], env, log_path, port, session=True) as platform:
        yield platform


@contextmanager
def _running(command: list[str], env: dict[str, str], log_path: Path, port: int, session: bool):
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=session
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"{command[-1]} exited: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"{command[-1]} did not start: {log_path.read_text()}"
            try:
                # Any answer will do (a 404 touches no database): the worker has loaded the platform.
                urllib.request.urlopen(f"http://127.0.0.1:{port}/served-platform-ready", timeout=5)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        yield ServedPlatform(f"http://127.0.0.1:{port}", log_path, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)


class StalledServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a stalled database or broker."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)  # held open, never read from nor written to

    def __enter__(self) -> StalledServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for conn in self.accepted:
            conn.close()
