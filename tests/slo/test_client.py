"""The streaming client against an in-process SSE server with known timings and edge cases."""
from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from pytest_glmv.slo import client

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chunk(content: str | None = "x", role: bool = False, compact: bool = True) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": content}
    sep = (",", ":") if compact else (", ", ": ")
    return b"data: " + json.dumps({"id": "c", "choices": [{"index": 0, "delta": delta}]}, separators=sep).encode()


USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'


def streamer(events: list[tuple[float, bytes]], sep: bytes = b"\n\n", status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if status != 200:
            return web.Response(status=status, text="engine dead")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delay, data in events:
            await asyncio.sleep(delay)
            await resp.write(data + sep)
        await resp.write_eof()
        return resp
    return handle


def run(handler: Handler, n: int = 1, schedule: list[float] | None = None, bodies: list[bytes] | None = None,
        **kw: Any) -> client.RunOutput:
    """client.run against an in-process server; probe off unless the test says otherwise."""
    kw.setdefault("probe", False)
    async def main() -> client.RunOutput:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await client.run(f"http://127.0.0.1:{port}/v1/chat/completions", bodies or [b"{}"] * n,
                                    schedule or [0.0] * n, **kw)
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def test_ttft_itl_latency_and_usage_follow_vllm_definitions() -> None:
    events = [(0.05, chunk(role=True)), (0.0, chunk("a")), (0.03, chunk("b")), (0.03, chunk("c")),
              (0.2, USAGE), (0.0, b"data: [DONE]")]
    (r,) = run(streamer(events)).records
    assert r.ok, r.error
    # the role chunk has choices, so it is the first token (as in vllm bench serve)
    assert 0.045 <= r.ttft <= 0.1
    assert len(r.itl) == 3 and r.chunks == 4
    # latency ends at the last choices chunk: the usage chunk 200 ms later does not count
    assert r.latency == pytest.approx(r.ttft + sum(r.itl), abs=1e-9)
    assert r.latency < 0.2
    assert (r.output_tokens, r.prompt_tokens) == (3, 7)


def test_usage_missing_leaves_tokens_unknown() -> None:
    (r,) = run(streamer([(0, chunk("a")), (0, chunk("b")), (0, b"data: [DONE]")])).records
    assert r.ok and r.output_tokens is None and r.output_len() == 2


def test_crlf_and_spaced_json_from_other_servers() -> None:
    events = [(0, b": ping"), (0, chunk("a", compact=False)), (0.01, chunk("b", compact=False)),
              (0, b'data: {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 1}}'),
              (0, b"data: [DONE]")]
    (r,) = run(streamer(events, sep=b"\r\n\r\n")).records
    assert r.ok and r.chunks == 2 and r.output_tokens == 2 and len(r.itl) == 1


@pytest.mark.parametrize("handler,error", [
    (streamer([], status=500), "HTTP 500 Internal Server Error: engine dead"),
    (streamer([(0, USAGE), (0, b"data: [DONE]")]), "no streamed chunk carried choices"),
    (streamer([(0, chunk("a")), (0, b'data: {"error": {"message": "engine crashed", "code": 500}}')]),
     "stream error: engine crashed"),
])
def test_failures_are_recorded_never_hidden(handler: Handler, error: str) -> None:
    (r,) = run(handler).records
    assert not r.ok and error in r.error, r.error


def test_connection_refused_is_a_failed_request() -> None:
    async def main() -> client.RunOutput:
        return await client.run("http://127.0.0.1:9/v1/chat/completions", [b"{}"], [0.0], probe=False)
    (r,) = asyncio.run(main()).records
    assert not r.ok and "cannot connect to 127.0.0.1:9: ConnectionRefusedError" in r.error, r.error


def test_concurrency_limit_queues_and_is_never_exceeded() -> None:
    state = {"now": 0, "peak": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            return await streamer([(0.03, chunk("a")), (0, USAGE)])(request)
        finally:
            state["now"] -= 1

    out = run(handle, n=6, max_concurrency=2)
    assert all(r.ok for r in out.records) and state["peak"] == 2
    waits = sorted(r.queue_time for r in out.records)
    assert waits[0] < 0.01 and waits[-1] > 0.05  # the last pair waited for two earlier pairs


def test_requests_leave_on_schedule() -> None:
    sched = [0.02, 0.05, 0.05, 0.12]
    out = run(streamer([(0, chunk("a")), (0, USAGE)]), n=4, schedule=sched)
    # every request's lag is measured against one common start: none leaves early, lateness is
    # its own (absolute targets), and on a shared CI host it stays well below a scheduling quantum
    starts = [r.dispatched - r.send_lag - r.scheduled for r in out.records]
    assert max(starts) - min(starts) < 1e-6, starts
    t0 = min(starts)
    for r in out.records:
        assert r.dispatched - t0 >= r.scheduled - 1e-6
        assert 0 <= r.send_lag < 0.05, f"request {r.index} left {r.send_lag * 1000:.1f} ms late"
    assert out.duration >= 0.12


def test_the_last_millisecond_is_polled_so_releases_are_not_late_by_a_sleep_overshoot() -> None:
    # asyncio.sleep alone wakes ~0.5-1 ms late (whole-millisecond selector timeouts); polling the
    # loop for the last `spin` seconds releases at the target. The median is robust to the odd
    # preemption on a shared host.
    sched = [0.005 * (i + 1) for i in range(30)]
    out = run(streamer([(0, chunk("a")), (0, USAGE)]), n=30, schedule=sched)
    lags = sorted(r.send_lag for r in out.records)
    assert lags[15] < 0.0003, f"median send lag {lags[15] * 1000:.3f} ms"


def test_gc_is_frozen_only_during_the_timed_run() -> None:
    import gc

    seen: list[int] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(gc.get_freeze_count())
        return await streamer([(0, chunk("a")), (0, USAGE)])(request)

    before = gc.get_freeze_count()
    out = run(handle, n=2)
    assert all(r.ok for r in out.records)
    assert seen and all(c > before for c in seen)  # what existed before the run is out of the collector's walk
    assert gc.get_freeze_count() == before  # and back in it afterwards


def test_by_default_only_the_scheduled_requests_are_sent() -> None:
    # vllm bench serve 0.32 skips its test request unless --ready-check-timeout-sec is given, so the
    # server sees exactly the N timed requests, the first on a fresh connection, as from vLLM.
    seen: list[bytes] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        return await streamer([(0, chunk("a")), (0, USAGE)])(request)

    assert inspect.signature(client.run).parameters["probe"].default is False
    out = run(handle, 2, bodies=[b'{"i":0}', b'{"i":1}'], max_concurrency=1)
    assert out.probe is None and all(r.ok for r in out.records)
    assert seen == [b'{"i":0}', b'{"i":1}']


def test_body_is_byte_for_byte_what_vllm_bench_serve_posts() -> None:
    # vLLM 0.32's openai-chat request function: model, messages (text part, then the image part),
    # max_completion_tokens, stream, stream_options, then extra_body keys; aiohttp's json= encodes
    # it with json.dumps' defaults (ASCII escapes, ", " and ": ").
    got = client.body("m", "Qu'est-ce que c'est ? 图片", "data:image/png;base64,AAAA", 128, {"temperature": 0.0})
    expected = (
        '{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": '
        '"Qu\'est-ce que c\'est ? \\u56fe\\u7247"}, {"type": "image_url", "image_url": '
        '{"url": "data:image/png;base64,AAAA"}}]}], "max_completion_tokens": 128, "stream": true, '
        '"stream_options": {"include_usage": true}, "temperature": 0.0}'
    ).encode()
    assert got == expected
    no_image = json.loads(client.body("m", "hi", None, 5))
    assert no_image["messages"][0]["content"] == [{"type": "text", "text": "hi"}]


def test_an_unexpected_error_fails_its_request_and_spares_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_glmv.slo import wire

    real = wire.Pool.exchange

    async def exchange(self: wire.Pool, request: bytes, sink: Any, timeout: float | None = None,
                       sending: Any = None) -> Any:
        if request.endswith(b'{"i":1}'):
            raise RuntimeError("a bug below the client")
        return await real(self, request, sink, timeout, sending)

    monkeypatch.setattr(wire.Pool, "exchange", exchange)
    out = run(streamer([(0, chunk("a")), (0, USAGE)]), 3, bodies=[b'{"i":0}', b'{"i":1}', b'{"i":2}'])
    assert [r.ok for r in out.records] == [True, False, True]
    assert out.records[1].error == "RuntimeError: a bug below the client"


def test_with_kernel_stamps_the_loop_never_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # the stamp is the kernel's, so a wake-up from idle is not in TTFT: nothing to poll for, no core burnt
    made: list[object] = []
    monkeypatch.setattr(client.wire, "KERNEL_STAMPS", True)
    monkeypatch.setattr(client, "Awake", lambda: made.append(1))
    out = run(streamer([(0.01, chunk("a")), (0, USAGE)]), 2, schedule=[0.0, 0.05], awake=True)
    assert all(r.ok for r in out.records) and made == []


def test_without_kernel_stamps_the_loop_polls_only_while_a_request_waits_for_its_first_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An idle CPU wakes 0.1-0.3 ms late when the first chunk arrives; where reads are stamped in user space
    # (no SO_TIMESTAMPNS), polling inside TTFT windows avoids it.
    monkeypatch.setattr(client.wire, "KERNEL_STAMPS", False)
    made: list[client.Awake] = []
    seen: list[int] = []

    class Recording(client.Awake):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(made[0].waiting)  # the request is in its TTFT window: the keeper polls
        return await streamer([(0.01, chunk("a")), (0.01, chunk("b")), (0, USAGE)])(request)

    monkeypatch.setattr(client, "Awake", Recording)
    cpu0 = time.process_time()
    out = run(handle, 3, schedule=[0.0, 0.4, 0.8], awake=True)
    assert all(r.ok for r in out.records) and seen == [1, 1, 1]
    assert made[0].waiting == made[0].inflight == 0 and made[0]._task is not None and made[0]._task.cancelled()
    assert time.process_time() - cpu0 < 0.4  # idle between requests (spinning the whole run: ~0.85 s)
    # a request that never gets a first token leaves the window too
    made.clear()
    out = run(streamer([], status=500), 2, awake=True)
    assert not any(r.ok for r in out.records) and made[0].waiting == made[0].inflight == 0
    # with more than one request in flight, other streams keep the loop busy: no polling
    made.clear()
    passes = []

    async def handle_two(request: web.Request) -> web.StreamResponse:
        passes.append(made[0].waiting > 0 and made[0].inflight <= 1)
        return await streamer([(0.05, chunk("a")), (0, USAGE)])(request)

    out = run(handle_two, 2, awake=True)  # both at t=0
    assert all(r.ok for r in out.records) and passes[-1] is False


def test_the_start_is_stamped_right_before_the_write_on_a_reused_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # the client's own bookkeeping between its first stamp and the write is not in TTFT; a connect is
    from pytest_glmv.slo import wire

    writes: list[float] = []
    real = wire.Pool._connect

    async def slow_connect(self: wire.Pool) -> Any:
        await asyncio.sleep(0.05)  # a connect that takes 50 ms: inside the first request's TTFT
        conn = await real(self)
        write = conn.transport.write
        conn.transport.write = lambda data: (writes.append(time.perf_counter()), write(data))  # type: ignore
        return conn

    made = wire.Response.__init__

    def slow_response(self: wire.Response, sink: Any) -> None:  # 10 ms of bookkeeping before the write
        time.sleep(0.01)
        made(self, sink)

    monkeypatch.setattr(wire.Pool, "_connect", slow_connect)
    monkeypatch.setattr(wire.Response, "__init__", slow_response)
    out = run(streamer([(0, chunk("a")), (0, USAGE)]), 3, max_concurrency=1)
    first, *rest = out.records
    assert all(r.ok for r in out.records) and len(writes) == 3
    assert writes[0] - first.start >= 0.06  # the connect (and the bookkeeping) are inside
    for r, w in zip(rest, writes[1:], strict=True):
        assert 0 <= w - r.start < 0.005, w - r.start  # reused: stamped after the bookkeeping, right before the write
