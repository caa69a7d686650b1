"""/metrics in Prometheus text format under vLLM's metric names (see tests/wire/metrics.txt).

Histograms are kept as vLLM's Prometheus client keeps them: one count per bucket, a sum and a count,
each updated in O(1) per observation (a bisect over the bucket bounds); a scrape renders the
cumulative buckets from those, so its cost does not grow with the number of requests served (it used
to recompute every histogram from every observation: ~11 s per scrape after ~45k requests, on the
event loop, stalling every stream).
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict

_LAT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000)

HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "vllm:time_to_first_token_seconds": ("Histogram of time to first token in seconds.", _LAT_BUCKETS),
    "vllm:inter_token_latency_seconds": ("Histogram of inter-token latency in seconds.", _LAT_BUCKETS),
    "vllm:request_time_per_output_token_seconds": (
        "Histogram of time_per_output_token_seconds per request.", _LAT_BUCKETS),
    "vllm:e2e_request_latency_seconds": ("Histogram of e2e request latency in seconds.", _LAT_BUCKETS),
    "vllm:request_queue_time_seconds": ("Histogram of time spent in WAITING phase for request.", _LAT_BUCKETS),
    "vllm:request_prompt_tokens": ("Number of prefill tokens processed.", _TOKEN_BUCKETS),
    "vllm:request_generation_tokens": ("Number of generation tokens processed.", _TOKEN_BUCKETS),
}


class Histogram:
    """Per-bucket counts (bucket i counts values v with bounds[i-1] < v <= bounds[i]; the last one, +Inf),
    a running sum and a count: what prometheus_client's Histogram holds."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: Prometheus' le
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        out, total = [], 0
        for c in self.counts:
            total += c
            out.append(total)
        return out


class Metrics:
    def __init__(self, model_name: str, double: bool = True) -> None:
        self.labels = f'engine="0",model_name="{model_name}"'
        self.double = double  # say it is the double (a glmv_reference_info gauge) unless posing as a vLLM release
        self.created = time.time()
        self.running = 0
        self.waiting = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = defaultdict(int)
        self.hist: dict[str, Histogram] = {name: Histogram(buckets) for name, (_, buckets) in HISTOGRAMS.items()}

    def observe(self, name: str, value: float) -> None:
        self.hist[name].observe(value)

    def finished(self, reason: str, prompt: int, generated: int, ttft: float, e2e: float, itls: list[float]) -> None:
        self.success[reason] += 1
        self.prompt_tokens += prompt
        self.generation_tokens += generated
        self.observe("vllm:time_to_first_token_seconds", ttft)
        self.observe("vllm:e2e_request_latency_seconds", e2e)
        self.observe("vllm:request_queue_time_seconds", 0.0)
        self.observe("vllm:request_prompt_tokens", prompt)
        self.observe("vllm:request_generation_tokens", generated)
        for gap in itls:
            self.observe("vllm:inter_token_latency_seconds", gap)
        if generated > 1:
            self.observe("vllm:request_time_per_output_token_seconds", (e2e - ttft) / (generated - 1))

    def render(self) -> str:
        L = self.labels
        out: list[str] = []

        def head(name: str, text: str, kind: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        if self.double:
            head("glmv_reference_info", "The glmv reference double of vLLM (not vLLM).", "gauge")
            out.append('glmv_reference_info{server="glmv-reference"} 1.0')
        head("vllm:num_requests_running", "Number of requests in model execution batches.", "gauge")
        out.append(f"vllm:num_requests_running{{{L}}} {float(self.running)}")
        head("vllm:num_requests_waiting", "Number of requests waiting to be processed.", "gauge")
        out.append(f"vllm:num_requests_waiting{{{L}}} {float(self.waiting)}")
        head("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "gauge")
        out.append(f"vllm:kv_cache_usage_perc{{{L}}} 0.0")
        for name, text, value in (
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", self.generation_tokens),
        ):
            head(f"{name}_total", text, "counter")
            out.append(f"{name}_total{{{L}}} {float(value)}")
            head(f"{name}_created", text, "gauge")
            out.append(f"{name}_created{{{L}}} {self.created}")
        head("vllm:request_success_total", "Count of successfully processed requests.", "counter")
        for reason in ("stop", "length", "abort", "error"):
            out.append(f'vllm:request_success_total{{{L},finished_reason="{reason}"}} {float(self.success[reason])}')
        for name, (text, _) in HISTOGRAMS.items():
            head(name, text, "histogram")
            h = self.hist[name]
            cum = h.cumulative()
            for b, n in zip(h.bounds, cum[:-1], strict=True):
                out.append(f'{name}_bucket{{{L},le="{b}"}} {float(n)}')
            out.append(f'{name}_bucket{{{L},le="+Inf"}} {float(cum[-1])}')
            out.append(f"{name}_count{{{L}}} {float(h.count)}")
            out.append(f"{name}_sum{{{L}}} {float(h.sum)}")
        return "\n".join(out) + "\n"
