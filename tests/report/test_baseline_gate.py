"""--glmv-baseline: regressions fail the run with a table; an unchanged rerun passes; a bad file is a usage error."""
from __future__ import annotations

import re

import pytest

from .conftest import REASONING, Run


def _table(run: Run) -> str:
    out = run.output
    assert "glmv baseline" in out, out[-3000:]
    return out[out.index("glmv baseline"):]


def test_checks_that_passed_and_now_fail_are_regressions(runs: dict[str, Run]) -> None:
    run = runs["fault"]
    table = _table(run)
    assert "REGRESSED: 3 regression(s) against the baseline; the run fails" in table, table
    for name in ("test_no_think_tags_in_output", "test_reasoning_field_name", "test_reasoning_in_its_own_field"):
        assert f"check  suites/test_reasoning.py::{name}" in table, table
    assert "AssertionError: thinking on, content holds ['<think>', '</think>']" in table, table
    cmp = run.report["baseline"]
    assert {r["kind"] for r in cmp["regressions"]} == {"check"} and cmp["compared_checks"] == 14, cmp
    assert run.rc == 1


def test_an_slo_regression_alone_fails_the_run(runs: dict[str, Run]) -> None:
    run = runs["slow"]
    # Every check passes (the spec is lax); only the comparison with the baseline fails the run.
    assert "failed" not in run.output.splitlines()[-1], run.output[-1500:]
    assert run.rc == 1, f"the gate did not fail the run (exit {run.rc}):\n{run.output[-3000:]}"
    regs = {r["what"]: r for r in run.report["baseline"]["regressions"]}
    assert "small: mean_ttft_ms" in regs and regs["small: mean_ttft_ms"]["now"] > 1500, regs
    assert all(r["kind"] == "slo" for r in regs.values()), regs
    table = _table(run)
    row = r"^slo +small: mean_ttft_ms +\d+\.\d\d +1\d{3}\.\d\d +\+\d+\.\d% +lower is better; tolerance 300% and 250 ms$"
    assert re.search(row, table, re.M), table
    # The reasoning checks were not run this time: a note, not a regression.
    assert "did not run now" in table, table
    assert run.report["exitstatus"] == 1


def test_an_unchanged_rerun_passes(runs: dict[str, Run]) -> None:
    run = runs["unchanged"]
    assert run.rc == 0, run.output[-3000:]
    assert "no regressions" in _table(run)
    cmp = run.report["baseline"]
    assert cmp["regressions"] == [] and cmp["compared_checks"] == 14 and cmp["compared_metrics"] >= 10, cmp


@pytest.mark.parametrize("content, says", [
    (None, "not a readable file"),  # missing: config's own check answers first
    ("{\"format\": \"pytest-glmv-report\", \"checks\": [", "not JSON"),
    ("{\"completed\": 4}", "not a pytest-glmv report.json"),
], ids=["missing", "truncated", "not-a-report"])
def test_a_missing_or_corrupt_baseline_is_a_one_line_usage_error(pytester: pytest.Pytester, content: str | None,
                                                                 says: str) -> None:
    path = pytester.path / "baseline.json"
    if content is not None:
        path.write_text(content)
    result = pytester.runpytest_subprocess(REASONING, "--glmv-baseline", str(path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [ln for ln in result.stderr.lines if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR:") and says in errors[0] and str(path) in errors[0], \
        result.stderr.lines
