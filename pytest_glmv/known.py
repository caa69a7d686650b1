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

from .known_entries import (  # noqa: F401 (the format's names, public here as before)
    ENGINES,
    POLICIES,
    Entry,
    KnowledgeBaseError,
    Signature,
    parse_version,
    read,
)


def finding_id(area: str | None, name: str) -> str:
    """The stable id of a check's finding: AREA/NAME, NAME without its `test_` prefix."""
    short = name[5:] if name.startswith("test_") else name
    return f"{area or 'unmarked'}/{short}"


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
        return [e for e in self.entries if e.engine == engine and v is not None and e.applies_to(engine, v)
                and not e.is_fixed_at(v)]


def load(paths: Iterable[Path] | None = None) -> KnowledgeBase:
    """The shipped knowledge base (every fixtures/known/*.toml), or the given files."""
    if paths is None:
        from .documents import shipped

        paths = sorted(shipped("known/vllm.toml").parent.glob("*.toml"))
    kb = KnowledgeBase()
    seen: dict[str, str] = {}
    for path in paths:
        for entry, where in read(Path(path)):
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
    from .report.collect import id_of  # here: report.collect imports this module

    target = report.get("target") or {}
    version = version or target.get("vllm_version")
    engine = target.get("engine") or "unknown"  # a report that did not record the engine: nothing applies
    out = []
    for c in report.get("checks", []):
        if c.get("outcome") not in ("failed", "error", "xfailed") or not c.get("area"):
            continue
        fid = id_of(c)
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
