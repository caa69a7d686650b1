"""Reading what each load generator writes, into one shape, for benchmarks/slo_vs_peers.py.

Every parser returns a `Parsed`: the successful requests (their send time on the tool's own clock, used only
to order them, TTFT and latency in seconds by the tool's own definition, output tokens), the failed count,
the tool's send lags (s) where it records a schedule, and the fraction of its schedule it achieved (the
schedule's span over the span of the actual sends) where it records one. Formats, as the releases write them:

- pytest-glmv: `--glmv-slo-json PATH --glmv-slo-records`: vLLM's --save-detailed lists (start_times, ttfts,
  latencies, output_lens, errors) plus scheduled_times and send_lags; TTFT to the first chunk with choices
  (vLLM's role chunk), latency to the last one.
- vllm bench serve `--save-result --save-detailed`: the same lists without the schedule (releases before
  0.31 have no "latencies": slo_clients.latencies() rebuilds it). Its Poisson schedule is pytest-glmv's
  (same seed, same draws), so its send lags come from schedule.arrivals() against its start times.
- GuideLLM 0.8.1 `--output kind=json,path=...`: benchmarks[0].requests.successful[] with
  info.timings.{targeted_start, request_start, first_token_iteration, last_token_iteration} (Unix seconds),
  output_tokens (the server's usage), time_to_first_token_ms; requests.errored[] / incomplete[].
  first_token_iteration is the first SSE line whose delta has content or reasoning: vLLM's role chunk
  (content "") does not count. Its Poisson targets can be off the clock (seconds from -1 instead of Unix
  time: a race in 0.8.1); such a run gets no send lags and no schedule fraction, and says so in `note`.
- AIPerf 0.13.0 `--output-artifact-dir DIR` (export level "records"): DIR/profile_export.jsonl, one line per
  request: metadata.{request_start_ns, credit_issued_ns} (Unix ns), metrics.{time_to_first_token,
  request_latency, output_sequence_length} as {"value", "unit": "ms"|"tokens"}, and an "error" key for a
  failed request. TTFT is to the first response with content or reasoning (not the role chunk), latency to
  the last such response.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class Parsed:
    starts: list[float] = field(default_factory=list)  # only to order requests (each tool's own clock)
    ttft: list[float] = field(default_factory=list)  # s, the tool's own definition
    latency: list[float] = field(default_factory=list)  # s, request start -> last token chunk
    tokens: list[int] = field(default_factory=list)
    failed: int = 0
    send_lags: list[float] | None = None  # s, where the tool keeps a schedule
    fraction: float | None = None  # schedule span / actual send span (1.0 = kept up)
    note: str = ""

    @property
    def completed(self) -> int:
        return len(self.ttft)

    def tpot(self) -> list[float | None]:
        """(latency - TTFT) / (tokens - 1) per request: vLLM's TPOT, and GuideLLM's and AIPerf's ITL."""
        return [(lat - t) / (n - 1) if n > 1 else None for t, lat, n in
                zip(self.ttft, self.latency, self.tokens, strict=True)]

    def ordered(self) -> "Parsed":
        order = sorted(range(self.completed), key=lambda i: self.starts[i])
        return Parsed([self.starts[i] for i in order], [self.ttft[i] for i in order],
                      [self.latency[i] for i in order], [self.tokens[i] for i in order], self.failed,
                      self.send_lags, self.fraction, self.note)


def span_fraction(scheduled: Sequence[float], started: Sequence[float]) -> float | None:
    """How much of the schedule's pace the sends kept: (last - first due) / (last - first sent)."""
    if len(scheduled) < 2 or len(started) < 2:
        return None
    due, sent = max(scheduled) - min(scheduled), max(started) - min(started)
    return due / sent if sent > 0 else None


def pytest_glmv(data: dict[str, Any]) -> Parsed:
    out = _vllm_lists(data, list(data["latencies"]))
    sched, lags = data.get("scheduled_times"), data.get("send_lags")
    if lags is not None:
        out.send_lags = [float(x) for x in lags]
    if sched is not None and not math.isinf(_rate(data)):
        out.fraction = span_fraction(sched, data["start_times"])
    return out


