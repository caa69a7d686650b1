"""A lean HTTP/1.1 client for the load generator's streamed POSTs.

Why not aiohttp (which vllm bench serve uses): between a chunk's arrival and the code that stamps it,
aiohttp puts a stream reader, a future and a task switch, and before a request leaves it builds a
request object, headers and a payload. Both cost time that lands inside TTFT (~0.3 ms here) and CPU
per chunk. Here one pre-encoded write sends each request, and a response is parsed and each read
stamped in the protocol's data_received, where the bytes come in.

Arrival times from the kernel (Linux): each connection's socket has SO_TIMESTAMPNS on and is read with
recvmsg(), so every read carries the time the kernel received its newest bytes (for TCP, one stamp per read:
the last segment the read took, not one per packet as for UDP; segments queued together share the newest
one's). A read is stamped with that time, converted to perf_counter's clock, instead of the time the event
loop got round to it: a client that sleeps in epoll_wait, or wakes late on a busy host, still stamps a
chunk when it arrived, so nothing needs to poll for accuracy. Where the kernel gives no stamp (another OS, a
socket option refused, an event loop that reads the fd itself), the read's own perf_counter() is used.

Scope, on purpose: POST with a body, HTTP/1.1 keep-alive (one request at a time per connection, no
pipelining), http and https, responses framed by chunked transfer-encoding, Content-Length or the
connection's end. No redirects, proxies, compression or cookies: an OpenAI-compatible endpoint needs
none of them, and vLLM's client does not follow or send them either.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import sys
import time
from typing import Any, Callable
from urllib.parse import urlsplit

perf_counter = time.perf_counter
_time_ns, _perf_ns = time.time_ns, time.perf_counter_ns
# SO_TIMESTAMPNS (Python names it from 3.12 on; 35 on every Linux architecture but a few old ones with
# their own numbers, where setsockopt refuses or the cmsg type differs: then the read's clock is used)
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux
_ANC = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
KERNEL_STAMPS = SO_TIMESTAMPNS is not None and _ANC > 0  # this platform can stamp reads in the kernel
# called with (decoded body bytes, time the read that carried them returned)
Sink = Callable[[bytes, float], None]
MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 4096


class WireError(Exception):
    """The exchange failed below HTTP: refused, reset, closed mid-response, malformed."""


class Response:
    """One exchange's state: the head, then the body bytes as they are de-framed."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.status = 0
        self.reason = ""
        self.keep_alive = True
        self.error_body = b""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = b""
        self._state = "head"  # head -> size/data/crlf/trailer (chunked) | length | close -> end
        self._left = 0

    def feed(self, data: bytes, now: float) -> None:
        if self.done.done():
            return
        buf = self._buf + data if self._buf else data
        self._buf = b""
        try:
            self._parse(buf, now)
        except WireError as e:
            self.fail(e)

    def _parse(self, buf: bytes, now: float) -> None:
        pos, n = 0, len(buf)
        while pos < n or self._state == "end":
            state = self._state
            if state == "end":
                if not self.done.done():
                    self.done.set_result(None)
                return
            if state == "head":
                cut = buf.find(b"\r\n\r\n", pos)
                if cut < 0:
                    if n - pos > MAX_HEAD:
                        raise WireError(f"response head over {MAX_HEAD} bytes")
                    break
                self._head(buf[pos:cut])
                pos = cut + 4
            elif state == "size":
                cut = buf.find(b"\r\n", pos)
                if cut < 0:
                    break
                text = buf[pos:cut].split(b";", 1)[0].strip()
                try:
                    self._left = int(text, 16)
                except ValueError:
                    raise WireError(f"bad chunk size {text[:20]!r}") from None
                self._state = "data" if self._left else "trailer"
                pos = cut + 2
            elif state in ("data", "length"):
                take = min(self._left, n - pos)
                self._body(buf[pos:pos + take], now)
                self._left -= take
                pos += take
                if not self._left:
                    self._state = "crlf" if state == "data" else "end"
            elif state == "crlf":
                if n - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise WireError("chunk not followed by CRLF")
                pos += 2
                self._state = "size"
            elif state == "trailer":
                cut = buf.find(b"\r\n", pos)
                if cut < 0:
                    break
                self._state = "end" if cut == pos else "trailer"  # an empty line ends the trailers
                pos = cut + 2
            else:  # "close": everything until the connection ends is body
                self._body(buf[pos:], now)
                pos = n
        self._buf = buf[pos:]

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise WireError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim answer (e.g. 103): the real head follows
            return
        self.status, self.reason = status, parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get("connection", "").lower()
        self.keep_alive = parts[0] == "HTTP/1.1" and "close" not in conn
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = "size"
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise WireError(f"bad Content-Length {headers['content-length'][:20]!r}") from None
            self._state = "length" if self._left else "end"
        else:
            self._state, self.keep_alive = "close", False

    def _body(self, data: bytes, now: float) -> None:
        if not data:
            return
        if self.status == 200:
            self.sink(data, now)
        elif len(self.error_body) < MAX_ERROR_BODY:
            self.error_body += data[: MAX_ERROR_BODY - len(self.error_body)]

    def ended(self) -> None:
        """The server closed the connection (EOF): the end of a body framed by it, else a failure."""
        if self._state == "close":
            self._state = "end"
            if not self.done.done():
                self.done.set_result(None)
        elif self._state != "end":
            self.fail(WireError("connection closed before the response was complete"))

    def fail(self, exc: BaseException) -> None:
        self.keep_alive = False
        if not self.done.done():
            self.done.set_exception(exc)


