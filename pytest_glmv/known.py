"""Known upstream findings: the knowledge base shipped in fixtures/known/*.toml, and the matcher.

A failing suite check is a finding with a stable id, `AREA/NAME` (the check's name without `test_`,
parameters kept: `robustness/decompression_bomb_is_refused_quickly`). An entry of the knowledge base
explains a finding for an engine and a range of its versions, but only when what the server did matches the
entry's signature: the structured evidence a check records (kit/evidence.py: the exchange's status, error type
and message, answer, path and time, the log lines the server wrote during the check, the check's notes), never
the check's own failure wording. A different 500 on the same check is a new failure, never a known one; a
server that is not recognisably the entry's engine (lifecycle/engine.py) matches nothing. An entry whose
fixed-in version is at or below the server's is a regression. Two entries that match one failure explain
nothing: the report says so, and the failure counts as unexplained.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

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


@dataclass(frozen=True)
class Match:
    entry: Entry
    finding: str  # the check it explained
    version: str
    regression: bool  # the server's version is at or past the fix: the fault came back
    rivals: tuple[Entry, ...] = ()  # other entries the same evidence matches: then nothing is explained

    @property
    def text(self) -> str:
        e = self.entry
        if self.rivals:
            ids = ", ".join(r.id for r in (e, *self.rivals))
            return (f"AMBIGUOUS: this failure's evidence matches {len(self.rivals) + 1} knowledge-base entries "
                    f"({ids}); none is taken, the failure stays unexplained until their signatures tell them apart")
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
                "regression": self.regression, "ambiguous": [r.id for r in self.rivals], "text": self.text}


@dataclass
class KnowledgeBase:
    entries: list[Entry] = field(default_factory=list)

    def match(self, finding: str, evidence: Mapping[str, Any] | None, engine: str | None,
              version: str | None) -> Match | None:
        """The entry that explains this failure, or None. Only entries for this finding, engine and version
        range (or fixed at or below it: a regression) whose signature the server's evidence (a check's
        server_evidence: exchange, log, notes) matches. Several matching: a Match with rivals (ambiguous)."""
        v = parse_version(version)
        found = [e for e in self.entries
                 if finding in e.checks and e.applies_to(engine, v) and e.evidence_matches(evidence)]
        if not found:
            return None
        assert v is not None
        return Match(found[0], finding, str(version), regression=found[0].is_fixed_at(v), rivals=tuple(found[1:]))

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


NO_EVIDENCE = "no server evidence recorded"
# a check's place in the verdict; `tally` counts them, for the run's verdict line and python -m pytest_glmv.known
CATEGORIES = ("known", "regression", "ambiguous", "deployment", "waived", "unexplained")


def category(check: Mapping[str, Any], known: Mapping[str, Any] | None) -> str:
    """Where one failed, errored or xfailed suite check counts, given the knowledge-base match it got (a
    Match.record(), or None): a known upstream fault, a regression of one, two entries at once (ambiguous),
    a finding of the deployment (its own `finding ID:` message), a finding the user waived, or unexplained."""
    if known:
        return "ambiguous" if known.get("ambiguous") else "regression" if known.get("regression") else "known"
    if check.get("outcome") == "xfailed" and str(check.get("reason") or "").startswith("waived finding"):
        return "waived"
    if deployment_finding(message_of(check.get("evidence") or "")):
        return "deployment"
    return "unexplained"


def tally(checks: Iterable[Mapping[str, Any]],
          matched: Callable[[Mapping[str, Any]], Mapping[str, Any] | None] = lambda c: c.get("known"),
          ) -> dict[str, dict[str, int]]:
    """{"failed": {category: n}, "xfailed": {category: n}} over a report's suite checks (failed and errored count
    as failed). `matched` gives each check's match (default: the one the run recorded)."""
    out: dict[str, dict[str, int]] = {"failed": dict.fromkeys(CATEGORIES, 0), "xfailed": dict.fromkeys(CATEGORIES, 0)}
    for c in checks:
        side = {"failed": "failed", "error": "failed", "xfailed": "xfailed"}.get(str(c.get("outcome")))
        if side and c.get("area"):
            out[side][category(c, matched(c))] += 1
    return out


