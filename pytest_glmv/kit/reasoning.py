"""Where reasoning sits in an answer, and what the field name in use says about the server.

vLLM's reasoning parsers put the thinking text in `reasoning_content` up to about 0.15 and in
`reasoning` from about 0.16 on (0.32 sends only `reasoning`, null when there is none). Clients read one
of the two names, so the suite detects which one a server uses and judges it against what the user
said to expect (`--glmv-reasoning-field auto|reasoning|reasoning_content`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from . import evidence

CURRENT, LEGACY = "reasoning", "reasoning_content"
FIELDS = (CURRENT, LEGACY)
THINK_TAGS = ("<think>", "</think>")
BOX_TOKENS = ("<|begin_of_box|>", "<|end_of_box|>")
CALL_MARKUP = ("<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>")


def texts(d: dict[str, Any]) -> dict[str, str]:
    """The reasoning field names that carry text in a message or delta, with their text."""
    return {name: d[name] for name in FIELDS if isinstance(d.get(name), str) and d[name]}


def reasoning_of(d: dict[str, Any]) -> str:
    return next(iter(texts(d).values()), "")


def content_of(d: dict[str, Any]) -> str:
    c = d.get("content")
    return c if isinstance(c, str) else ""


def found_markup(text: str, markers: Iterable[str]) -> list[str]:
    return [m for m in markers if m in text]


@dataclass
class StreamView:
    """A stream's choice-0 deltas seen as a client does: joined texts and the order things came in."""

    reasoning: dict[str, str] = field(default_factory=dict)  # field name -> joined text
    content: str = ""
    kinds: list[set[str]] = field(default_factory=list)  # per delta: {"reasoning", "content", "tool"}

    @property
    def reasoning_text(self) -> str:
        return next(iter(self.reasoning.values()), "")

    def first(self, kind: str) -> int | None:
        return next((i for i, k in enumerate(self.kinds) if kind in k), None)

    def last(self, kind: str) -> int | None:
        return max((i for i, k in enumerate(self.kinds) if kind in k), default=None)

    def reasoning_after(self, kind: str) -> bool:
        """A reasoning delta came strictly after the first delta of `kind` (one delta may hold both)."""
        first, last = self.first(kind), self.last("reasoning")
        return first is not None and last is not None and last > first


def stream_view(events: list[dict[str, Any]]) -> StreamView:
    view = StreamView()
    for d in evidence.deltas(events):
        kinds: set[str] = set()
        for name, text in texts(d).items():
            view.reasoning[name] = view.reasoning.get(name, "") + text
            kinds.add("reasoning")
        if content_of(d):  # the role chunk's content "" is no content
            view.content += content_of(d)
            kinds.add("content")
        if d.get("tool_calls"):
            kinds.add("tool")
        view.kinds.append(kinds)
    return view


@dataclass(frozen=True)
class FieldVerdict:
    found: tuple[str, ...]  # field names that carried reasoning text
    expected: str  # auto | reasoning | reasoning_content
    ok: bool
    summary: str  # one line for the report

    @property
    def name(self) -> str | None:
        """What a report header shows: reasoning, reasoning_content, both, or None."""
        if len(self.found) > 1:
            return "both"
        return self.found[0] if self.found else None

    @property
    def legacy_only(self) -> bool:
        return self.found == (LEGACY,)


def judge_field(found: Iterable[str], expected: str) -> FieldVerdict:
    names = tuple(n for n in FIELDS if n in set(found))
    if not names:
        summary = ("reasoning field: none carried text with thinking on (is the server missing "
                   "--reasoning-parser glm45?)")
        return FieldVerdict(names, expected, False, summary)
    if names == (CURRENT,):
        summary = "reasoning field: `reasoning` (the name vLLM uses from about 0.16 on)"
    elif names == (LEGACY,):
        summary = ("reasoning field: `reasoning_content` ONLY (legacy name, vLLM before about 0.16); clients that "
                   "read `reasoning` see no reasoning at all")
    else:
        summary = "reasoning field: both `reasoning` and `reasoning_content` (a transition-era server)"
    ok = expected == "auto" or expected in names
    if not ok:
        summary += f"; but --glmv-reasoning-field says clients read `{expected}`"
    return FieldVerdict(names, expected, ok, summary)
