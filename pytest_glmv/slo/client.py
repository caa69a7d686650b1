"""The load generator: requests released on an absolute schedule over lean keep-alive connections.

Timing facts carried over from `vllm bench serve` (vLLM 0.32, lib/endpoint_request_func.py,
async_request_openai_chat_completions): the start time is taken right before the request is
sent (connecting, when no idle connection is left, is inside it, as in aiohttp's post; on a
reused connection it is taken right before the write, so the ~25 us of our own bookkeeping
between the two are not in TTFT, where vLLM's has aiohttp's request building); the
first SSE event whose `choices` is non-empty (the role chunk counts) gives TTFT; each later
such event adds one ITL gap; the request's latency ends at the last such event, so neither
the usage chunk nor [DONE] extends it; output tokens come from the usage chunk
(stream_options.include_usage). A request fails on a non-200 status, an exception, or a
stream without any choices event. Deviation: a stream that carries an `error` object fails
the request (vLLM's client ignores such events); failures must never pass silently.
The request bytes are vLLM's too: its payload keys in its order, encoded as aiohttp's default
json.dumps encodes them (ASCII escapes, ", " and ": " separators), so a server sees the same
bodies from either tool. vllm bench serve 0.32 sends no test request by default (its ready
check is off unless --ready-check-timeout-sec is given), so neither do we unless asked
(probe=True): a probe would hand the first timed request a warm connection vLLM's does not get.

Cost and accuracy (wire.py): each request is one pre-encoded write; each network read is
stamped with the time the kernel received its bytes (SO_TIMESTAMPNS; where there is none, when the
protocol gets them) and parsed there, so the loop may sleep in the selector between chunks at no cost
in accuracy (a wake-up from idle or a late loop pass is not in TTFT or ITL); token events are recognised
by a byte search, and only the few events without the compact `"choices":[{` marker (usage,
errors, other servers' spacing) are parsed as JSON.

Release timing (send lag): asyncio.sleep wakes ~0.5-1 ms late even on an idle loop (the
selector's timeout is rounded up to whole milliseconds and the timer slack adds to it), so the
dispatcher sleeps to `spin` seconds before the target and then polls the loop (sleep(0)) until
the target: network callbacks keep running meanwhile, only the wait itself costs CPU. The objects
alive at the start are frozen out of the garbage collector (gc.freeze) for the timed run, so a
collection walks only what the run allocates. A loaded host still delays the wake-up itself.
"""
from __future__ import annotations

import asyncio
import gc
import json
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import aiohttp

from ..kit.evidence import chat_body
from ..kit.media import image_part
from . import wire
from .metrics import Record

_TOKEN_MARK = b'"choices":[{'
perf_counter = time.perf_counter


@dataclass
class RunOutput:
    records: list[Record]
    duration: float  # from the run start (before the first sleep) to the last completion, like vLLM
    cpu_seconds: float  # this process's CPU time over the timed run
    probe: Record | None  # the initial test request (not counted)
    metrics_before: str | None = None  # /metrics text right before the timed run, if asked for
    metrics_after: str | None = None
    started: float = 0.0  # the schedule's start (perf_counter, CLOCK_MONOTONIC: one clock for every process)
    stamps: tuple[int, int] = (0, 0)  # network reads stamped by the kernel, by perf_counter() (no kernel stamp)


def _handle_json(payload: bytes, rec: Record) -> bool:
    """Slow path for an event without the compact token marker; True when it carries choices."""
    try:
        data = json.loads(payload)
    except ValueError:
        rec.error = f"undecodable SSE event: {payload[:120]!r}"
        return False
    if not isinstance(data, dict):
        return False
    if data.get("choices"):
        return True
    usage = data.get("usage")
    if isinstance(usage, dict):
        if usage.get("completion_tokens") is not None:
            rec.output_tokens = int(usage["completion_tokens"])
        if usage.get("prompt_tokens") is not None:
            rec.prompt_tokens = int(usage["prompt_tokens"])
    elif data.get("error") is not None:
        err = data["error"]
        rec.error = "stream error: " + str(err.get("message", err) if isinstance(err, dict) else err)[:300]
    return False