def _kernel_time(anc: list[tuple[int, int, bytes]]) -> float | None:
    """The SCM_TIMESTAMPNS of one recvmsg (CLOCK_REALTIME) on perf_counter's clock (CLOCK_MONOTONIC on Linux):
    the two differ by a constant between clock steps (NTP slews both alike), read here, at the read."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return (sec * 1_000_000_000 + nsec - _time_ns() + _perf_ns()) * 1e-9
    return None


class StampedSocket(socket.socket):
    """A TCP socket whose reads keep the kernel's receive time of their bytes (`stamp`, perf_counter seconds,
    None when the kernel gave none). asyncio's transports read through recv() (plain) or recv_into() (TLS)."""

    __slots__ = ("stamp",)

    def recv(self, n: int, flags: int = 0) -> bytes:  # type: ignore[override]
        data, anc, _, _ = self.recvmsg(n, _ANC, flags)
        self.stamp = _kernel_time(anc)
        return data

    def recv_into(self, buf: Any, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        n, anc, _, _ = self.recvmsg_into([memoryview(buf)[:nbytes] if nbytes else buf], _ANC, flags)
        self.stamp = _kernel_time(anc)
        return n


class _Conn(asyncio.Protocol):
    def __init__(self, stamps: list[int], sock: StampedSocket | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.open = True
        self.sock = sock  # stamped by the kernel when not None
        self.stamps = stamps  # the pool's [reads stamped by the kernel, reads stamped by the clock]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = perf_counter()
        kernel = None if self.sock is None else self.sock.stamp
        if kernel is not None and kernel <= now:  # never later than the read (a clock step between)
            now = kernel
            self.stamps[0] += 1
        else:
            self.stamps[1] += 1
        if self.response is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.open = False
            if self.transport is not None:
                self.transport.close()
            return
        self.response.feed(data, now)

    def eof_received(self) -> bool | None:
        self.open = False
        if self.response is not None:
            self.response.ended()
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.response is None:
            return
        if exc is None:
            self.response.ended()
        else:
            self.response.fail(WireError(f"connection lost: {type(exc).__name__}: {exc}"))


class Pool:
    """Keep-alive connections to one endpoint; a connection serves one exchange at a time."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{url!r}: only http:// and https:// URLs are supported")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if u.scheme == "https" else None
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        default_port = self.port == (443 if u.scheme == "https" else 80)
        authority = u.hostname if default_port else f"{u.hostname}:{self.port}"
        if ":" in u.hostname and not default_port:
            authority = f"[{u.hostname}]:{self.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()
                        if k.lower() not in ("host", "content-length"))
        self._head = (f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\n"
                      f"User-Agent: pytest-glmv\r\n{extra}Content-Length: ").encode("latin-1")
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._addrs: list[Any] | None = None  # getaddrinfo's answer, once: resolving per connection would run
        # in asyncio's thread pool, whose threads start and take the GIL while the first requests go out
        self.stamps = [0, 0]  # reads stamped by the kernel, reads stamped by perf_counter() (no kernel stamp)

    def request(self, body: bytes) -> bytes:
        """The bytes of one request, built before the clock starts."""
        return self._head + str(len(body)).encode() + b"\r\n\r\n" + body

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            sock = await self._stamped_socket(loop) if SO_TIMESTAMPNS is not None and _ANC else None
            if sock is None:
                _, conn = await loop.create_connection(lambda: _Conn(self.stamps), self.host, self.port,
                                                       ssl=self.ssl, server_hostname=self.host if self.ssl else None)
            else:
                _, conn = await loop.create_connection(lambda: _Conn(self.stamps, sock), sock=sock, ssl=self.ssl,
                                                       server_hostname=self.host if self.ssl else None)
        except OSError as e:
            raise WireError(f"cannot connect to {self.host}:{self.port}: {type(e).__name__}: {e}") from None
        self._all.add(conn)
        return conn

    async def resolve(self) -> None:
        """Look the host up now (the client does it before its clock starts); an IP address needs no lookup.
        A failure is left to the first connection, which reports it as that request's error."""
        if self._addrs is not None:
            return
        try:
            self._addrs = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                             flags=socket.AI_NUMERICHOST)
        except socket.gaierror:  # a name: the resolver may block, so in asyncio's thread pool
            try:
                self._addrs = await asyncio.get_running_loop().getaddrinfo(self.host, self.port,
                                                                           type=socket.SOCK_STREAM)
            except OSError:
                self._addrs = None

    async def _stamped_socket(self, loop: asyncio.AbstractEventLoop) -> StampedSocket | None:
        """A connected socket with kernel receive stamps on; None where the kernel refuses the option (the
        caller then connects as usual). Raises OSError when no address of the host accepts a connection."""
        await self.resolve()
        infos = self._addrs or await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _, addr in infos:
            sock = StampedSocket(family, kind, proto)
            sock.stamp = None
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # type: ignore[arg-type]
            except OSError:
                sock.close()
                return None
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
                return sock
            except OSError as e:
                sock.close()
                error = e
        raise error or OSError(f"no address for {self.host}")

    async def exchange(self, wire: bytes, sink: Sink, timeout: float | None = None,
                       sending: Callable[[], None] | None = None) -> Response:
        """Send one request (from request()) and feed its body to sink until the response ends, within
        timeout seconds. Raises WireError; a status other than 200 is returned, its body in error_body.
        sending() is called right before the request's bytes go to a reused connection (not after a connect:
        the caller's start stamp, taken before, then keeps the connecting inside, as vLLM's does)."""
        conn = None
        while self._idle:
            c = self._idle.pop()
            if c.open:
                conn = c
                break
        if conn is None:
            conn = await self._connect()
            sending = None
        resp = Response(sink)
        conn.response = resp
        timer = None if timeout is None else asyncio.get_running_loop().call_later(
            timeout, resp.fail, WireError(f"no complete answer within {timeout:g} s"))
        try:
            assert conn.transport is not None
            if sending is not None:
                sending()
            conn.transport.write(wire)
            await resp.done
        finally:
            if timer is not None:
                timer.cancel()
            conn.response = None
            # fail() clears keep_alive; a cancelled wait (the caller gave up) leaves the answer half read
            if resp.keep_alive and conn.open and resp.done.done() and not resp.done.cancelled():
                self._idle.append(conn)
            else:
                self._drop(conn)
        return resp

    def _drop(self, conn: _Conn) -> None:
        conn.open = False
        self._all.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        for conn in list(self._all):
            self._drop(conn)
        self._idle.clear()
