"""/metrics in O(1) per observation: the same text the old recompute-everything renderer gave, and a
scrape that costs milliseconds whatever the number of requests served."""
from __future__ import annotations

import random
import time

from pytest_glmv.kit import prometheus
from pytest_glmv.reference.metrics import HISTOGRAMS, Histogram, Metrics


def _brute(bounds: tuple[float, ...], values: list[float]) -> list[int]:
    return [sum(1 for v in values if v <= b) for b in bounds] + [len(values)]


def test_buckets_are_cumulative_with_prometheus_le_and_match_a_recount() -> None:
    rng = random.Random(7)
    for _, bounds in HISTOGRAMS.values():
        h = Histogram(bounds)
        # values on the bounds themselves count in that bucket (le is <=), beyond the last in +Inf only
        values = [rng.choice(bounds) for _ in range(200)] + [rng.uniform(0, 2 * bounds[-1]) for _ in range(500)]
        values += [0.0, bounds[-1] * 10]
        for v in values:
            h.observe(v)
        assert h.cumulative() == _brute(tuple(float(b) for b in bounds), values)
        assert h.count == len(values) and h.sum == sum(values)


def test_render_is_unchanged_from_the_recount() -> None:
    m = Metrics("glmv-reference")
    m.finished("length", 12, 5, 0.05, 0.1, [0.01, 0.0125, 0.01, 0.0175])
    m.finished("stop", 30, 1, 0.001, 0.001, [])
    totals = prometheus.totals(m.render())
    assert totals["vllm:time_to_first_token_seconds_count"] == 2.0
    assert abs(totals["vllm:time_to_first_token_seconds_sum"] - 0.051) < 1e-12
    assert totals["vllm:inter_token_latency_seconds_count"] == 4.0
    text = m.render()
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",model_name="glmv-reference",le="0.001"} 1.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",model_name="glmv-reference",le="0.04"} 1.0' in text
    assert 'vllm:time_to_first_token_seconds_bucket{engine="0",model_name="glmv-reference",le="0.06"} 2.0' in text
    assert 'vllm:request_generation_tokens_bucket{engine="0",model_name="glmv-reference",le="5.0"} 2.0' in text
    assert 'vllm:request_generation_tokens_bucket{engine="0",model_name="glmv-reference",le="+Inf"} 2.0' in text


def test_a_scrape_after_50k_requests_costs_milliseconds() -> None:
    m = Metrics("glmv-reference")
    gaps = [0.008, 0.0085, 0.009, 0.0095, 0.01, 0.011, 0.012, 0.0125, 0.013, 0.014]
    for i in range(50_000):  # 50k requests: 50k observations in each histogram, 500k ITLs
        m.finished("length", 90 + i % 40, 11, 0.05 + (i % 7) / 1000, 0.15, gaps)
    best = min(_timed(m.render) for _ in range(3))
    assert best < 0.05, f"a scrape took {best * 1000:.1f} ms after 50k requests"
    assert prometheus.totals(m.render())["vllm:inter_token_latency_seconds_count"] == 500_000.0


def _timed(f) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0
