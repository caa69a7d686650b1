"""Where reasoning sits in an answer, and what the field name in use says about the server.

vLLM's reasoning parsers put the thinking text in `reasoning_content` only before 0.11.1 (read in the 0.11.0
wheel), in both from 0.11.1 (vllm#27752, a PR: read in the 0.11.1 wheel, ChatMessage and DeltaMessage copy
`reasoning` to `reasoning_content`) while the name changed (to 0.15; either is accepted there) and only in
`reasoning` from 0.16.0 on (vllm#33402; read in the released code; 0.32 sends
`reasoning`, null when there is none). Clients read one of the two names, so the suite detects which one
a server uses and judges it against what the user said to expect (`--glmv-reasoning-field
auto|reasoning|reasoning_content`); with auto, against the release the server reports (/version): a
release that sends `reasoning` must send it. Only when the release is unknown does a legacy-only server
get no more than a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from packaging.version import Version

from ..known import parse_version
from . import evidence

CURRENT, LEGACY = "reasoning", "reasoning_content"
FIELDS = (CURRENT, LEGACY)
THINK_TAGS = ("<think>", "</think>")
BOX_TOKENS = ("<|begin_of_box|>", "<|end_of_box|>")
CALL_MARKUP = ("<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>")
# vLLM's field by release: only `reasoning_content` before TRANSITION, either (both or in transition) up to
# CURRENT_FROM, only `reasoning` from CURRENT_FROM on.
TRANSITION, CURRENT_FROM = Version("0.11.1"), Version("0.16")
RELEASE_RULE = ("vLLM sends reasoning only as `reasoning_content` before 0.11.1, as both while the name changed "
                "(0.11.1-0.15) and only as `reasoning` from 0.16.0 on (vllm#27752, vllm#33402)")


def release_field(version: str | None) -> str | None:
    """The field a vLLM of this release sends: reasoning, reasoning_content, "either" (0.11.1-0.15), or None
    when the release is unknown (no /version, or a version that does not parse)."""
    v = parse_version(version)
    if v is None:
        return None
    release = Version(".".join(str(p) for p in v.release))
    if release < TRANSITION:
        return LEGACY
    return "either" if release < CURRENT_FROM else CURRENT


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
    version: str | None = None  # the release the server reports (None: unknown)

    @property
    def name(self) -> str | None:
        """What a report header shows: reasoning, reasoning_content, both, or None."""
        if len(self.found) > 1:
            return "both"
        return self.found[0] if self.found else None

    @property
    def legacy_only(self) -> bool:
        return self.found == (LEGACY,)

    @property
    def release_unknown(self) -> bool:
        return release_field(self.version) is None


def judge_field(found: Iterable[str], expected: str, version: str | None = None) -> FieldVerdict:
    """Judge the field names that carried reasoning against --glmv-reasoning-field `expected`; with auto,
    against the release the server reports (`version`, /version's text): a release that sends `reasoning`
    must send it."""
    names = tuple(n for n in FIELDS if n in set(found))
    if not names:
        summary = ("reasoning field: none carried text with thinking on (is the server missing "
                   "--reasoning-parser glm45?)")
        return FieldVerdict(names, expected, False, summary, version)
    if names == (CURRENT,):
        summary = "reasoning field: `reasoning` (the name vLLM sends from 0.16.0 on)"
    elif names == (LEGACY,):
        summary = ("reasoning field: `reasoning_content` ONLY (the legacy name, vLLM before 0.16); clients that "
                   "read `reasoning` see no reasoning at all")
    else:
        summary = "reasoning field: both `reasoning` and `reasoning_content` (a transition-era server)"
    if expected != "auto":  # the user said what their clients read: that alone decides
        ok = expected in names
        if not ok:
            summary += f"; but --glmv-reasoning-field says clients read `{expected}`"
        return FieldVerdict(names, expected, ok, summary, version)
    rule = release_field(version)
    ok = rule != CURRENT or CURRENT in names
    if not ok:
        summary += (f"; but the server reports vLLM {version}, a release that sends `reasoning`: {RELEASE_RULE}; "
                    f"clients written for it see no reasoning")
    elif rule is not None and names == (LEGACY,):
        summary += f"; as vLLM {version} does ({RELEASE_RULE})"
    return FieldVerdict(names, expected, ok, summary, version)
