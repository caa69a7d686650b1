"""The knowledge base's file format: entries, their signatures (what the server did), and reading them.

pytest_glmv/known.py matches failures against them; this module only says what an entry is and refuses, in one
line naming the file and the entry, one that cannot be used (fixtures/known/vllm.toml's header documents the
format).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES = ("vllm", "sglang")
POLICIES = ("fail", "xfail")
_FIELDS = {"id", "check", "engine", "versions", "fixed_in", "reference", "boundaries", "remedy", "summary",
           "evidence", "depends_on_weights"}
# What a signature may name, all of the server: the exchange's fields, its log lines, the time it took, notes
_EVIDENCE_FIELDS = {"status", "error_type", "message", "response", "path", "log", "elapsed_min_s", "elapsed_max_s",
                    "note", "observed"}
# ...and what must be among them: something the server said or did beyond a status code
_SERVER_OWN = ("message", "response", "log", "elapsed_min_s", "elapsed_max_s")
_REGEX_FIELDS = ("error_type", "message", "response", "path", "log")


class KnowledgeBaseError(ValueError):
    """A knowledge-base file that cannot be used; the message is one line naming the file and the entry."""


def parse_version(text: str | None) -> Version | None:
    """A server's version as PEP 440, compared by its release: `0.32.0+cpu` and `0.11.1.dev123+gabc`
    parse (local and dev parts kept but ignored by the ranges); anything else is None (no match)."""
    if not text:
        return None
    try:
        return Version(str(text).strip().lstrip("vV"))
    except InvalidVersion:
        return None


def _release(v: Version) -> Version:
    return Version(".".join(str(p) for p in v.release))


@dataclass(frozen=True)
class Entry:
    id: str
    checks: tuple[str, ...]  # the finding ids it explains (AREA/NAME): one fault can fail several checks
    engine: str
    versions: SpecifierSet
    fixed_in: Version | None
    reference: str
    remedy: str
    summary: str
    signature: "Signature"
    observed: str
    source: str
    # True: whether it shows depends on what the model generates (random weights, the GPU's numerics), so a run
    # that does not show it proves no fix (the strict "still shows" check of the project's CI skips it)
    depends_on_weights: bool = False

    def applies_to(self, engine: str | None, version: Version | None) -> bool:
        return engine == self.engine and version is not None and (
            _release(version) in self.versions or self.is_fixed_at(version))

    def is_fixed_at(self, version: Version) -> bool:
        return self.fixed_in is not None and _release(version) >= self.fixed_in

    def evidence_matches(self, evidence: Mapping[str, Any] | None) -> bool:
        return self.signature.matches(evidence)


@dataclass(frozen=True)
class Signature:
    """What the server did, as a knowledge-base entry names it; every field given must hold.

    status: HTTP statuses (0: no answer at all, the connection failed or timed out); error_type, message,
    response, path: regexes searched in the shown exchange's error type, the server's error message, the answer
    (<= 300 chars; a stream's joined text) and the path; log: a regex one of the check's server log lines must
    match; elapsed_min_s/elapsed_max_s: the exchange's time; note: {key: regex} over the check's notes (a note the
    check did not take reads as "")."""

    status: tuple[int, ...] = ()
    fields: tuple[tuple[str, re.Pattern[str]], ...] = ()
    log: re.Pattern[str] | None = None
    elapsed: tuple[float | None, float | None] = (None, None)
    notes: tuple[tuple[str, re.Pattern[str]], ...] = ()

    def matches(self, evidence: Mapping[str, Any] | None) -> bool:
        if not isinstance(evidence, Mapping):
            return False
        ex = evidence.get("exchange")
        needs_exchange = bool(self.status or self.fields or self.elapsed != (None, None))
        if needs_exchange and not isinstance(ex, Mapping):
            return False
        ex = ex if isinstance(ex, Mapping) else {}
        if self.status and (ex.get("status") or 0) not in self.status:
            return False
        for name, rx in self.fields:
            if rx.search(str(ex.get("error_message" if name == "message" else name) or "")) is None:
                return False
        low, high = self.elapsed
        if low is not None or high is not None:
            took = ex.get("elapsed_s")
            if not isinstance(took, (int, float)) or (low is not None and took < low) or (
                    high is not None and took > high):
                return False
        if self.log is not None and not any(self.log.search(str(line)) for line in evidence.get("log") or ()):
            return False
        notes = evidence.get("notes") or {}
        # a note the check did not take reads as "": "^0?$" holds for a check that has no such note
        return all(rx.search(str(notes.get(key, ""))) for key, rx in self.notes)


def _entry(raw: Mapping[str, Any], where: str) -> Entry:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise KnowledgeBaseError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                                 f"valid: {', '.join(sorted(_FIELDS))}")
    for key in ("id", "engine", "versions", "remedy", "summary"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise KnowledgeBaseError(f"{where}: '{key}' is required (a non-empty string)")
    checks = raw.get("check")
    checks = [checks] if isinstance(checks, str) else checks
    if not checks or not isinstance(checks, list) or not all(isinstance(c, str) and c.strip() for c in checks):
        raise KnowledgeBaseError(f"{where}: 'check' is required: a finding id AREA/NAME, or a list of them")
    if raw["engine"] not in ENGINES:
        raise KnowledgeBaseError(f"{where}: unknown engine {raw['engine']!r}; known: {', '.join(ENGINES)}")
    for c in checks:
        if "/" not in c:
            raise KnowledgeBaseError(f"{where}: check {c!r} is not a finding id AREA/NAME")
    try:
        versions = SpecifierSet(raw["versions"])
    except InvalidSpecifier:
        raise KnowledgeBaseError(f"{where}: versions {raw['versions']!r} is not a PEP 440 specifier "
                                 "(e.g. '>=0.20,<0.28')") from None
    fixed = None
    if raw.get("fixed_in"):
        fixed = parse_version(str(raw["fixed_in"]))
        if fixed is None:
            raise KnowledgeBaseError(f"{where}: fixed_in {raw['fixed_in']!r} is not a PEP 440 version")
    ev = raw.get("evidence") or {}
    if not isinstance(ev, Mapping) or set(ev) - _EVIDENCE_FIELDS:
        bad = sorted(set(ev) - _EVIDENCE_FIELDS) if isinstance(ev, Mapping) else "not a table"
        raise KnowledgeBaseError(f"{where}: evidence has {bad}; it names only {', '.join(sorted(_EVIDENCE_FIELDS))}")
    signature = _signature(ev, where)
    weights = raw.get("depends_on_weights", False)
    if not isinstance(weights, bool):
        raise KnowledgeBaseError(f"{where}: depends_on_weights must be true or false")
    return Entry(raw["id"], tuple(checks), raw["engine"], versions, fixed, str(raw.get("reference") or "none found"),
                 raw["remedy"].strip(), raw["summary"].strip(), signature, str(ev.get("observed") or ""), where,
                 weights)


def _signature(ev: Mapping[str, Any], where: str) -> Signature:
    if not any(k in ev for k in _SERVER_OWN):
        raise KnowledgeBaseError(f"{where}: evidence names nothing the server did: a status alone is not enough; "
                                 "add its own words (message, response), a log line (log) or a timing window "
                                 "(elapsed_min_s/elapsed_max_s)")
    status = ev.get("status", [])
    status = [status] if isinstance(status, int) and not isinstance(status, bool) else status
    if not isinstance(status, list) or not all(isinstance(s, int) and (s == 0 or 100 <= s <= 599) for s in status):
        raise KnowledgeBaseError(f"{where}: evidence.status {ev.get('status')!r} is not an HTTP status (or 0: no "
                                 "answer), nor a list of them")

    def regex(key: str, value: Any) -> re.Pattern[str]:
        try:
            return re.compile(value) if isinstance(value, str) and value else re.compile(None)  # type: ignore
        except (re.error, TypeError) as e:
            raise KnowledgeBaseError(f"{where}: evidence.{key} is not a regular expression: {e}") from None

    fields = tuple((k, regex(k, ev[k])) for k in _REGEX_FIELDS if k != "log" and k in ev)
    log = regex("log", ev["log"]) if "log" in ev else None
    window: list[float | None] = []
    for key in ("elapsed_min_s", "elapsed_max_s"):
        value = ev.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise KnowledgeBaseError(f"{where}: evidence.{key} {value!r} is not a number of seconds >= 0")
        window.append(float(value) if value is not None else None)
    note = ev.get("note") or {}
    if not isinstance(note, Mapping):
        raise KnowledgeBaseError(f"{where}: evidence.note must be a table of note name = regex")
    notes = tuple((str(k), regex(f"note.{k}", v)) for k, v in note.items())
    return Signature(tuple(status), fields, log, (window[0], window[1]), notes)


def read(path: Path) -> list[tuple[Entry, str]]:
    """The entries of one knowledge-base file, each with where it stands (for one-line errors)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise KnowledgeBaseError(f"known findings {path}: cannot read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise KnowledgeBaseError(f"known findings {path}: invalid TOML: {e}") from None
    entries = data.get("finding", [])
    if not isinstance(entries, list):
        raise KnowledgeBaseError(f"known findings {path}: [[finding]] entries expected")
    out = []
    for i, raw in enumerate(entries):
        where = f"known findings {path} entry {i + 1} ({raw.get('id', '?') if isinstance(raw, dict) else '?'})"
        if not isinstance(raw, dict):
            raise KnowledgeBaseError(f"{where}: not a table")
        out.append((_entry(raw, where), where))
    return out
