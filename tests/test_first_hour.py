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


FLAG_ONLY = """
def test_flag_only(glmv_target):
    assert "--no-such-flag" in glmv_target.plan.argv, "a check that reads the launch flags only"

def test_served(glmv_http):
    glmv_http.get("/health")
    assert False, "a check the server took part in"
"""


def test_server_log_goes_only_with_failures_the_server_took_part_in(pytester: pytest.Pytester,
                                                                      fake_vllm: Path) -> None:
    pytester.makepyfile(test_two=FLAG_ONLY)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "test_two.py", "-p",
                                           "no:cacheprovider")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    flag, served = out.split("_ test_flag_only _")[1].split("_ test_served _")
    assert "glmv server log" not in flag and "glmv server log while this check ran" in served


def test_help_shows_each_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    text = " ".join(result.stdout.str().split())
    assert "[default 600.0; env GLMV_REQUEST_TIMEOUT; ini glmv_request_timeout]" in text
    assert "[default fail; env GLMV_KNOWN_FINDINGS" in text
    assert "[env GLMV_MODEL; ini glmv_model]" in text  # no default, none shown


def test_temporary_folders_go_unless_a_check_failed(pytester: pytest.Pytester, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    pytester.makepyfile(test_ok="def test_ok(glmv_http):\n    assert glmv_http.get('/health').status_code == 200\n",
                        test_bad="def test_bad(glmv_http):\n    glmv_http.get('/health')\n    assert False\n")
    pytester.runpytest_subprocess("--glmv-server", "reference", "test_ok.py").assert_outcomes(passed=1)
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("glmv-")]
    pytester.runpytest_subprocess("--glmv-server", "reference", "test_bad.py").assert_outcomes(failed=1)
    left = sorted(p.name.split("-")[1] for p in tmp.iterdir() if p.name.startswith("glmv-"))
    assert left == ["logs"], left  # the failed run's log stays for the reader; its media folder does not


def test_a_healthy_server_that_never_answers_ends_the_run_in_bounded_time(pytester: pytest.Pytester) -> None:
    # vLLM #39863: /health says 200 while every request hangs. Without the canary each check would wait out its
    # own request timeout (600 s by default): hours for the suites.
    import time

    began = time.monotonic()
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-server", "reference", "--glmv-fault", "engine-hung",
                                           "--glmv-canary-timeout", "3", "-m", "not slo")
    took = time.monotonic() - began
    assert took < 120, f"took {took:.0f} s"
    result.stdout.fnmatch_lines(["glmv: the server answers /health but a 1-token chat request got no answer in 3 s*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 100 and not outcomes.get("passed"), outcomes
    assert result.stdout.str().count("glmv: the server answers /health but") >= 100  # each check says why


def test_a_target_that_cannot_start_is_said_once_in_plain_words(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one(glmv_server):\n    pass\n")
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "--glmv-vllm-executable",
                                           str(pytester.path / "no-vllm"), "test_one.py")
    assert result.ret == 3
    text = result.stdout.str() + result.stderr.str()
    assert "_pytest.outcomes" not in text and "Exit:" not in text and "Traceback" not in text
    result.stdout.fnmatch_lines([f"glmv: cannot run '{pytester.path / 'no-vllm'}': No such file or directory;*",
                                 "glmv verdict: NOT RUN: cannot run*"])
    assert text.count("No such file or directory") == 2  # the error line and the verdict