def vllm_bench(data: dict[str, Any], latencies: Sequence[float], schedule: Sequence[float] | None = None) -> Parsed:
    """schedule: the offsets vllm bench serve drew (schedule.arrivals with its seed), for send lags."""
    out = _vllm_lists(data, list(latencies))
    if schedule is not None:
        starts = data["start_times"]
        t0, d0 = min(starts), min(schedule)  # offsets from the first request, which nothing can make late
        out.send_lags = [max(0.0, (s - t0) - (due - d0)) for s, due in zip(starts, schedule, strict=True)]
        out.fraction = span_fraction(schedule, starts)
    return out


def _rate(data: dict[str, Any]) -> float:
    rate = data.get("request_rate", "inf")
    return math.inf if rate in ("inf", None) else float(rate)


def _vllm_lists(data: dict[str, Any], latencies: list[float]) -> Parsed:
    out = Parsed()
    for start, ttft, lat, n, err in zip(data["start_times"], data["ttfts"], latencies, data["output_lens"],
                                        data["errors"], strict=True):
        if err:
            out.failed += 1
            continue
        out.starts.append(float(start))
        out.ttft.append(float(ttft))
        out.latency.append(float(lat))
        out.tokens.append(int(n))
    return out


def guidellm(data: dict[str, Any]) -> Parsed:
    bench = data["benchmarks"][-1]
    reqs = bench["requests"]
    out = Parsed(failed=len(reqs.get("errored") or []) + len(reqs.get("incomplete") or []))
    targeted, started = [], []
    for r in reqs["successful"]:
        t = r["info"]["timings"]
        first, last, start = t.get("first_token_iteration"), t.get("last_token_iteration"), t.get("request_start")
        if first is None or last is None or start is None or not r.get("output_tokens"):
            out.failed += 1
            continue
        out.starts.append(start)
        out.ttft.append(first - start)
        out.latency.append(last - start)
        out.tokens.append(int(r["output_tokens"]))
        if t.get("targeted_start") is not None:
            targeted.append(t["targeted_start"])
            started.append(start)
    kind = bench["config"]["strategy"].get("type_", "")
    stray = sum(1 for t in targeted if t < min(started) - 60)
    if stray:
        # GuideLLM 0.8.1's poisson: a worker can draw its first targets before the main process has set the
        # shared offset to the start time (the event is set first), so targets count from -1 s: due at once
        out.note = (f"{stray} of {len(targeted)} targets not on the clock (GuideLLM's Poisson offset race): "
                    "sent at once, no schedule to hold them against")
    elif targeted and kind != "synchronous":
        t0, s0 = min(targeted), min(started)
        # lag behind the target, with the first request's lead (connection set-up) taken out
        out.send_lags = [max(0.0, (s - s0) - (t - t0)) for t, s in zip(targeted, started, strict=True)]
        out.fraction = span_fraction(targeted, started)
    return out


def aiperf(text: str) -> Parsed:
    """AIPerf's profile_export.jsonl (records level)."""
    out = Parsed()
    issued, started = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        m, meta = r.get("metrics") or {}, r.get("metadata") or {}
        if r.get("error") or "time_to_first_token" not in m or "request_latency" not in m:
            out.failed += 1
            continue
        out.starts.append(meta["request_start_ns"] / 1e9)
        out.ttft.append(_ms(m["time_to_first_token"]) / 1000)
        out.latency.append(_ms(m["request_latency"]) / 1000)
        out.tokens.append(int(m["output_sequence_length"]["value"]))
        if meta.get("credit_issued_ns") is not None:
            issued.append(meta["credit_issued_ns"] / 1e9)
            started.append(meta["request_start_ns"] / 1e9)
    if issued:
        # AIPerf keeps no schedule in its records; its timing manager issues a credit when a request is due,
        # so credit issued -> request started is the part of the send lag it records
        out.send_lags = [max(0.0, s - c) for c, s in zip(issued, started, strict=True)]
        out.fraction = span_fraction(issued, started)
        out.note = "send lag: credit issued -> request start (the credit's own lateness is not recorded)"
    return out


def _ms(metric: dict[str, Any]) -> float:
    unit = metric.get("unit", "ms")
    scale = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "ns": 1e-6}.get(unit)
    if scale is None:
        raise ValueError(f"unknown time unit {unit!r}")
    return float(metric["value"]) * scale
