"""Result block layout, saved-result JSON keys, CDF plot, /metrics cross-check."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from pytest_glmv.slo import promcheck, report
from pytest_glmv.slo.metrics import Record, compute
from pytest_glmv.slo.plot import cdf_png


def records() -> list[Record]:
    return [Record(i, start=float(i), ok=i != 3, error="" if i != 3 else "HTTP 503 Service Unavailable: busy",
                   ttft=0.1 * (i + 1), itl=[0.01, 0.02], latency=0.1 * (i + 1) + 0.03, output_tokens=3,
                   prompt_tokens=10) for i in range(4)]


def result(max_concurrency: int | None = 2, rate: float = 20.0) -> dict:
    r = report.metadata(model="m", base_url="http://x", num_prompts=4, request_rate=rate, burstiness=1.0,
                        max_concurrency=max_concurrency, dataset="synthetic", seed=0)
    r.update(compute(records(), 2.0))
    return r


def test_block_has_vllm_labels_and_layout() -> None:
    lines = report.block(result()).splitlines()
    assert lines[0] == "============ Serving Benchmark Result ============"
    assert lines[1] == "Successful requests:                     3         "
    assert "Request rate configured (RPS):           20.00     " in lines
    assert "Peak concurrent requests:                1.00      " in lines
    assert "---------------Time to First Token----------------" in lines
    assert "-----Time per Output Token (excl. 1st token)------" in lines
    assert "Mean TTFT (ms):                          200.00    " in lines
    assert "P99 ITL (ms):                            20.00     " in lines
    assert "---------------Client-side Queueing---------------" in lines
    assert lines[-1] == "=" * 50
    plain = report.block(result(max_concurrency=None, rate=float("inf")))
    assert "Client-side Queueing" not in plain and "Request rate configured" not in plain
    assert "Maximum request concurrency" not in plain


def test_json_has_vllm_saved_result_keys(tmp_path: Path) -> None:
    path = report.write_json(tmp_path / "r.json", result(rate=float("inf")), records())
    data = json.loads(path.read_text())
    vllm_keys = {"date", "backend", "model_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
                 "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                 "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
                 "max_output_tokens_per_s", "max_concurrent_requests", "input_lens", "output_lens", "ttfts", "itls",
                 "start_times", "errors"}
    stats = {f"{s}_{m}_ms" for s in ("mean", "median", "std", "p99") for m in ("ttft", "tpot", "itl", "e2el")}
    ours = {"mean_send_lag_ms", "p99_send_lag_ms", "mean_client_queue_time_ms", "send_lags", "scheduled_times"}
    assert vllm_keys | stats | ours <= set(data), sorted(vllm_keys | stats | ours - set(data))
    assert data["request_rate"] == "inf" and data["failed"] == 1 and data["errors"][3].startswith("HTTP 503")
    assert "ttfts" not in json.loads(report.write_json(tmp_path / "s.json", result()).read_text())


def test_cdf_png(tmp_path: Path) -> None:
    img = Image.open(cdf_png(records(), tmp_path / "cdf.png"))
    assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    assert len(img.convert("RGB").getcolors(1 << 20) or []) > 5  # something was drawn
    Image.open(cdf_png([], tmp_path / "empty.png"))  # no samples still gives a picture


METRICS_BEFORE = """# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 10.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.5
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 15.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 15.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 15.0
"""


def after(success_length: float, ttft_sum: float) -> str:
    return (METRICS_BEFORE.replace('"length",model_name="m"} 5.0', f'"length",model_name="m"}} {success_length}')
            .replace('seconds_sum{engine="0",model_name="m"} 1.5',
                     f'seconds_sum{{engine="0",model_name="m"}} {ttft_sum}')
            .replace('seconds_count{engine="0",model_name="m"} 15.0', 'seconds_count{engine="0",model_name="m"} 18.0'))


def test_cross_check_agrees_and_flags() -> None:
    r = {"completed": 3, "failed": 0, "mean_ttft_ms": 120.0}
    # 3 more successes, TTFT sum +0.3 s over 3 requests: server mean 100 ms <= client 120 ms
    cc = promcheck.cross_check(METRICS_BEFORE, after(8.0, 1.8), r)
    assert cc.available and not cc.problems and round(cc.server["mean_ttft_ms"], 6) == 100.0
    bad = promcheck.cross_check(METRICS_BEFORE, after(7.0, 1.95), r)
    assert bad.problems == [
        "the server counted 2 successful requests during the run, the client completed 3 (failed 0)",
        "client mean TTFT 120.000 ms is below the server's 150.000 ms: one of the two clocks is wrong"]
    assert not promcheck.cross_check(None, None, r).available
    assert "no vllm:request_success_total" in promcheck.cross_check("x 1", "x 2", r).note


def test_block_and_json_say_how_requests_without_usage_were_counted(tmp_path: Path) -> None:
    recs = records()
    recs[0].output_tokens, recs[0].chunks = None, 3
    r = report.metadata(model="m", base_url="http://x", num_prompts=4, request_rate=1.0, burstiness=1.0,
                        max_concurrency=None, dataset="synthetic", seed=0)
    r.update(compute(recs, 2.0))
    lines = report.block(r).splitlines()
    assert "Requests without a usage chunk:          1         " in lines
    assert "  (their output tokens: streamed chunks; vllm bench serve re-tokenizes the text)" in lines
    assert lines[-1] == "=" * 50
    data = json.loads(report.write_json(tmp_path / "r.json", r).read_text())
    assert data["usage_missing"] == 1 and data["usage_missing_note"].startswith("1 of 3 successful requests had no "
                                                                                "usage chunk")
    # every stream had usage: the block is vLLM's, the JSON says 0 and carries no note
    assert "usage chunk" not in report.block(result()) and compute(records(), 2.0)["usage_missing_note"] is None


def test_peak_concurrency_agrees_with_the_concurrency_limit() -> None:
    """Concurrency 1, requests one after another: the block says 1 at once, and what vLLM's 47 would count."""
    r = {**result(max_concurrency=1), "max_concurrent_requests": 47, "max_concurrent_requests_at_once": 1}
    lines = report.block(r).splitlines()
    assert "Maximum request concurrency:             1         " in lines
    assert "Peak concurrent requests:                1         " in lines
    assert "Requests active in the busiest second:   47.00     " in lines
    assert any("vllm bench serve prints that as 'Peak concurrent requests'" in ln for ln in lines)


