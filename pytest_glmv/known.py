"""Known upstream findings: the knowledge base shipped in fixtures/known/*.toml, and the matcher.

A failing suite check is a finding with a stable id, `AREA/NAME` (the check's name without `test_`,
parameters kept: `robustness/decompression_bomb_is_refused_quickly`). An entry of the knowledge base
explains a finding for an engine and a range of its versions, but only when the failure's evidence
matches the entry's signature (status and message pattern): a different 500 on the same check is a new
failure, never a known one. An entry whose fixed-in version is at or below the server's is a regression.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENGINES = ("vllm", "sglang")
POLICIES = ("fail", "xfail")
_FIELDS = {"id", "check", "engine", "versions", "fixed_in", "reference", "remedy", "summary", "evidence",
           "depends_on_weights"}
_EVIDENCE_FIELDS = {"status", "pattern", "observed"}


class KnowledgeBaseError(ValueError):
    """A knowledge-base file that cannot be used; the message is one line naming the file and the entry."""


def finding_id(area: str | None, name: str) -> str:
    """The stable id of a check's finding: AREA/NAME, NAME without its `test_` prefix."""
    short = name[5:] if name.startswith("test_") else name
    return f"{area or 'unmarked'}/{short}"


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
    status: int | None
    pattern: re.Pattern[str] | None
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

    def evidence_matches(self, text: str) -> bool:
        if self.status is not None and not re.search(rf"\bstatus:? {self.status}\b", text):
            return False
        return self.pattern is None or self.pattern.search(text) is not None


@dataclass(frozen=True)
class Match:
    entry: Entry
    finding: str  # the check it explained
    version: str
    regression: bool  # the server's version is at or past the fix: the fault came back

    @property
    def text(self) -> str:
        e = self.entry
        name = {"vllm": "vLLM", "sglang": "SGLang"}.get(e.engine, e.engine)
        fixed = f"fixed in {e.fixed_in}" if e.fixed_in else "not fixed upstream yet"
        ref = f" ({e.reference})" if e.reference else ""
        if self.regression:
            return (f"REGRESSION of known {name} fault {e.id}: {e.summary}; {fixed}{ref}, but this server "
                    f"reports {self.version}; remedy: {e.remedy}")
        return f"known {name} fault {e.id} in {e.engine} {e.versions}, {fixed}{ref}: {e.summary}; remedy: {e.remedy}"

    def record(self) -> dict[str, Any]:
        e = self.entry
        return {"id": e.id, "finding": self.finding, "engine": e.engine, "versions": str(e.versions),
                "fixed_in": str(e.fixed_in) if e.fixed_in else None, "reference": e.reference,
                "remedy": e.remedy, "summary": e.summary, "server_version": self.version,
                "regression": self.regression, "text": self.text}


@dataclass
class KnowledgeBase:
    entries: list[Entry] = field(default_factory=list)

    def match(self, finding: str, evidence: str, engine: str | None, version: str | None) -> Match | None:
        """The entry that explains this failure, or None. Only entries for this finding, engine and version
        range (or fixed at or below it: a regression) whose signature the evidence matches."""
        v = parse_version(version)
        for e in self.entries:
            if finding in e.checks and e.applies_to(engine, v) and e.evidence_matches(evidence):
                assert v is not None
                return Match(e, finding, str(version), regression=e.is_fixed_at(v))
        return None

    def for_version(self, engine: str, version: str) -> list[Entry]:
        """Entries that apply to this engine and version (not regressions)."""
        v = parse_version(version)
        return [e for e in self.entries if e.engine == engine and v is not None and _release(v) in e.versions]


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
        raise KnowledgeBaseError(f"{where}: evidence must be a table with {', '.join(sorted(_EVIDENCE_FIELDS))}")
    if "status" not in ev and "pattern" not in ev:
        raise KnowledgeBaseError(f"{where}: evidence needs a status or a pattern: a check name alone never "
                                 "matches")
    status = ev.get("status")
    if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
        raise KnowledgeBaseError(f"{where}: evidence.status {status!r} is not an HTTP status")
    try:
        pattern = re.compile(ev["pattern"]) if ev.get("pattern") else None
    except (re.error, TypeError) as e:
        raise KnowledgeBaseError(f"{where}: evidence.pattern is not a regular expression: {e}") from None
    weights = raw.get("depends_on_weights", False)
    if not isinstance(weights, bool):
        raise KnowledgeBaseError(f"{where}: depends_on_weights must be true or false")
    return Entry(raw["id"], tuple(checks), raw["engine"], versions, fixed, str(raw.get("reference") or "none found"),
                 raw["remedy"].strip(), raw["summary"].strip(), status, pattern, str(ev.get("observed") or ""), where,
                 weights)


