"""Process, CLI, latency model, --trace and /metrics."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_glmv.kit import prometheus, sse
from pytest_glmv.lifecycle.server import http_json
from pytest_glmv.reference.launcher import ReferenceServer

from .conftest import chat, chunks

CLI = [sys.executable, "-m", "pytest_glmv.reference"]


def test_startup_to_health_well_under_a_second(tmp_path: Path) -> None:
    began = time.monotonic()
    with ReferenceServer(log_dir=tmp_path) as srv:
        ready = time.monotonic() - began
        assert http_json(srv.root_url + "/health")[0] == 200
        assert srv.max_model_len == 65536 and srv.model_root == "zai-org/GLM-4.5V-FP8" and srv.version == "0.32.0"
    assert ready < 1.5, f"ready after {ready:.2f} s"  # includes the launcher's 0.2 s poll and interpreter start


@pytest.mark.parametrize("argv, text", [
    (["--port", "abc"], "--port: 'abc' is not a whole number"),
    (["--port", "8000", "--fault", "nope"], "unknown fault 'nope'; valid faults: no-reasoning-parser"),
    (["--port", "8000", "--ttft-ms", "-1"], "must be a finite number >= 0"),
    (["--port", "8000", "--reasoning-field", "x"], "invalid choice"),
    (["--port", "8000", "--allowed-local-media-path", "/no/such/dir"], "not an existing directory"),
])
def test_bad_cli_is_one_line_exit_2(argv: list[str], text: str) -> None:
    p = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in p.stderr


def test_list_faults() -> None:
    p = subprocess.run(CLI + ["--list-faults"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0
    names = [line.split()[0] for line in p.stdout.splitlines()]
    assert "no-tool-parser" in names and "ssrf-open" in names


@pytest.mark.asyncio
async def test_latency_model_and_trace(make_client, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    c = await make_client(ttft_ms=200, tpot_ms=20, trace=trace)
    t0 = time.monotonic()
    status, text = await chat(c, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=6,
                              stream_options={"include_usage": True})
    took = time.monotonic() - t0
    assert status == 200 and 0.3 <= took < 1.5
    (record,) = [json.loads(line) for line in trace.read_text().splitlines()]
    assert record["stream"] and record["status"] == 200 and record["request_id"] == chunks(text)[0]["id"]
    assert record["received"] >= t0 and record["prompt_tokens"] > 0 and record["completion_tokens"] == 6
    stamps = record["chunks"]
    assert len(stamps) == len(sse.read(text).data_lines)
    assert stamps[0] - record["received"] >= 0.19  # time to first token
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:-2], strict=False)]
    assert gaps and min(gaps) >= 0.015  # one token per 20 ms after the first


@pytest.mark.asyncio
async def test_tokens_paced_on_deadlines_so_late_wakeups_do_not_add_up(make_client, tmp_path: Path) -> None:
    # 2 ms steps: each asyncio.sleep wakes ~0.1-1 ms late; sleeping step by step put 3.06 ms between
    # tokens on a loaded host. Paced on deadlines, only the last wake-up's lateness shows, spread over ~80 gaps.
    trace = tmp_path / "trace.jsonl"
    c = await make_client(tpot_ms=2, trace=trace)
    status, _ = await chat(c, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=80,
                           ignore_eos=True, stream_options={"include_usage": True})
    (record,) = [json.loads(line) for line in trace.read_text().splitlines()]
    assert status == 200 and record["completion_tokens"] == 80
    tokens = record["chunks"][1:-2]  # after the role chunk; before the usage chunk and [DONE]
    mean_ms = (tokens[-1] - tokens[0]) / (len(tokens) - 1) * 1000
    assert 1.9 <= mean_ms <= 2.15, f"mean gap {mean_ms:.3f} ms over {len(tokens) - 1} gaps, configured 2 ms"


def test_trace_arrival_is_the_requests_first_bytes(tmp_path: Path) -> None:
    """`arrived` (first bytes read) comes before `received` (handler start), and a keep-alive
    connection's earlier request (here a GET /health 0.3 s before) never lends it its stamp."""
    import asyncio

    import aiohttp

    trace = tmp_path / "trace.jsonl"

    async def go(url: str) -> list[float]:
        sent = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            for _ in range(3):
                async with s.get(url + "/health") as r:
                    await r.read()
                await asyncio.sleep(0.3)
                sent.append(time.monotonic())
                async with s.post(url + "/v1/chat/completions", json={
                        "model": "glmv-reference", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2}) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
        return sent

    with ReferenceServer(trace=trace, log_dir=tmp_path) as srv:
        sent = asyncio.run(go(srv.root_url))
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(records) == 3
    for t0, rec in zip(sent, records, strict=True):
        assert t0 <= rec["arrived"] <= rec["received"], (t0, rec)
        assert rec["arrived"] - t0 < 0.1, f"arrival {rec['arrived'] - t0:.3f} s after the send"


@pytest.mark.asyncio
async def test_slowdown_with_concurrency(make_client) -> None:
    import asyncio

    c = await make_client(tpot_ms=5, slowdown_per_request=40)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
    t0 = time.monotonic()
    await chat(c, **body)
    alone = time.monotonic() - t0
    t0 = time.monotonic()
    await asyncio.gather(*(chat(c, **body) for _ in range(4)))
    crowded = time.monotonic() - t0
    assert crowded > alone + 0.3


@pytest.mark.asyncio
async def test_metrics_names_and_counts(make_client) -> None:
    c = await make_client()
    await chat(c, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    await chat(c, messages=[{"role": "user", "content": "hi"}], temperature=0)
    text = await (await c.get("/metrics")).text()
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
                 "vllm:e2e_request_latency_seconds_sum", "vllm:inter_token_latency_seconds_count",
                 "vllm:request_time_per_output_token_seconds_count"):
        assert name in text
    assert 'vllm:request_success_total{engine="0",model_name="glmv-reference",finished_reason="length"} 1.0' in text
    assert 'vllm:request_success_total{engine="0",model_name="glmv-reference",finished_reason="stop"} 1.0' in text
    assert 'vllm:e2e_request_latency_seconds_count{engine="0",model_name="glmv-reference"} 2.0' in text
    from .conftest import WIRE
    if (WIRE / "metrics.txt").is_file():
        declared = set(prometheus.types((WIRE / "metrics.txt").read_text()))
        mine = set(prometheus.types(text)) - {"glmv_reference_info"}  # the double's own mark (lifecycle/engine.py)
        assert mine <= declared, mine - declared
    assert "glmv_reference_info" in prometheus.types(text)


def test_vllm_version_option() -> None:
    from pytest_glmv.reference.__main__ import settings_from

    assert settings_from(["--port", "8000"]).vllm_version == "0.32.0"
    assert settings_from(["--port", "8000", "--reasoning-field", "reasoning_content"]).vllm_version == "0.11.0"
    assert settings_from(["--port", "8000", "--reasoning-field", "reasoning_content", "--vllm-version",
                          "0.14.1+cpu"]).vllm_version == "0.14.1+cpu"
    with ReferenceServer(reasoning_field="reasoning_content", vllm_version="0.13.0") as srv:
        assert srv.version == "0.13.0"
