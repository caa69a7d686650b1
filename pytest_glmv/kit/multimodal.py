"""Requests for the multimodal suite: image messages, prompt-token measurements, answers.

Token counts are measured, never generated: `max_tokens=1` costs one decode
step on a GPU, and a text-only twin of each message (same text parts, same
roles) gives the exact baseline, from /tokenize when the server has it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import httpx
import pytest

from .evidence import Exchange, chat, chat_body, request
from .media import image_part

Message = dict[str, Any]


def video_part(url: str) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": url}}


def user(parts: Sequence[str | dict[str, Any]], text: str) -> Message:
    """A user turn: the media first (GLM's habit), then the text; a str part is an image URL."""
    content = [image_part(p) if isinstance(p, str) else p for p in parts]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def text_only(messages: Sequence[Message]) -> list[Message]:
    """The same conversation with every image and video part removed: the baseline of a count."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            m = {**m, "content": [p for p in content if p.get("type") == "text"]}
        out.append(m)
    return out


def prompt_tokens(ex: Exchange) -> int:
    usage = (ex.json or {}).get("usage") if isinstance(ex.json, dict) else None
    assert ex.status == 200 and isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int), \
        f"expected a 200 with usage.prompt_tokens\n{ex.evidence()}"
    return int(usage["prompt_tokens"])


def reasoning_of(message: dict[str, Any]) -> str:
    return str(message.get("reasoning") or message.get("reasoning_content") or "")


@dataclass
class MM:
    """The suite's view of the server: chat with images, and prompt-token measurements."""

    http: httpx.Client
    model: str
    thinking: str  # the profile's: "hybrid" or "always"
    window: int
    _tokenize_ok: bool | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def body(self, messages: Sequence[Message], max_tokens: int = 1, **extra: Any) -> dict[str, Any]:
        return chat_body(self.model, messages=messages, max_tokens=max_tokens, greedy=True, **extra)

    def send(self, messages: Sequence[Message], max_tokens: int = 1, **extra: Any) -> Exchange:
        return chat(self.http, self.body(messages, max_tokens, **extra))

    def ask(self, parts: Sequence[str | dict[str, Any]], text: str = "Describe the image.", max_tokens: int = 1,
            **extra: Any) -> Exchange:
        return self.send([user(parts, text)], max_tokens, **extra)

    def tokenize(self, messages: Sequence[Message]) -> int | None:
        """The prompt's exact count from /tokenize, or None when the server does not take messages there."""
        if self._tokenize_ok is False:
            return None
        ex = request(self.http, "POST", "/tokenize", chat_body(self.model, messages=messages,
                                                               add_generation_prompt=True))
        count = ex.json.get("count") if ex.status == 200 and isinstance(ex.json, dict) else None
        self._tokenize_ok = isinstance(count, int)
        return count if isinstance(count, int) else None

    def baseline(self, messages: Sequence[Message]) -> int:
        """Prompt tokens of the conversation without its media: /tokenize when available, else a chat."""
        bare = text_only(messages)
        key = "base:" + json.dumps(bare, sort_keys=True)
        if key not in self.cache:
            counted = self.tokenize(bare)
            self.cache[key] = counted if counted is not None else prompt_tokens(self.send(bare))
        return int(self.cache[key])

    def media_tokens(self, messages: Sequence[Message]) -> tuple[int, Exchange]:
        """Tokens the media add to the prompt (chat usage minus the text-only baseline), and the exchange."""
        ex = self.send(messages)
        return prompt_tokens(ex) - self.baseline(messages), ex

    def behave(self, messages: Sequence[Message], thinking: bool = False, max_tokens: int = 96) -> Exchange:
        """A question for a behaviour check: thinking off where the model allows it (fewer tokens to pay)."""
        extra: dict[str, Any] = {}
        if self.thinking == "always" or thinking:
            max_tokens = max(max_tokens, 2048)
        else:
            extra["chat_template_kwargs"] = {"enable_thinking": False}
        return self.send(messages, max_tokens, **extra)


@pytest.fixture(scope="module", name="mm")
def mm_fixture(glmv_server: Any, glmv_http_shared: httpx.Client, glmv_profile: Any) -> MM:
    """Module-scoped (hypothesis-friendly) client at the server root, with the API key if any."""
    return MM(glmv_http_shared, glmv_server.model, glmv_profile.thinking, glmv_profile.max_model_len)
