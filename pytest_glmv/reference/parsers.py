"""glm45 reasoning and tool-call parsing as vLLM 0.32 does it on the wire.

Facts held against vLLM 0.32's own answers (wire samples chat_forced_*, compared in tests/reference):
- thinking on: text before `</think>` is reasoning, even without an opening `<think>`
  (GLM's prompt may already hold it); no `</think>` at all means everything is reasoning.
- tool calls: `<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n</tool_call>`;
  a value is kept verbatim when the tool's schema says string, else read as JSON
  (then as a Python literal, else kept as text); arguments are `json.dumps(..., ensure_ascii=False)`.
- streaming: name first (id, type, index, function.name), then argument text; the
  closing of the latest value is held back until the next value opens or the call
  closes, so `{"city": "`, `Paris`..., `", "days": `, `3}` is the chunking.
- whitespace between `</think>`, and around tool calls, never reaches content.
Held against real vLLM by tests/vllm/test_differential.py (same forced text through both):
- reasoning loses its trailing whitespace (a stream never sends it);
- with calls, non-streaming content is the text before the first call, stripped (streams send it as is);
- a name is complete at its first `<arg_key>` or at `</tool_call>` (`<tool_call>get_time</tool_call>`
  is a zero-argument call); a zero-argument call streams its name and `{}` in one delta.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .ids import tool_call_id

THINK, END_THINK = "<think>", "</think>"
CALL, END_CALL = "<tool_call>", "</tool_call>"
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.S)
_KEY = re.compile(r"<arg_key>(.*?)</arg_key>", re.S)


@dataclass
class Mode:
    """How a request's output is parsed; built from the request, settings and faults."""

    reasoning: bool = True  # a reasoning parser is active and thinking is on
    tools: Sequence[dict[str, Any]] | None = None  # tool parsing active when not None
    typed: bool = True  # untyped-tool-args turns this off
    squeeze: bool = False  # tool-args-whitespace-squeezed: string values lose their whitespace runs and ends


def split_reasoning(text: str, mode: Mode) -> tuple[str | None, str | None]:
    if not mode.reasoning:
        return None, text
    if text.startswith(THINK):
        text = text[len(THINK):]
    # vLLM's glm45 (glm47_moe engine) strips trailing whitespace off reasoning; a stream holds it back
    # until more reasoning follows, and drops it at </think> or the end
    if END_THINK not in text:
        return text.rstrip(), None
    reasoning, _, content = text.partition(END_THINK)
    return reasoning.rstrip(), content or None


def _schema_type(tools: Sequence[dict[str, Any]] | None, name: str, key: str) -> Any:
    for tool in tools or ():
        fn = tool.get("function", {}) if isinstance(tool, dict) else {}
        if fn.get("name") == name:
            props = (fn.get("parameters") or {}).get("properties") or {}
            return (props.get(key) or {}).get("type")
    return None


def _squeezed(text: str, mode: Mode) -> str:
    return " ".join(text.split()) if mode.squeeze else text


def typed_value(raw: str, tool: str, key: str, mode: Mode) -> Any:
    if not mode.typed or _schema_type(mode.tools, tool, key) == "string":
        return _squeezed(raw, mode)
    text = raw.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _name(inner: str, complete: bool = True) -> str | None:
    """The name ends at the first <arg_key>, or at </tool_call> (a zero-argument call, with or
    without a newline); vLLM streams it only then, so a zero-argument call's name and its `{}`
    come in one delta."""
    cut = inner.find("<arg_key>")
    if cut == -1:
        return (inner.strip() or None) if complete else None
    return inner[:cut].strip() or None


def _regions(text: str) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    pos = 0
    while (start := text.find(CALL, pos)) != -1:
        end = text.find(END_CALL, start)
        if end == -1:
            out.append((text[start + len(CALL):], False))
            break
        out.append((text[start + len(CALL):end], True))
        pos = end + len(END_CALL)
    return out


def _pair_json(tool: str, key: str, value: str, mode: Mode) -> str:
    val = typed_value(value, tool, key.strip(), mode)
    return f"{json.dumps(key.strip(), ensure_ascii=False)}: {json.dumps(val, ensure_ascii=False)}"


