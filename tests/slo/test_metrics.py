"""Statistics from hand-made timestamp traces equal hand-computed values (vllm bench serve's definitions)."""
from __future__ import annotations

import math

import pytest

from pytest_glmv.slo.metrics import Record, compute, errors, peak_at_once, peaks


def trace() -> list[Record]:
    return [
        # 3 tokens: TTFT 100 ms, gaps 20 and 30 ms, TPOT (150-100)/2 = 25 ms
        Record(0, start=10.0, ok=True, ttft=0.1, itl=[0.02, 0.03], latency=0.15, output_tokens=3,
               prompt_tokens=10, send_lag=0.001),
        # one output token: no TPOT, no ITL
        Record(1, start=10.5, ok=True, ttft=0.2, itl=[], latency=0.2, output_tokens=1, prompt_tokens=20,
               send_lag=0.002),
        # failed: counted, never in the statistics
        Record(2, start=10.2, ok=False, error="HTTP 500 Internal Server Error: boom", ttft=9.0, latency=9.0,
               output_tokens=99, prompt_tokens=99, send_lag=0.003),
        # usage missing: 4 streamed chunks stand in for the token count; TPOT 200/3 ms
        Record(3, start=11.0, ok=True, ttft=0.3, itl=[0.05, 0.05, 0.1], latency=0.5, output_tokens=None, chunks=4,
               prompt_tokens=30, send_lag=0.004),
    ]


def test_counts_throughputs_and_statistics_match_hand_computation() -> None:
    r = compute(trace(), duration=2.0, percentiles=(99,), goodput={"ttft": 250, "tpot": 50})
    expected = {
        "completed": 3, "failed": 1, "total_input_tokens": 60, "total_output_tokens": 8,
        "request_throughput": 1.5, "output_throughput": 4.0, "total_token_throughput": 34.0,
        "mean_ttft_ms": 200.0, "median_ttft_ms": 200.0, "std_ttft_ms": math.sqrt(20000 / 3), "p99_ttft_ms": 298.0,
        "mean_tpot_ms": (25 + 200 / 3) / 2, "p99_tpot_ms": 25 + 0.99 * (200 / 3 - 25),
        "mean_itl_ms": 50.0, "median_itl_ms": 50.0, "p99_itl_ms": 98.0,
        "mean_e2el_ms": 850 / 3, "median_e2el_ms": 200.0,
        # goodput: request 0 (100 ms, 25 ms) and request 1 (200 ms, TPOT 0) are good; request 3 misses TTFT
        "request_goodput": 1.0,
        "max_concurrent_requests": 2, "max_output_tokens_per_s": 4.0, "usage_missing": 1,
        "mean_send_lag_ms": 2.5,
    }
    for key, want in expected.items():
        assert r[key] == pytest.approx(want), f"{key}: got {r[key]}, want {want}"


def test_peak_concurrency_uses_vllm_one_second_buckets() -> None:
    # Requests [0, 0.5], [0.9, 1.2], [1.1, 2.05]: buckets 0..0, 0..1, 1..2 -> [2, 2, 1]
    recs = [Record(0, start=0.0, ok=True, latency=0.5), Record(1, start=0.9, ok=True, latency=0.3),
            Record(2, start=1.1, ok=True, latency=0.95)]
    assert peaks(recs)[1] == 2
    # a failed request never counts, however long
    assert peaks(recs + [Record(3, start=0.0, ok=False, latency=5.0)])[1] == 2


def test_only_one_token_requests_give_tpot_zero_not_nan() -> None:
    recs = [Record(0, start=0.0, ok=True, ttft=0.05, latency=0.05, output_tokens=1)]
    r = compute(recs, 1.0)
    assert r["mean_tpot_ms"] == 0.0 and r["p99_tpot_ms"] == 0.0 and r["mean_itl_ms"] == 0.0
    assert r["mean_ttft_ms"] == pytest.approx(50.0)


