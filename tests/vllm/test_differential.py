"""Differential fidelity: the same forced GLM output through REAL vLLM and through the reference server
must give the same JSON, field by field, streaming and not.

Real vLLM 0.32 (CPU) serves the tiny random-weight GLM-4.5V (pytest_glmv.tiny); a structural tag of
exact token ids (GLM's markup tokens from TinyModel.token_ids, everything else const strings) makes it
emit exactly a chosen raw GLM text, which then goes through vLLM's own glm45 reasoning and tool parsers.
The reference server gets the same raw text as `glmv_raw_output` and runs its own parsers. Where the two
answers differ, the reference server is wrong (or, noted below, vLLM shows a quirk of the tiny model
that a real GLM model would not produce).

How vLLM is made to say exactly what a case needs (found for this module; see docs/tiny-vllm.md):
- `--structured-outputs-config '{"enable_in_reasoning": true}'` (TinyModel.extra_args), so the tag
  also binds inside <think>..</think>;
- VLLM_XGRAMMAR_CACHE_MB=0: xgrammar 0.2.8's compiled-grammar cache (vLLM keeps one GrammarCompiler
  with a 512 MB cache) mixes up `token` elements between structural tags: after one tag was compiled,
  a later tag with other token ids is matched against the wrong ids, the mask allows nothing the
  model can pick, and the request dies with a 500 "grammar rejected tokens [0]". A second request
  with forced markup tokens in one server's life is enough to hit it; without the cache every tag
  is compiled fresh (a few ms for these tags);
- VLLM_ENFORCE_STRICT_TOOL_CALLING=0: with tools and tool_choice auto, vLLM 0.32's glm45 tool
  parser (Glm47MoeModelToolParser, default --tool-strict-level function; no CLI value turns it
  off, `auto` is what lets the parser's default apply) replaces the request's tag with
  OR(its own tool-call grammar, the request's tag), and the random weights pick the branch. With
  the variable at 0, get_structural_tag() returns None and the request's tag applies alone;
- thinking on (the template's default), tools passed, tool_choice "auto": the request shape of
  the captured wire samples chat_forced_tool*.json.

What is NOT compared, and why:
- `id`, `created`, `system_fingerprint` (per request / per build), every tool call's `id` (random;
  only its `chatcmpl-tool-` prefix is checked, and that the stream sends one per call);
- token COUNTS in `usage` (prompt_tokens, completion_tokens, total_tokens, reasoning_tokens): the two
  servers tokenize differently (the tiny model's 894-token BPE vs the reference's GLM-sized
  stand-in), so only the usage object's shape and `total = prompt + completion` are compared;
- which stop token `stop_reason` names: a structural tag cannot force a stop token (xgrammar
  refuses it: 500), so the tiny model's random weights pick one of its EOS list once the tag is
  done (<|observation|> after a plain answer, say, which a real GLM would not emit). Both servers
  must still answer None (EOS) or the id of <|user|>/<|observation|> in their own tokenizer;
- where a stream is cut into chunks: both servers send one delta per detokenized step, the steps
  follow their tokenizers, and vLLM coalesces steps when its client side lags. The stream's SHAPE
  is compared instead: the sequence of delta events (role chunk by value, reasoning, content, a
  call's head with its keys in order, argument text, finish with finish_reason), runs collapsed;
  the chunk/choice key layouts of the first, middle, finish and usage chunks; and the reassembled
  reasoning, content and per-call arguments (one id per call).
Everything else must be equal: message fields and whether each is null or absent, reasoning,
content, tool call names and arguments (the raw string and its parsed JSON), finish_reason,
the first (role) chunk, the finish chunk, the usage chunk with empty choices, and `data: [DONE]`.

Skipped without a vLLM executable, except with CI=true, where that is a failure.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from pytest_glmv.lifecycle.server import LaunchedServer, VllmServer
from pytest_glmv.reference import tokenizer as ref_tokenizer
from pytest_glmv.reference.launcher import ReferenceServer
from pytest_glmv.tiny import TinyModel, prepare

from .tinyserver import require_vllm, tiny_vllm

EXE = require_vllm()

# The environment that makes forcing exact (see the module docstring).
FORCING_ENV = {"VLLM_XGRAMMAR_CACHE_MB": "0", "VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}

# ------------------------------------------------------------------------------------------ cases

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time", "parameters": {"type": "object", "properties": {}}}}
TRIP = {"type": "function", "function": {
    "name": "plan_trip", "description": "Plan a trip",
    "parameters": {"type": "object", "properties": {
        "days": {"type": "integer"}, "budget": {"type": "number"}, "refundable": {"type": "boolean"},
        "stops": {"type": "array", "items": {"type": "string"}},
        "prefs": {"type": "object", "properties": {
            "seat": {"type": "string"},
            "meals": {"type": "object", "properties": {"vegan": {"type": "boolean"},
                                                       "count": {"type": "integer"}}}}},
        "code": {"type": "string"}}}}}


def call_xml(name: str, **args: str) -> str:
    """One call as GLM-4.5V writes it (the layout its chat template renders)."""
    pairs = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in args.items())
    return f"<tool_call>{name}\n{pairs}</tool_call>"


UNICODE_CITY = 'Zürich "Altstadt" — 東京 🌧 back\\slash'

# name -> (raw GLM output, tools). The stop token is left to the engine (see _stop).
CASES: dict[str, tuple[str, list[dict[str, Any]] | None]] = {
    "reasoning_answer": ("<think>Paris is in France.</think>\nIt is sunny in Paris.", None),
    "one_call": ("<think>Need the tool.</think>\n" + call_xml("get_weather", city="Paris", days="3"), [WEATHER]),
    "two_calls": ("<think>Two cities.</think>\n" + call_xml("get_weather", city="Paris") + "\n"
                  + call_xml("get_weather", city="Berlin", days="2"), [WEATHER]),
    "typed_args": ("<think>Plan it.</think>\n" + call_xml(
        "plan_trip", days="4", budget="1250.5", refundable="true", stops='["Lyon", "Nice"]',
        prefs='{"seat": "window", "meals": {"vegan": false, "count": 2}}', code="007"), [TRIP]),
    "unicode_args": ("<think>Quote it.</think>\n" + call_xml("get_weather", city=UNICODE_CITY), [WEATHER]),
    "zero_args": ("<think>Clock.</think>\n<tool_call>get_time\n</tool_call>", [TIME, WEATHER]),
    "zero_args_bare": ("<think>Clock.\n</think><tool_call>get_time</tool_call>", [TIME, WEATHER]),
    "content_then_call": ("<think>Check first.</think>\nLet me check.\n" + call_xml("get_weather", city="Paris")
                          + "\nDone.", [WEATHER]),
}

MARKUP = re.compile(r"(<think>|</think>|<tool_call>|</tool_call>|<arg_key>|</arg_key>|<arg_value>|</arg_value>)")
USER = [{"role": "user", "content": "Weather in Paris?"}]


def structural_tag(tiny: TinyModel, raw: str) -> dict[str, Any]:
    """GLM's markup as its single token ids (as a real model emits it), the rest as const strings."""
    elements = [{"type": "token", "token": tiny.token_ids[p]} if MARKUP.fullmatch(p)
                else {"type": "const_string", "value": p} for p in MARKUP.split(raw) if p]
    tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": elements}}
    return {"structured_outputs": {"structural_tag": json.dumps(tag)}}


