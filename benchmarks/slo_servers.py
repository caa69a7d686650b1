"""Two streaming servers the project did not shape around its own client, for benchmarks/slo_vs_peers.py
(`--server starlette`, `--server aiohttp`): each serves vLLM 0.32's chat-completion stream (headers flushed at
once, the role chunk after --ttft-ms, one token chunk per --tpot-ms on an absolute schedule, the usage chunk,
[DONE]) and traces every request in the reference server's format (pytest_glmv/reference/trace.py: JSONL,
CLOCK_MONOTONIC, `arrived`, `chunks` stamped after each write returned, `status`, `completion_tokens`), so
slo_peer_truth.py and slo_pytest_bias.py read them unchanged.

- starlette: vLLM's own HTTP stack, uvicorn (httptools, uvloop, as `vllm serve` runs it: uvloop.run of a
  uvicorn.Server) + Starlette `StreamingResponse`. `arrived` is stamped when the ASGI app is called, i.e.
  after uvicorn parsed the request head, as vLLM's app sees a request; chunks are stamped when uvicorn's
  `send` returned (it has handed the bytes to the socket). Run it with a Python that has uvicorn and
  starlette (.venv-vllm has vLLM's own; --python).
- aiohttp: an independent aiohttp app; `arrived` is stamped when the handler starts (aiohttp has parsed
  the head by then).
Unlike the reference server, neither stamps the request's first bytes: a client's time between its start
stamp and the end of its request is inside the truth there, and shows as bias.

    python benchmarks/slo_servers.py --stack starlette|aiohttp --port N --trace FILE [--ttft-ms 50 --tpot-ms 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODEL = "zai-org/GLM-4.5V"  # a served name the plugin maps to a GLM-4V profile


class Stream:
    """One request's answer: the SSE events and when each is due (absolute, from the arrival)."""

    def __init__(self, body: dict[str, Any], arrived: float, ttft: float, tpot: float) -> None:
        from pytest_glmv.reference import tokenizer

        text = "".join(p.get("text", "") if isinstance(p, dict) else "" for m in body.get("messages", [])
                       for p in (m.get("content") if isinstance(m.get("content"), list) else [{"text": m.get(
                           "content") or ""}]))
        self.prompt = len(tokenizer.encode(text))
        self.n = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        self.stream = bool(body.get("stream"))
        usage = (body.get("stream_options") or {}).get("include_usage")
        self.cid = f"chatcmpl-{int(arrived * 1e9):x}"
        self.head = {"id": self.cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
        self.start, self.ttft, self.tpot, self.usage = arrived, ttft, tpot, bool(usage)
        self.record: dict[str, Any] = {"request_id": self.cid, "stream": self.stream, "arrived": arrived,
                                       "received": arrived, "chunks": [], "status": 200, "prompt_tokens": self.prompt,
                                       "completion_tokens": self.n}

    def _event(self, obj: dict[str, Any] | str) -> bytes:
        text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        return f"data: {text}\n\n".encode()

    def events(self) -> list[tuple[float, bytes]]:
        """(due, bytes): the role chunk at arrival + TTFT, token k (from 0) one TPOT per token after it (so the
        role chunk travels alone, as vLLM's first output does), then usage and [DONE] at once."""
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        out = [(self.start + self.ttft, self._event({**self.head, "choices": [role]}))]
        for k in range(self.n):
            last = k == self.n - 1
            choice = {"index": 0, "delta": {"content": f" w{k}"}, "logprobs": None,
                      "finish_reason": "length" if last else None}
            out.append((self.start + self.ttft + (k + 1) * self.tpot, self._event({**self.head, "choices": [choice]})))
        if self.usage:
            u = {"prompt_tokens": self.prompt, "total_tokens": self.prompt + self.n, "completion_tokens": self.n}
            out.append((0.0, self._event({**self.head, "choices": [], "usage": u})))
        out.append((0.0, self._event("[DONE]")))
        return out

    def whole(self) -> dict[str, Any]:
        text = "".join(f" w{k}" for k in range(self.n))
        return {"id": self.cid, "object": "chat.completion", "created": self.head["created"], "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": self.prompt, "total_tokens": self.prompt + self.n,
                          "completion_tokens": self.n}}


async def until(due: float) -> None:
    wait = due - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


class Tracer:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def write(self, rec: dict[str, Any]) -> None:
        rec["finished"] = time.monotonic()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "glmv",
                                        "root": MODEL, "max_model_len": 65536}]}


def tokenize(body: dict[str, Any]) -> dict[str, Any]:
    from pytest_glmv.reference import tokenizer

    ids = tokenizer.encode(str(body.get("prompt", "")))
    return {"count": len(ids), "max_model_len": 65536, "tokens": ids}


def detokenize(body: dict[str, Any]) -> dict[str, Any]:
    from pytest_glmv.reference import tokenizer

    return {"prompt": tokenizer.decode([int(t) for t in body.get("tokens", [])], skip_special_tokens=False)}


