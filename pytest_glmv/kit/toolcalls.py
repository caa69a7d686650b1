"""What a tools check got back, as the calls it compares, a line a skip can say, and a count a report keeps.

Apart from kit/tools.py, which training imports where neither pytest nor httpx is installed.
"""
from __future__ import annotations

from typing import Any

import pytest

from . import evidence
from .evidence import Exchange


def calls_of(ex: Exchange) -> list[dict[str, Any]]:
    return list(ex.message.get("tool_calls") or [])


def streamed_calls(sx: Exchange) -> list[dict[str, Any]]:
    """Tool-call deltas reassembled into the non-streamed shape."""
    return [{"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in evidence.streamed_tool_calls(sx.events)]


def compared(request: pytest.FixtureRequest, key: str, n: int) -> None:
    """How many calls (or values) a check compared: a report.json property (`properties`) even when it passes, a
    journal note in a failure's evidence. (user_properties directly: record_property warns under xunit2 JUnit.)"""
    request.node.user_properties.append((key, n))
    evidence.note(key, n)


def came_back(ex: Exchange, content: Any = None) -> str:
    """What an answer without calls was, in a few words, for a skip's one line."""
    text = ex.message.get("content") if content is None else content
    return f"finish_reason {ex.choice.get('finish_reason')!r}, content {str(text or '')[:60]!r}"


def calls_text(calls: list[dict[str, Any]]) -> str:
    return "[" + ", ".join(f"{c['function']['name']}({c['function'].get('arguments')})" for c in calls) + "]"