def load(paths: Iterable[Path] | None = None) -> KnowledgeBase:
    """The shipped knowledge base (every fixtures/known/*.toml), or the given files."""
    if paths is None:
        from .documents import shipped

        paths = sorted(shipped("known/vllm.toml").parent.glob("*.toml"))
    kb = KnowledgeBase()
    seen: dict[str, str] = {}
    for path in paths:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise KnowledgeBaseError(f"known findings {path}: cannot read: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise KnowledgeBaseError(f"known findings {path}: invalid TOML: {e}") from None
        entries = data.get("finding", [])
        if not isinstance(entries, list):
            raise KnowledgeBaseError(f"known findings {path}: [[finding]] entries expected")
        for i, raw in enumerate(entries):
            where = f"known findings {path} entry {i + 1} ({raw.get('id', '?') if isinstance(raw, dict) else '?'})"
            if not isinstance(raw, dict):
                raise KnowledgeBaseError(f"{where}: not a table")
            entry = _entry(raw, where)
            if entry.id in seen:
                raise KnowledgeBaseError(f"{where}: id {entry.id} already used by {seen[entry.id]}")
            seen[entry.id] = where
            kb.entries.append(entry)
    return kb


def engine_of(version: str | None) -> str | None:
    """Which engine a server is, from what it says about itself: a /version answer means vLLM."""
    return "vllm" if version else None


_FINDING = re.compile(r"(?:Failed: )?finding ([a-z0-9-]+):")


def deployment_finding(message: str) -> str | None:
    """The id of a finding of the deployment itself (`finding media-path-root: ...`, e.g. a recommended
    launch flag the operator may accept with --glmv-waive), else None."""
    own = _FINDING.match(message)
    return own.group(1) if own else None


def message_of(evidence: str) -> str:
    """The failure's message inside a report's evidence (pytest's long text): its `E ` lines, else the text."""
    lines = [line[1:].strip() for line in evidence.splitlines() if line.startswith("E ")]
    return "\n".join(lines) if lines else evidence


def rematch(report: Mapping[str, Any], kb: KnowledgeBase, version: str | None = None) -> list[tuple[str, str, str]]:
    """(check, outcome, verdict) for every failed or xfailed suite check of a report.json, matched against `kb`:
    how an earlier run reads under today's knowledge base (and how docs/vllm-matrix.md is made)."""
    version = version or (report.get("target") or {}).get("vllm_version")
    out = []
    for c in report.get("checks", []):
        if c.get("outcome") not in ("failed", "error", "xfailed") or not c.get("area"):
            continue
        fid = finding_id(c["area"], c["key"].split("::")[-1])
        message = message_of(c.get("evidence") or "")
        m = kb.match(fid, message, engine_of(version), version)
        verdict = ("REGRESSION " if m and m.regression else "") + (m.entry.id if m else "unexplained")
        own = deployment_finding(message)
        if m is None and own:  # a finding of the deployment itself (e.g. the recommended launch flags)
            verdict = f"deployment finding {own} (waive with --glmv-waive {own})"
        out.append((fid, c["outcome"], verdict))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.known",
                                 description="Match the failures of a report.json against the shipped knowledge base.")
    ap.add_argument("report", type=Path, help="report.json written by --glmv-report DIR")
    ap.add_argument("--version", help="the server's vLLM version (default: the one the report recorded)")
    a = ap.parse_args(argv)
    try:
        report = json.loads(a.report.read_text(encoding="utf-8"))
        kb = load()
    except (OSError, ValueError) as e:
        print(f"glmv: {a.report}: {e}", file=sys.stderr)
        return 2
    if not isinstance(report, dict) or not isinstance(report.get("checks", []), list):
        print(f"glmv: {a.report}: not a report.json of --glmv-report (no list of checks)", file=sys.stderr)
        return 2
    rows = rematch(report, kb, a.version)
    for fid, outcome, verdict in rows:
        print(f"{outcome:8} {fid:70} {verdict}")
    unexplained = sum(1 for *_, v in rows if v == "unexplained" or v.startswith("REGRESSION"))
    own = sum(1 for *_, v in rows if v.startswith("deployment finding"))
    print(f"{len(rows)} failed or xfailed: {len(rows) - unexplained - own} known upstream, {own} findings of the "
          f"deployment, {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
