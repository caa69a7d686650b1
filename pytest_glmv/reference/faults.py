"""Fault modes: misdeployments and bugs seen in the field, injected on purpose.

A conformance check is proven only when it passes on the correct reference
server and fails on the fault it targets.  Adding a fault is one line in
FAULTS plus an `if faults.on("name")` where it bites.
"""
from __future__ import annotations

from typing import Iterable

FAULTS: dict[str, str] = {
    "no-reasoning-parser": "served without --reasoning-parser: <think>...</think> stays inside content, no reasoning field",
    "no-tool-parser": "served without a tool parser: tool-call XML stays inside content, no tool_calls",
    "no-auto-tool-choice": "served without --enable-auto-tool-choice: tool_choice auto answers vLLM's 400",
    "untyped-tool-args": "tool-call argument values all come back as JSON strings, whatever the schema says",
    "small-window": "the engine's real window is 32768 while /v1/models and /tokenize report the profile's",
    "silent-truncation": "over-length prompts are accepted and silently cut from the left instead of a 400",
    "images-ignored": "images are neither counted in the prompt nor seen by the model",
    "overflow-500": "a prompt over the window crashes the request with a 500 instead of vLLM's 400",
    "bad-image-500": "an undecodable image answers 500, after which the server hangs on every request",
    "box-tokens-leak": "grounding box markup leaks into the reasoning text and wraps answers that asked for no box",
    "box-tokens-stripped": "box tokens are skipped as special tokens, so grounding answers lose their box markup",
    "slow-first-token": "time to first token grows by 1500 ms",
    "api-key-ignored": "--api-key is accepted but never enforced",
    "file-anywhere": "file:// media is read from anywhere on disk, outside --allowed-local-media-path",
    "ssrf-open": "media URLs are fetched from any host, loopback included, ignoring --allowed-media-domains",
    "stream-tool-args-broken": "streamed tool-call argument deltas resend what was already sent, so they do not reassemble",
    "tool-calls-finish-stop": "a turn that called tools (auto or required) ends with finish_reason stop, not tool_calls",
    "thinking-toggle-ignored": "chat_template_kwargs enable_thinking=false is ignored: the model thinks anyway",
    "history-reasoning-content-dropped": "an assistant turn sent back with `reasoning_content` (the legacy name) loses it before the template (vLLM #38488)",
    "tool-call-in-reasoning": "a tool call made right after thinking is swallowed into the reasoning text: no tool_calls",
    "reasoning-streamed-as-content": "streamed answers carry the reasoning text as content deltas; non-streamed answers are right",
    "parallel-calls-collapsed": "parallel tool calls are collapsed to the first one, streaming and not",
}

SLOW_FIRST_TOKEN_MS = 1500.0
SMALL_WINDOW = 32768


class UnknownFault(ValueError):
    pass


def describe() -> str:
    width = max(map(len, FAULTS))
    return "\n".join(f"{name:<{width}}  {text}" for name, text in FAULTS.items())


class Faults:
    """The active set; `faults.on(name)` is how code asks, and a typo there fails loudly."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = list(names)
        bad = [n for n in names if n not in FAULTS]
        if bad:
            raise UnknownFault(f"unknown fault {bad[0]!r}; valid faults: {', '.join(FAULTS)}")
        self.active = frozenset(names)

    def on(self, name: str) -> bool:
        if name not in FAULTS:
            raise KeyError(f"fault {name!r} is not registered in reference/faults.py")
        return name in self.active

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self.active))

    def __bool__(self) -> bool:
        return bool(self.active)
