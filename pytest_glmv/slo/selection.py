"""Which SLO checks a session runs, the spec in effect, and its load runs (one per scenario).

SLO checks load the server for minutes, so they run only when asked for: `-m slo` (any mark
expression an slo-only check satisfies), an SLO spec (--glmv-slo), or test_slo.py named on the
command line. Otherwise they are deselected, and the summary says how many and how to run them.
Plain code: the session object (pytest_glmv/session.py) calls it from plugin.py's hooks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from . import report, runner
from .spec import Scenario, Spec, SpecError, from_pairs, load_file
from .spec import default as default_spec

HOW = "run them with -m slo, or give a spec with --glmv-slo FILE.toml"


def _mark_selects_slo(markexpr: str) -> bool:
    try:
        from _pytest.mark.expression import Expression

        def only_slo(name: str, /, **kw: str | int | bool | None) -> bool:
            return name == "slo" and not kw

        return bool(Expression.compile(markexpr).evaluate(only_slo))
    except Exception:  # a private API; a plain word test is the fallback
        return "slo" in markexpr.split() and "not slo" not in markexpr


def asked_for(markexpr: str, settings: Any, args: Sequence[str]) -> bool:
    """True when this run asked for SLO checks."""
    if markexpr and _mark_selects_slo(markexpr):
        return True
    if settings.slo is not None or bool(settings.slo_threshold):
        return True
    return any(Path(str(a).split("::")[0]).name == "test_slo.py" for a in args)


def load_spec(settings: Any) -> Spec:
    """The spec in effect: --glmv-slo FILE, else threshold pairs, else the built-in reference results."""
    try:
        if settings.slo is not None:
            return load_file(settings.slo)
        if settings.slo_threshold:
            return from_pairs(settings.slo_threshold)
        return default_spec()
    except SpecError as e:
        raise pytest.UsageError(str(e)) from None


def check_options(settings: Any) -> None:
    """Run options whose bad values only the SLO code can see (--glmv-extra-body's JSON, the dataset name):
    a pytest.UsageError of one line, raised when the session starts (Runs is made there)."""
    from .workload import DATASETS, WorkloadError

    try:
        runner.extra_body(getattr(settings, "extra_body", None))
    except WorkloadError as e:
        raise pytest.UsageError(str(e)) from None
    dataset = getattr(settings, "dataset", None)
    if dataset is not None and dataset not in DATASETS:
        raise pytest.UsageError(f"glmv: unknown --glmv-dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def split(items: list[pytest.Item]) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, dropped): slo-marked items are dropped."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker("slo") is not None else keep).append(item)
    return keep, drop


class Runs:
    """One load run per scenario per session, shared by every threshold test of that scenario."""

    def __init__(self, settings: Any, spec: Callable[[], Spec]) -> None:
        check_options(settings)
        self.settings = settings
        self.spec = spec
        self.done: dict[str, runner.Outcome] = {}

    def get(self, sc: Scenario, request: pytest.FixtureRequest) -> runner.Outcome:
        key = f"{sc.name}|{sc.run}|{sc.goodput}|{sc.percentiles}"
        if key not in self.done:
            server = request.getfixturevalue("glmv_server")  # started only when an SLO check runs
            from .workers import WorkerError
            from .workload import WorkloadError

            try:
                params = runner.params_for(self.settings, sc)
                outcome = runner.run_scenario(server.root_url, server.model, sc, params, api_key=server.api_key)
            except (WorkloadError, WorkerError) as e:
                pytest.fail(str(e), pytrace=False)
            many = len(self.spec().scenarios) > 1
            try:
                runner.save(outcome, self.settings.slo_json, many, detailed=self.settings.slo_records)
            except OSError as e:  # writable at the start (config.validate); lost now: the check fails, in one line
                pytest.fail(f"glmv: could not write --glmv-slo-json {self.settings.slo_json} ({e.strerror or e}); "
                            "the SLO run's results are lost", pytrace=False)
            self.done[key] = outcome
        return self.done[key]

    def lines(self) -> list[str]:
        out: list[str] = []
        for o in self.done.values():
            out += o.block.splitlines() + o.cross.lines() + report.threshold_lines(o.scenario.thresholds, o.result)
            out += [f"glmv: wrote {p}" for p in o.written]
        return out


class Check:
    """What a user's `@pytest.mark.slo(...)` test gets: the outcome, and check() to assert it."""

    def __init__(self, outcome: runner.Outcome) -> None:
        self.outcome = outcome
        self.result = outcome.result

    def check(self) -> None:
        verdicts = [self.outcome.judge(t) for t in self.outcome.scenario.thresholds]
        if self.result.get("run_not_valid"):
            raise AssertionError(verdicts[0][1])
        misses = [msg.splitlines()[0] for ok, msg in verdicts if not ok]
        if misses:
            context = verdicts[0][1].splitlines()[1:]
            raise AssertionError("SLO missed:\n" + "\n".join(misses + context))
