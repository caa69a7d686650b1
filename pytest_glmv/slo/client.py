"""The load generator: one aiohttp session, requests released on an absolute schedule.

Timing facts carried over from `vllm bench serve` (vLLM 0.32, lib/endpoint_request_func.py,
async_request_openai_chat_completions): the start time is taken right before the POST; the
first SSE event whose `choices` is non-empty (the role chunk counts) gives TTFT; each later
such event adds one ITL gap; the request's latency ends at the last such event, so neither
the usage chunk nor [DONE] extends it; output tokens come from the usage chunk
(stream_options.include_usage). A request fails on a non-200 status, an exception, or a
stream without any choices event. Deviation: a stream that carries an `error` object fails
the request (vLLM's client ignores such events); failures must never pass silently.
The request bytes are vLLM's too: its payload keys in its order, encoded by aiohttp's default
json.dumps (ASCII escapes, ", " and ": " separators), so a server sees the same bodies from
either tool. vllm bench serve 0.32 sends no test request by default (its ready check is off
unless --ready-check-timeout-sec is given), so neither do we unless asked (probe=True): a
probe would hand the first timed request a warm connection vLLM's does not get.

Cost: bodies are serialised before the clock starts; each network read takes one
perf_counter(); token events are recognised by a byte search, and only the few events
without the compact `"choices":[{` marker (usage, errors, other servers' spacing) are parsed.

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
from typing import Sequence

import aiohttp

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


async def send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], rec: Record) -> None:
    """Send one streaming chat request and fill rec with its timings."""
    itl = rec.itl
    chunks = 0
    st = perf_counter()
    rec.start = st
    last = st
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300].replace("\n", " ")
                rec.error = f"HTTP {resp.status} {resp.reason}: {text}"
                return
            buf = b""
            sep = b"\n\n"
            async for data in resp.content.iter_any():
                now = perf_counter()
                buf = buf + data if buf else data
                if b"\r" in data:
                    sep = b"\r\n\r\n"
                while True:
                    cut = buf.find(sep)
                    if cut < 0:
                        break
                    event = buf[:cut]
                    buf = buf[cut + len(sep):]
                    if not event.startswith(b"data:"):
                        continue  # comments (pings), blank keep-alives, event: lines
                    payload = event[5:].strip()
                    if _TOKEN_MARK in payload or (payload != b"[DONE]" and _handle_json(payload, rec)):
                        if chunks:
                            itl.append(now - last)
                        else:
                            rec.ttft = now - st
                        chunks += 1
                        last = now
    except Exception as e:  # every failure is recorded, none escapes the run
        rec.error = f"{type(e).__name__}: {e}"
        return
    rec.chunks = chunks
    rec.latency = last - st
    if rec.error:
        return
    if not chunks:
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
) -> RunOutput:
    """Release bodies[i] at schedule[i] seconds after the start, at most max_concurrency in flight;
    the last `spin` seconds before each release are polled, not slept."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    connector = aiohttp.TCPConnector(limit=max_concurrency or 0, keepalive_timeout=60)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        first: Record | None = None
        if probe:
            # Like vLLM's ready check (off by default there too): proves the endpoint, opens a connection.
            first = Record(-1)
            await send(session, url, bodies[0], headers, first)
        before = await _scrape(session, metrics_url, headers)
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

        async def limited(body: bytes, rec: Record) -> None:
            if sem is None:
                await send(session, url, body, headers, rec)
            else:
                async with sem:
                    await send(session, url, body, headers, rec)
            rec.queue_time = rec.start - rec.dispatched

        records = [Record(i, scheduled=due) for i, due in enumerate(schedule)]
        tasks = []
        gc.collect()
        gc.freeze()
        try:
            cpu0 = time.process_time()
            t0 = perf_counter()
            for rec, body in zip(records, bodies, strict=True):
                target = t0 + rec.scheduled
                delay = target - perf_counter() - spin
                if delay > 0:  # sleep to the absolute target, so lateness never accumulates
                    await asyncio.sleep(delay)
                while perf_counter() < target:  # the last `spin` seconds: poll, letting I/O callbacks run
                    await asyncio.sleep(0)
                now = perf_counter()
                rec.dispatched = now
                rec.send_lag = max(0.0, now - target)
                tasks.append(loop.create_task(limited(body, rec)))
            await asyncio.gather(*tasks)
            duration = perf_counter() - t0
            cpu = time.process_time() - cpu0
        finally:
            gc.unfreeze()
        after = await _scrape(session, metrics_url, headers)
    return RunOutput(records, duration, cpu, first, before, after)


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
    extra keys last, as its extra_body is merged), encoded as aiohttp's json= encodes them."""
    content: list[dict] = [{"type": "text", "text": text}]
    if image_url:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_completion_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    return json.dumps(payload).encode()
