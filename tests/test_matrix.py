"""The mutation-matrix runner itself: a proven check, an uncaught fault, and pass-through arguments;
SuiteRun.unproven, what every suite proof file asserts about a fault run."""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glmv import matrix

SUITE = '''
import pytest

pytestmark = pytest.mark.tools


def test_tool_calls_are_parsed(glmv_http, glmv_server):
    body = {"model": glmv_server.model, "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "glmv_raw_output": "<think>tool</think><tool_call>get_weather\\n<arg_key>city</arg_key>\\n"
                               "<arg_value>Paris</arg_value>\\n</tool_call>",
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}]}
    msg = glmv_http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    assert msg["tool_calls"] and msg["tool_calls"][0]["function"]["name"] == "get_weather"


def test_key_passed_through(glmv_server):
    assert glmv_server.api_key == "k1"
'''


def test_matrix_names_what_caught_each_fault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "suites" / "test_demo.py"
    suite.parent.mkdir()
    suite.write_text(SUITE)
    code = matrix.main([str(suite), "--fault", "no-tool-parser", "--fault", "slow-first-token", "--",
                        "--glmv-api-key", "k1"])
    out = capsys.readouterr().out
    assert "correct server: 2 passed, 0 failed" in out
    assert "fault no-tool-parser: caught by 1 check(s)\n    test_tool_calls_are_parsed" in out
    assert "fault slow-first-token: caught by 0 check(s)  <-- UNCAUGHT" in out
    assert code == 1  # an uncaught fault is a failing matrix


def run(**outcomes: str) -> matrix.SuiteRun:
    return matrix.SuiteRun(fault="f", returncode=1, outcomes=outcomes, output="...tail of the run")


def test_a_fault_caught_by_its_checks_and_sparing_the_rest_is_proven() -> None:
    r = run(test_a="failed", test_b="error", test_c="passed")
    assert r.unproven("f", {"test_a", "test_b"}, {"test_c"}) == ""


def test_a_check_that_passed_under_its_fault_is_named_with_the_evidence() -> None:
    why = run(test_a="passed", test_b="failed").unproven("f", {"test_a", "test_b"})
    assert "fault f was not caught by ['test_a']; failed: ['test_b']" in why and why.endswith("...tail of the run")


def test_an_unrelated_check_that_failed_or_never_ran_is_named() -> None:
    why = run(test_a="failed", test_c="failed").unproven("f", {"test_a"}, {"test_c", "test_d"})
    assert "fault f also failed unrelated checks ['test_c', 'test_d']" in why
