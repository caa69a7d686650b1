"""The per-check journal: what a check saw of the server, apart from what it asserted.

pytest_glmv.kit.evidence appends every exchange it makes; `cite()` (called by Exchange.evidence()) marks what a
check showed in its messages, `note()` adds an observation that is no single exchange. GlmvSession resets it as
each check starts and reads `checked()` and `log_lines()` when one fails (pytest_glmv/failure.py builds
report.glmv_evidence from them).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .evidence import Exchange

RECORD_CHARS = 300  # how much of a request body, an answer or a note a record keeps

# -- the per-check journal ------------------------------------------------------------------------------
# Module level: a check's helpers and fixtures reach it without being handed anything. Exchanges made in
# threads (concurrent probes) are appended under the GIL.
_JOURNAL: list["Exchange"] = []  # the last JOURNAL_KEPT exchanges made during this check
_CITED: list["Exchange"] = []  # the exchanges this check showed in a message, oldest first
_NOTES: dict[str, Any] = {}
JOURNAL_KEPT = 200


def journal_reset() -> None:
    """Forget the previous check's exchanges and notes (GlmvSession.test_starting calls it)."""
    _JOURNAL.clear()
    _CITED.clear()
    _NOTES.clear()


def _journal(ex: "Exchange") -> "Exchange":
    _JOURNAL.append(ex)
    del _JOURNAL[:-JOURNAL_KEPT]
    return ex


def cite(ex: "Exchange") -> None:
    """Mark an exchange as the evidence of this check's failure (also one made before the check began, e.g. in a
    module-scoped fixture)."""
    if not any(c is ex for c in _CITED):
        _CITED.append(ex)


def note(key: str, value: Any) -> None:
    """A named observation of the server that is no single exchange ("exited_after_s", "survivors", ...)."""
    _NOTES[key] = value


def journal() -> list[dict[str, Any]]:
    """This check's exchanges as records (Exchange.record() plus "cited": whether the check showed it in a
    message), oldest first: those it cited that were made before it began (a module fixture's) come first."""
    made = {id(ex) for ex in _JOURNAL}
    cited = {id(ex) for ex in _CITED}
    older = [ex for ex in _CITED if id(ex) not in made]
    return [{**ex.record(), "cited": id(ex) in cited} for ex in older + _JOURNAL]


def checked() -> dict[str, Any]:
    """What this check saw of the server, for report.glmv_evidence: the exchange to show (the last it cited,
    else the last it made; None when it made none), how many it made, and its notes."""
    shown = _CITED[-1] if _CITED else (_JOURNAL[-1] if _JOURNAL else None)
    return {"exchange": shown.record() if shown is not None else None, "exchanges": len(_JOURNAL),
            "notes": notes()}


def notes() -> dict[str, Any]:
    """The check's notes, each value JSON-safe (a number, string, bool or None; else its repr, cut)."""
    return {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)[:RECORD_CHARS]
            for k, v in _NOTES.items()}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# what makes a log line worth keeping when a check's log is long: vLLM's and uvicorn's levels and exceptions
_NOTABLE = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b|Exception|Error\b|Traceback|\bfailed\b", re.IGNORECASE)


def log_lines(path: Path | None, offset: int | None, limit: int = 20, max_bytes: int = 1 << 20) -> list[str]:
    """The lines a server wrote to its log from byte `offset` on (at most `limit`, ANSI colours stripped): all of
    them when few, else the notable ones (levels, exceptions) first, each distinct line once, in log order."""
    if path is None or offset is None:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read(max_bytes).decode("utf-8", "replace")
    except OSError:
        return []
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    if len(lines) <= limit:
        return lines
    distinct = list(dict.fromkeys(lines))
    notable = [i for i, line in enumerate(distinct) if _NOTABLE.search(line)]
    keep = set(notable[:limit])
    for i in range(len(distinct) - 1, -1, -1):  # room left: the last lines
        if len(keep) >= limit:
            break
        keep.add(i)
    return [distinct[i] for i in sorted(keep)]


