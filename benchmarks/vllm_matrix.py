"""The vLLM release matrix of docs/vllm-matrix.md: one column per run's report.json, one row per check that
did not pass somewhere, each cell matched against today's knowledge base.

    python benchmarks/vllm_matrix.py 0.27.1=runs/0.27.1/report.json 0.32.0=runs/0.32.0/report.json ...

A cell is `pass`, `skip`, a known finding's id (matched on the check's recorded server evidence and the
engine the run identified), `deployment: ID` (a finding of the launch itself, such as the recommended
--allowed-local-media-path /), `waived: ID` (a finding the run waived with --glmv-waive), `AMBIGUOUS: A, B`
(two entries match: the knowledge base must tell them apart), or `UNEXPLAINED` (a failure no entry explains:
either a new upstream fault for the knowledge base, or a mistake of the suite; `UNEXPLAINED (no server evidence
recorded)` for a report older than the evidence). Prints markdown; exit 1 when any cell is UNEXPLAINED or
AMBIGUOUS.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_glmv import known  # noqa: E402
from pytest_glmv.report.collect import id_of  # noqa: E402


def column(report: dict[str, Any], kb: known.KnowledgeBase) -> dict[str, str]:
    cells: dict[str, str] = {}
    for c in report.get("checks", []):
        if not c.get("area"):
            continue
        fid = id_of(c)
        outcome = c.get("outcome")
        if outcome in ("passed", "xpassed"):
            cells[fid] = "pass"
        elif outcome == "skipped":
            cells[fid] = "skip"
    version = (report.get("target") or {}).get("vllm_version")
    for fid, _, verdict, match in known.rematch(report, kb, version):
        if verdict.startswith("unexplained"):  # "unexplained (no server evidence recorded)" for older reports
            cells[fid] = "UNEXPLAINED" + verdict[len("unexplained"):]
        elif verdict.startswith("deployment finding"):
            cells[fid] = "deployment: " + verdict.split()[2]
        elif verdict.startswith("waived"):  # "waived (waived finding ID: ...)": name what was waived
            what = verdict.removeprefix("waived (").removeprefix("waived finding ").split(":")[0].split()
            cells[fid] = "waived: " + what[0] if what and what[0] != ")" else "waived"
        elif match is not None and match.rivals:
            cells[fid] = "AMBIGUOUS: " + ", ".join(e.id for e in (match.entry, *match.rivals))
        else:
            cells[fid] = verdict
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/vllm_matrix.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="LABEL=REPORT_JSON")
    a = ap.parse_args(argv)
    kb = known.load()
    columns: dict[str, dict[str, str]] = {}
    for run in a.runs:
        label, sep, path = run.partition("=")
        if not sep:
            ap.error(f"{run!r}: expected LABEL=path/to/report.json")
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            ap.error(f"{path}: {e}")
        if not isinstance(report, dict) or not isinstance(report.get("checks", []), list):
            ap.error(f"{path}: not a report.json of --glmv-report (no list of checks)")
        columns[label] = column(report, kb)
    rows = sorted({fid for cells in columns.values() for fid, v in cells.items() if v not in ("pass", "skip")})
    print("| check | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for fid in rows:
        print(f"| {fid} | " + " | ".join(cells.get(fid, "-") for cells in columns.values()) + " |")
    totals = [f"{sum(v == 'pass' for v in cells.values())} pass" for cells in columns.values()]
    print("| (checks passed) | " + " | ".join(totals) + " |")
    bad = any(v.startswith(("UNEXPLAINED", "AMBIGUOUS")) for cells in columns.values() for v in cells.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
