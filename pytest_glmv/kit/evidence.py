"""Requests that keep their evidence: what was sent, the status, and the answer's start.

Suites send chat requests through `chat()` and `stream()` so that every failure
message can say exactly what happened, with data URLs shortened to their size.

Every exchange made through request()/chat()/stream() also goes into a per-check journal (reset by the session
as each check starts), together with the exchanges a check cites in its messages (`Exchange.evidence()`) and
the observations it names (`note()`): what the server did, kept apart from the assertion's wording, so the
knowledge base matches a failure by the server's own status, error and log lines (pytest_glmv/known.py).
"""
from __future__ import annotations

import importlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from . import sse
from .journal import RECORD_CHARS, _journal, checked, cite, journal, journal_reset, log_lines, note, notes  # noqa: F401

if TYPE_CHECKING:
    import httpx

CHAT = "/v1/chat/completions"
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 0}  # a streamed and a non-streamed request give the same tokens
_DATA_URL = re.compile(r"data:([\w/+.-]+);base64,([A-Za-z0-9+/=]{64,})")
HEADERS = ("content-type", "content-length", "retry-after", "www-authenticate", "server")


def shorten(text: str, limit: int = 600) -> str:
    text = _DATA_URL.sub(lambda m: f"data:{m.group(1)};base64,<{len(m.group(2)) * 3 // 4} bytes>", text)
    return text if len(text) <= limit else text[:limit] + f"... <{len(text) - limit} more chars>"


def dumps(obj: Any, limit: int = 600) -> str:
    try:
        text = json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(obj)
    return shorten(text, limit)


@dataclass
class Exchange:
    """One request and its answer."""

    method: str
    path: str
    body: Any
    status: int
    text: str
    elapsed: float
    headers: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # parsed SSE data, streams only
    raw_lines: list[str] = field(default_factory=list)  # every SSE line as sent, streams only
    # no answer at all (status 0): the client's exception, e.g. "ReadError: [Errno 104] Connection reset by peer"
    failure: str = ""

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    @property
    def message(self) -> dict[str, Any]:
        """choices[0].message of a non-streamed chat answer ({} when absent)."""
        body = self.json
        try:
            return dict(body["choices"][0]["message"])
        except (TypeError, KeyError, IndexError):
            return {}

    @property
    def choice(self) -> dict[str, Any]:
        body = self.json
        try:
            return dict(body["choices"][0])
        except (TypeError, KeyError, IndexError):
            return {}

    @property
    def error_message(self) -> str:
        body = self.json
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message", ""))
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return body["error"]
        return ""

    @property
    def error_type(self) -> str:
        """The server's error type (`error.type` of vLLM's error body); for no answer, the client's exception."""
        if self.failure:
            return self.failure.split(":", 1)[0]
        body = self.json
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("type") or "")
        return ""

    def evidence(self, limit: int = 600) -> str:
        """What a failure message shows of this exchange; calling it marks the exchange cited by this check."""
        cite(self)
        if self.failure:
            return (f"request: {self.method} {self.path} {dumps(self.body, limit)}\n"
                    f"  no answer after {self.elapsed:.2f} s: {self.failure}")
        answer = "\n    ".join(self.raw_lines[:12]) if self.raw_lines else self.text
        return (f"request: {self.method} {self.path} {dumps(self.body, limit)}\n"
                f"  status: {self.status} after {self.elapsed:.2f} s\n"
                f"  answer: {shorten(answer, limit)}")

    def record(self) -> dict[str, Any]:
        """The exchange as structured evidence (the keys of the helpers' contract): status None when no answer
        came, then error_type and error_message name the client's exception (ReadError, ReadTimeout, ...)."""
        if self.events:  # a stream: what its deltas joined into, in the shape a non-streamed answer gets below
            calls = [f"{c['name']}({c['arguments']})" for c in streamed_tool_calls(self.events)]
            reasoning = joined(self.events, "reasoning") or joined(self.events, "reasoning_content")
            response = _answer(joined(self.events, "content"), reasoning, calls, finish_reasons(self.events))
        elif self.choice:  # a chat completion: its answer, not the ids and timestamps that open its body
            msg = self.message
            calls = [f"{(c.get('function') or {}).get('name')}({(c.get('function') or {}).get('arguments')})"
                     for c in msg.get("tool_calls") or [] if isinstance(c, dict)]
            response = _answer(msg.get("content") or "", msg.get("reasoning") or msg.get("reasoning_content") or "",
                               calls, [self.choice["finish_reason"]] if self.choice.get("finish_reason") else [])
        else:
            response = shorten(self.text, RECORD_CHARS)
        lower = {k.lower(): v for k, v in self.headers.items()}
        return {"method": self.method, "path": self.path,
                "request": dumps(self.body, RECORD_CHARS) if self.body is not None else "",
                "status": None if self.failure else self.status, "error_type": self.error_type,
                "error_message": self.failure.partition(": ")[2] if self.failure else self.error_message,
                "headers": {k: lower[k] for k in HEADERS if k in lower},
                "elapsed_s": round(self.elapsed, 3), "response": response}

    def __str__(self) -> str:
        return self.evidence()


def _answer(content: str, reasoning: str, calls: list[str], finish: list[str]) -> str:
    """A chat answer as a record's `response`: {"finish_reason", "tool_calls" as name(arguments), "content",
    "reasoning" (when any)}, the short fields first so a long text cannot push them out of RECORD_CHARS; the
    same for a stream and a non-streamed answer."""
    answer: dict[str, Any] = {"finish_reason": finish, "tool_calls": calls, "content": content}
    if reasoning:
        answer["reasoning"] = reasoning
    return dumps(answer, RECORD_CHARS)


