"""What a run did, as one JSON-able dict: the data behind report.json, report.html and the matrix.

Checks are gathered from test reports (pytest_runtest_logreport), never from items: under
pytest-xdist only reports reach the controller. The report plugin stamps each report with the
item's area and behaviour flag (`glmv_area`, `glmv_behavior`), and with the target's info and any
finished SLO run (`glmv_target`, `glmv_slo`), so those survive the trip from a worker too.
"""
from __future__ import annotations

import math
import platform
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from ..failure import full_text
from ..known import finding_id
from . import FORMAT, VERSION

AREAS = ("multimodal", "tools", "reasoning", "context", "slo", "robustness", "security")
KINDS = ("server", "behavior")  # server-level checks hold for any weights; behaviour needs real ones
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
EVIDENCE_CHARS = 6000  # per check: enough for an assertion with its request/answer evidence
SECTION_CHARS = 3000
ID_PROPERTIES = ("glmv_id", "glmv_finding")  # JUnit properties naming the check (recorder.stamp, the session)


def trim(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """Keep the head (where it failed) and the longer tail (the E lines and evidence) of a long text."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - limit} characters trimmed] ...\n{text[-tail:]}"


def jsonable(value: Any) -> Any:
    """record_property accepts anything; JSON (and xdist's transport) take only plain data."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def check_key(nodeid: str) -> str:
    """The nodeid from 'suites/' on: report.json's legacy "key" (kept for older readers; match by "id")."""
    path, sep, rest = nodeid.partition("::")
    at = path.replace("\\", "/").rfind("suites/")
    return (path[at:] if at >= 0 else path) + sep + rest


def check_id(area: str | None, nodeid: str) -> str:
    """A check's stable id, the same wherever pytest runs (rootdir, checkout, install): a check with an area is
    its finding id AREA/NAME[params]; any other test is its file's name and the rest of its nodeid."""
    if area:
        return finding_id(area, nodeid.split("::")[-1])
    path, sep, rest = nodeid.partition("::")
    return path.replace("\\", "/").rsplit("/", 1)[-1] + sep + rest


def id_of(check: Mapping[str, Any]) -> str:
    """The id of a check of report.json, also of an older one that has only its "key"."""
    return str(check.get("id") or check_id(check.get("area"), str(check.get("key") or check.get("nodeid") or "")))


def area_of(marker_names: Iterable[str]) -> str | None:
    names = set(marker_names)
    return next((a for a in AREAS if a in names), None)


def _skip_reason(report: Any) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        return str(longrepr[2])
    return getattr(report, "wasxfail", None) or (report.longreprtext or None)


class Collector:
    """Folds the setup/call/teardown reports of each test into one check record."""

    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}
        self.collection_errors: list[dict[str, str]] = []
        self.target: dict[str, Any] = {}
        self.slo: dict[str, dict[str, Any]] = {}

    def add(self, report: Any) -> None:
        self._absorb_extras(report)
        c = self.checks.get(report.nodeid)
        if c is None:
            c = self.checks[report.nodeid] = {
                "id": None, "nodeid": report.nodeid, "key": check_key(report.nodeid), "area": None,
                "behavior": False, "outcome": None, "phase": None, "duration": 0.0, "reason": None, "evidence": None,
                "server_evidence": None, "properties": {}, "sections": {}, "known": None,
            }
        if isinstance(getattr(report, "glmv_known", None), Mapping):
            c["known"] = dict(report.glmv_known)
        if getattr(report, "glmv_area", None):
            c["area"] = report.glmv_area
        c["id"] = getattr(report, "glmv_id", None) or check_id(c["area"], report.nodeid)
        if isinstance(getattr(report, "glmv_evidence", None), Mapping):  # what the server did (the contract)
            c["server_evidence"] = jsonable(report.glmv_evidence)
        c["behavior"] = c["behavior"] or bool(getattr(report, "glmv_behavior", False))
        c["duration"] = round(c["duration"] + float(report.duration or 0.0), 6)
        for name, value in getattr(report, "user_properties", ()) or ():
            if name not in ID_PROPERTIES:  # the check's own id is its "id", not a measurement
                c["properties"][str(name)] = jsonable(value)
        outcome = self._outcome(report, c["outcome"])
        if outcome is None:
            return
        c["outcome"], c["phase"] = outcome, report.when
        if outcome in ("failed", "error", "xfailed", "xpassed"):
            text = full_text(report)
            if report.when == "teardown" and c["evidence"]:
                text = f"{c['evidence']}\n--- teardown ---\n{text}"
            c["evidence"] = trim(text) if text else None
        if outcome in ("skipped", "xfailed", "xpassed"):
            c["reason"] = _skip_reason(report) if outcome == "skipped" else getattr(report, "wasxfail", None)
        if outcome in ("failed", "error"):
            for title, body in report.sections:
                if title.startswith("glmv"):  # the server log tail; captured output is noise here
                    c["sections"][title] = trim(body, SECTION_CHARS)

    @staticmethod
    def _outcome(report: Any, before: str | None) -> str | None:
        xfail = hasattr(report, "wasxfail")
        if report.when == "setup":
            if report.failed:
                return "error"
            if report.skipped:
                return "xfailed" if xfail else "skipped"
            return None
        if report.when == "call":
            if report.passed:
                return "xpassed" if xfail else "passed"
            if report.failed:
                return "failed"
            return "xfailed" if xfail else "skipped"
        if report.failed:  # teardown: a failure after a pass is an error, after a failure more evidence
            return "error" if before in (None, "passed", "xpassed", "skipped") else before
        return None

    def _absorb_extras(self, report: Any) -> None:
        info = getattr(report, "glmv_target", None)
        if isinstance(info, Mapping):
            # A later stamp knows more (e.g. the reasoning field seen); keep what it does not say.
            self.target.update({k: v for k, v in info.items() if v not in (None, [], "")})
        for run in getattr(report, "glmv_slo", None) or ():
            self.slo[str(run.get("key") or run.get("scenario"))] = run

    def add_collect_error(self, report: Any) -> None:
        if report.failed:
            self.collection_errors.append({"nodeid": report.nodeid, "evidence": trim(report.longreprtext or "")})


def matrix(checks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per area and kind (server-level, behaviour) that has checks, areas in the fixed order."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for c in checks:
        if not c.get("area"):
            continue
        kind = "behavior" if c.get("behavior") else "server"
        row = rows.setdefault((c["area"], kind), {"area": c["area"], "kind": kind, "total": 0,
                                                  **{o: 0 for o in OUTCOMES}})
        row[c.get("outcome") or "error"] += 1
        row["total"] += 1
        known = c.get("known")
        row["known"] = row.get("known", 0) + (1 if known and not known.get("regression")
                                              and not known.get("ambiguous") else 0)
        row["seconds"] = round(row.get("seconds", 0.0) + float(c.get("duration") or 0.0), 3)
    order = {a: i for i, a in enumerate(AREAS)}
    return [rows[k] for k in sorted(rows, key=lambda k: (order.get(k[0], 99), k[0], KINDS.index(k[1])))]


def counts(checks: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out = {o: 0 for o in OUTCOMES}
    for c in checks:
        out[c.get("outcome") or "error"] += 1
    return out


def environment(started: float, finished: float, args: Iterable[str]) -> dict[str, Any]:
    import pytest

    from .. import __version__

    version = None if __version__ == "0+unknown" else __version__  # a checkout on sys.path, never installed

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

    return {
        "python": sys.version.split()[0], "python_implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "hostname": platform.node(),
        "plugin_version": version, "pytest_version": pytest.__version__,
        "started": iso(started), "finished": iso(finished), "duration_s": round(finished - started, 3),
        "args": [str(a) for a in args],
    }


def build(collector: Collector, target: Mapping[str, Any], env: Mapping[str, Any], *, exitstatus: int,
          deselected: int = 0, baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole report.json document."""
    checks = sorted(collector.checks.values(), key=lambda c: (c["id"] or "", c["nodeid"]))
    tgt = dict(target)
    for k, v in collector.target.items():  # what a worker saw beats the controller's unstarted target
        if v not in (None, [], "") and tgt.get(k) in (None, [], "", False):
            tgt[k] = v
    if not tgt.get("reasoning_field"):
        # The reasoning suite records the field it saw as a junit property; a worker's target may be gone.
        seen = [c["properties"]["glmv_reasoning_field"] for c in checks if "glmv_reasoning_field" in c["properties"]]
        tgt["reasoning_field"] = seen[0] if seen else None
    return {
        "format": FORMAT, "version": VERSION,
        "environment": dict(env), "target": tgt, "exitstatus": int(exitstatus),
        "summary": {"outcomes": counts(checks), "deselected": deselected, "matrix": matrix(checks)},
        "checks": checks, "collection_errors": list(collector.collection_errors),
        "slo": [collector.slo[k] for k in sorted(collector.slo)],
        "baseline": dict(baseline) if baseline is not None else None,
    }