def body(case: str, stream: bool) -> dict[str, Any]:
    _, tools = CASES[case]
    out: dict[str, Any] = {"messages": USER, "max_tokens": 200, "temperature": 0, "seed": 0}
    if tools:
        out.update(tools=tools, tool_choice="auto")
    if stream:
        out.update(stream=True, stream_options={"include_usage": True})
    return out


# ------------------------------------------------------------------------------------------ servers

@pytest.fixture(scope="module")
def tiny() -> TinyModel:
    return prepare(weights="dummy")  # forcing is proven on random weights, as before trained ones shipped


@pytest.fixture(scope="module")
def vllm(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    with tiny_vllm(EXE, tiny, tmp_path_factory.mktemp("vllm-diff-log"), extra_env=FORCING_ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceServer]:
    srv = ReferenceServer(model=tiny.served_name, max_model_len=tiny.max_model_len,
                          log_dir=tmp_path_factory.mktemp("reference-diff-log"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def post(srv: LaunchedServer, payload: dict[str, Any]) -> tuple[int, str]:
    data = json.dumps({"model": srv.model, **payload}).encode()
    req = urllib.request.Request(srv.base_url + "/chat/completions", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


_ANSWERS: dict[tuple[str, str, bool], str] = {}  # (server, case, stream) -> body text; one request each


def answer(which: str, srv: LaunchedServer, tiny: TinyModel, case: str, stream: bool) -> str:
    key = (which, case, stream)
    if key not in _ANSWERS:
        raw, _ = CASES[case]
        forcing = structural_tag(tiny, raw) if which == "vllm" else {"glmv_raw_output": raw}
        status, text = post(srv, {**body(case, stream), **forcing})
        assert status == 200, f"{which} answered {status}: {text[:2000]}"
        _ANSWERS[key] = text
    return _ANSWERS[key]


# ------------------------------------------------------------------------------------------ views

def stop_names(tiny: TinyModel) -> dict[str, dict[int, str]]:
    return {"vllm": {v: k for k, v in tiny.token_ids.items()}, "reference": dict(ref_tokenizer.ID_TO_SPECIAL)}


def shape(obj: Any) -> Any:
    """Keys in order, recursively; leaves only by type."""
    if isinstance(obj, dict):
        return [(k, shape(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [shape(v) for v in obj]
    return type(obj).__name__


ENGINE_STOPS = {"<|user|>", "<|observation|>"}  # the tiny model's eos_token_id list, less <|endoftext|>


def _stop(value: Any, names: dict[int, str]) -> Any:
    """stop_reason: None (the tokenizer's EOS) or the id of another stop token. Which stop token ends a
    forced output is the random weights' pick on vLLM (a structural tag cannot force one: xgrammar
    refuses stop tokens inside the tag, a 500), so only "an EOS-list token or None" is comparable."""
    if value is None:
        return "eos-list"
    assert isinstance(value, int) and names.get(value) in ENGINE_STOPS, (value, names.get(value))
    return "eos-list"


def _usage(usage: dict[str, Any]) -> Any:
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage
    return shape(usage)


def completion_view(text: str, names: dict[int, str]) -> dict[str, Any]:
    body = json.loads(text)
    for key in ("id", "created", "system_fingerprint"):
        assert key in body, key
    assert body["id"].startswith("chatcmpl-"), body["id"]
    out = {k: v for k, v in body.items() if k not in ("id", "created", "system_fingerprint")}
    out["keys"] = list(body)
    out["usage"] = _usage(body["usage"])
    choices = []
    for choice in body["choices"]:
        choice = dict(choice, stop_reason=_stop(choice.get("stop_reason"), names), keys=list(choice))
        msg = dict(choice["message"], keys=list(choice["message"]))
        if msg.get("tool_calls") is not None:
            calls = []
            for call in msg["tool_calls"]:
                assert call["id"].startswith("chatcmpl-tool-"), call
                calls.append({"keys": list(call), "type": call["type"], "name": call["function"]["name"],
                              "function_keys": list(call["function"]),
                              "arguments": call["function"]["arguments"],
                              "parsed": json.loads(call["function"]["arguments"])})
            msg["tool_calls"] = calls
        choice["message"] = msg
        choices.append(choice)
    out["choices"] = choices
    return out


_ORDER = {"role": 0, "reasoning": 1, "content": 2, "tool_calls": 3}


def _atoms(delta: dict[str, Any]) -> list[Any]:
    """A delta as events that do not depend on where the stream was cut: vLLM coalesces the outputs
    of several steps into one delta when the client side lags (seen on a loaded 2-core machine), so
    `{"name"}` then `{"arguments"}` may arrive as one `{"name", "arguments"}`. A delta's fields are
    taken in one fixed order for the same reason."""
    out: list[Any] = []
    for key in sorted(delta, key=lambda k: _ORDER.get(k, 9)):
        value = delta[key]
        if key == "tool_calls":
            for tc in value:
                fn = tc.get("function") or {}
                if "id" in tc:  # the call's head: which keys, in which order
                    out.append(("call", tc.get("index"), tuple(tc), tuple(k for k in fn if k != "arguments")))
                if "arguments" in fn:
                    out.append(("arguments", tc.get("index")))
        elif key == "role" or value in ("", None):
            out.append((key, value))  # the role chunk's "role"/"content": "" are compared by value
        else:
            out.append(key)
    return out


def stream_view(text: str, names: dict[int, str]) -> dict[str, Any]:
    lines = [line for line in text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), [ln for ln in lines if not ln.startswith("data: ")]
    events = [line[len("data: "):] for line in lines]
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1], events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1, "one id for the whole stream"
    assert len({c["created"] for c in chunks}) == 1, "one created for the whole stream"
    kinds: list[Any] = []
    layouts: dict[str, set[Any]] = {"first": set(), "middle": set(), "finish": set(), "usage": set()}
    reasoning: str | None = None
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    usage: Any = None
    for n, c in enumerate(chunks):
        assert c["object"] == "chat.completion.chunk", c
        if not c["choices"]:
            assert usage is None, "one usage chunk"
            usage = _usage(c["usage"])
            layouts["usage"].add(tuple(c))
            atoms: list[Any] = ["usage"]
        else:
            assert len(c["choices"]) == 1, c
            ch = c["choices"][0]
            delta = ch["delta"]
            atoms = _atoms(delta)
            if ch.get("finish_reason") is not None:
                atoms.append(("finish", ch["finish_reason"], _stop(ch.get("stop_reason"), names)))
            where = "first" if n == 0 else "finish" if ch.get("finish_reason") is not None else "middle"
            layouts[where].add((tuple(c), tuple(ch), ch.get("logprobs"), ch.get("token_ids")))
            if "reasoning" in delta:
                reasoning = (reasoning or "") + delta["reasoning"]
            if "content" in delta and delta["content"] is not None:
                content = (content or "") + delta["content"]
            for tc in delta.get("tool_calls") or ():
                slot = calls.setdefault(tc["index"], {"ids": 0, "name": None, "arguments": ""})
                if "id" in tc:
                    assert tc["id"].startswith("chatcmpl-tool-"), tc
                    slot["ids"] += 1
                fn = tc.get("function") or {}
                if "name" in fn:
                    slot["name"] = fn["name"]
                slot["arguments"] += fn.get("arguments") or ""
        for atom in atoms:
            if not kinds or kinds[-1] != atom:
                kinds.append(atom)
    for slot in calls.values():
        slot["parsed"] = json.loads(slot["arguments"])
    return {"kinds": kinds, "layouts": layouts, "reasoning": reasoning, "content": content,
            "tool_calls": [calls[i] for i in sorted(calls)], "usage": usage}


# ------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_answer(vllm: VllmServer, reference: ReferenceServer, tiny: TinyModel, case: str, stream: bool) -> None:
    names = stop_names(tiny)
    view = stream_view if stream else completion_view
    got_vllm = view(answer("vllm", vllm, tiny, case, stream), names["vllm"])
    got_ref = view(answer("reference", reference, tiny, case, stream), names["reference"])
    assert got_ref == got_vllm
