"""An open-loop HTTP client for the benches: requests sent at a stated rate, each timed from when it was due.

    python bench/paced_client.py push|map RATE SECONDS PORT FILE

`push`: status PATCHes of random EVSEs from FILE (lines `token|country|party|location|uid|status`, as
bench/status_push.py writes them), each a status other than the EVSE's last two, with increasing last_updated;
a good answer is OCPI 1000. `map`: GETs of the paths in FILE (one a line); a good answer is HTTP 200.

Unlike `wrk` at full speed (a closed loop: a slow answer delays the next request, so a slow server is asked less
and its latency looks better than a driver or a partner sees it), requests leave when they are due whatever the
server does; a request waiting for a free connection waits on the clock. Keep-alive connections, at most
CONNECTIONS open. No Django here: the client is a light process of its own. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

CONNECTIONS = 64
ANSWER_TIMEOUT_S = 10.0
STATUSES = ["AVAILABLE", "CHARGING", "BLOCKED", "RESERVED", "OUTOFORDER", "INOPERATIVE", "UNKNOWN"]


class Requests:
    """The requests of one kind, built when due."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        with open(path) as listed:
            lines = [line.rstrip("\n") for line in listed if line.strip()]
        if kind == "push":
            self.evses = [line.split("|") for line in lines]
            self.last = {index: (evse[5], evse[5]) for index, evse in enumerate(self.evses)}
        else:
            self.paths = lines
        self.serial = 0

    def next(self) -> tuple[bytes, bytes]:
        """(the request, a marker a good answer holds)."""
        self.serial += 1
        if self.kind == "map":
            path = random.choice(self.paths)
            return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(), b""
        index = random.randrange(len(self.evses))
        token, country, party, location, uid, _status = self.evses[index]
        before, last = self.last[index]
        status = random.choice([s for s in STATUSES if s not in (before, last)])
        self.last[index] = (last, status)
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        body = json.dumps({"status": status, "last_updated": stamp}).encode()
        head = (
            f"PATCH /ocpi/emsp/2.2.1/locations/{country}/{party}/{location}/{uid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-Request-ID: paced-{self.serial}\r\nX-Correlation-ID: paced-{self.serial}\r\n\r\n"
        )
        return head.encode() + body, b'"status_code": 1000'


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


async def run(kind: str, rate: float, seconds: float, port: int, path: str) -> dict:
    requests = Requests(kind, path)
    loop = asyncio.get_running_loop()
    due_queue: asyncio.Queue = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    lag = 0.0

    async def connection() -> None:
        nonlocal errors
        reader = writer = None
        while True:
            item = await due_queue.get()
            if item is None:
                break
            due, request, marker = item
            try:
                async with asyncio.timeout(ANSWER_TIMEOUT_S):
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(request)
                    answer = await _answer(reader)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if answer.startswith(b"HTTP/1.1 200") and marker in answer:
                latencies.append(loop.time() - due)
            else:
                errors += 1
            if b"connection: close" in answer.lower():
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    total = int(rate * seconds)
    start = loop.time() + 0.05
    for serial in range(total):
        due = start + serial / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, loop.time() - due)
        due_queue.put_nowait((due, *requests.next()))
    for _ in workers:
        due_queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - start
    return {
        **latency_figures(latencies, total, errors, lag),
        "per_s": len(latencies) / elapsed,
        "client_cpu_s": time.process_time(),  # what the load itself cost the shared machine
    }


def latency_figures(latencies: list[float], sent: int, errors: int, lag: float) -> dict:
    """What an open-loop run measured: answers, errors, percentiles (ms) and how late the client itself was."""
    latencies = sorted(latencies)

    def pct(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000 if latencies else -1.0

    return {
        "sent": sent,
        "answered": len(latencies),
        "errors": errors,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else -1.0,
        "client_lag_ms": lag * 1000,  # how late the client itself sent a request (its own CPU starved)
    }


if __name__ == "__main__":
    kind, rate, seconds, port, path = sys.argv[1:6]
    print(json.dumps(asyncio.run(run(kind, float(rate), float(seconds), int(port), path))))
