"""Statistics from per-request records, defined as `vllm bench serve` defines them.

Facts carried over from vLLM 0.32 (vllm/benchmarks/serve.py, calculate_metrics and benchmark):
- only successful requests enter the statistics; failed ones are counted;
- output tokens come from the usage chunk's completion_tokens; TPOT = (latency - TTFT) /
  (output_tokens - 1) for requests with more than one output token (others count as TPOT 0
  for goodput only); ITL values of all requests are pooled;
- throughputs divide by the whole run's duration; mean/median/std/percentiles are numpy's
  (population std, linear-interpolated percentiles) and an empty list counts as 0;
- peak concurrency: one-second buckets from the earliest successful start; each request counts
  in every bucket from int(start) to int(end) inclusive; the peak is the fullest bucket. Peak
  output tokens per second buckets each streamed chunk's time the same way;
- goodput: a request is good when its TTFT, TPOT and E2EL are each <= the given SLO (ms).
When a stream has no usage chunk, vllm bench serve re-tokenizes the generated text and keeps the
request in every statistic, TPOT included; we keep it too, with its streamed chunks (those with
choices, the role chunk included) as its output tokens (no tokenizer here, and collecting the text
would slow the timed path), and 0 input tokens. Such requests are never hidden: `usage_missing` counts
them and `usage_missing_note` (in the JSON and the result block) says how they were counted.
Added here: send lag (dispatch time minus schedule) and client queue time (waiting on the
concurrency limit), both over all requests, failed ones included: they describe the client; and
p99_slot_lag_ms (a queued request's start minus the moment a slot freed). When either p99 lag
exceeds a bound (--glmv-slo-max-send-lag-ms), client_fell_behind() says the run is not valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

METRICS = ("ttft", "tpot", "itl", "e2el", "send_lag", "client_queue_time")
USAGE_MISSING_RULE = ("their output tokens (TPOT, output throughput) are the streamed chunks that carried choices, "
                      "the role chunk included, and their input tokens count 0; vllm bench serve re-tokenizes the "
                      "generated text instead; the server ignored stream_options.include_usage")


def usage_note(missing: int, completed: int) -> str | None:
    """One sentence on the successful requests whose stream had no usage chunk, None when there are none."""
    if not missing:
        return None
    return f"{missing} of {completed} successful requests had no usage chunk: {USAGE_MISSING_RULE}"


@dataclass
class Record:
    """One request as the client saw it. Times are perf_counter seconds."""

    index: int
    scheduled: float = 0.0  # when it was due, offset from the run start
    dispatched: float = 0.0  # when the schedule released it (absolute)
    start: float = 0.0  # right before the HTTP request was sent (absolute)
    ok: bool = False
    error: str = ""
    ttft: float = 0.0
    latency: float = 0.0  # start to the last chunk that carried choices
    itl: list[float] = field(default_factory=list)
    output_tokens: int | None = None  # usage.completion_tokens; None when the server sent no usage
    prompt_tokens: int = 0
    chunks: int = 0  # chunks with choices (the role chunk included, as in vLLM)
    send_lag: float = 0.0
    queue_time: float = 0.0
    slot_lag: float = 0.0  # queued under a concurrency limit: from the slot freeing to this request's start

    def output_len(self) -> int:
        if self.output_tokens is None:
            return self.chunks
        return self.output_tokens

    def tpot(self) -> float | None:
        return tpot(self.ttft, self.latency, self.output_len())


def tpot(first: float, last: float, tokens: int) -> float | None:
    """vLLM's time per output token: first token to last, over the tokens after the first; None for
    fewer than two tokens. For a record: tpot(ttft, latency, output tokens)."""
    return (last - first) / (tokens - 1) if tokens > 1 else None


def tpots(records: Iterable[Record]) -> list[float]:
    """The TPOT of each record that has one (more than one output token), in order."""
    return [t for t in (r.tpot() for r in records) if t is not None]


def _stats(values: Sequence[float], percentiles: Iterable[float]) -> dict[str, float]:
    """mean/median/std/pNN in milliseconds, numpy's definitions; [] counts as [0] like vLLM."""
    arr = np.asarray(values if len(values) else [0.0], dtype=float) * 1000.0
    out = {"mean": float(np.mean(arr)), "median": float(np.median(arr)), "std": float(np.std(arr))}
    for p in percentiles:
        out[pword(p)] = float(np.percentile(arr, p))
    return out


def pword(p: float) -> str:
    """99 -> 'p99', 99.9 -> 'p99.9' (vLLM's key spelling)."""
    return "p" + (str(int(p)) if int(p) == p else str(p))


@dataclass(frozen=True)
class Buckets:
    """One-second buckets from the first successful start, the way vLLM's peak metrics bucket time."""

    chunks: np.ndarray  # token chunks received in each second
    tokens: np.ndarray  # usage's output tokens spread over each request's chunks
    completed: np.ndarray  # requests that ended in each second
    in_flight: np.ndarray  # requests running at any time during each second (vLLM's peak definition)
    at_once: np.ndarray  # the most requests running at the same instant within each second (exact)