def test_the_validity_rule_is_stated_where_it_is_applied() -> None:
    # rate inf: a p99 send lag over the limit does not make the run invalid, and the block says why
    r = {**result(max_concurrency=4, rate=float("inf")), "p99_send_lag_ms": 10.11, "p99_slot_lag_ms": 0.2,
         "slo_max_send_lag_ms": 10.0, "run_not_valid": None}
    text = report.block(r)
    assert "Rule: p99 send lag and p99 slot lag <= 10 ms (--glmv-slo-max-send-lag-ms)" in text
    assert "P99 send lag (ms):                       10.11" in text and "not counted: at rate inf" in text
    assert "Verdict:                                 valid" in text
    bad = {**result(rate=20.0), "p99_send_lag_ms": 12.0, "p99_slot_lag_ms": 0.0, "slo_max_send_lag_ms": 10.0,
           "run_not_valid": "run not valid: the client fell behind (p99 send lag 12.00 ms > 10 ms)"}
    text = report.block(bad)
    assert "not counted" not in text and "RUN NOT VALID: the client fell behind" in text and "Verdict:" not in text


def test_every_threshold_shows_measured_limit_and_margin_on_a_passing_run_too() -> None:
    from pytest_glmv.slo.spec import Threshold

    ts = [Threshold("mean_ttft_ms", 900.0, True, 900.0), Threshold("output_throughput", 1.0, False, 1.0)]
    lines = report.threshold_lines(ts, {"mean_ttft_ms": 200.0, "output_throughput": 4.0})
    assert lines == ["SLO ok   mean_ttft_ms = 200.00 meets threshold <= 900.00; margin +700.00, +77.8%",
                     "SLO ok   output_throughput = 4.00 meets threshold >= 1.00; margin +3.00, +300.0%"]


def test_client_and_server_ttft_are_explained_not_just_shown() -> None:
    from pytest_glmv.slo.promcheck import CrossCheck

    lines = CrossCheck(True, server={"completed": 4, "mean_ttft_ms": 0.72, "mean_e2el_ms": 5.0},
                       client={"mean_ttft_ms": 43.64}).lines()
    text = "\n".join(lines)
    assert "client mean TTFT 43.64 ms vs the server's 0.72 ms (+42.92 ms): they time different spans" in text
    assert "sending the request to receiving its first token" in text and "reaching its engine" in text
