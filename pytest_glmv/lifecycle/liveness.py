"""Is the server still answering inference? The canary, and the watch that ends a check stuck on a hung server.

A server whose /health says 200 while its engine is stuck (vLLM #39863) holds every request for the whole
request timeout (600 s by default): a run that meets it mid-way would wait that out once per check. So:
- the canary (one 1-token chat) runs when the server is first started, after any check whose request timed
  out or lost its connection, and from a thread while a check has run for STALL_AFTER seconds;
- when it gets no answer, the session takes the server for hung: the stuck check is interrupted (a signal to
  the main thread, whose handler fails it; a blocked socket read returns EINTR, so the handler runs at once)
  and every later check that needs the server fails at once with the same reason.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Iterable

import pytest

from .server import Server

STALL_AFTER = 45.0  # a check still running after this long gets a canary beside it (checks take ~0.1-15 s; the
# longest by design, a 64 MiB prompt that holds the double's loop about a minute, is answered within 45 + 60 s)
_SIGNAL = getattr(signal, "SIGUSR1", None)  # POSIX only: elsewhere no watch (the canary after a lost request stays)


def canary(server: Server, timeout: float) -> str | None:
    """One 1-token chat: None when any answer came (an error status is an answer; only silence is a hang),
    else why the server is taken for hung."""
    import httpx

    from ..kit.evidence import CHAT, chat_body

    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    try:
        httpx.post(server.root_url + CHAT, json=chat_body(server.model or "", "Say hi.", max_tokens=1),
                   headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return (f"the server answers /health but a 1-token chat request got no answer in {timeout:g} s "
                "(--glmv-canary-timeout): its engine is stuck (vLLM #39863); every check that needs the server "
                "fails with this reason instead of waiting out its own timeout")
    except httpx.TransportError as e:
        return f"the server stopped answering: a 1-token chat request failed ({type(e).__name__}: {e})"
    return None


# A request that got no answer in time or lost its connection: httpx's and the openai SDK's names for it
# (the SDK wraps httpx's errors in APITimeoutError / APIConnectionError).
_LOST = ("Timeout", "ConnectError", "ConnectionError", "RemoteProtocolError", "ReadError", "WriteError",
         "NetworkError", "APITimeoutError", "APIConnectionError")


def lost_request(exc: BaseException | None, error_types: Iterable[str | None] = ()) -> str | None:
    """The name of the first timeout or connection failure in an exception's chain, or among the error types
    of the check's recorded exchanges; None when there is none."""
    seen = 0
    while exc is not None and seen < 10:
        name = type(exc).__name__
        if any(word in name for word in _LOST):
            return name
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return next((t for t in error_types if t and any(word in t for word in _LOST)), None)


class StallWatch:
    """While one check runs: after `after` seconds, `probe()` from a thread (again every `after` seconds while
    it answers); when it returns a reason, `on_hung(reason)`, then the check is failed with it."""

    def __init__(self, probe: Callable[[], str | None], on_hung: Callable[[str], None],
                 after: float = STALL_AFTER) -> None:
        self.probe = probe
        self.on_hung = on_hung
        self.after = after
        self._timer: threading.Timer | None = None
        self._armed = False
        self._reason: str | None = None
        self._previous: Any = None
        self._lock = threading.RLock()  # reentrant: the signal handler runs in the main thread, maybe inside stop()

    def start(self) -> None:
        if _SIGNAL is None or threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread: no watch there (the canary still runs)
        self.stop()
        self._previous = signal.signal(_SIGNAL, self._interrupt)
        with self._lock:
            self._armed, self._reason = True, None
        self._schedule()

    def stop(self) -> None:
        with self._lock:
            self._armed = False
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if self._previous is not None and _SIGNAL is not None:
            signal.signal(_SIGNAL, self._previous)
            self._previous = None

    def _schedule(self) -> None:
        timer = threading.Timer(self.after, self._check)
        timer.daemon = True
        with self._lock:
            if not self._armed:
                return
            self._timer = timer
        timer.start()

    def _check(self) -> None:
        reason = self.probe()
        if reason is None:
            self._schedule()
            return
        with self._lock:
            if not self._armed:
                return
            self._reason = reason
        self.on_hung(reason)
        assert _SIGNAL is not None
        signal.pthread_kill(threading.main_thread().ident or 0, _SIGNAL)

    def _interrupt(self, signum: int, frame: Any) -> None:
        with self._lock:
            reason, armed = self._reason, self._armed
            if armed and reason:
                self._armed = False
        if armed and reason:
            pytest.fail(f"glmv: {reason}", pytrace=False)


class Liveness:
    """A session's view of whether its server still answers: `hung` is why it is taken for hung (None while it
    answers), found by the canary at the start, after a lost request, or by the stall watch; said once."""

    def __init__(self, server: Callable[[], Server | None], timeout: float, say: Callable[[str], None]) -> None:
        self.server = server
        self.timeout = timeout
        self._say = say
        self.hung: str | None = None
        self._said = False
        self.watch = StallWatch(self._probe, self._found)

    def check(self) -> str | None:
        """Run the canary now (the server is started); returns and keeps why it is hung, if it is."""
        srv = self.server()
        if srv is not None and not self.hung:
            self.hung = canary(srv, self.timeout)
        self.say()
        return self.hung

    def after_failure(self, exc: BaseException | None, error_types: Iterable[str | None]) -> str | None:
        """A check failed: when a request of it got no answer or lost its connection, the canary runs again.
        Returns the lost request's error name (None when there was none, or the server is already hung)."""
        if self.hung or self.server() is None:
            return None
        lost = lost_request(exc, error_types)
        if lost:
            self.check()
        return lost

    def say(self) -> None:
        if self.hung and not self._said:
            self._said = True
            self._say(f"glmv: {self.hung}")

    def _probe(self) -> str | None:  # the stall watch's canary, from its thread
        srv = self.server()
        return canary(srv, self.timeout) if srv is not None and not self.hung else None

    def _found(self, reason: str) -> None:
        if not self.hung:
            self.hung = reason
