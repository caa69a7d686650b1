"""POST /v1/chat/completions: vLLM 0.32's answer shapes, non-streaming and SSE."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import time
from typing import Any

from aiohttp import web

from . import answers, faults, generate, media, parsers, tokenizer
from .errors import ApiError, context_overflow, invalid, max_tokens_over_window, text_over_window
from .ids import completion_id, tool_call_id
from .keys import CFG, METRICS, STATE, TRACER
from .request import ChatRequest, chat_request, parse_json
from .settings import ReferenceSettings
from .trace import ARRIVED
from .vision import Media


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def build_prompt(messages: list[dict[str, Any]], tools: Any, thinking: bool, cfg: ReferenceSettings,
                       add_generation_prompt: bool = True,
                       continue_final: bool = False) -> tuple[list[int], list[Media]]:
    loaded: list[Media] = [] if cfg.faults.on("images-ignored") else await media.load_all(messages, cfg)
    text, _ = tokenizer.render(messages, tools, add_generation_prompt, thinking, continue_final)
    bound = cfg.engine_window * tokenizer.MAX_CHARS_PER_TOKEN
    if len(text) > bound and not cfg.faults.on("body-unbounded"):
        raise text_over_window(cfg.engine_window, len(text), bound)
    return media.prompt_ids(text, loaded), loaded


def _window(req: ChatRequest, prompt: list[int], cfg: ReferenceSettings) -> tuple[list[int], int]:
    """vLLM's checks: a prompt over the window is a 400; an oversized max_tokens is clamped to what is left."""
    window = cfg.engine_window
    if req.max_tokens is not None and req.max_tokens > window:
        raise max_tokens_over_window(req.max_tokens, window)
    if len(prompt) >= window:
        if cfg.faults.on("overflow-500") and len(prompt) > window:
            raise ApiError(f"RuntimeError: index {window} is out of bounds for dimension 0 with size {window}", 500)
        if not cfg.faults.on("silent-truncation"):
            if len(prompt) == window:
                # vLLM 0.32 takes a prompt of exactly the window, clamps max_tokens to the 0 tokens left, and
                # SamplingParams refuses that.
                raise invalid("max_tokens must be at least 1, got 0.", "max_tokens", 0)
            raise _overflow(window, len(prompt), cfg)
        keep = max(1, window - (req.max_tokens or 256))
        prompt = prompt[:2] + prompt[len(prompt) - keep + 2:]
    left = window - len(prompt)
    if cfg.faults.on("max-tokens-past-left-500") and req.max_tokens is not None and req.max_tokens > left:
        raise ApiError(f"AssertionError: cannot allocate {len(prompt) + req.max_tokens} slots in a {window}-token "
                       "window", 500)
    if cfg.faults.on("max-tokens-ignored"):
        return prompt, MAX_TOKENS_IGNORED  # the run ends where the model stops, not at max_tokens or the window
    return prompt, min(req.max_tokens or left, left)


MAX_TOKENS_IGNORED = 4096


def _overflow(window: int, prompt_tokens: int, cfg: ReferenceSettings) -> ApiError:
    """vLLM's 400 for a prompt over the window, and the faults that change it."""
    if cfg.faults.on("overflow-message-vague"):
        return invalid("Input validation failed.", "input_tokens", show_value=False)
    err = context_overflow(window, prompt_tokens)
    if cfg.faults.on("overflow-413"):
        err.status = 413
    return err


class _Pacer:
    """Token pacing on absolute deadlines, as an engine's steps keep their rhythm: a wake-up that comes
    late (asyncio.sleep overshoots by ~0.1-1 ms, more on a loaded host) is not added to every later
    token, so a configured TPOT is what the stream shows. A pacer that has fallen a whole step behind
    starts again from now rather than sending a burst to catch up."""

    def __init__(self) -> None:
        self.due = time.monotonic()

    async def wait(self, seconds: float) -> None:
        now = time.monotonic()
        self.due = max(self.due + seconds, now)
        if self.due > now:
            await asyncio.sleep(self.due - now)