class _Events:
    """SSE parsing for one stream: fed de-framed body bytes with the time of the read that carried them.

    Not kit/sse.py's text reader, on purpose: this runs in the timing path, once per network read, and
    finds events and token chunks by byte search without decoding text or parsing JSON (see the module
    docstring); going through text lines would add per-chunk work to every timed request."""

    __slots__ = ("rec", "buf", "sep", "chunks", "last", "first")

    def sending(self) -> None:
        """The request's bytes go now (wire.Pool.exchange calls it right before the write): the start."""
        self.rec.start = self.last = perf_counter()

    def __init__(self, rec: Record, first: Callable[[], None] | None = None) -> None:
        self.rec, self.buf, self.sep, self.chunks, self.last = rec, b"", b"\n\n", 0, rec.start
        self.first = first  # called once, when the first token chunk arrives

    def __call__(self, data: bytes, now: float) -> None:
        buf = self.buf + data if self.buf else data
        if b"\r" in data:
            self.sep = b"\r\n\r\n"
        sep = self.sep
        while True:
            cut = buf.find(sep)
            if cut < 0:
                break
            event = buf[:cut]
            buf = buf[cut + len(sep):]
            if not event.startswith(b"data:"):
                continue  # comments (pings), blank keep-alives, event: lines
            payload = event[5:].strip()
            if _TOKEN_MARK in payload or (payload != b"[DONE]" and _handle_json(payload, self.rec)):
                if self.chunks:
                    self.rec.itl.append(now - self.last)
                else:
                    self.rec.ttft = now - self.rec.start
                    if self.first is not None:
                        self.first()
                        self.first = None
                self.chunks += 1
                self.last = now
        self.buf = buf


class Awake:
    """Only where reads get no kernel stamp (wire.KERNEL_STAMPS false: not Linux): keeps the event loop
    polling, never sleeping in the selector, while a lone request waits for its first token. A client whose
    loop sleeps in epoll_wait lets its CPU idle, and an idle CPU (a VM's above all) takes 0.1-0.3 ms to wake
    when the first chunk arrives: time that lands in TTFT when the read is stamped in user space. With kernel
    stamps the wake-up is outside the stamp, and polling would only burn a core (~TTFT of CPU per request).
    Only while at most one request is in flight (concurrency 1, sparse arrivals): with more, other streams keep
    the loop busy anyway (the wake-up cost measured ~0.03 ms at 20 req/s), and a spinning client would take CPU
    from a server on the same machine. ITL and TPOT keep the ordinary wake-up, as vLLM's do."""

    def __init__(self) -> None:
        self.waiting = 0  # requests sent whose first token has not come
        self.inflight = 0
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def enter(self) -> None:
        self.waiting += 1
        self.inflight += 1
        self._event.set()

    def first(self) -> None:
        self.waiting -= 1

    def done(self) -> None:
        self.inflight -= 1
        self._event.set()

    async def _run(self) -> None:
        while True:
            if self.waiting > 0 and self.inflight <= 1:
                await asyncio.sleep(0)  # one selector poll with timeout 0 per loop pass
            else:
                self._event.clear()
                await self._event.wait()


async def send(pool: wire.Pool, request: bytes, rec: Record, timeout: float | None = None,
               awake: Awake | None = None) -> None:
    """Send one streaming chat request (bytes from pool.request) and fill rec with its timings."""
    if awake is not None:
        awake.enter()
    events = _Events(rec, None if awake is None else awake.first)
    st = perf_counter()
    rec.start = events.last = st
    resp = None
    try:
        resp = await pool.exchange(request, events, timeout, events.sending)
    except Exception as e:  # every failure is recorded, none escapes the run (and loses the others)
        rec.error = str(e) if isinstance(e, wire.WireError) else f"{type(e).__name__}: {e}"
    if awake is not None:
        if events.first is not None:  # it ended without a first token
            awake.first()
        awake.done()
    rec.chunks, rec.latency = events.chunks, events.last - rec.start
    if resp is None:
        return
    if resp.status != 200:
        text = resp.error_body.decode("utf-8", "replace")[:300].replace("\n", " ")
        rec.error = f"HTTP {resp.status} {resp.reason}: {text}"
        return
    if rec.error:
        return
    if not events.chunks:
        rec.error = "no streamed chunk carried choices, so there is no first token"
        return
    rec.ok = True


