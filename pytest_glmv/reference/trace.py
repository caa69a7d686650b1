"""--trace FILE: one JSONL record per request, timed with CLOCK_MONOTONIC.

time.monotonic() is CLOCK_MONOTONIC on Linux, shared by every process on the
machine, so a client's own monotonic stamps can be held against these.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class Tracer:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def start(self, request_id: str, stream: bool) -> "Record":
        return Record(self, request_id, stream)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


class Record:
    def __init__(self, tracer: Tracer, request_id: str, stream: bool) -> None:
        self.tracer = tracer
        self.data: dict[str, Any] = {"request_id": request_id, "stream": stream, "received": time.monotonic(),
                                     "chunks": [], "status": None}

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
