"""Text for the terminal summary: the target line, the conformance matrix, the regression table."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .collect import AREAS

KIND_LABEL = {"server": "server-level", "behavior": "behaviour"}
COLUMNS = ("passed", "failed", "skipped", "xfailed")


def target_line(t: Mapping[str, Any]) -> str:
    field = t.get("reasoning_field") or "not observed (no reasoning check saw an answer)"
    faults = f"; faults {', '.join(t['faults'])}" if t.get("faults") else ""
    return (f"target {t.get('base_url') or '?'} ({t.get('target') or '?'}); model {t.get('model') or '?'}; "
            f"profile {t.get('profile') or '?'}; vLLM {t.get('vllm_version') or 'unknown'}; "
            f"reasoning field {field}{faults}")


def verdict(row: Mapping[str, Any]) -> str:
    """FAIL when anything failed; ok when something passed; '-' when nothing gave an answer."""
    if row["failed"] or row["error"]:
        return "FAIL"
    if row["passed"] or row["xpassed"] or row["xfailed"]:
        return "ok"
    return "-"


def cells(row: Mapping[str, Any]) -> dict[str, int]:
    """The four columns people read: errors count as failures, non-strict xpasses as passes."""
    return {"passed": row["passed"] + row["xpassed"], "failed": row["failed"] + row["error"],
            "skipped": row["skipped"], "xfailed": row["xfailed"]}


def matrix_lines(rows: Sequence[Mapping[str, Any]], deselected: int = 0) -> list[str]:
    """The matrix; the last number column counts failures (or xfails) that are known upstream faults."""
    header = (f"{'area':<12} {'checks':<13}" + "".join(f"{c:>9}" for c in COLUMNS) + f"{'known':>7}{'wall s':>8}"
              "   verdict")
    lines = [header, "-" * len(header)]
    by_area: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_area.setdefault(row["area"], []).append(row)
    extra = [a for a in by_area if a not in AREAS]
    for area in (*AREAS, *extra):
        mine = by_area.get(area)
        if not mine:
            lines.append(f"{area:<12} {'-':<13}   not run")
            continue
        for i, row in enumerate(mine):
            c = cells(row)
            lines.append(f"{area if i == 0 else '':<12} {KIND_LABEL.get(row['kind'], row['kind']):<13}"
                         + "".join(f"{c[k]:>9}" for k in COLUMNS) + f"{row.get('known', 0):>7}"
                         + f"{row.get('seconds', 0.0):>8.1f}   {verdict(row)}")
    if deselected:
        lines.append(f"({deselected} check(s) deselected)")
    known = sum(row.get("known", 0) for row in rows)
    if known:
        lines.append(f"known upstream: {known} of the failures and xfails above are known faults of the server's "
                     "release (listed below)")
    return lines


def known_lines(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per check whose failure is a known upstream fault: where, what, and what to do."""
    out = []
    for c in checks:
        k = c.get("known")
        if k:
            out.append(f"{c.get('outcome', '?').upper()} {k['finding']}: {k['text']}")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def regression_lines(cmp: Mapping[str, Any]) -> list[str]:
    regs = cmp["regressions"]
    tol = f"tolerance {100 * cmp['tolerance']:g}% for SLO metrics (latencies also {cmp.get('slack_ms', 0):g} ms)"
    head = [f"baseline {cmp['path']}: {cmp['compared_checks']} check(s) and {cmp['compared_metrics']} SLO "
            f"metric(s) compared; {tol}"]
    if cmp.get("incomparable"):
        head.append(f"NOT COMPARABLE: {cmp['incomparable']}; the run fails")
        if not regs:
            return head + [f"note: {n}" for n in cmp["notes"]]
    if not regs:
        return head + ["no regressions"] + [f"note: {n}" for n in cmp["notes"]]
    rows = [("kind", "what regressed", "baseline", "now", "change", "evidence")]
    for r in regs:
        rows.append((r["kind"], r["what"], _fmt(r["baseline"]), _fmt(r["now"]), r["change"] or "", r["detail"]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    out = [*head, f"REGRESSED: {len(regs)} regression(s) against the baseline; the run fails"]
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
        if n == 0:
            out.append("-" * (sum(widths) + 10 + len("evidence")))
    return out + [f"note: {n}" for n in cmp["notes"]]
