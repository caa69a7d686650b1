"""Prompts of an exact token count, built with the server's own /tokenize.

A window check is only as exact as its prompts. Guessing counts from characters
is off by hundreds on a 64K window, and searching for the boundary by sending
the whole window again and again costs minutes on a GPU. Instead: measure what
one filler unit costs with two /tokenize calls, compute how many units reach the
target, confirm with one more /tokenize (and correct once if the tokenizer
merged something at the edges). Chat requests are then sent once per probe.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from .evidence import Exchange, chat, chat_body, request

# Common words that a byte-level BPE keeps as one token each, space included.
# The first one that measures exactly one token per repetition is used.
UNIT_CANDIDATES = (" the", " and", " of", " to", " a", " is")
_PROBE_UNITS = 64
# Natural filler for the behaviour checks: a real model must read past it.
# No digits and no questions, so nothing in it looks like the needle or the ask.
FILLER_SENTENCES = (
    "The river bends twice before it reaches the old mill at the edge of the valley.",
    "Farmers in the region grow barley, rye and apples on terraced fields.",
    "A narrow road climbs through pine forest towards the northern pass.",
    "In winter the lake freezes and the village holds a market on the ice.",
    "The library keeps maps drawn by surveyors who walked every path by hand.",
    "Stone bridges cross the stream where the water runs fast and cold.",
    "Shepherds move their flocks to the high meadows when the snow melts.",
    "The bakery opens before dawn and sells dark bread with caraway seeds.",
)
# Matches the error texts of vLLM and of servers modelled on it when a request does not fit the window.
CONTEXT_ERROR = re.compile(r"context (length|window)|maximum model length|max_model_len|too (long|many tokens)",
                           re.I)

Messages = list[dict[str, Any]]


class TokenizeError(AssertionError):
    """The server's /tokenize did not give a usable count; the check cannot build its prompt."""


@dataclass
class Tokenizer:
    """Counts through the server's /tokenize endpoint, exactly as the chat endpoint would render."""

    http: httpx.Client
    model: str
    extra: dict[str, Any] = field(default_factory=dict)  # chat_template_kwargs etc., same as the chat request
    calls: int = 0

    def count(self, messages: Messages) -> int:
        body = chat_body(self.model, messages=messages, **{"add_generation_prompt": True, **self.extra})
        ex = request(self.http, "POST", "/tokenize", body)
        self.calls += 1
        data = ex.json
        if ex.status != 200 or not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise TokenizeError(f"/tokenize gave no count for a chat prompt\n{ex.evidence()}")
        return int(data["count"])

    def window(self) -> int | None:
        """The max_model_len /tokenize reports (vLLM includes it in every answer)."""
        ex = request(self.http, "POST", "/tokenize", chat_body(self.model, "hi"))
        data = ex.json
        return data.get("max_model_len") if isinstance(data, dict) else None


@dataclass
class Prompt:
    messages: Messages
    tokens: int  # the server's /tokenize count for messages
    filler: str = ""  # what build() was given, to rebuild the same text in another shape


def _unit_cost(tok: Tokenizer, build: Callable[[str], Messages], unit: str) -> tuple[int, float]:
    base = tok.count(build(""))
    more = tok.count(build(unit * _PROBE_UNITS))
    return base, (more - base) / _PROBE_UNITS


def exact(tok: Tokenizer, build: Callable[[str], Messages], target: int) -> Prompt:
    """Messages whose rendered prompt is exactly `target` tokens; build(filler) places the filler.

    The filler is a run of one-token words, so every count between the base prompt
    and the target can be hit. Three to five /tokenize calls, whatever the window.
    """
    for unit in UNIT_CANDIDATES:
        base, per = _unit_cost(tok, build, unit)
        if per == 1.0:
            break
    else:
        raise TokenizeError(f"no filler word costs exactly one token per repetition on this tokenizer "
                            f"(tried {UNIT_CANDIDATES!r}); cannot build an exact-length prompt")
    if target < base:
        raise TokenizeError(f"target {target} tokens is below the bare prompt's {base} tokens")
    n = target - base
    for _ in range(3):  # edges can merge differently once; the correction converges at once
        got = tok.count(build(unit * n))
        if got == target:
            return Prompt(build(unit * n), got, unit * n)
        n += target - got
        if n < 0:
            break
    raise TokenizeError(f"could not reach exactly {target} tokens with {unit!r} filler (last count {got})")


def near(tok: Tokenizer, build: Callable[[str], Messages], target: int, sentences: tuple[str, ...]) -> Prompt:
    """Messages of at most `target` tokens (and close to it) with natural filler, for behaviour checks."""
    block = " ".join(sentences) + " "
    base, per = _unit_cost(tok, build, block)
    if per <= 0:
        raise TokenizeError("the filler block costs no tokens; /tokenize is not counting text")
    reps = max(0, int((target - base) // per))
    while True:
        prompt = Prompt(build(block * reps), tok.count(build(block * reps)), block * reps)
        if prompt.tokens <= target or reps == 0:
            return prompt
        reps -= 1 + int((prompt.tokens - target) // per)


def filler_user(question: str = "Reply with one word.") -> Callable[[str], Messages]:
    """One user message: the filler, then a short question (filler first, so prompts share a prefix)."""
    return lambda filler: [{"role": "user", "content": f"Context:{filler}\n\n{question}"}]


def usage(ex: Exchange) -> dict[str, Any]:
    body = ex.json
    return body.get("usage") or {} if isinstance(body, dict) else {}


COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def usage_chunks(events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(position, event) of every streamed event that carries a usage object."""
    return [(i, ev) for i, ev in enumerate(events) if isinstance(ev.get("usage"), dict)]


def counts(use: dict[str, Any], keys: tuple[str, ...] = COUNTS) -> dict[str, Any]:
    return {k: use.get(k) for k in keys}


def small_chat(http: httpx.Client, model: str) -> Exchange:
    """The cheapest request that must succeed: proves the server still answers."""
    return chat(http, chat_body(model, "Say OK.", max_tokens=1, greedy=True))


_STATED_WINDOW = re.compile(r"(?:max_model_len\s*=\s*|maximum context length is |maximum model length of )(\d+)", re.I)


def stated_window(ex: Exchange) -> int | None:
    """The window an error message names (vLLM's texts always name it), None when it names none."""
    m = _STATED_WINDOW.search(ex.error_message)
    return int(m.group(1)) if m else None


def is_context_error(ex: Exchange, window: int) -> bool:
    """A 400 whose message says the request does not fit the window."""
    msg = ex.error_message
    return ex.status == 400 and bool(CONTEXT_ERROR.search(msg) or str(window) in msg)