def test_all_failed_reports_zeros_and_keeps_the_failures() -> None:
    recs = [Record(i, ok=False, error=f"ClientConnectorError: refused {i}") for i in range(3)]
    r = compute(recs, 1.0)
    assert (r["completed"], r["failed"], r["mean_ttft_ms"], r["max_concurrent_requests"]) == (0, 3, 0.0, 0)
    assert errors(recs, 2) == ["request 0: ClientConnectorError: refused 0",
                               "request 1: ClientConnectorError: refused 1"]


def test_usage_of_zero_tokens_is_taken_at_its_word() -> None:
    r = compute([Record(0, ok=True, ttft=0.1, latency=0.1, output_tokens=0, chunks=3)], 1.0)
    assert r["total_output_tokens"] == 0 and r["usage_missing"] == 0


def test_extra_percentiles_get_vllm_key_spelling() -> None:
    r = compute(trace(), 2.0, percentiles=(50, 90, 99.9))
    assert {"p50_ttft_ms", "p90_itl_ms", "p99.9_tpot_ms"} <= set(r)
    assert r["request_goodput"] is None  # no goodput asked for, as in vLLM


def test_requests_without_usage_are_counted_and_the_rule_is_stated() -> None:
    # As vllm bench serve: such a request stays in every statistic (TPOT over its 4 chunks), never dropped;
    # unlike it, nothing hides the fallback: a count and a sentence that says how they were counted.
    r = compute(trace(), 2.0)
    assert r["usage_missing"] == 1 and r["mean_tpot_ms"] == pytest.approx((25 + 200 / 3) / 2)
    assert r["usage_missing_note"].startswith("1 of 3 successful requests had no usage chunk: their output tokens")
    assert "re-tokenizes" in r["usage_missing_note"] and "input tokens count 0" in r["usage_missing_note"]
    # failed requests are not in the count, and a run where every stream had usage says nothing
    assert compute(trace()[:3], 2.0)["usage_missing"] == 0
    assert compute(trace()[:3], 2.0)["usage_missing_note"] is None


def test_exact_in_flight_beside_vllms_per_second_count() -> None:
    # Concurrency 1, thirty 30 ms requests in one second: vLLM's bucket counts all 30 as "in flight" in that
    # second; at the same instant there is only ever one.
    one_at_a_time = [Record(i, start=i * 0.033, ttft=0.01, latency=0.03, itl=[0.01, 0.01], ok=True,
                            output_tokens=3, chunks=3) for i in range(30)]
    from pytest_glmv.slo.metrics import buckets

    b = buckets(one_at_a_time)
    assert b is not None and b.in_flight.tolist()[0] == 30 and b.at_once.tolist()[0] == 1
    # A long request through several seconds and a short one beside it in the fourth.
    long_and_short = [Record(0, start=0.0, ttft=0.5, latency=5.2, itl=[1.0], ok=True, output_tokens=2, chunks=2),
                      Record(1, start=3.1, ttft=0.1, latency=0.2, itl=[], ok=True, output_tokens=1, chunks=1)]
    b = buckets(long_and_short)
    assert b is not None and b.at_once.tolist()[:6] == [1, 1, 1, 2, 1, 1]


def test_peak_at_once_is_what_ran_together_not_what_shared_a_second() -> None:
    # ten 50 ms requests one after another inside one second: vLLM's bucket counts 10, one ran at a time
    recs = [Record(i, start=0.06 * i, ok=True, latency=0.05) for i in range(10)]
    assert peaks(recs)[1] == 10 and peak_at_once(recs) == 1
    r = compute(recs, 1.0)
    assert r["max_concurrent_requests"] == 10 and r["max_concurrent_requests_at_once"] == 1
    overlapping = [Record(0, start=0.0, ok=True, latency=0.5), Record(1, start=0.1, ok=True, latency=0.5),
                   Record(2, start=0.2, ok=True, latency=0.1)]
    assert peak_at_once(overlapping) == 3
