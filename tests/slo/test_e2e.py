"""Whole sessions of suites/test_slo.py against the reference server (ms latencies, a handful of prompts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "suites" / "test_slo.py"
SPEC = """
num_prompts = 4
request_rate = "inf"
max_concurrency = 2
[slo]
mean_ttft_ms = 1000
p99_itl_ms = 500
output_throughput = 1
completed = 4
"""


def spec(pytester: pytest.Pytester, text: str = SPEC) -> str:
    return str(pytester.makefile(".toml", small=text))


def test_reference_meets_a_small_spec_and_writes_vllm_json(pytester: pytest.Pytester) -> None:
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-server", "reference", "--glmv-slo", spec(pytester),
                                           "--glmv-slo-json", str(out), "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*test_slo[[]small-mean_ttft_ms[]] PASSED*",
                                 "*test_server_metrics_agree[[]small[]] PASSED*",
                                 "*= Serving Benchmark Result =*", "Successful requests: * 4*",
                                 "Maximum request concurrency: * 2*", "*server /metrics over the run: 4 successful*"])
    data = json.loads(out.read_text())
    assert data["completed"] == 4 and data["failed"] == 0 and data["max_concurrency"] == 2
    assert data["mean_ttft_ms"] > 0 and data["total_output_tokens"] > 4
    assert (pytester.path / "out.cdf.png").stat().st_size > 1000


def test_slow_first_token_fails_ttft_and_nothing_else(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-server", "reference", "--glmv-fault", "slow-first-token",
                                           "--glmv-slo", spec(pytester), "-rf")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*mean_ttft_ms = 1???.?? MISSES threshold <= 1000.00; margin -*.??, -*.?%",
        "*scenario small: 4 prompts of synthetic, rate inf req/s, burstiness 1, max concurrency 2, seed 0",
        "FAILED *test_slo[[]small-mean_ttft_ms[]]*"])


def test_failed_requests_are_counted_and_fail_the_run(pytester: pytest.Pytester) -> None:
    # max_tokens far beyond the window: every request answers 400
    text = SPEC.replace("num_prompts = 4", "num_prompts = 3\nmax_tokens = 10000000")
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-server", "reference", "--glmv-slo",
                                           spec(pytester, text))
    result.stdout.fnmatch_lines(["*failed = 3.00 MISSES threshold <= 0.00*", "*completed 0, failed 3*",
                                 "*first failures: request 0: HTTP 400*", "Failed requests: * 3*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def copy_of_suite(pytester: pytest.Pytester) -> str:
    """The suite under another name: naming test_slo.py on the command line would select it."""
    return str(pytester.makepyfile(slo_copy_test=SUITE.read_text()))


def test_plain_run_deselects_and_says_how_to_run(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(copy_of_suite(pytester), "--glmv-server", "reference")
    result.stdout.fnmatch_lines(["glmv: 16 SLO checks deselected (they load the server for minutes); run them with "
                                 "-m slo, or give a spec with --glmv-slo FILE.toml"])
    result.stdout.no_fnmatch_line("*glmv target*")  # nothing was started
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_dash_m_slo_selects_them(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(copy_of_suite(pytester), "-m", "slo and not behavior", "--glmv-server",
                                           "reference", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*16 tests collected*"])


def test_bad_toml_is_one_line(pytester: pytest.Pytester) -> None:
    bad = spec(pytester, "[slo\nmean_ttft_ms = 1")
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-slo", bad)
    result.stderr.fnmatch_lines([f"ERROR: glmv: SLO spec {bad}: invalid TOML: *line 1*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_users_own_slo_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="""
import pytest

@pytest.mark.slo(mean_ttft_ms=5000, p99_itl_ms=0.000001, num_prompts=3)
def test_my_deployment(glmv_slo):
    glmv_slo.check()
""")
    result = pytester.runpytest_subprocess("test_mine.py", "-m", "slo", "--glmv-server", "reference")
    result.stdout.fnmatch_lines(["*SLO missed:", "*p99_itl_ms = * MISSES threshold <= 0.00*",
                                 "*scenario test_my_deployment: 3 prompts of synthetic*"])
    result.stdout.no_fnmatch_line("*mean_ttft_ms*MISSES*")
    result.assert_outcomes(failed=1)


def test_a_server_that_drops_the_usage_chunk_is_named_in_the_block_json_and_verdicts(pytester: pytest.Pytester) -> None:
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-server", "reference", "--glmv-fault",
                                           "stream-usage-dropped", "--glmv-slo", spec(pytester, SPEC.replace(
                                               "output_throughput = 1", "output_throughput = 1000000")),
                                           "--glmv-slo-json", str(out), "-rf")
    result.assert_outcomes(passed=5, failed=1)
    # the verdicts (here the throughput miss) carry the note; the result block below says it again
    result.stdout.fnmatch_lines(["*4 of 4 successful requests had no usage chunk: their output tokens*",
                                 "Requests without a usage chunk: * 4*",
                                 "*(their output tokens: streamed chunks; vllm bench serve re-tokenizes the text)"])
    data = json.loads(out.read_text())
    assert data["usage_missing"] == 4 and "re-tokenizes" in data["usage_missing_note"]


def test_a_missed_slo_says_where_the_spec_came_from_and_how_to_give_yours(pytester: pytest.Pytester) -> None:
    text = SPEC.replace("mean_ttft_ms = 1000", "mean_ttft_ms = 0.000001")
    result = pytester.runpytest_subprocess(str(SUITE), "--glmv-server", "reference", "--glmv-slo",
                                           spec(pytester, text), "-W", "error::pytest.PytestWarning")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*the spec: *small.toml; give your own with --glmv-slo FILE.toml or "
                                 "--glmv-slo-threshold KEY=VALUE*"])