def buckets(records: Sequence[Record]) -> Buckets | None:
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    t0 = min(r.start for r in ok)
    n = int(math.ceil(max(r.start + r.latency for r in ok) - t0)) + 1
    chunks, tokens = np.zeros(n), np.zeros(n)
    done, flight = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    for r in ok:
        t = r.start + r.ttft
        stamps = [t]
        for gap in r.itl:  # accumulated in arrival order, exactly as vLLM does
            t += gap
            stamps.append(t)
        per = r.output_len() / len(stamps)  # a chunk may carry several tokens: spread usage's count
        for stamp in stamps:
            at = int(stamp - t0)
            if 0 <= at < n:
                chunks[at] += 1
                tokens[at] += per
        done[min(n - 1, int(r.start + r.latency - t0))] += 1
        flight[int(r.start - t0): int(r.start + r.latency - t0) + 1] += 1
    # A second holds every request that ran at any time in it, so one-at-a-time requests of 30 ms show as ~30
    # there; the exact count sweeps starts and ends (an end before a start at the same instant).
    at_once = np.zeros(n, dtype=int)
    running, second = 0, 0
    for when, step in sorted([(r.start, 1) for r in ok] + [(r.start + r.latency, -1) for r in ok]):
        at = min(n - 1, int(when - t0))
        while second < at:  # the seconds up to this event start with whoever is running
            second += 1
            at_once[second] = running
        running += step
        at_once[at] = max(at_once[at], running)
    return Buckets(chunks, tokens, done, flight, at_once)


def peaks(records: Sequence[Record]) -> tuple[float, int]:
    """(peak output chunks per second, peak concurrent requests) the way vLLM buckets them."""
    b = buckets(records)
    return (0.0, 0) if b is None else (float(b.chunks.max()), int(b.in_flight.max()))


def peak_at_once(records: Sequence[Record]) -> int:
    """The most requests of this run in flight at the same instant: never above its concurrency limit, unlike
    vLLM's per-second figure (max_concurrent_requests), which counts every request of the busiest second."""
    b = buckets(records)
    return 0 if b is None else int(b.at_once.max())


def compute(
    records: Sequence[Record],
    duration: float,
    percentiles: Iterable[float] = (99,),
    goodput: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The saved-result dict of `vllm bench serve` (same keys) plus send-lag/queue keys."""
    percentiles = tuple(percentiles)
    ok = [r for r in records if r.ok]
    lens = [r.output_len() for r in ok]
    ttfts = [r.ttft for r in ok]
    e2els = [r.latency for r in ok]
    itls = [gap for r in ok for gap in r.itl]
    total_in = sum(r.prompt_tokens for r in ok)
    total_out = sum(lens)
    good = 0
    if goodput:
        for r in ok:
            per = {"ttft": r.ttft, "tpot": r.tpot() or 0.0, "e2el": r.latency}  # one token: TPOT 0, as vLLM
            if all(per[k] * 1000.0 <= v for k, v in goodput.items()):
                good += 1
    peak_tok, peak_conc = peaks(records)
    dur = duration if duration > 0 else float("nan")
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur,
        "request_goodput": good / dur if goodput else None,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
        "max_output_tokens_per_s": peak_tok,
        "max_concurrent_requests": peak_conc,
        "max_concurrent_requests_at_once": peak_at_once(records),
        "usage_missing": sum(1 for r in ok if r.output_tokens is None),
    }
    result["usage_missing_note"] = usage_note(result["usage_missing"], len(ok))
    series = {
        "ttft": ttfts, "tpot": tpots(ok), "itl": itls, "e2el": e2els,
        "send_lag": [r.send_lag for r in records], "client_queue_time": [r.queue_time for r in records],
    }
    for name, values in series.items():
        for stat, value in _stats(values, percentiles).items():
            result[f"{stat}_{name}_ms"] = value
    # the client's own lateness when a concurrency slot freed (it should start the next request at once)
    result["p99_slot_lag_ms"] = float(np.percentile([r.slot_lag for r in records] or [0.0], 99)) * 1000.0
    return result


def client_fell_behind(result: Mapping[str, Any], bound_ms: float) -> str | None:
    """Why the run cannot judge the server (the client was the bottleneck), or None when it kept up: its
    p99 send lag (released late against the schedule) or, under a concurrency limit, its p99 slot lag
    (a freed slot left unused) above bound_ms."""
    # At an infinite rate every request is due at once: its send lag is the time to create the tasks (~5 ms
    # for 1000), not lateness against a schedule, so only the slot lag speaks for the client there.
    burst = result.get("request_rate") in ("inf", math.inf)
    lags = [("send lag", None if burst else result.get("p99_send_lag_ms")),
            ("slot lag", result.get("p99_slot_lag_ms"))]
    over = [f"p99 {name} {value:.2f} ms > {bound_ms:g} ms" for name, value in lags
            if value is not None and value > bound_ms]
    if not over:
        return None
    return (f"run not valid: the client fell behind ({'; '.join(over)}), so this run measured the client, not "
            f"the server; give the client a CPU of its own, lower the load (--glmv-request-rate, "
            f"--glmv-num-prompts), or allow more lag with --glmv-slo-max-send-lag-ms")


def errors(records: Sequence[Record], limit: int = 10) -> list[str]:
    """The first failures, one line each, for messages and reports."""
    return [f"request {r.index}: {r.error.strip().splitlines()[-1] if r.error.strip() else 'failed'}"
            for r in records if not r.ok][:limit]
