"""Validating a chat request the way vLLM's ChatCompletionRequest and SamplingParams do."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from .errors import AUTO_TOOL_CHOICE, ApiError, invalid, unknown_model
from .settings import ReferenceSettings


@dataclass
class ChatRequest:
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    n: int
    max_tokens: int | None
    temperature: float
    seed: int | None
    stops: list[str]
    tools: list[dict[str, Any]] | None
    tool_choice: Any
    thinking: bool
    top_logprobs: int | None  # None: no logprobs
    raw_output: str | None
    ignore_eos: bool = False  # vLLM's extra sampling flag: generate to max_tokens


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8") or "null")
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(f"[{{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error', "
                       f"'ctx': {{'error': {str(e).split(':')[0]!r}}}}}]", 400, None) from None
    if not isinstance(body, dict):
        raise ApiError("[{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be a valid "
                       "dictionary or object to extract fields from'}]", 400, None)
    if "\\ud" in raw.decode("utf-8").lower():
        try:  # a lone surrogate (\\ud800) decodes to a str that no tokenizer can encode: vLLM answers 400
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise ApiError(str(e), 400, None) from None
    return body


def _missing(field: str) -> ApiError:
    return ApiError(f"[{{'type': 'missing', 'loc': ('body', '{field}'), 'msg': 'Field required'}}]", 400, None)


def _int(body: dict[str, Any], key: str, default: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(f"[{{'type': 'int_type', 'loc': ('body', '{key}'), 'msg': 'Input should be a valid "
                       f"integer'}}]", 400, None)
    return value


def _float(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(f"[{{'type': 'float_type', 'loc': ('body', '{key}'), 'msg': 'Input should be a valid "
                       f"number'}}]", 400, None)
    return float(value)


MAX_N_SEQUENCES = 16384  # vLLM's VLLM_MAX_N_SEQUENCES default (the CVE-2026-34756 fix)


def check_model(body: dict[str, Any], cfg: ReferenceSettings) -> None:
    name = body.get("model")
    if name is not None and name != cfg.served_model_name and not cfg.faults.on("model-name-ignored"):
        raise unknown_model(name, cfg.served_model_name)


def chat_request(body: dict[str, Any], cfg: ReferenceSettings) -> ChatRequest:
    check_model(body, cfg)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ApiError("[{'type': 'list_type', 'loc': ('body', 'messages'), 'msg': 'Input should be a valid list "
                       "of messages with a role'}]", 400, None)
    if cfg.faults.on("nul-500") and any("\x00" in str(m.get("content")) for m in messages):
        raise ApiError("ValueError: A string literal cannot contain NUL (0x00) characters.", 500, None)
    if cfg.faults.on("history-reasoning-refused"):
        for i, m in enumerate(messages):
            extra = next((k for k in ("reasoning", "reasoning_content") if k in m and m["role"] == "assistant"), None)
            if extra:
                raise ApiError(f"[{{'type': 'extra_forbidden', 'loc': ('body', 'messages', {i}, {extra!r}), 'msg': "
                               "'Extra inputs are not permitted'}]", 400, None)
    if cfg.faults.on("history-reasoning-content-dropped"):
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    stream = bool(body.get("stream"))
    if body.get("stream_options") and not stream:
        raise invalid("Stream options can only be defined when `stream=True`.", "stream_options")
    n = _int(body, "n", 1) or 0
    if n < 1:
        raise invalid(f"n must be at least 1, got {n}.", "n", n)
    if n > MAX_N_SEQUENCES:
        if cfg.faults.on("n-slow-refusal"):
            time.sleep(6.0)  # the refusal comes, right but late
        if cfg.faults.on("n-blocks-loop"):
            time.sleep(2.0)  # the refusal is right and in time; the loop is held meanwhile
        if not cfg.faults.on("n-unbounded"):
            raise invalid(f"n must be at most {MAX_N_SEQUENCES}, got {n}.", "n", n)
        time.sleep(4.0)  # fanning out n copies blocks the event loop (bounded here), then memory runs out
        raise ApiError("MemoryError", 500)
    max_tokens = _int(body, "max_completion_tokens", None)
    max_tokens = _int(body, "max_tokens", None) if max_tokens is None else max_tokens
    if max_tokens is not None and max_tokens < 1:
        raise invalid(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
    temperature = _float(body, "temperature", 1.0)
    if temperature < 0:
        raise invalid(f"temperature must be non-negative, got {temperature}.", "temperature", temperature)
    top_p = _float(body, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise invalid(f"top_p must be in (0, 1], got {top_p}.", "top_p", top_p)
    seed = _int(body, "seed", None)
    top_logprobs = _logprobs(body)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [str(s) for s in stop] if isinstance(stop, list) else []
    tools, tool_choice = _tools(body, cfg)
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ApiError("[{'type': 'dict_type', 'loc': ('body', 'chat_template_kwargs'), 'msg': 'Input should be "
                       "a valid dictionary'}]", 400, None)
    thinking = cfg.thinks_always or kwargs.get("enable_thinking", True) is not False
    if cfg.faults.on("thinking-toggle-ignored"):
        thinking = True
    raw = body.get("glmv_raw_output")
    if raw is not None and not isinstance(raw, str):
        raise invalid("glmv_raw_output must be a string.", "glmv_raw_output")
    opts = body.get("stream_options") or {}
    return ChatRequest(body, messages, stream, bool(isinstance(opts, dict) and opts.get("include_usage")), n,
                       max_tokens, temperature, seed, stops, tools, tool_choice, thinking, top_logprobs, raw,
                       ignore_eos=bool(body.get("ignore_eos")))


def _logprobs(body: dict[str, Any]) -> int | None:
    top = _int(body, "top_logprobs", None)
    wants = bool(body.get("logprobs"))
    if top is not None:
        if top < 0 and top != -1:
            raise invalid("`top_logprobs` must be a positive value or -1.", "top_logprobs", top)
        if (top == -1 or top > 0) and not wants:
            raise invalid("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs")
        if top > 20:
            raise invalid(f"Requested sample logprobs of {top}, which is greater than max allowed: 20",
                          "logprobs", top)
        if top == -1:
            raise invalid("Requested sample logprobs of 151552, which is greater than max allowed: 20",
                          "logprobs", 151552)
    return (top or 0) if wants else None


def _tools(body: dict[str, Any], cfg: ReferenceSettings) -> tuple[list[dict[str, Any]] | None, Any]:
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
            for t in tools)):
        raise ApiError("[{'type': 'model_type', 'loc': ('body', 'tools'), 'msg': 'Each tool must be "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}'}]", 400, None)
    tools = tools or None
    choice = body.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not tools:
            raise invalid("When using `tool_choice`, `tools` must be set.", "tool_choice")
        if name not in {t["function"]["name"] for t in tools}:
            raise invalid(f"Tool '{name}' has not been passed in `tools`.", "tool_choice")
    elif choice not in ("none", "auto", "required"):
        raise invalid(f"Invalid value for `tool_choice`: {choice!r}.", "tool_choice")
    elif choice == "required" and not tools:
        raise invalid("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if choice == "auto" and cfg.faults.on("no-auto-tool-choice"):
        raise ApiError(AUTO_TOOL_CHOICE, 400, None)
    if tools and (choice == "required" or isinstance(choice, dict)):
        # vLLM compiles these schemas into a grammar; since CVE-2025-48944 a bad one is a 400, not a crash.
        for t in tools:
            if cfg.faults.on("int-enum-schema-500") and _int_enum(t["function"].get("parameters")):
                raise ApiError("Internal Server Error: the grammar compiler takes string enums only", 500)
            why = schema_problem(t["function"].get("parameters"))
            if why:
                if cfg.faults.on("tool-schema-500"):
                    raise ApiError(f"Internal Server Error: {why}", 500)
                raise invalid(f"Invalid JSON schema for tool {t['function']['name']!r}: {why}", "tools")
    return tools, choice


def _int_enum(schema: Any) -> bool:
    """int-enum-schema-500: does the schema hold an enum of integers anywhere?"""
    if isinstance(schema, dict):
        if any(isinstance(v, int) for v in schema.get("enum") or []):
            return True
        return any(_int_enum(v) for v in schema.values())
    return isinstance(schema, list) and any(_int_enum(v) for v in schema)


_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
MAX_REF_DEPTH = 64


def schema_problem(schema: Any) -> str | None:
    """What makes a tool's parameter schema uncompilable (a bad pattern or type, $refs too deep), else None."""
    if schema is None:
        return None
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), dict):
                defs.update({f"#/{key}/{k}": v for k, v in schema[key].items()})
    stack: list[tuple[Any, int]] = [(schema, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_REF_DEPTH or seen > 100_000:
            return f"schema nests deeper than {MAX_REF_DEPTH} levels"
        if isinstance(node, list):
            stack.extend((x, depth) for x in node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) else [kind] if kind is not None else []
        bad = [k for k in kinds if not isinstance(k, str) or k not in _TYPES]
        if bad:
            return f"unknown type {bad[0]!r}"
        if "pattern" in node:
            try:
                re.compile(str(node["pattern"]))
            except re.error as e:
                return f"invalid regex pattern {node['pattern']!r}: {e}"
        ref = node.get("$ref")
        if isinstance(ref, str) and ref in defs:
            stack.append((defs.pop(ref), depth + 1))  # each definition is walked once: recursion is fine
        for key, value in node.items():
            if key not in ("$defs", "definitions", "$ref", "enum", "const", "default", "examples") and \
                    isinstance(value, (dict, list)):
                stack.append((value, depth + 1 if key in ("properties", "items") else depth))
    return None
