"""A small OCPI party on 127.0.0.1 for tests: a real HTTP server whose routes each test defines.

    peer.route("GET", r"/ocpi/versions", lambda req: envelope([...]))
    peer.url("/ocpi/versions")  -> "http://127.0.0.1:PORT/ocpi/versions"
    peer.requests               -> every request received, in order (PeerRequest)

A handler returns a PeerResponse, or a dict/list (sent as JSON with HTTP 200). A handler may sleep
to play a slow partner, or return `dropped()` to close the connection without answering. Requests with
no matching route get HTTP 404 with an OCPI envelope.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from roaming.ocpi.envelope import envelope


@dataclass
class PeerRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    match: re.Match | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class PeerResponse:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as is (for garbage answers)
    drop: bool = False  # read the request, then close the connection without answering


def dropped() -> PeerResponse:
    """No answer at all: the connection is closed after the request was read (a CPO crashing mid-call)."""
    return PeerResponse(drop=True)


def ok(data: Any = None, **headers: str) -> PeerResponse:
    """HTTP 200 with an OCPI 1000 envelope around `data`."""
    return PeerResponse(envelope(data), headers={k.replace("_", "-"): v for k, v in headers.items()})


class OcpiPeer:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Callable[[PeerRequest], Any]]] = []
        self.requests: list[PeerRequest] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and the client's delayed
                # ACK add 40 ms to every answer on a kept-alive connection.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = PeerRequest(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                )
                peer.requests.append(request)
                response = PeerResponse(envelope(None, 2000, "no such route"), status=404)
                for method, pattern, handler in peer.routes:
                    match = pattern.fullmatch(parts.path)
                    if method == self.command and match:
                        request.match = match
                        result = handler(request)
                        response = result if isinstance(result, PeerResponse) else PeerResponse(result)
                        break
                if response.drop:
                    # The request was read in full above; closing now is what the client sees as
                    # "Connection aborted" / RemoteDisconnected.
                    self.close_connection = True
                    return
                payload = response.raw if response.raw is not None else json.dumps(response.body).encode()
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, method: str, pattern: str, handler: Callable[[PeerRequest], Any]) -> None:
        """Add a route; later routes for the same path win, so a test can change behaviour midway."""
        self.routes.insert(0, (method.upper(), re.compile(pattern), handler))

    def start(self) -> OcpiPeer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
