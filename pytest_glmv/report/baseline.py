"""The baseline gate: compare this run with report.json of an earlier one.

A regression is a check that passed in the baseline and fails (or errors) now, or an SLO metric
of a scenario run with the same parameters that is worse than the baseline by more than the
tolerance: latencies and failed requests are lower-is-better, throughputs higher-is-better.
Spread (std) and client-side metrics (send lag, client queue time) are not gated: they measure
the load generator's host as much as the server. Checks that stopped passing without failing
(now skipped, xfailed or not run) and scenarios run with other parameters are listed as notes;
they do not fail the run, since a narrower selection is a choice, not a regression, unless the run shares
fewer than half of the baseline's checks, or none of its gated SLO metrics: such a gate compares next to
nothing and would pass anything, so it fails with one line saying why.

Checks are matched by their stable id (AREA/NAME[params]), never by a path that depends on the rootdir or
the install; a baseline written before ids existed is read through its "key" (collect.id_of).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import documents
from . import FORMAT
from .collect import id_of

HIGHER_IS_BETTER = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput",
                    "max_output_tokens_per_s")
LOWER_IS_BETTER_EXTRA = ("failed",)
_GATED_LATENCY = re.compile(r"^(mean|median|p\d+(?:\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
# Run parameters that must match for two SLO runs to be comparable at all.
SAME_RUN = ("num_prompts", "request_rate", "burstiness", "max_concurrency", "dataset", "seed", "max_tokens")
FAILING = ("failed", "error")


class BaselineError(ValueError):
    """str() is one line, fit for pytest.UsageError."""


def load(path: Path) -> dict[str, Any]:
    where = f"--glmv-baseline {path}"
    data = documents.load(
        path, json.loads, lambda e: BaselineError(f"{where}: cannot read it ({e.__class__.__name__}: {e})"),
        lambda e: BaselineError(f"{where}: not JSON ({e}); give the report.json an earlier --glmv-report run wrote"))
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("checks"), list):
        raise BaselineError(f"{where}: not a pytest-glmv report.json (no \"format\": \"{FORMAT}\" with a "
                            "checks list); give the report.json an earlier --glmv-report run wrote")
    if not all(isinstance(c, dict) and ("id" in c or "key" in c) and "outcome" in c for c in data["checks"]):
        raise BaselineError(f"{where}: a check entry lacks id/outcome; the file is damaged")
    if not isinstance(data.get("slo") or [], list):
        raise BaselineError(f"{where}: \"slo\" is not a list; the file is damaged")
    return data


def direction(key: str) -> str | None:
    """'lower' or 'higher' is better for a gated metric; None when the metric is not gated."""
    if key in HIGHER_IS_BETTER:
        return "higher"
    if key in LOWER_IS_BETTER_EXTRA or _GATED_LATENCY.match(key):
        return "lower"
    return None


def worse(key: str, base: float, now: float, tolerance: float, slack_ms: float = 0.0) -> bool:
    way = direction(key)
    if way == "higher":
        return now < base * (1 - tolerance)
    if key == "failed":
        return now > base * (1 + tolerance)
    if base == 0:
        return False  # a latency of 0 means no samples (vLLM counts [] as 0): nothing to compare against
    # Both: relative (the tolerance) and absolute (the slack), so 0.3 -> 0.6 ms of ITL jitter is no regression.
    return now > base * (1 + tolerance) and now - base > slack_ms


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _change(base: float, now: float) -> str:
    if base == 0:
        return "new" if now else "0"
    return f"{100 * (now - base) / base:+.1f}%"


def compare(baseline: Mapping[str, Any], checks: Iterable[Mapping[str, Any]], slo: Iterable[Mapping[str, Any]],
            tolerance: float, path: str = "", slack_ms: float = 0.0) -> dict[str, Any]:
    """{'path', 'tolerance', 'slack_ms', 'regressions', 'notes', 'incomparable', 'compared_checks',
    'compared_metrics', 'shared_checks', 'baseline_checks', 'baseline_metrics'}; 'incomparable' is the one line
    that fails the gate when the run shares too little with the baseline (None when it shares enough)."""
    regressions: list[dict[str, Any]] = []
    notes: list[str] = []
    now = {id_of(c): c for c in checks}
    base_checks = [b for b in baseline.get("checks", []) if isinstance(b, Mapping)]
    shared = sum(1 for b in base_checks if id_of(b) in now)
    compared = 0
    lost: list[str] = []
    for b in base_checks:
        if b.get("outcome") not in ("passed", "xpassed"):
            continue
        cid = id_of(b)
        c = now.get(cid)
        if c is None:
            lost.append(cid)
            continue
        compared += 1
        if c.get("outcome") in FAILING:
            regressions.append({"kind": "check", "what": cid, "area": c.get("area"), "baseline": "passed",
                                "now": c["outcome"], "change": None, "detail": detail(c)})
        elif c.get("outcome") != "passed":
            notes.append(f"{cid}: passed in the baseline, {c.get('outcome')} now "
                         f"({c.get('reason') or 'no reason given'})")
    if lost:
        notes.append(f"{len(lost)} check(s) that passed in the baseline did not run now, e.g. {lost[0]}")
    metrics_compared = 0
    base_runs = {r.get("scenario"): r for r in baseline.get("slo") or [] if isinstance(r, dict)}
    base_metrics = sum(1 for r in base_runs.values() for k, v in (r.get("result") or {}).items()
                       if direction(k) is not None and _number(v) is not None)
    for run in slo:
        found = base_runs.get(run.get("scenario"))
        if found is None:
            notes.append(f"SLO scenario {run.get('scenario')}: not in the baseline, nothing to compare")
            continue
        b = found
        differ = [k for k in SAME_RUN if (b.get("params") or {}).get(k) != (run.get("params") or {}).get(k)]
        if differ:
            notes.append(f"SLO scenario {run.get('scenario')}: not compared, run parameters differ ("
                         + ", ".join(f"{k} {b['params'].get(k)} then, {run['params'].get(k)} now" for k in differ)
                         + ")")
            continue
        for key, base_value in sorted((b.get("result") or {}).items()):
            base_v, now_v = _number(base_value), _number((run.get("result") or {}).get(key))
            if direction(key) is None or base_v is None or now_v is None:
                continue
            metrics_compared += 1
            if worse(key, base_v, now_v, tolerance, slack_ms):
                regressions.append({
                    "kind": "slo", "what": f"{run.get('scenario')}: {key}", "area": "slo", "baseline": base_v,
                    "now": now_v, "change": _change(base_v, now_v),
                    "detail": f"{direction(key)} is better; tolerance {100 * tolerance:g}%"
                              + (f" and {slack_ms:g} ms" if key.endswith("_ms") and slack_ms else "")})
    return {"path": path, "tolerance": tolerance, "slack_ms": slack_ms, "regressions": regressions, "notes": notes,
            "incomparable": incomparable(len(base_checks), shared, base_metrics, metrics_compared),
            "compared_checks": compared, "compared_metrics": metrics_compared, "shared_checks": shared,
            "baseline_checks": len(base_checks), "baseline_metrics": base_metrics}


def incomparable(base_checks: int, shared: int, base_metrics: int, metrics: int) -> str | None:
    """Why this baseline cannot judge this run (one line), or None: fewer than half of its checks ran, or
    none of its gated SLO metrics was compared. A gate that compares nothing must not say "no regressions"."""
    why = []
    if base_checks and 2 * shared < base_checks:
        why.append(f"this run shares {shared} of its {base_checks} checks (fewer than half)")
    if base_metrics and not metrics:
        why.append(f"none of its {base_metrics} SLO metrics was compared (no SLO run with the same scenario and "
                   "parameters: select them with -m slo)")
    if not why:
        return None
    return (f"the baseline cannot judge this run: {'; '.join(why)}; run the baseline's selection and options, "
            "or record a new baseline")


def detail(check: Mapping[str, Any]) -> str:
    """What a regression row says: the check's own failure message, else the first 'E ' line of pytest's text."""
    ev = check.get("server_evidence") or {}
    message = ev.get("message") if isinstance(ev, Mapping) else None
    return str(message)[:200] if message else headline(check.get("evidence") or "")


def headline(evidence: str) -> str:
    """The assertion's first 'E ' line: what a reader needs in a table row."""
    for line in evidence.splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:200]
    lines = [ln for ln in evidence.strip().splitlines() if ln.strip()]
    return lines[-1].strip()[:200] if lines else ""