def arguments(tool: str, inner: str, complete: bool, mode: Mode) -> str:
    """The argument JSON text that may be sent so far for one call."""
    pairs = _PAIR.findall(inner)
    if complete:
        return "{" + ", ".join(_pair_json(tool, k, v, mode) for k, v in pairs) + "}"
    parts = [_pair_json(tool, k, v, mode) for k, v in pairs]
    open_at = inner.rfind("<arg_value>")
    is_open = open_at != -1 and inner.rfind("</arg_value>") < open_at
    if is_open:
        keys = _KEY.findall(inner[:open_at])
        if not keys:
            return "{" + ", ".join(parts) if parts else ""
        key = keys[-1].strip()
        partial = inner[open_at + len("<arg_value>"):]
        parts.append(_open_value(tool, key, partial, mode))
    elif parts:
        key, value = pairs[-1]
        parts[-1] = _open_value(tool, key.strip(), value, mode)
    else:
        return ""
    return "{" + ", ".join(parts)


def _open_value(tool: str, key: str, partial: str, mode: Mode) -> str:
    head = json.dumps(key, ensure_ascii=False) + ": "
    if not mode.typed or _schema_type(mode.tools, tool, key) == "string":
        return head + json.dumps(_squeezed(partial, mode), ensure_ascii=False)[:-1]
    return head


@dataclass
class Parsed:
    reasoning: str | None
    content: str | None
    calls: list[tuple[str, str]]  # (name, arguments JSON)


def parse(text: str, mode: Mode) -> Parsed:
    reasoning, content = split_reasoning(text, mode)
    if mode.tools is None or content is None or CALL not in content:
        return Parsed(reasoning, content, [])
    calls = []
    for inner, complete in _regions(content):
        name = _name(inner)
        if complete and name:
            calls.append((name, arguments(name, inner, True, mode)))
    if not calls:
        return Parsed(reasoning, content, [])
    # vLLM (non-streaming): the text before the first call, stripped; the stream sends it unstripped
    before = content[:content.find(CALL)].strip()
    return Parsed(reasoning, before or None, calls)


@dataclass
class Streamer:
    """Re-parse the whole text after each delta and send what is new, as vLLM's parsers do."""

    mode: Mode
    text: str = ""
    sent_reasoning: str = ""
    sent_content: str = ""
    names_sent: int = 0
    sent_args: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # of the calls whose names were sent, by index
    names: list[str] = field(default_factory=list)

    def feed(self, delta: str) -> dict[str, Any] | None:
        """The delta message for this step (content, reasoning, tool_calls), or None to send nothing."""
        if delta in (THINK, END_THINK):
            self.text += delta
            return None
        self.text += delta
        reasoning, content = split_reasoning(self.text, self.mode)
        out: dict[str, Any] = {}
        if self.mode.tools is None:
            new_content = (content or "")[len(self.sent_content):]
        else:
            new_content = self._tool_content(content or "")[len(self.sent_content):]
        if new_content:
            out["content"] = new_content
            self.sent_content += new_content
        new_reasoning = (reasoning or "")[len(self.sent_reasoning):]
        if new_reasoning:
            out["reasoning"] = new_reasoning
            self.sent_reasoning += new_reasoning
        if self.mode.tools is not None:
            calls = self._tool_deltas(content or "")
            if calls:
                out["tool_calls"] = calls
        return out or None

    def flush(self) -> dict[str, Any] | None:
        """At the end, whitespace held back for a tool call that never came is content after all."""
        if self.mode.tools is None or self.names_sent:
            return None
        _, content = split_reasoning(self.text, self.mode)
        rest = (content or "")[len(self.sent_content):]
        if rest and CALL not in (content or ""):
            self.sent_content += rest
            return {"content": rest}
        return None

    def _tool_content(self, content: str) -> str:
        shown, pos = [], 0
        while (start := content.find(CALL, pos)) != -1:
            if content[pos:start].strip():
                shown.append(content[pos:start])
            end = content.find(END_CALL, start)
            if end == -1:
                return "".join(shown)
            pos = end + len(END_CALL)
        shown.append(content[pos:].rstrip())
        return "".join(shown)

    def _tool_deltas(self, content: str) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        for i, (inner, complete) in enumerate(_regions(content)):
            name = _name(inner, complete)
            if not name:
                break
            head: dict[str, Any] | None = None
            if i >= self.names_sent:
                head = {"id": tool_call_id(), "type": "function", "index": i, "function": {"name": name}}
                deltas.append(head)
                self.ids.append(head["id"])
                self.names.append(name)
                self.names_sent = i + 1
                self.sent_args.append("")
            args = arguments(name, inner, complete, self.mode)
            if len(args) > len(self.sent_args[i]) and args.startswith(self.sent_args[i]):
                new = args[len(self.sent_args[i]):]
                if head is not None:  # name and arguments in the same step: one delta, as vLLM
                    head["function"]["arguments"] = new
                else:
                    deltas.append({"index": i, "function": {"arguments": new}})
                self.sent_args[i] = args
        return deltas