def starlette_app(a: argparse.Namespace, tracer: Tracer) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        arrived = request.scope["glmv_arrived"]
        s = Stream(await request.json(), arrived, a.ttft_ms / 1000, a.tpot_ms / 1000)
        request.scope["glmv_record"] = s.record
        if not s.stream:
            await until(arrived + a.ttft_ms / 1000 + max(0, s.n - 1) * a.tpot_ms / 1000)
            s.record["chunks"].append(time.monotonic())
            return JSONResponse(s.whole())

        async def gen() -> AsyncIterator[bytes]:
            for due, data in s.events():
                await until(due)
                yield data
        return StreamingResponse(gen(), media_type="text/event-stream")

    async def get_json(request: Request) -> Response:
        return JSONResponse(models() if request.url.path == "/v1/models" else {"version": "0.32.0"})

    async def post_json(request: Request) -> Response:
        fn = tokenize if request.url.path == "/tokenize" else detokenize
        return JSONResponse(fn(await request.json()))

    inner = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                              Route("/health", lambda r: Response(b""), methods=["GET"]),
                              Route("/v1/models", get_json, methods=["GET"]), Route("/version", get_json),
                              Route("/tokenize", post_json, methods=["POST"]),
                              Route("/detokenize", post_json, methods=["POST"])])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app uvicorn calls: the arrival stamp, and a stamp after each body write returned."""
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        scope["glmv_arrived"] = time.monotonic()

        async def stamped(msg: dict[str, Any]) -> None:
            await send(msg)
            rec = scope.get("glmv_record")
            if rec is not None and rec["stream"] and msg["type"] == "http.response.body" and msg.get("body"):
                rec["chunks"].append(time.monotonic())
        await inner(scope, receive, stamped)
        if scope.get("glmv_record") is not None:
            tracer.write(scope["glmv_record"])
    return app


def aiohttp_app(a: argparse.Namespace, tracer: Tracer) -> Any:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        s = Stream(await request.json(), arrived, a.ttft_ms / 1000, a.tpot_ms / 1000)
        if not s.stream:
            await until(arrived + a.ttft_ms / 1000 + max(0, s.n - 1) * a.tpot_ms / 1000)
            s.record["chunks"].append(time.monotonic())
            tracer.write(s.record)
            return web.json_response(s.whole())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)  # the head leaves at once, as vLLM's does
        for due, data in s.events():
            await until(due)
            await resp.write(data)
            s.record["chunks"].append(time.monotonic())
        await resp.write_eof()
        tracer.write(s.record)
        return resp

    async def js(request: web.Request) -> web.Response:
        path = request.path
        if path in ("/tokenize", "/detokenize"):
            body = await request.json()
            return web.json_response(tokenize(body) if path == "/tokenize" else detokenize(body))
        return web.json_response(models() if path == "/v1/models" else {"version": "0.32.0"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", lambda r: web.Response())  # type: ignore[arg-type,return-value]
    for path in ("/v1/models", "/version"):
        app.router.add_get(path, js)
    for path in ("/tokenize", "/detokenize"):
        app.router.add_post(path, js)
    return app


def launch(stack: str, python: str, ttft_ms: float, tpot_ms: float, trace: Path, log_dir: Path) -> Any:
    """The server as a child process (not started: use it as a context manager), with the reference
    launcher's process-group teardown and health wait."""
    from pytest_glmv.lifecycle.server import LaunchedServer, free_port

    class StackServer(LaunchedServer):
        kind = stack
        missing_hint = f"--stack {stack} needs a Python with " + (
            "uvicorn and starlette (.venv-vllm has them)" if stack == "starlette" else "aiohttp")

    port = free_port()
    argv = [python, str(Path(__file__).resolve()), "--stack", stack, "--port", str(port), "--trace", str(trace),
            "--ttft-ms", str(ttft_ms), "--tpot-ms", str(tpot_ms)]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    return StackServer(argv, model=MODEL, port=port, env=env, log_dir=log_dir, startup_timeout=60, stop_timeout=5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", choices=("starlette", "aiohttp"), required=True)
    p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, required=True)
    p.add_argument("--trace", type=Path, required=True)
    p.add_argument("--ttft-ms", type=float, default=50.0), p.add_argument("--tpot-ms", type=float, default=10.0)
    a = p.parse_args()
    from pytest_glmv.reference import tokenizer

    tokenizer.encode("warm")  # imported and compiled now, not inside the first request's TTFT
    tracer = Tracer(a.trace)
    if a.stack == "aiohttp":
        from aiohttp import web

        web.run_app(aiohttp_app(a, tracer), host=a.host, port=a.port, access_log=None, print=None)
        return
    import uvicorn
    try:
        import uvloop
    except ImportError:  # vLLM always has it; without it, asyncio's loop
        uvloop = None
    server = uvicorn.Server(uvicorn.Config(starlette_app(a, tracer), host=a.host, port=a.port, log_level="warning",
                                           access_log=False))
    (uvloop.run if uvloop else asyncio.run)(server.serve())


if __name__ == "__main__":
    main()
