"""pytest hooks for reports: stamp reports, gather checks, write report.json/html, gate on a baseline.

Registered by pytest_glmv/plugin.py through `pytest_plugins`. Works the same with and without
pytest-xdist: workers stamp their reports (area, behaviour, target info, finished SLO runs) and the
controller, which sees every report, builds and writes the report. The baseline gate turns a clean
exit into exit 1 (tests failed) in pytest_sessionfinish, which runs before the terminal summary
prints, so the regression table and the exit status always agree.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Generator

import pytest

from . import baseline as base
from . import collect, html, slo_data, terminal

COLLECTOR_KEY = pytest.StashKey[collect.Collector]()
BASELINE_KEY = pytest.StashKey[dict[str, Any]]()
RESULT_KEY = pytest.StashKey[dict[str, Any]]()  # the built report, for the terminal summary
STATE_KEY = pytest.StashKey[dict[str, Any]]()  # per-process: what was already stamped, when the session started


def _settings(config: pytest.Config) -> Any:
    from ..plugin import settings_of

    return settings_of(config)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[COLLECTOR_KEY] = collect.Collector()
    config.stash[STATE_KEY] = {"started": time.time(), "slo": set(), "target": None, "deselected": 0}
    s = _settings(config)
    if s.baseline is not None and not _is_worker(config):
        try:  # a missing or damaged baseline is a usage error before anything starts, not a late surprise
            config.stash[BASELINE_KEY] = base.load(s.baseline)
        except base.BaselineError as e:
            raise pytest.UsageError(str(e)) from None
    config.pluginmanager.register(Recorder(config), "glmv-report-recorder")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    # Plain attributes survive xdist's report serialisation; the controller reads them back.
    report.glmv_area = collect.area_of(m.name for m in item.iter_markers())
    report.glmv_behavior = item.get_closest_marker("behavior") is not None
    state = item.config.stash[STATE_KEY]
    info = _target_info(item.config)
    if info is not None and info != state["target"]:
        state["target"] = info
        report.glmv_target = info
    runs = _new_slo_runs(item.config, state["slo"])
    if runs:
        report.glmv_slo = runs
    return report


def _target_info(config: pytest.Config) -> dict[str, Any] | None:
    from ..plugin import TARGET_KEY

    target = config.stash.get(TARGET_KEY, None)
    if target is None or not target.started:
        return None
    return collect.jsonable(target.info())


def _new_slo_runs(config: pytest.Config, done: set[str]) -> list[dict[str, Any]]:
    """SLO runs finished in this process since the last report, condensed (each sent once)."""
    from ..slo.plugin import RUNS_KEY

    runs = config.stash.get(RUNS_KEY, None)
    if runs is None:
        return []
    out = []
    for key, outcome in list(runs.done.items()):
        if key not in done:
            done.add(key)
            out.append(slo_data.summarize(outcome, key))
    return out


class Recorder:
    """Hooks that get no config (logreport, collectreport, deselected), bound to one session's config."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.collector = config.stash[COLLECTOR_KEY]
        self.state = config.stash[STATE_KEY]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this sees every worker's reports too.
        self.collector.add(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.collector.add_collect_error(report)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.state["deselected"] += len(items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    config = session.config
    if _is_worker(config):
        return
    collector = config.stash[COLLECTOR_KEY]
    s = _settings(config)
    state = config.stash[STATE_KEY]
    # A session may end before the last report's stamp (e.g. an SLO run in a fixture that then fails).
    for run in _new_slo_runs(config, state["slo"]):
        collector.slo[run["key"]] = run
    if not collector.checks and s.report is None and s.baseline is None:
        return
    from ..plugin import TARGET_KEY

    target = config.stash.get(TARGET_KEY, None)
    info: dict[str, Any] = collect.jsonable(target.info()) if target is not None else {}
    if not info.get("base_url") and s.base_url:
        info["base_url"] = s.base_url
    cmp = None
    if BASELINE_KEY in config.stash:
        earlier: dict[str, Any] = config.stash[BASELINE_KEY]
        cmp = base.compare(earlier, collector.checks.values(), collector.slo.values(),
                           s.baseline_tolerance, str(s.baseline), s.baseline_slack_ms)
        if cmp["regressions"] and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    env = collect.environment(state["started"], time.time(), config.invocation_params.args)
    rep = collect.build(collector, info, env, exitstatus=int(session.exitstatus), deselected=state["deselected"],
                      baseline=cmp)
    written: list[str] = []
    if s.report is not None:
        try:
            written = [f"glmv: wrote {p}" for p in write(rep, Path(s.report))]
        except OSError as e:  # the run's verdict stands; say plainly that the report is missing
            written = [f"glmv: could not write the report to {s.report}: {e}"]
    config.stash[RESULT_KEY] = {"report": rep, "written": written}


def write(rep: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "report.json"
    js.write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    page = directory / "report.html"
    page.write_text(html.render(rep), encoding="utf-8")
    return [js, page]


@pytest.hookimpl(trylast=True)  # last, next to pytest's short summary, where a reader looks for the verdict
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    done = config.stash.get(RESULT_KEY, None)
    if done is None:
        return
    rep = done["report"]
    if rep["summary"]["matrix"]:  # a run of only unmarked tests (the project's own tests) gets no matrix
        terminalreporter.section("glmv conformance matrix")
        terminalreporter.write_line(terminal.target_line(rep["target"]))
        for line in terminal.matrix_lines(rep["summary"]["matrix"], rep["summary"]["deselected"]):
            terminalreporter.write_line(line)
    if rep.get("baseline") is not None:
        regs = rep["baseline"]["regressions"]
        terminalreporter.section("glmv baseline", red=bool(regs), green=not regs)
        for line in terminal.regression_lines(rep["baseline"]):
            terminalreporter.write_line(line, red=line.startswith("REGRESSED"))
    for line in done["written"]:
        terminalreporter.write_line(line)
