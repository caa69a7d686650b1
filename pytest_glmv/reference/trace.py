"""--trace FILE: one JSONL record per request, timed with CLOCK_MONOTONIC.

time.monotonic() is CLOCK_MONOTONIC on Linux, shared by every process on the
machine, so a client's own monotonic stamps can be held against these.

Two stamps for the request's start: `arrived`, when its first bytes were read off
the connection, and `received`, when the handler began (aiohttp has parsed it by
then: ~0.2 ms later on a 2-CPU host). `arrived` is when the server had the
request, so the server's own TTFT runs from there; `received` stays for
comparison. `arrived` needs the connection hook installed by stamp_arrivals()
(the server process does it when tracing); without it, it equals `received`.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# typed request storage where aiohttp has it (3.13+), a plain key before
ARRIVED: Any = web.RequestKey("glmv_arrived", float) if hasattr(web, "RequestKey") else "glmv_arrived"


# first-bytes time of the request now in progress, per connection (aiohttp's protocol has __slots__)
_ARRIVED: dict[int, float] = {}


def stamp_arrivals() -> None:
    """Note when each request's first bytes arrive. Clients that wait for an answer before the next
    request on a connection (HTTP/1.1 without pipelining: aiohttp, httpx, vllm bench serve) make the
    first read after a finished request the next request's arrival."""
    from aiohttp import web_protocol

    cls = web_protocol.RequestHandler
    if getattr(cls, "_glmv_stamped", False):
        return
    received, lost = cls.data_received, cls.connection_lost

    def data_received(self: Any, data: bytes) -> None:
        _ARRIVED.setdefault(id(self), time.monotonic())
        received(self, data)

    def connection_lost(self: Any, exc: BaseException | None) -> None:
        _ARRIVED.pop(id(self), None)
        lost(self, exc)

    cls.data_received, cls.connection_lost = data_received, connection_lost  # type: ignore[method-assign]
    cls._glmv_stamped = True  # type: ignore[attr-defined]


@web.middleware
async def arrivals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hand the request its arrival stamp; once it is answered, the next read on the connection is the
    next request's (a non-streamed body is written after this returns, but no client sends before it)."""
    key = id(request.protocol)
    request[ARRIVED] = _ARRIVED.get(key)
    try:
        return await handler(request)
    finally:
        _ARRIVED.pop(key, None)


class Tracer:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def start(self, request_id: str, stream: bool, arrived: float | None = None) -> "Record":
        return Record(self, request_id, stream, arrived)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


class Record:
    def __init__(self, tracer: Tracer, request_id: str, stream: bool, arrived: float | None = None) -> None:
        self.tracer = tracer
        now = time.monotonic()
        arrived = now if arrived is None else min(arrived, now)
        self.data: dict[str, Any] = {"request_id": request_id, "stream": stream, "arrived": arrived,
                                     "received": now, "chunks": [], "status": None}

    def chunk(self) -> float:
        """Stamp one chunk as written (after the transport took it)."""
        now = time.monotonic()
        self.data["chunks"].append(now)
        return now

    def finish(self, status: int, **extra: Any) -> None:
        self.data["status"] = status
        self.data["finished"] = time.monotonic()
        chunks = self.data["chunks"]
        self.data["first_chunk"] = chunks[0] if chunks else None
        self.data.update(extra)
        self.tracer.write(self.data)
