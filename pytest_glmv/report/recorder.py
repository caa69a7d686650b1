"""The report side of a session: stamp each test report, gather checks, build and write report.json/html,
gate on a baseline, and say it in the terminal.

Plain code called by the session object (pytest_glmv/session.py) from plugin.py's hooks. Works the same
with and without pytest-xdist: workers stamp their reports (area, behaviour, target info, finished SLO
runs) and the controller, which sees every report, builds and writes the report. The baseline gate turns a
clean exit into exit 1 (tests failed) in pytest_sessionfinish, which runs before the terminal summary
prints, so the regression table and the exit status always agree.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from ..known import failed_phrase, tally
from . import baseline as base
from . import collect, html, slo_data, terminal


class Recorder:
    """One per session: what every test did, which SLO runs and target info were already sent."""

    def __init__(self, settings: Any, is_worker: bool) -> None:
        self.settings = settings
        self.is_worker = is_worker
        self.collector = collect.Collector()
        self.started = time.time()
        self.slo_sent: set[str] = set()
        self.target_sent: dict[str, Any] | None = None
        self.deselected = 0
        self.baseline: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None  # the built report and the lines saying where it went
        if settings.baseline is not None and not is_worker:
            try:  # a missing or damaged baseline is a usage error before anything starts, not a late surprise
                self.baseline = base.load(settings.baseline)
            except base.BaselineError as e:
                raise pytest.UsageError(str(e)) from None

    def stamp(self, item: pytest.Item, report: pytest.TestReport, target_info: dict[str, Any] | None,
              slo_runs: dict[str, Any]) -> None:
        # Plain attributes survive xdist's report serialisation; the controller reads them back.
        area = collect.area_of(m.name for m in item.iter_markers())
        report.glmv_area = area  # type: ignore[attr-defined]
        report.glmv_id = collect.check_id(area, report.nodeid)  # type: ignore[attr-defined]
        if report.when == "setup" and ("glmv_id", report.glmv_id) not in item.user_properties:
            # JUnit names a check by the rootdir-dependent nodeid; this property by its stable id
            item.user_properties.append(("glmv_id", report.glmv_id))  # type: ignore[attr-defined]
        report.glmv_behavior = item.get_closest_marker("behavior") is not None  # type: ignore[attr-defined]
        if target_info is not None and target_info != self.target_sent:
            self.target_sent = target_info
            report.glmv_target = target_info  # type: ignore[attr-defined]
        runs = self._new_slo_runs(slo_runs)
        if runs:
            report.glmv_slo = runs  # type: ignore[attr-defined]

    def _new_slo_runs(self, slo_runs: dict[str, Any]) -> list[dict[str, Any]]:
        """SLO runs finished in this process since the last report, condensed (each sent once)."""
        out = []
        for key, outcome in list(slo_runs.items()):
            if key not in self.slo_sent:
                self.slo_sent.add(key)
                out.append(slo_data.summarize(outcome, key))
        return out

    def finish(self, session: pytest.Session, exitstatus: int, target_info: dict[str, Any],
               slo_runs: dict[str, Any]) -> None:
        if self.is_worker:
            return
        s = self.settings
        # A session may end before the last report's stamp (e.g. an SLO run in a fixture that then fails).
        for run in self._new_slo_runs(slo_runs):
            self.collector.slo[run["key"]] = run
        if not self.collector.checks and s.report is None and s.baseline is None:
            return
        info = dict(target_info)
        if not info.get("base_url") and s.base_url:
            info["base_url"] = s.base_url
        cmp = None
        if self.baseline is not None:
            cmp = base.compare(self.baseline, self.collector.checks.values(), self.collector.slo.values(),
                               s.baseline_tolerance, str(s.baseline), s.baseline_slack_ms)
            if (cmp["regressions"] or cmp["incomparable"]) and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        env = collect.environment(self.started, time.time(), session.config.invocation_params.args)
        rep = collect.build(self.collector, info, env, exitstatus=int(session.exitstatus),
                            deselected=self.deselected, baseline=cmp)
        written: list[str] = []
        if s.report is not None:
            try:
                written = [f"glmv: wrote {p}" for p in write(rep, Path(s.report))]
            except OSError as e:  # checked writable at the start (config.validate); a run whose record is lost fails
                written = [f"glmv: FAILED to write the report to {s.report} ({e.strerror or e}): the run fails, "
                           "its results are only in this output"]
                if session.exitstatus == pytest.ExitCode.OK:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.result = {"report": rep, "written": written}

    def summary(self, section: Callable[..., None], line: Callable[..., None]) -> None:
        """The matrix, the regression table and where the report went, for the terminal summary."""
        if self.result is None:
            return
        rep = self.result["report"]
        if rep["summary"]["matrix"]:  # a run of only unmarked tests (the project's own tests) gets no matrix
            section("glmv conformance matrix")
            line(terminal.target_line(rep["target"]))
            for text in terminal.matrix_lines(rep["summary"]["matrix"], rep["summary"]["deselected"]):
                line(text)
        known = terminal.known_lines(rep["checks"])
        if known:
            section("glmv known upstream findings")
            for text in known:
                line(text, red=text.startswith("FAILED"))
        if rep.get("baseline") is not None:
            bad = bool(rep["baseline"]["regressions"] or rep["baseline"].get("incomparable"))
            section("glmv baseline", red=bad, green=not bad)
            for text in terminal.regression_lines(rep["baseline"]):
                line(text, red=text.startswith(("REGRESSED", "NOT COMPARABLE")))
        for text in self.result["written"]:
            line(text, red="FAILED" in text)


    def verdict(self) -> str:
        """One line a CI log can grep: PASS/FAIL over the suite checks, known upstream faults counted apart."""
        if self.result is None or not self.result["report"]["summary"]["matrix"]:
            return ""
        rep = self.result["report"]
        rows = rep["summary"]["matrix"]
        total = {k: sum(r[k] for r in rows) for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
        bad = total["failed"] + total["error"]
        regs = len((rep.get("baseline") or {}).get("regressions") or [])
        unjudged = bool((rep.get("baseline") or {}).get("incomparable"))
        # one count for this line and for python -m pytest_glmv.known (known, regressions, deployment findings...)
        parts = [failed_phrase(tally(rep["checks"])["failed"]),
                 f"{total['passed'] + total['xpassed']} passed", f"{total['skipped']} skipped",
                 f"{total['xfailed']} xfailed"]
        if regs:
            parts.append(f"{regs} baseline regression(s)")
        if unjudged:
            parts.append("baseline not comparable")
        lost = any("FAILED to write" in text for text in self.result["written"])
        if lost:
            parts.append("report not written")
        t = rep["target"]
        where = f"{t.get('base_url') or '?'} ({t.get('target') or '?'}, vLLM {t.get('vllm_version') or 'unknown'})"
        word = "FAIL" if bad or regs or unjudged or lost else "PASS"
        return f"glmv verdict: {word}: {', '.join(parts)}; {where}"


def write(rep: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "report.json"
    js.write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    page = directory / "report.html"
    page.write_text(html.render(rep), encoding="utf-8")
    return [js, page]