def chat_body(model: str, content: Any = None, *, messages: Sequence[Any] | None = None,
              max_tokens: int | None = None, token_key: str = "max_tokens", greedy: bool = False,
              stream: bool = False, **extra: Any) -> dict[str, Any]:
    """The one builder of chat-completions bodies (and of /tokenize's chat form).

    Keys in this order: model; messages (`messages`, else one user turn of `content`, a string or a
    list of parts); the output limit under `token_key` (vllm bench serve sends max_completion_tokens);
    GREEDY when `greedy`; stream with stream_options.include_usage when `stream`; then `extra`, whose
    keys replace earlier ones in place.
    """
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]
                            if messages is None else list(messages)}
    if max_tokens is not None:
        body[token_key] = max_tokens
    if greedy:
        body.update(GREEDY)
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    body.update(extra)
    return body


# vLLM's uvicorn closes a connection after 5 s idle, and httpx reuses one for up to 5 s by default: a request
# sent as the server's timer fires meets "Server disconnected without sending a response" (CI saw it on a
# module fixture's request, after an idle gap). Reusing connections only while well inside the server's
# window removes the race without retrying, which would hide a real dropped connection.
KEEPALIVE_S = 2.0


def keepalive_limits(package: Any = None) -> Any:
    """httpx's default pool sizes, reusing a connection only for KEEPALIVE_S; `package` is the httpx-like
    package to build them in (default httpx)."""
    if package is None:
        import httpx as package
    return package.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_S)


def sdk_http_client(openai: Any, asynchronous: bool = False) -> Any:
    """The openai SDK's own HTTP client with those limits, built in the package the SDK uses (httpx; httpx2
    from openai 3 on, whose client refuses to type-check httpx's Limits)."""
    cls = openai.DefaultAsyncHttpxClient if asynchronous else openai.DefaultHttpxClient
    package = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
    return cls(limits=keepalive_limits(package))


def http_client(root_url: str, api_key: str | None, timeout: float) -> "httpx.Client":
    """The raw HTTP client of the fixtures (glmv_http, glmv_http_shared): the key, the timeout, and no reuse
    of a connection the server may be closing."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=root_url, headers=headers, timeout=timeout, limits=keepalive_limits())


def _no_answer(method: str, path: str, body: Any, began: float, e: Exception) -> None:
    text = str(e) or type(e).__name__
    _journal(Exchange(method, path, body, 0, "", time.monotonic() - began, failure=f"{type(e).__name__}: {text}"))


def request(http: "httpx.Client", method: str, path: str, body: Any = None, **kw: Any) -> Exchange:
    import httpx

    began = time.monotonic()
    try:
        resp = http.request(method, path, json=body, **kw) if body is not None else http.request(method, path, **kw)
    except httpx.TransportError as e:  # recorded (no answer: reset, timeout, refused), then raised as before
        _no_answer(method, path, body, began, e)
        raise
    return _journal(Exchange(method, path, body, resp.status_code, resp.text, time.monotonic() - began,
                             dict(resp.headers)))


def chat(http: "httpx.Client", body: dict[str, Any], **kw: Any) -> Exchange:
    return request(http, "POST", CHAT, body, **kw)


def stream(http: "httpx.Client", body: dict[str, Any], **kw: Any) -> Exchange:
    """POST with stream=true; keeps every SSE line and the parsed `data:` payloads (not [DONE])."""
    import httpx

    body = {**body, "stream": True}
    began = time.monotonic()
    try:
        with http.stream("POST", CHAT, json=body, **kw) as resp:
            if resp.status_code != 200:
                resp.read()
                return _journal(Exchange("POST", CHAT, body, resp.status_code, resp.text, time.monotonic() - began,
                                         dict(resp.headers)))
            read = sse.read(resp.iter_lines())
            headers = dict(resp.headers)
    except httpx.TransportError as e:
        _no_answer("POST", CHAT, body, began, e)
        raise
    return _journal(Exchange("POST", CHAT, body, 200, "\n".join(read.lines), time.monotonic() - began, headers,
                             read.events, read.lines))


def deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The delta of choice 0 of every chunk that has one."""
    out = []
    for ev in events:
        for ch in ev.get("choices") or []:
            if ch.get("index", 0) == 0 and isinstance(ch.get("delta"), dict):
                out.append(ch["delta"])
    return out


def joined(events: list[dict[str, Any]], key: str) -> str:
    """Concatenation of a text field over a stream's deltas (content, reasoning, ...)."""
    return "".join(d.get(key) or "" for d in deltas(events))


def finish_reasons(events: list[dict[str, Any]]) -> list[str]:
    return [ch["finish_reason"] for ev in events for ch in ev.get("choices") or [] if ch.get("finish_reason")]


def streamed_tool_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool-call deltas reassembled by index, as an OpenAI client does it."""
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas(events):
        for tc in d.get("tool_calls") or []:
            slot = calls.setdefault(int(tc.get("index", 0)), {"id": None, "type": None, "name": "", "arguments": "",
                                                                "id_count": 0, "name_count": 0})
            if tc.get("id"):
                slot["id"] = tc["id"]
                slot["id_count"] += 1
            if tc.get("type"):
                slot["type"] = tc["type"]
            fn = tc.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
                slot["name_count"] += 1
            slot["arguments"] += fn.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]
