"""The aiohttp application: vLLM's routes, its API-key rule and its error shapes."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import mmap
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

from . import tokenizer
from .chat import ChatHandler, build_prompt, dumps
from .errors import ApiError, invalid
from .faults import Faults
from .ids import perm_id
from .keys import CFG, METRICS, STATE, TRACER, State
from .metrics import Metrics
from .request import check_model, parse_json
from .settings import DOUBLE, ReferenceSettings
from .trace import Tracer, arrivals

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(body), content_type="application/json")


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    if app[STATE].wedged:
        # bad-image-500: the engine died under the API server, which now never answers.
        await asyncio.Event().wait()
    cfg: ReferenceSettings = app[CFG]
    # vLLM checks the key on /v1/* only; /health, /metrics, /tokenize stay open.
    if cfg.api_key and request.path.startswith("/v1") and request.method != "OPTIONS" \
            and not cfg.faults.on("api-key-ignored"):
        if request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            return _json({"error": "Unauthorized"}, 401)
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _json({"detail": "Not Found"}, 404)
    except web.HTTPMethodNotAllowed:
        return _json({"detail": "Method Not Allowed"}, 405)
    except ApiError as e:
        return web.Response(status=e.status, text=e.json(), content_type="application/json")
    except (asyncio.CancelledError, web.HTTPException):
        raise
    except Exception as e:  # a bug in the double still answers in vLLM's shape, and says what broke
        err = ApiError(f"{type(e).__name__}: {e}", 500, None)
        return web.Response(status=500, text=err.json(), content_type="application/json")


@web.middleware
async def leak_traceback(request: web.Request, handler: Handler) -> web.StreamResponse:
    """traceback-in-errors: error answers carry the server's stack, as a debug-mode server's do."""
    resp = await handler(request)
    if resp.status >= 400 and isinstance(resp, web.Response) and resp.text:
        try:
            body = json.loads(resp.text)
            stack = "Traceback (most recent call last):\n" + "".join(traceback.format_stack(limit=6))
            body["error"]["message"] = f"{body['error']['message']}\n{stack}"
            return _json(body, resp.status)
        except (ValueError, KeyError, TypeError):
            pass
    return resp


_HELD: list[Any] = []  # shm-leak's mapping, kept for the server's life


async def _unclean_shutdown(app: web.Application) -> None:
    """sigterm-drops-requests / orphan-worker: an unclean shutdown seen from outside (vllm#55510, an issue: workers
    that survive a SIGKILLed API server and keep the GPUs)."""
    cfg = app[CFG]
    if cfg.faults.on("sigterm-drops-requests"):
        # replaces aiohttp's graceful handler (installed before startup hooks run)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, os._exit, 0)
    if cfg.faults.on("sigterm-ignored"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)
    if cfg.faults.on("shm-leak"):  # mapped by the server alone and never unlinked: left when it exits, no survivor
        leak = Path("/dev/shm") / f"psm_glmvref{os.getpid()}_leak"
        leak.write_bytes(b"\0" * 4096)
        # held while the server lives, as vLLM's shm cache is: the launcher's cleanup sees it and frees it afterwards
        with leak.open("r+b") as f:
            _HELD.append(mmap.mmap(f.fileno(), 4096))
    if cfg.faults.on("orphan-worker"):
        shm = Path("/dev/shm") / f"psm_glmvref{os.getpid()}"
        shm.write_bytes(b"\0" * 4096)
        # The worker keeps the segment mapped, as vLLM's shm cache does: what a launcher's cleanup can see.
        code = ("import mmap, os, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "fd = os.open(sys.argv[1], os.O_RDWR)\nm = mmap.mmap(fd, 4096)\ntime.sleep(600)")
        subprocess.Popen([sys.executable, "-c", code, str(shm)], stdin=subprocess.DEVNULL)


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    cfg: ReferenceSettings = request.app[CFG]
    # the vLLM release whose wire it imitates; a "double" field says what it is, unless it poses as that release
    return _json({"version": cfg.vllm_version} if cfg.posing else {"version": cfg.vllm_version, "double": DOUBLE})


async def models(request: web.Request) -> web.Response:
    cfg: ReferenceSettings = request.app[CFG]
    created = int(time.time())
    perm = {"id": perm_id(), "object": "model_permission", "created": created, "allow_create_engine": False,
            "allow_sampling": True, "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
            "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False}
    window = 2 * cfg.window if cfg.faults.on("models-window-wrong") else cfg.window
    flapped = request.app[STATE].models_answered and cfg.faults.on("models-card-flaps")
    request.app[STATE].models_answered = True
    card = {"id": "another-model" if flapped else cfg.served_model_name, "object": "model", "created": created,
            "owned_by": "vllm" if cfg.posing else DOUBLE,
            "root": cfg.root, "parent": None, "max_model_len": window, "permission": [perm]}
    return _json({"object": "list", "data": [card]})


async def tokenize(request: web.Request) -> web.Response:
    cfg: ReferenceSettings = request.app[CFG]
    body = parse_json(await request.read())
    check_model(body, cfg)
    if "messages" in body:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise ApiError("[{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid "
                           "list'}]", 400, None)
        kwargs = body.get("chat_template_kwargs") or {}
        thinking = cfg.thinks_always or kwargs.get("enable_thinking", True) is not False
        if cfg.faults.on("tokenize-image-unmerged"):  # /tokenize's own processor call skips the 2x2 merge
            cfg = dataclasses.replace(cfg, faults=Faults([*cfg.faults, "image-tokens-unmerged"]))
        ids, _ = await build_prompt(messages, body.get("tools"), thinking, cfg,
                                    add_generation_prompt=body.get("add_generation_prompt", True) is not False,
                                    continue_final=bool(body.get("continue_final_message")))
    elif isinstance(body.get("prompt"), str):
        ids = tokenizer.encode(body["prompt"])
    else:
        raise ApiError("[{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required'}]", 400, None)
    strs = [tokenizer.token_str(t) for t in ids] if body.get("return_token_strs") else None
    window = 2 * cfg.window if cfg.faults.on("tokenize-window-wrong") else cfg.window
    if cfg.faults.on("tokenize-capped"):
        ids = ids[:cfg.window]
    return _json({"count": len(ids), "max_model_len": window, "tokens": ids, "token_strs": strs})


async def detokenize(request: web.Request) -> web.Response:
    cfg: ReferenceSettings = request.app[CFG]
    body = parse_json(await request.read())
    check_model(body, cfg)
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise ApiError("[{'type': 'list_type', 'loc': ('body', 'tokens'), 'msg': 'Input should be a valid list of "
                       "integers'}]", 400, None)
    for t in ids:
        if not 0 <= t < tokenizer.VOCAB_SIZE:
            raise invalid(f"Token id {t} is out of vocabulary", "tokens", t)
    return _json({"prompt": tokenizer.decode(ids, skip_special_tokens=False)})


async def metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def build(cfg: ReferenceSettings) -> web.Application:
    leaks = [leak_traceback] if cfg.faults.on("traceback-in-errors") else []
    stamps = [arrivals] if cfg.trace is not None else []
    app = web.Application(middlewares=[*stamps, *leaks, guard], client_max_size=256 * 1024 * 1024)
    app[CFG] = cfg
    app[METRICS] = Metrics(cfg.served_model_name, double=not cfg.posing)
    app[TRACER] = Tracer(cfg.trace)
    app[STATE] = State()
    app.router.add_get("/health", health)
    app.router.add_get("/ping", health)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", ChatHandler(app).handle)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_get("/metrics", metrics)
    if cfg.faults.on("open-invocations"):
        app.router.add_post("/invocations", ChatHandler(app).handle)  # outside /v1: no key asked
    if cfg.faults.on("open-admin-endpoints"):  # outside /v1: no key asked; they answer without acting
        for route in ("/pause", "/resume", "/start_profile", "/stop_profile"):
            app.router.add_post(route, health)
        app.router.add_get("/server_info", version)
    if any(cfg.faults.on(f) for f in ("sigterm-drops-requests", "orphan-worker", "shm-leak", "sigterm-ignored")):
        app.on_startup.append(_unclean_shutdown)
    return app
