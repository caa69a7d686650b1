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
    for name in ("no_think_tags_in_output", "reasoning_field_name", "reasoning_in_its_own_field"):
        assert f"check  reasoning/{name} " in table, table  # the stable id, not a path
    assert "reasoning/no_think_tags_in_output     passed    failed          thinking on, content holds ['<think>', " \
        "'</think>']" in table, table  # the check's own message, from its evidence
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
    assert run.report["exitstatus"] == 1 and run.report["baseline"]["incomparable"] is None


@pytest.mark.parametrize("name", ["unchanged", "equals"])
def test_an_unchanged_rerun_from_another_folder_passes(runs: dict[str, Run], name: str) -> None:
    """No test paths, another working folder: pytest's rootdir is that folder, so every nodeid differs from the
    baseline's (`../../…/suites/test_reasoning.py::…` against `suites/test_reasoning.py::…`); the ids do not.
    `--glmv-baseline PATH` (space) and `--glmv-baseline=PATH` compare the same."""
    run = runs[name]
    assert run.rc == 0, run.output[-3000:]
    assert "no regressions" in _table(run)
    cmp = run.report["baseline"]
    assert cmp["regressions"] == [] and cmp["incomparable"] is None, cmp
    assert cmp["compared_checks"] == 14 and cmp["compared_metrics"] >= 10, cmp
    before = runs["correct"].report["checks"]
    assert not {c["nodeid"] for c in run.report["checks"]} & {c["nodeid"] for c in before}
    assert {c["id"] for c in run.report["checks"]} == {c["id"] for c in before}
    assert f"rootdir: {run.report_dir.parent}\n" in run.output, run.output[:1500]  # the space form did not move it


def test_a_baseline_this_run_shares_no_slo_metric_with_fails_the_gate(runs: dict[str, Run]) -> None:
    run = runs["narrow"]  # the baseline's reasoning checks, but not its SLO run: SLOs would go unjudged
    assert run.rc == 1, run.output[-3000:]
    lines = [ln for ln in _table(run).splitlines() if ln.startswith("NOT COMPARABLE")]
    assert len(lines) == 1 and re.fullmatch(
        r"NOT COMPARABLE: the baseline cannot judge this run: none of its \d\d SLO metrics was compared \(no SLO run "
        r"with the same scenario and parameters: select them with -m slo\); run the baseline's selection and "
        r"options, or record a new baseline; the run fails", lines[0]), _table(run)
    assert "glmv verdict: FAIL" in run.output and "baseline not comparable" in run.output


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
