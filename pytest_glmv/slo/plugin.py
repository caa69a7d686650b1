"""pytest side of the SLO harness: selection, the session's runs, fixtures, terminal output.

SLO checks load the server for minutes, so they run only when asked for: `-m slo` (any mark
expression an slo-only check satisfies), an SLO spec (--glmv-slo), or test_slo.py named on the
command line. Otherwise they are deselected, and the summary says how many and how to run them.

Registered by pytest_glmv/plugin.py (`pytest_plugins = ("pytest_glmv.slo.plugin",)`); until then
`-p pytest_glmv.slo.plugin` loads it, and suites/test_slo.py skips itself when not selected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from . import runner
from .spec import Scenario, Spec, SpecError, from_pairs, load_file, scenario
from .spec import default as default_spec

HOW = "run them with -m slo, or give a spec with --glmv-slo FILE.toml"
DESELECTED_KEY = pytest.StashKey[int]()
RUNS_KEY = pytest.StashKey["Runs"]()
SPEC_KEY = pytest.StashKey[Spec]()


def _settings(config: pytest.Config) -> Any:
    from ..plugin import settings_of

    return settings_of(config)


def _mark_selects_slo(markexpr: str) -> bool:
    try:
        from _pytest.mark.expression import Expression

        def only_slo(name: str, /, **kw: str | int | bool | None) -> bool:
            return name == "slo" and not kw

        return bool(Expression.compile(markexpr).evaluate(only_slo))
    except Exception:  # a private API; a plain word test is the fallback
        return "slo" in markexpr.split() and "not slo" not in markexpr


def selected(config: pytest.Config) -> bool:
    """True when this run asked for SLO checks."""
    markexpr = config.getoption("markexpr", "") or ""
    if markexpr and _mark_selects_slo(markexpr):
        return True
    s = _settings(config)
    if s.slo is not None or bool(s.slo_threshold):
        return True
    return any(Path(str(a).split("::")[0]).name == "test_slo.py" for a in config.args)


def spec_for(config: pytest.Config) -> Spec:
    """The spec in effect: --glmv-slo FILE, else threshold pairs, else the built-in reference."""
    if SPEC_KEY not in config.stash:
        s = _settings(config)
        try:
            if s.slo is not None:
                spec = load_file(s.slo)
            elif s.slo_threshold:
                spec = from_pairs(s.slo_threshold)
            else:
                spec = default_spec()
        except SpecError as e:
            raise pytest.UsageError(str(e)) from None
        config.stash[SPEC_KEY] = spec
    return config.stash[SPEC_KEY]


def deselect(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Drop slo-marked items unless SLO checks were asked for; remember how many."""
    if selected(config):
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("slo") is not None else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
        config.stash[DESELECTED_KEY] = len(drop)


def summary_lines(config: pytest.Config) -> list[str]:
    lines: list[str] = []
    n = config.stash.get(DESELECTED_KEY, 0)
    if n:
        lines.append(f"glmv: {n} SLO check{'s' if n != 1 else ''} deselected (they load the server for minutes); {HOW}")
    runs = config.stash.get(RUNS_KEY, None)
    if runs is not None:
        lines += runs.lines()
    return lines


class Runs:
    """One load run per scenario per session, shared by every threshold test of that scenario."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.done: dict[str, runner.Outcome] = {}
        self.printed: set[str] = set()

    def get(self, sc: Scenario, request: pytest.FixtureRequest) -> runner.Outcome:
        key = f"{sc.name}|{sc.run}|{sc.goodput}|{sc.percentiles}"
        if key not in self.done:
            server = request.getfixturevalue("glmv_server")  # started only when an SLO check runs
            settings = _settings(self.config)
            params = runner.params_for(settings, sc)
            from .workload import WorkloadError

            try:
                outcome = runner.run_scenario(server.root_url, server.model, sc, params, api_key=server.api_key)
            except WorkloadError as e:
                pytest.fail(str(e), pytrace=False)
            many = len(spec_for(self.config).scenarios) > 1
            runner.save(outcome, settings.slo_json, many, detailed=settings.slo_records)
            self.done[key] = outcome
            if not self.config.pluginmanager.has_plugin("pytest_glmv.slo.plugin"):
                tr = self.config.pluginmanager.get_plugin("terminalreporter")
                if tr is not None:
                    tr.ensure_newline()
                    for line in self._lines(outcome):
                        tr.write_line(line)
                self.printed.add(key)
        return self.done[key]

    def _lines(self, o: runner.Outcome) -> list[str]:
        lines = o.block.splitlines() + o.cross.lines()
        lines += [f"glmv: wrote {p}" for p in o.written]
        return lines

    def lines(self) -> list[str]:
        out: list[str] = []
        for key, o in self.done.items():
            if key not in self.printed:
                out += self._lines(o)
        return out


def runs_of(config: pytest.Config) -> Runs:
    if RUNS_KEY not in config.stash:
        config.stash[RUNS_KEY] = Runs(config)
    return config.stash[RUNS_KEY]


# -- hooks (active when this module is registered as a plugin) -------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    if _settings(config).slo is not None:
        spec_for(config)  # a bad spec ends the run here, with one line


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect(config, items)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = summary_lines(config)
    if lines:
        terminalreporter.section("glmv SLO")
        for line in lines:
            terminalreporter.write_line(line)


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def glmv_slo_spec(pytestconfig: pytest.Config) -> Spec:
    return spec_for(pytestconfig)


@pytest.fixture(scope="session")
def glmv_slo_runs(pytestconfig: pytest.Config) -> Iterator[Runs]:
    yield runs_of(pytestconfig)


class Check:
    """What a user's `@pytest.mark.slo(...)` test gets: the outcome, and check() to assert it."""

    def __init__(self, outcome: runner.Outcome) -> None:
        self.outcome = outcome
        self.result = outcome.result

    def check(self) -> None:
        verdicts = [self.outcome.judge(t) for t in self.outcome.scenario.thresholds]
        misses = [msg.splitlines()[0] for ok, msg in verdicts if not ok]
        if misses:
            context = verdicts[0][1].splitlines()[1:]
            raise AssertionError("SLO missed:\n" + "\n".join(misses + context))


@pytest.fixture
def glmv_slo(request: pytest.FixtureRequest, glmv_slo_runs: Runs) -> Check:
    """Run (once per distinct marker) the scenario the test's slo marker describes."""
    marker = request.node.get_closest_marker("slo")
    if marker is None or not marker.kwargs:
        raise pytest.UsageError(f"{request.node.nodeid}: glmv_slo needs @pytest.mark.slo(THRESHOLD=..., ...)")
    try:
        sc = scenario(request.node.name, dict(marker.kwargs), f"{request.node.nodeid} slo marker")
    except SpecError as e:
        raise pytest.UsageError(f"glmv: {e}") from None
    check = Check(glmv_slo_runs.get(sc, request))
    for t in sc.thresholds:  # measured values as junit properties, as suites/test_slo.py records them
        request.node.user_properties.append((t.key, check.result.get(t.key)))
    return check
