"""The raw HTTP client of the fixtures never reuses a connection the server may be closing.

vLLM's uvicorn closes an idle connection after 5 s; a client that reuses connections for as long sends,
now and then, into a connection the server is closing ("Server disconnected without sending a response").
The server below makes that race certain: a request that arrives on a connection idle for IDLE_CLOSE_S or
more is dropped unanswered, as if the keep-alive timer had fired at that moment.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import httpx
import pytest

from pytest_glmv.kit import evidence
from pytest_glmv.kit.evidence import KEEPALIVE_S, http_client

IDLE_CLOSE_S = KEEPALIVE_S + 0.5
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _serve(conn: socket.socket) -> None:
    last = time.monotonic()
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            if time.monotonic() - last >= IDLE_CLOSE_S:
                return  # the keep-alive timer "fired" as the request came in: close, no answer
            conn.sendall(RESPONSE)
            last = time.monotonic()


@pytest.fixture
def racy_server() -> Iterator[str]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    sock.close()


def test_a_connection_idle_past_the_keepalive_is_not_reused(racy_server: str) -> None:
    with http_client(racy_server, None, 10.0) as c:
        assert c.get("/health").status_code == 200
        time.sleep(IDLE_CLOSE_S + 0.3)
        assert c.get("/health").status_code == 200  # a new connection, not the one being closed


def test_the_sdk_clients_of_the_fixtures_do_not_reuse_it_either(racy_server: str) -> None:
    import openai

    with evidence.sdk_http_client(openai) as c:
        assert c.get(racy_server + "/health").status_code == 200
        time.sleep(IDLE_CLOSE_S + 0.3)
        assert c.get(racy_server + "/health").status_code == 200


def test_the_race_is_real_with_httpx_defaults(racy_server: str) -> None:
    # the same exchange with httpx's default 5 s reuse: the server drops it (what CI saw on vLLM)
    with httpx.Client(base_url=racy_server, timeout=10.0) as c:
        assert c.get("/health").status_code == 200
        time.sleep(IDLE_CLOSE_S + 0.3)
        with pytest.raises(httpx.RemoteProtocolError, match="Server disconnected without sending a response"):
            c.get("/health")
