"""Process, CLI, latency model, --trace and /metrics."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_glmv.reference.launcher import ReferenceServer
from pytest_glmv.server import http_json

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
    assert len(stamps) == len([line for line in text.splitlines() if line.startswith("data: ")])
    assert stamps[0] - record["received"] >= 0.19  # time to first token
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:-2], strict=False)]
    assert gaps and min(gaps) >= 0.015  # one token per 20 ms after the first


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
        declared = {line.split()[2] for line in (WIRE / "metrics.txt").read_text().splitlines()
                    if line.startswith("# TYPE")}
        mine = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        assert mine <= declared, mine - declared
