"""wire.py: HTTP/1.1 response framing fed in every possible split, and connection handling."""
from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv.slo import wire

SSE = b"data: {\"choices\":[{\"delta\":{}}]}\n\n"
CHUNKED = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           + f"{len(SSE):x}\r\n".encode() + SSE + b"\r\n"
           + f"{len(SSE):X};ext=1\r\n".encode() + SSE + b"\r\n"
           + b"0\r\nx-trailer: 1\r\n\r\n")


def parse(raw: bytes, splits: list[int], *, eof: bool = False) -> tuple[wire.Response, bytes, list[float]]:
    """Feed raw cut at the given offsets (each piece stamped with its index); return the response,
    the body the sink saw and the stamps it was given."""
    got: list[bytes] = []
    stamps: list[float] = []

    async def main() -> wire.Response:
        resp = wire.Response(lambda data, now: (got.append(data), stamps.append(now)))
        cuts = [0, *splits, len(raw)]
        for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
            resp.feed(raw[a:b], float(i))
        if eof:
            resp.ended()
        return resp

    return asyncio.run(main()), b"".join(got), stamps


@pytest.mark.parametrize("cut", range(1, len(CHUNKED)))
def test_chunked_body_survives_any_split(cut: int) -> None:
    resp, body, _ = parse(CHUNKED, [cut])
    assert resp.done.done() and resp.done.exception() is None, cut
    assert (resp.status, resp.keep_alive, body) == (200, True, SSE + SSE)


def test_byte_by_byte_and_each_piece_keeps_its_read_time() -> None:
    resp, body, stamps = parse(CHUNKED, list(range(1, len(CHUNKED))))
    assert resp.done.result() is None and body == SSE + SSE
    head = CHUNKED.index(b"\r\n\r\n") + 4
    first_data = head + len(f"{len(SSE):x}\r\n")
    assert stamps[0] == float(first_data)  # the piece that carried the first body byte, not a later one