async def run(
    url: str,
    bodies: Sequence[bytes],
    schedule: Sequence[float],
    *,
    max_concurrency: int | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
    probe: bool = False,
    metrics_url: str | None = None,
    spin: float = 0.001,
    awake: bool = False,
    indices: Sequence[int] | None = None,
    clock: Callable[[], Awaitable[float]] | None = None,
) -> RunOutput:
    """Release bodies[i] at schedule[i] seconds after the start, at most max_concurrency in flight;
    the last `spin` seconds before each release are polled, not slept. workers.py: records keep `indices`;
    `clock`, awaited once all is set up (gc frozen), gives the start."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    pool = wire.Pool(url, headers)
    requests = [pool.request(b) for b in bodies]  # before the clock starts
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            first: Record | None = None
            if probe:
                # Like vLLM's ready check (off by default there too): proves the endpoint, opens a connection.
                first = Record(-1)
                await send(pool, requests[0], first, timeout)
            before = await _scrape(session, metrics_url, headers)
            sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
            freed = [0.0]  # when a concurrency slot was last given back
            keeper = Awake() if awake and not wire.KERNEL_STAMPS else None

            async def limited(request: bytes, rec: Record) -> None:
                if sem is None:
                    await send(pool, request, rec, timeout, keeper)
                else:
                    async with sem:
                        waited_for = freed[0]
                        await send(pool, request, rec, timeout, keeper)
                        freed[0] = perf_counter()
                    if waited_for > rec.dispatched:  # it queued: how long the freed slot stayed unused
                        rec.slot_lag = rec.start - waited_for
                rec.queue_time = rec.start - rec.dispatched

            await pool.resolve()  # before the clock: no lookup (nor thread pool) inside the timed run
            ids = range(len(schedule)) if indices is None else indices
            records = [Record(i, scheduled=due) for i, due in zip(ids, schedule, strict=True)]
            tasks = []
            gc.collect()
            gc.freeze()
            if keeper is not None:
                keeper.start()
            try:
                t0 = perf_counter() if clock is None else await clock()
                cpu0 = time.process_time()
                for rec, request in zip(records, requests, strict=True):
                    target = t0 + rec.scheduled
                    delay = target - perf_counter() - spin
                    if delay > 0:  # sleep to the absolute target, so lateness never accumulates
                        await asyncio.sleep(delay)
                    while perf_counter() < target:  # the last `spin` seconds: poll, letting I/O callbacks run
                        await asyncio.sleep(0)
                    now = perf_counter()
                    rec.dispatched = now
                    rec.send_lag = max(0.0, now - target)
                    tasks.append(loop.create_task(limited(request, rec)))
                await asyncio.gather(*tasks)
                duration = perf_counter() - t0
                cpu = time.process_time() - cpu0
            finally:
                gc.unfreeze()
                if keeper is not None:
                    keeper.stop()
            after = await _scrape(session, metrics_url, headers)
    finally:
        pool.close()
    return RunOutput(records, duration, cpu, first, before, after, t0, (pool.stamps[0], pool.stamps[1]))


async def _scrape(session: aiohttp.ClientSession, url: str | None, headers: dict[str, str]) -> str | None:
    """GET /metrics; None when there is none (not every server exposes it)."""
    if not url:
        return None
    try:
        async with session.get(url, headers={k: v for k, v in headers.items() if k == "Authorization"}) as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


def body(model: str, text: str, image_url: str | None, max_tokens: int, extra: dict | None = None) -> bytes:
    """The bytes vllm bench serve's openai-chat request function posts (text first, image after;
    max_completion_tokens, stream with usage; extra keys last, as its extra_body is merged), encoded
    as aiohttp's json= encodes them."""
    content: list[dict] = [{"type": "text", "text": text}]
    if image_url:
        content.append(image_part(image_url))
    payload = chat_body(model, content, max_tokens=max_tokens, token_key="max_completion_tokens", stream=True)
    payload.update(extra or {})  # as vLLM's payload.update(extra_body): a key given again keeps its place
    return json.dumps(payload).encode()
