"""benchmarks/slo_peer_outputs.py reads what each load generator of benchmarks/slo_vs_peers.py writes.

The samples under tests/slo/peer_samples/ were taken from real runs against the reference server (2026-11-30,
the 20 req/s Poisson step of a `slo_vs_peers.py --sizes 2,4 --rates 20 --rate-n 20` run), cut to three
requests (long lists and texts shortened, GuideLLM's metric distributions and config replaced by a note):
- pytest_glmv.json: `pytest suites/test_slo.py -m slo --glmv-slo-json ... --glmv-slo-records`;
- vllm_bench.json: vLLM 0.32.0 `vllm bench serve --save-result --save-detailed`;
- guidellm.json: GuideLLM 0.8.1 `guidellm run ... --output kind=json,path=...` (profile poisson);
- aiperf_profile_export.jsonl: AIPerf 0.13.0 `aiperf profile ...`, DIR/profile_export.jsonl (records level).
No network, no peers installed.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SAMPLES = Path(__file__).resolve().parent / "peer_samples"


@pytest.fixture(scope="module")
def outputs():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("slo_peer_outputs", BENCH / "slo_peer_outputs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["slo_peer_outputs"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("slo_peer_outputs", None)


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def test_pytest_glmv_result_with_records(outputs) -> None:  # type: ignore[no-untyped-def]
    p = outputs.pytest_glmv(sample("pytest_glmv.json"))
    assert p.completed == 3 and p.failed == 0 and p.tokens == [128, 128, 128]
    assert p.ttft[0] == pytest.approx(0.06285085700073978) and p.latency[0] == pytest.approx(1.3286683600017568)
    assert p.send_lags is not None and max(p.send_lags) < 1e-4
    # the schedule's span (0.0938 s) over the sends' span (0.0938 s): it kept up
    assert p.fraction == pytest.approx(1.0, abs=0.01)
    assert p.tpot()[0] == pytest.approx((1.3286683600017568 - 0.06285085700073978) / 127)


def test_vllm_bench_result_with_the_schedule_it_drew(outputs) -> None:  # type: ignore[no-untyped-def]
    data = sample("vllm_bench.json")
    # vllm bench serve --seed 0 at 20 req/s: pytest_glmv.slo.schedule.arrivals(20, 20.0, 1.0, 0)[:3]
    sched = [0.03426489500499608, 0.08833665542096031, 0.1280843088923231]
    p = outputs.vllm_bench(data, data["latencies"], sched)
    assert p.completed == 3 and p.tokens == [128, 128, 128]
    assert p.ttft == pytest.approx([0.05930837400046585, 0.06203257000015583, 0.056010736001553596])
    assert p.send_lags is not None and p.send_lags[0] == 0.0 and max(p.send_lags) < 0.001
    assert p.fraction == pytest.approx(1.0, abs=0.02)
    assert outputs.vllm_bench(data, data["latencies"]).send_lags is None  # no schedule: no lags


def test_vllm_bench_failed_requests_are_counted_not_timed(outputs) -> None:  # type: ignore[no-untyped-def]
    data = sample("vllm_bench.json")
    data["errors"][1] = "ClientConnectorError"
    p = outputs.vllm_bench(data, data["latencies"])
    assert p.completed == 2 and p.failed == 1


def test_guidellm_benchmarks_json(outputs) -> None:  # type: ignore[no-untyped-def]
    data = sample("guidellm.json")
    p = outputs.guidellm(data)
    assert p.completed == 3 and p.failed == 0 and p.tokens == [128, 128, 128]
    # TTFT from request_start to first_token_iteration: GuideLLM's own time_to_first_token_ms
    reported = [r["time_to_first_token_ms"] for r in data["benchmarks"][0]["requests"]["successful"]]
    assert [t * 1000 for t in p.ttft] == pytest.approx(reported, abs=1e-3)
    first = data["benchmarks"][0]["requests"]["successful"][0]
    assert p.tpot()[0] * 1000 == pytest.approx(first["inter_token_latency_ms"], abs=1e-3)  # its ITL: vLLM's TPOT
    assert p.send_lags is not None and p.fraction is not None and 0.9 < p.fraction < 1.1


def test_guidellm_synchronous_has_no_schedule_and_errors_count(outputs) -> None:  # type: ignore[no-untyped-def]
    data = sample("guidellm.json")
    bench = data["benchmarks"][0]
    bench["config"]["strategy"]["type_"] = "synchronous"
    bench["requests"]["errored"] = [copy.deepcopy(bench["requests"]["successful"][0])]
    p = outputs.guidellm(data)
    assert p.send_lags is None and p.fraction is None and p.failed == 1


def test_guidellm_poisson_targets_off_the_clock(outputs) -> None:  # type: ignore[no-untyped-def]
    """GuideLLM 0.8.1 can hand a worker targets counted from -1 s (its Poisson offset race; seen in a real run:
    100 requests sent in 1.24 s at 20 req/s): no send lags or schedule fraction from such targets."""
    data = sample("guidellm.json")
    timings = [r["info"]["timings"] for r in data["benchmarks"][0]["requests"]["successful"]]
    timings[0]["targeted_start"], timings[1]["targeted_start"] = -0.9069696444467388, -0.8360381867981507
    p = outputs.guidellm(data)
    assert p.completed == 3 and p.send_lags is None and p.fraction is None
    assert p.note.startswith("2 of 3 targets not on the clock")


def test_aiperf_profile_export_jsonl(outputs) -> None:  # type: ignore[no-untyped-def]
    text = (SAMPLES / "aiperf_profile_export.jsonl").read_text()
    p = outputs.aiperf(text)
    assert p.completed == 3 and p.failed == 0 and p.tokens == [128, 128, 128]
    assert p.ttft[0] == pytest.approx(0.068749422) and p.latency[0] == pytest.approx(1.327710846)
    first = json.loads(text.splitlines()[0])["metrics"]["inter_token_latency"]["value"]
    assert p.tpot()[0] * 1000 == pytest.approx(first, rel=1e-6)  # its ITL: (latency - TTFT) / (OSL - 1)
    assert p.send_lags is not None and p.send_lags[0] == pytest.approx(0.002211633, abs=1e-6)
    o = p.ordered()
    assert o.starts == sorted(p.starts)


def test_aiperf_error_record_and_units(outputs) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(x) for x in (SAMPLES / "aiperf_profile_export.jsonl").read_text().splitlines()]
    rows[0]["error"] = {"code": 500, "type": "Internal Server Error", "message": "boom"}
    rows[1]["metrics"]["time_to_first_token"] = {"value": 0.0645, "unit": "s"}
    p = outputs.aiperf("\n".join(json.dumps(r) for r in rows))
    assert p.failed == 1 and p.completed == 2 and p.ttft[0] == pytest.approx(0.0645)
    rows[1]["metrics"]["time_to_first_token"]["unit"] = "fortnights"
    with pytest.raises(ValueError, match="unknown time unit"):
        outputs.aiperf(json.dumps(rows[1]))


def test_span_fraction(outputs) -> None:  # type: ignore[no-untyped-def]
    assert outputs.span_fraction([0.0, 1.0, 2.0], [10.0, 11.0, 12.0]) == 1.0
    assert outputs.span_fraction([0.0, 1.0], [10.0, 12.0]) == 0.5  # half the pace: fell behind
    assert outputs.span_fraction([0.0], [1.0]) is None