def test_content_length_interim_head_and_error_body() -> None:
    raw = (b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
           b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad request")
    resp, body, _ = parse(raw, [5, 60])
    assert resp.done.result() is None and resp.status == 400 and resp.reason == "Bad Request"
    assert resp.error_body == b"bad request" and body == b""  # only a 200's body goes to the sink


def test_body_framed_by_the_connection_end_and_http10_close() -> None:
    resp, body, _ = parse(b"HTTP/1.0 200 OK\r\n\r\n" + SSE, [20], eof=True)
    assert resp.done.result() is None and body == SSE and not resp.keep_alive


def test_connection_close_header_is_not_kept() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    resp, body, _ = parse(raw, [])
    assert resp.done.result() is None and body == b"ok" and not resp.keep_alive


@pytest.mark.parametrize("raw, eof, error", [
    (CHUNKED[:-20], True, "connection closed before the response was complete"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX", False, "chunk not followed by CRLF"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", False, "not an HTTP/1.x response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", False, "bad Content-Length"),
])
def test_malformed_or_cut_responses_fail_the_exchange(raw: bytes, eof: bool, error: str) -> None:
    resp, _, _ = parse(raw, [], eof=eof)
    assert resp.done.done() and error in str(resp.done.exception())
    assert not resp.keep_alive


def serve(answer: bytes, *, close: bool = False) -> Any:
    """A raw TCP server answering every request (read up to its body) with `answer`; counts connections."""
    state: dict[str, Any] = {"connections": 0, "requests": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                state["requests"].append(head + await reader.readexactly(length))
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return handle, state


def exchange_n(answer: bytes, n: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None,
               **kw: Any) -> tuple[list[Any], dict[str, Any]]:
    handle, state = serve(answer, **kw)

    async def main() -> list[Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        pool = wire.Pool(f"{scheme}://127.0.0.1:{port}/v1/chat/completions", {"Authorization": "Bearer k"})
        out = []
        try:
            for i in range(n):
                try:
                    out.append(await pool.exchange(pool.request(b'{"i":%d}' % i), lambda d, t: None, timeout))
                except wire.WireError as e:
                    out.append(e)
                await asyncio.sleep(0.01)
        finally:
            pool.close()
            server.close()
        return out

    return asyncio.run(main()), state


def test_keep_alive_reuses_one_connection_and_sends_the_exact_request() -> None:
    out, state = exchange_n(CHUNKED, 3)
    assert [r.status for r in out] == [200, 200, 200] and state["connections"] == 1
    first = state["requests"][0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Bearer k\r\n" in first and b"\r\nContent-Length: 7\r\n" in first
    assert first.endswith(b'\r\n\r\n{"i":0}')


def test_a_closed_connection_is_replaced_not_reused() -> None:
    out, state = exchange_n(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3, close=True)
    assert [r.status for r in out] == [200, 200, 200] and state["connections"] == 3


def test_refused_and_timed_out_exchanges_raise_wire_errors() -> None:
    async def refused() -> None:
        await wire.Pool("http://127.0.0.1:9/x").exchange(b"", lambda d, t: None)
    with pytest.raises(wire.WireError, match="cannot connect to 127.0.0.1:9"):
        asyncio.run(refused())
    out, _ = exchange_n(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", 1, timeout=0.3)  # 3 bytes never come
    assert isinstance(out[0], wire.WireError) and "within 0.3 s" in str(out[0])


@pytest.mark.parametrize("url", ["ftp://h/x", "http:///x", "localhost:8000/v1"])
def test_unsupported_urls_are_refused_up_front(url: str) -> None:
    with pytest.raises(ValueError, match="only http:// and https://"):
        wire.Pool(url)


def test_https_verifies_the_server_and_streams_when_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl executable to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert), "-days", "1"],
                   check=True, capture_output=True, timeout=60)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    out, _ = exchange_n(CHUNKED, 1, tls=tls)  # a self-signed certificate nobody trusts: refused
    assert isinstance(out[0], wire.WireError) and "SSLCertVerificationError" in str(out[0]), out[0]
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # OpenSSL's default trust store, as for any client
    out, state = exchange_n(CHUNKED, 2, tls=tls)
    assert [r.status for r in out] == [200, 200] and state["connections"] == 1


def test_a_cancelled_exchange_never_hands_its_half_read_connection_on() -> None:
    handle, state = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok")  # 3 bytes never come

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = wire.Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x")
        task = asyncio.ensure_future(pool.exchange(pool.request(b"{}"), lambda d, t: None))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool._idle == [] and pool._all == set()
        pool.close()
        server.close()

    asyncio.run(main())


@pytest.mark.skipif(not wire.KERNEL_STAMPS, reason="kernel receive stamps (SO_TIMESTAMPNS) are Linux's")
def test_a_read_is_stamped_when_the_kernel_got_it_not_when_the_loop_got_round_to_it() -> None:
    # The server (a thread) answers 50 ms after the request; the client's loop is blocked from 20 to 320 ms. A stamp
    # taken by the loop would be >= 0.27 s after the answer was written; the kernel's is when it arrived.
    import socket
    import threading
    import time

    lsock = socket.create_server(("127.0.0.1", 0))
    written: list[float] = []

    def answer() -> None:
        conn, _ = lsock.accept()
        with conn:
            conn.recv(65536)
            time.sleep(0.05)  # the client's loop is blocked by now
            written.append(time.perf_counter())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            conn.recv(1)  # until the client closes

    threading.Thread(target=answer, daemon=True).start()
    stamps: list[float] = []

    async def main() -> tuple[int, int]:
        pool = wire.Pool(f"http://127.0.0.1:{lsock.getsockname()[1]}/x")
        task = asyncio.ensure_future(pool.exchange(pool.request(b"{}"), lambda d, t: stamps.append(t)))
        await asyncio.sleep(0.02)  # connected and sent
        time.sleep(0.3)  # the loop is busy: the answer waits in the socket
        resp = await task
        pool.close()
        assert resp.status == 200
        return pool.stamps[0], pool.stamps[1]

    kernel, clock = asyncio.run(main())
    lsock.close()
    assert (kernel, clock) == (1, 0) and len(stamps) == 1
    assert 0 <= stamps[0] - written[0] < 0.05, stamps[0] - written[0]  # the loop read it ~0.3 s later


@pytest.mark.parametrize("host, lookups", [("127.0.0.1", 0), ("localhost", 1)])
def test_the_host_is_looked_up_once_and_an_ip_never(host: str, lookups: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # asyncio's getaddrinfo runs in its thread pool: per connection, its threads start and take the GIL while
    # the first requests go out (measured: releases 100+ ms late on a busy host)
    handle, state = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True)
    calls: list[object] = []
    real = asyncio.BaseEventLoop.getaddrinfo

    async def counted(self: asyncio.BaseEventLoop, *a: Any, **k: Any) -> Any:
        calls.append(a)
        return await real(self, *a, **k)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", counted)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = wire.Pool(f"http://{host}:{server.sockets[0].getsockname()[1]}/x")
        await pool.resolve()
        for _ in range(3):  # the server closes each connection: three connects
            assert (await pool.exchange(pool.request(b"{}"), lambda d, t: None)).status == 200
            await asyncio.sleep(0.05)  # its close has arrived
        pool.close()
        server.close()

    asyncio.run(main())
    assert state["connections"] == 3 and len(calls) == lookups
