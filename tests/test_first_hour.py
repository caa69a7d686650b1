"""What a new user sees first: the rule for 'no target, no paths', the CI verdict line, the summary blocks,
and the report's wording."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glmv.report import html

SUITES = Path(__file__).resolve().parents[1] / "suites"


def test_no_target_and_nothing_collected_says_how_to_run_the_suites(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(["glmv: no checks collected here. The shipped suites run when you name a target: "
                                 "pytest --glmv-server reference*"])
    result.stdout.no_fnmatch_line("*glmv target*")


def test_own_tests_without_a_target_get_no_hint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*no checks collected here*")
    result.stdout.no_fnmatch_line("*glmv verdict*")


def _suite(pytester: pytest.Pytester, *args: str, k: str = "reports_the_window or one_token_over") -> pytest.RunResult:
    return pytester.runpytest_subprocess(str(SUITES / "test_context.py"), "--glmv-server", "reference", "-k", k,
                                         *args)


def test_ci_summary_ends_with_one_verdict_line_and_says_each_thing_once(pytester: pytest.Pytester) -> None:
    result = _suite(pytester, "-m", "not slo")
    assert result.ret == 0
    out = result.stdout.lines
    verdicts = [line for line in out if line.startswith("glmv verdict:")]
    assert len(verdicts) == 1 and verdicts[0].startswith("glmv verdict: PASS: 0 failed, 2 passed"), verdicts
    assert verdicts[0].endswith("(reference, vLLM 0.32.0)")
    # right above pytest's own closing line: nothing of ours after it
    assert out.index(verdicts[0]) > max(i for i, line in enumerate(out) if "glmv conformance matrix" in line)
    result.stdout.fnmatch_lines(["glmv: ready * s after launch", "area*checks*known*wall s*verdict",
                                 "context*server-level*2*0*0*0*0*ok"])
    assert sum("target http://127.0.0.1" in line and "(reference, launched)" in line for line in out) == 1
    result.stdout.no_fnmatch_line("*SLO check* deselected*")  # the user's own -m said so


def test_failure_verdict_counts_them(pytester: pytest.Pytester) -> None:
    result = _suite(pytester, "--glmv-fault", "overflow-500", k="reports_the_window or longer_than")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["glmv verdict: FAIL: 1 failed, 1 passed, 0 skipped, 0 xfailed; http://*"])


def test_report_reads_as_prose_not_python() -> None:
    assert html._num(html._value(True)) == "yes" and html._num(html._value(False)) == "no"
    assert html._num(html._value(None)) == ""
    cell = html._num(html._value(["reasoning field `reasoning` <seen>", "TP 1"]))
    assert cell == "reasoning field <code>reasoning</code> &lt;seen&gt;; TP 1"