def failed_phrase(counts: Mapping[str, int]) -> str:
    """`9 failed (1 known upstream, 1 finding of this deployment (--glmv-waive ID), 7 unexplained)`: the verdict
    line's words for the failed side of a tally."""
    bad = sum(counts.values())
    k, back, amb, own = counts["known"], counts["regression"], counts["ambiguous"], counts["deployment"]
    why = [f"{k} known upstream"] if k else []
    why += [f"{back} regression{'s' if back != 1 else ''} of known faults"] if back else []
    why += [f"{amb} matching several known faults (ambiguous)"] if amb else []
    why += [f"{own} finding{'s' if own != 1 else ''} of this deployment (--glmv-waive ID)"] if own else []
    rest = bad - k - back - amb - own
    return f"{bad} failed" + (f" ({', '.join(why)}, {rest} unexplained)" if why else "")


def rematch(report: Mapping[str, Any], kb: KnowledgeBase, version: str | None = None,
            ) -> list[tuple[str, str, str, Match | None]]:
    """(check, outcome, verdict, match) for every failed or xfailed suite check of a report.json, matched
    against `kb` by the check's "server_evidence": how an earlier run reads under today's knowledge base (and
    how docs/vllm-matrix.md is made). A check without server evidence (a report from before it was recorded)
    is never matched by its text: its verdict says so."""
    target = report.get("target") or {}
    version = version or target.get("vllm_version")
    engine = target.get("engine") or "unknown"  # a report that did not record the engine: nothing applies
    out = []
    for c in report.get("checks", []):
        if c.get("outcome") not in ("failed", "error", "xfailed") or not c.get("area"):
            continue
        fid = finding_id(c["area"], c["key"].split("::")[-1])
        evidence = c.get("server_evidence")
        m = kb.match(fid, evidence, engine, version) if isinstance(evidence, Mapping) else None
        kind = category(c, m.record() if m else None)
        verdict = {"known": m.entry.id if m else "", "regression": f"REGRESSION {m.entry.id}" if m else "",
                   "ambiguous": m.text if m else "", "waived": f"waived ({c.get('reason') or ''})"[:120],
                   }.get(kind, "unexplained")
        if kind == "deployment":
            own = deployment_finding(message_of(c.get("evidence") or ""))
            verdict = f"deployment finding {own} (waive with --glmv-waive {own})"
        elif kind == "unexplained" and not isinstance(evidence, Mapping):
            verdict = f"unexplained ({NO_EVIDENCE})"
        out.append((fid, c["outcome"], verdict, m))
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
        kb = load()
        report = json.loads(a.report.read_text(encoding="utf-8"))
    except KnowledgeBaseError as e:
        print(f"glmv: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"glmv: {a.report}: cannot read: {e.strerror or e}", file=sys.stderr)
        return 2
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        print(f"glmv: {a.report}: not a report.json of --glmv-report: not JSON{where}", file=sys.stderr)
        return 2
    if not isinstance(report, dict) or not isinstance(report.get("checks", []), list):
        print(f"glmv: {a.report}: not a report.json of --glmv-report (no list of checks)", file=sys.stderr)
        return 2
    rows = rematch(report, kb, a.version)
    target = report.get("target") or {}
    print(f"engine {target.get('engine') or 'not recorded'}"
          + (f" ({target['engine_evidence']})" if target.get("engine_evidence") else "")
          + f"; version {a.version or target.get('vllm_version') or 'unknown'}")
    for fid, outcome, verdict, _ in rows:
        print(f"{outcome:8} {fid:70} {verdict}")
    # rematch yields the same checks in the same order as tally reads them: its matches, by position
    matches = iter(m.record() if m else None for *_, m in rows)
    counts = tally([c for c in report.get("checks", []) if c.get("outcome") in ("failed", "error", "xfailed")
                    and c.get("area")], lambda c: next(matches))
    x = counts["xfailed"]
    xs = [f"{n} {'known upstream' if k == 'known' else k}" for k, n in x.items() if n]
    print(f"{failed_phrase(counts['failed'])}; {sum(x.values())} xfailed" + (f" ({', '.join(xs)})" if xs else ""))
    failed = counts["failed"]
    return 1 if failed["unexplained"] + failed["regression"] + failed["ambiguous"] else 0


if __name__ == "__main__":
    sys.exit(main())