class ChatHandler:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.cfg: ReferenceSettings = app[CFG]
        self.chats = 0  # chat requests received, for hang-after-20
        self.inflight = 0  # chat requests being handled now, for bad-image-500-when-busy

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        try:
            return await self._handle(request)
        finally:
            self.inflight -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cfg, metrics = self.cfg, self.app[METRICS]
        cid = completion_id()
        rec = self.app[TRACER].start(cid, stream=False, arrived=request.get(ARRIVED))
        try:
            self.chats += 1  # hang-after-20: the canary at the start and 19 checks' requests are answered
            if cfg.faults.on("engine-hung") or (cfg.faults.on("hang-after-20") and self.chats > 20):
                await asyncio.Event().wait()  # never set: the request stays open until the client gives up
            if self.app[STATE].engine_dead:
                raise ApiError("EngineCore encountered an issue. See stack trace (above) for the root cause.", 500)
            try:
                req = chat_request(parse_json(await request.read()), cfg)
            except ApiError as e:
                if cfg.faults.on("validation-500") and e.status == 400:
                    raise ApiError(f"Internal Server Error: {e.message}", 500) from None
                raise
            rec.data["stream"] = req.stream
            try:
                prompt, items = await build_prompt(req.messages, req.tools, req.thinking, cfg)
            except media.BadMedia as e:
                if cfg.faults.on("bad-image-500-when-busy") and self.inflight > 1:
                    raise ApiError(f"Internal Server Error: {e.message}", 500, None) from None
                if cfg.faults.on("engine-dead-after-bad-image"):
                    self.app[STATE].engine_dead = True
                if cfg.faults.on("bad-image-500"):
                    self.app[STATE].wedged = True
                    raise ApiError(f"Internal Server Error: {e.message}", 500, None) from None
                raise
            try:
                prompt, max_tokens = _window(req, prompt, cfg)
            except ApiError:
                if cfg.faults.on("engine-dead-after-overflow"):
                    self.app[STATE].engine_dead = True
                raise
        except ApiError as e:
            rec.finish(e.status, error=e.message)
            return web.Response(status=e.status, text=e.json(), content_type="application/json")
        mode = parsers.Mode(
            reasoning=req.thinking and not cfg.faults.on("no-reasoning-parser"),
            tools=(req.tools if req.tools and (req.tool_choice != "none" or cfg.faults.on("none-choice-ignored"))
                   and not cfg.faults.on("no-tool-parser") else None),
            typed=not cfg.faults.on("untyped-tool-args"), squeeze=cfg.faults.on("tool-args-whitespace-squeezed"))
        gens = [self._generate(req, items, max_tokens, i, mode) for i in range(req.n)]
        metrics.running += 1
        started = time.monotonic()
        try:
            if req.stream:
                resp = await self._stream(request, req, cid, len(prompt), gens, mode, rec)
            else:
                resp = await self._complete(req, cid, len(prompt), gens, mode, rec)
        except BaseException:
            if not cfg.faults.on("streams-never-freed"):  # the fault: the engine never hears of the abort
                metrics.running -= 1
            raise
        metrics.running -= 1
        e2e = time.monotonic() - started
        chunks = rec.data["chunks"]
        ttft = (chunks[0] - started) if chunks else e2e
        gaps = [b - a for a, b in zip(chunks, chunks[1:], strict=False)]
        completion = sum(g.completion_tokens for g in gens)
        metrics.finished(gens[0].finish_reason, len(prompt), completion, ttft, e2e, gaps)
        if cfg.faults.on("metrics-success-doubled"):
            metrics.success[gens[0].finish_reason] += 1
        rec.finish(200, prompt_tokens=len(prompt), completion_tokens=completion,
                   finish_reasons=[g.finish_reason for g in gens])
        return resp

    def _generate(self, req: ChatRequest, items: list[Media], max_tokens: int, index: int,
                  mode: parsers.Mode) -> generate.Generation:
        cfg = self.cfg
        if req.raw_output is not None:
            raw = req.raw_output
        else:
            variant = 0
            if req.temperature > 0:
                variant = random.Random(f"{req.seed}:{index}").randrange(4) if req.seed is not None else \
                    random.randrange(4)
            messages = req.messages
            if cfg.faults.on("tool-results-dropped"):  # the template never shows the model a tool's result
                messages = [m for m in messages if m.get("role") != "tool"]
            ctx = answers.Context(messages, items, req.tools, self._model_choice(req), req.thinking, variant,
                                  leak_boxes=cfg.faults.on("box-tokens-leak"),
                                  off_by_one=cfg.faults.on("arithmetic-off-by-one"),
                                  recent_only=cfg.faults.on("attention-window-short"),
                                  pixel_boxes=cfg.faults.on("boxes-in-pixels"))
            raw = answers.respond(ctx)
            if cfg.faults.on("zero-arg-call-filled") and isinstance(req.tool_choice, dict):
                raw = _ZERO_ARG_CALL.sub(r"<tool_call>\1\n<arg_key>query</arg_key>\n<arg_value>now</arg_value>\n"
                                         r"</tool_call>", raw)
            if cfg.faults.on("forced-call-args-dropped") and isinstance(req.tool_choice, dict):
                raw = _CALL_ARGS.sub(r"\1\n</tool_call>", raw)  # the envelope kept, its arguments gone
        forced = req.tool_choice == "required" or isinstance(req.tool_choice, dict)
        if cfg.faults.on("forced-call-not-enforced") and forced and "<tool_call>" in raw:
            raw = raw[:raw.index("<tool_call>")].rstrip() or "I would look that up for you."  # no call at all
        if cfg.faults.on("tool-call-in-reasoning") and "</think>\n<tool_call>" in raw:
            # a reasoning parser that misses the end of thinking before a call: all of it is reasoning
            raw = raw.replace("</think>", "", 1) + "</think>"
        return generate.build(raw, max_tokens, req.stops, reasoning=mode.reasoning,
                              strip_boxes=cfg.faults.on("box-tokens-stripped"), top_logprobs=req.top_logprobs,
                              ignore_eos=req.ignore_eos)

    def _model_choice(self, req: ChatRequest) -> Any:
        """The tool_choice the model's output obeys: the request's, unless a fault bends it."""
        cfg, choice = self.cfg, req.tool_choice
        if cfg.faults.on("named-choice-wrong-tool") and isinstance(choice, dict):
            return "required"  # a call is forced, but not its name: the model picks the tool
        if cfg.faults.on("none-choice-ignored") and choice == "none":
            return "auto"
        if cfg.faults.on("auto-never-calls") and choice == "auto":
            return "none"  # the model writes text; the tools stay offered and the parser runs
        if cfg.faults.on("tool-always-first") and choice == "auto" and req.tools:
            return {"type": "function", "function": {"name": (req.tools[0].get("function") or {}).get("name")}}
        return choice

    # ---------------------------------------------------------------- latency

    def _delays(self, req: ChatRequest) -> tuple[float, float, random.Random]:
        cfg = self.cfg
        rng = random.Random(req.seed if req.seed is not None else time.monotonic_ns())
        ttft = cfg.ttft_ms + (faults.SLOW_FIRST_TOKEN_MS if cfg.faults.on("slow-first-token") else 0.0)
        tpot = cfg.tpot_ms
        if req.stream and cfg.faults.on("streams-never-freed"):
            tpot = max(tpot, 50.0)  # paced like an engine, so a client can leave mid-stream
        return ttft, tpot, rng

    def _delay(self, base_ms: float, rng: random.Random) -> float:
        cfg = self.cfg
        others = max(0, self.app[METRICS].running - 1)
        ms = base_ms * (1 + cfg.jitter * rng.uniform(-1, 1)) + cfg.slowdown_per_request * others
        return max(0.0, ms) / 1000.0

    # ---------------------------------------------------------------- answers

    def _choice_message(self, gen: generate.Generation, req: ChatRequest,
                        mode: parsers.Mode) -> tuple[dict[str, Any], str]:
        parsed = parsers.parse(gen.text, mode)
        named = isinstance(req.tool_choice, dict)
        msg: dict[str, Any] = {"role": "assistant", "content": parsed.content, "refusal": None,
                               "annotations": None, "audio": None, "function_call": None}
        finish = gen.finish_reason
        if parsed.calls:
            msg["tool_calls"] = [{"id": tool_call_id(), "type": "function",
                                  "function": {"name": name, "arguments": args}}
                                 for name, args in (parsed.calls[:1] if self._one_call(req) else parsed.calls)]
            if req.tool_choice in ("required",) or named:
                msg["content"] = parsed.content or ""
            if finish == "stop" and (not named or self.cfg.faults.on("named-call-finish-tool-calls")) \
                    and not self.cfg.faults.on("tool-calls-finish-stop"):
                finish = "tool_calls"
        elif req.tools and finish == "stop" and self.cfg.faults.on("finish-tool-calls-without-calls"):
            finish = "tool_calls"
        msg[self.cfg.reasoning_field] = parsed.reasoning
        return self._bent(msg, req), finish

    def _bent(self, msg: dict[str, Any], req: ChatRequest) -> dict[str, Any]:
        """The non-streamed message as the message-shaping faults leave it."""
        faults, reasoning = self.cfg.faults, msg.get(self.cfg.reasoning_field)
        if reasoning and faults.on("think-tags-kept"):  # split, but content keeps the whole raw text
            msg["content"] = f"<think>{reasoning}</think>{msg.get('content') or ''}"
        if reasoning and faults.on("reasoning-copied-to-content"):
            msg["content"] = reasoning + (msg.get("content") or "")
        if not req.thinking and faults.on("thinking-off-answer-lost"):
            msg["content"] = None
        for call in msg.get("tool_calls") or []:
            if faults.on("tool-name-prefixed"):
                call["function"]["name"] = "functions." + call["function"]["name"]
            if faults.on("tool-args-double-encoded"):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
        return msg

    def _usage(self, prompt: int, gens: list[generate.Generation], details: bool) -> dict[str, Any]:
        completion = sum(g.completion_tokens for g in gens)
        if self.cfg.faults.on("usage-prompt-zero"):
            prompt = 0
        if self.cfg.faults.on("usage-prompt-miscounted"):
            prompt -= 1  # the generation prompt left out of the count
        total = completion if self.cfg.faults.on("usage-total-wrong") else prompt + completion
        usage: dict[str, Any] = {"prompt_tokens": prompt, "total_tokens": total, "completion_tokens": completion}
        if details:
            usage["prompt_tokens_details"] = None
        reasoning = completion if self.cfg.faults.on("reasoning-tokens-always") else \
            sum(g.reasoning_tokens for g in gens)
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    async def _complete(self, req: ChatRequest, cid: str, prompt: int, gens: list[generate.Generation],
                        mode: parsers.Mode, rec: Any) -> web.Response:
        ttft, tpot, rng = self._delays(req)
        tokens = max(g.completion_tokens for g in gens)
        await asyncio.sleep(self._delay(ttft, rng) + sum(self._delay(tpot, rng) for _ in range(max(0, tokens - 1))))
        choices = []
        for i, gen in enumerate(gens):
            msg, finish = self._choice_message(gen, req, mode)
            choices.append({"index": i, "message": msg,
                            "logprobs": {"content": gen.logprobs} if gen.logprobs is not None else None,
                            "finish_reason": None if self.cfg.faults.on("finish-reason-missing") else finish,
                            "stop_reason": gen.stop_reason, "token_ids": None,
                            "routed_experts": None})
        body = {"id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": self.cfg.served_model_name,
                "choices": choices, "service_tier": None, "system_fingerprint": self.cfg.system_fingerprint,
                "usage": None if self.cfg.faults.on("usage-missing") else self._usage(prompt, gens, True),
                "prompt_logprobs": None, "prompt_token_ids": None,
                "prompt_text": None, "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
        rec.chunk()
        return web.Response(text=dumps(body), content_type="application/json")

    async def _stream(self, request: web.Request, req: ChatRequest, cid: str, prompt: int,
                      gens: list[generate.Generation], mode: parsers.Mode, rec: Any) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        created, name = int(time.time()), self.cfg.served_model_name
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name}
        ttft, tpot, rng = self._delays(req)

        every = req.include_usage and self.cfg.faults.on("usage-every-chunk")

        async def send(payload: str) -> None:
            if every and payload.startswith('{"id"') and '"usage"' not in payload:
                payload = payload[:-1] + ',"usage":' + dumps(self._usage(prompt, gens, False)) + "}"
            await resp.write(f"data: {payload}\n\n".encode())
            rec.chunk()

        pace = _Pacer()
        await pace.wait(self._delay(ttft, rng))
        for i in range(len(gens)):
            await send(dumps({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                   "logprobs": None, "finish_reason": None}],
                              "prompt_token_ids": None, "prompt_text": None}))
        for i, gen in enumerate(gens):
            # the fault: the streaming path runs without the reasoning parser
            streamer = parsers.Streamer(dataclasses.replace(mode, reasoning=False)
                                        if self.cfg.faults.on("reasoning-streamed-as-content") else mode)
            last = len(gen.pieces) - 1
            finish_sent = False
            late = self.cfg.faults.on("stream-reasoning-late")
            held: str | None = None  # stream-reasoning-late: a reasoning chunk kept back one step
            for k, (_, text) in enumerate(gen.pieces):
                if k:
                    await pace.wait(self._delay(tpot, rng))
                delta = self._rename(streamer.feed(text))
                delta = self._tool_deltas(delta, streamer, req)
                lp = {"content": gen.piece_logprobs[k]} if gen.piece_logprobs else None
                final = k == last and gen.finish_reason == "length" or (k == last and isinstance(gen.stop_reason, str))
                if final:
                    delta = _merge(delta, streamer.flush())
                delta = self._named_call_empty(delta, req)
                if k == last and self.cfg.faults.on("stream-last-delta-lost"):
                    delta = None  # the text generated last never goes out
                if delta is None and not final:
                    continue
                choice: dict[str, Any] = {"index": i, "delta": delta or {}, "logprobs": lp}
                if final:
                    choice.update(finish_reason=self._finish(gen, streamer, req), stop_reason=gen.stop_reason,
                                  token_ids=None)
                    finish_sent = True
                else:
                    choice.update(finish_reason=None, token_ids=None)
                    if late and set(delta or {}) == {self.cfg.reasoning_field}:
                        if held:
                            await send(held)
                        held = dumps({**head, "choices": [choice]})
                        continue
                if held and not final:  # the answer's first delta goes out before the reasoning held back
                    await send(dumps({**head, "choices": [choice]}))
                    await send(held)
                    held = None
                    continue
                if held:
                    await send(held)
                    held = None
                await send(dumps({**head, "choices": [choice]}))
            if held:
                await send(held)
            if not finish_sent:
                tail = self._named_call_empty(streamer.flush(), req)
                if tail:
                    await send(dumps({**head, "choices": [{"index": i, "delta": tail, "logprobs": None,
                                                           "finish_reason": None, "token_ids": None}]}))
                await send(dumps({**head, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                                       "finish_reason": self._finish(gen, streamer, req),
                                                       "stop_reason": gen.stop_reason, "token_ids": None}]}))
            if self.cfg.faults.on("finish-reason-twice"):
                await send(dumps({**head, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                                       "finish_reason": self._finish(gen, streamer, req),
                                                       "stop_reason": gen.stop_reason, "token_ids": None}]}))
        asked = req.include_usage or self.cfg.faults.on("usage-unasked")
        if asked and not self.cfg.faults.on("stream-usage-dropped"):
            usage = self._usage(prompt, gens, False)
            if self.cfg.faults.on("stream-usage-miscounted"):
                usage.update(completion_tokens=usage["completion_tokens"] - 1, total_tokens=usage["total_tokens"] - 1)
            await send(dumps({**head, "choices": [], "usage": usage,
                              "system_fingerprint": self.cfg.system_fingerprint}))
        if not self.cfg.faults.on("stream-no-done"):
            await send("[DONE]")
        await resp.write_eof()
        return resp

    def _rename(self, delta: dict[str, Any] | None) -> dict[str, Any] | None:
        field = self.cfg.reasoning_field
        if not delta or field == "reasoning" or "reasoning" not in delta:
            return delta
        return {(field if k == "reasoning" else k): v for k, v in delta.items()}

    def _named_call_empty(self, delta: dict[str, Any] | None, req: ChatRequest) -> dict[str, Any] | None:
        """The stream-named-call-empty fault: a streamed named tool_choice loses its content and tool_calls."""
        if not delta or not isinstance(req.tool_choice, dict) or not self.cfg.faults.on("stream-named-call-empty"):
            return delta
        return {k: v for k, v in delta.items() if k not in ("content", "tool_calls")} or None

    def _one_call(self, req: ChatRequest) -> bool:
        # vLLM's maybe_filter_parallel_tool_calls: parallel_tool_calls=false keeps the first call only.
        honoured = req.body.get("parallel_tool_calls") is False and not self.cfg.faults.on("parallel-false-ignored")
        return honoured or self.cfg.faults.on("parallel-calls-collapsed")

    def _tool_deltas(self, delta: dict[str, Any] | None, streamer: parsers.Streamer,
                     req: ChatRequest) -> dict[str, Any] | None:
        """Streaming side of _one_call (index 0 only), and the stream-tool-args-broken fault."""
        if not delta or "tool_calls" not in delta:
            return delta
        first_only = self._one_call(req) or self.cfg.faults.on("stream-parallel-calls-collapsed")
        calls = [c for c in delta["tool_calls"] if not first_only or c.get("index", 0) == 0]
        if self.cfg.faults.on("stream-tool-args-broken"):
            calls = [{**c, "function": {"arguments": streamer.sent_args[c["index"]]}}
                     if "arguments" in c.get("function", {}) else c for c in calls]
        if self.cfg.faults.on("stream-call-header-repeated"):  # every argument delta names its call again
            calls = [{"id": streamer.ids[c["index"]], "type": "function", **c,
                      "function": {"name": streamer.names[c["index"]], **c["function"]}}
                     if "id" not in c else c for c in calls]
        if self.cfg.faults.on("tool-name-prefixed"):
            calls = [{**c, "function": {**c["function"], "name": "functions." + c["function"]["name"]}}
                     if "name" in c.get("function", {}) else c for c in calls]
        out = {k: v for k, v in delta.items() if k != "tool_calls"}
        if calls:
            out["tool_calls"] = calls
        return out or None

    def _finish(self, gen: generate.Generation, streamer: parsers.Streamer, req: ChatRequest) -> str:
        faults = self.cfg.faults
        if gen.finish_reason == "length" and faults.on("stream-length-as-stop"):
            return "stop"
        if faults.on("tool-calls-finish-stop") or faults.on("stream-tool-calls-finish-stop"):
            return gen.finish_reason
        named = isinstance(req.tool_choice, dict) and not faults.on("named-call-finish-tool-calls")
        if gen.finish_reason == "stop" and streamer.names_sent and not named:
            return "tool_calls"
        if gen.finish_reason == "stop" and req.tools and faults.on("finish-tool-calls-without-calls"):
            return "tool_calls"
        return gen.finish_reason


_ZERO_ARG_CALL = re.compile(r"<tool_call>([^<\n]+)\n?</tool_call>")
_CALL_ARGS = re.compile(r"(<tool_call>[^<\n]+)\n<arg_key>.*?</tool_call>", re.DOTALL)


def _merge(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if not b:
        return a
    out = dict(a or {})
    out["content"] = out.get("content", "") + b["content"]
    return out
