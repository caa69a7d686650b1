"""The mutation-matrix runner itself: a proven check, an uncaught fault, and pass-through arguments;
SuiteRun.unproven and Proof.judge, what tests/suites/test_proofs.py asserts about each run; the proof table's
own validation (fixtures/proofs.toml)."""
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
    # a suite the proof table does not know: each named fault is judged by what it broke
    code = matrix.main([str(suite), "--fault", "no-tool-parser", "--fault", "slow-first-token", "-m", "not slo",
                        "--", "--glmv-api-key", "k1"])
    out = capsys.readouterr().out
    assert "correct server: 2 passed, 0 failed" in out
    assert "fault no-tool-parser: caught by 1 check(s)\n    test_tool_calls_are_parsed" in out
    assert "fault slow-first-token: caught by 0 check(s)  <-- UNCAUGHT" in out
    assert code == 1  # an uncaught fault is a failing matrix


def run(**outcomes: str) -> matrix.SuiteRun:
    return matrix.SuiteRun(fault="f", returncode=1, outcomes=outcomes, output="...tail of the run")


def test_a_fault_caught_by_its_checks_and_sparing_the_rest_is_proven() -> None:
    r = run(test_a="failed", test_b="failed", test_c="passed")
    assert r.unproven("f", {"test_a", "test_b"}, {"test_c"}) == ""


def test_an_error_is_never_a_caught_fault() -> None:
    why = run(test_a="failed", test_b="error", test_c="passed").unproven("f", {"test_a", "test_b"}, {"test_c"})
    assert "fault f was not caught by ['test_b']" in why and "errors, not failures" in why


def test_a_check_that_passed_under_its_fault_is_named_with_the_evidence() -> None:
    why = run(test_a="passed", test_b="failed").unproven("f", {"test_a", "test_b"})
    assert "fault f was not caught by ['test_a']; failed: ['test_b']" in why and why.endswith("...tail of the run")


def test_an_unrelated_check_that_failed_or_never_ran_is_named() -> None:
    why = run(test_a="failed", test_c="failed").unproven("f", {"test_a"}, {"test_c", "test_d"})
    assert "fault f also failed unrelated checks ['test_c', 'test_d']" in why


def test_strict_unproven_names_any_other_failure() -> None:
    why = run(test_a="failed", test_b="failed", test_c="skipped").unproven("f", {"test_a"}, strict=True)
    assert "fault f also failed unrelated checks ['test_b']" in why
    assert run(test_a="failed", test_c="skipped").unproven("f", {"test_a"}, strict=True) == ""


TABLE = """
[suite.demo]
files = ["test_demo.py"]
fail_messages = ["status:"]

[[proof]]
suite = "demo"
name = "correct"
skipped = ["test_s"]

[[proof]]
suite = "demo"
fault = "no-tool-parser"
fail = ["test_a"]
pass = ["test_c"]
messages = { test_a = ["tool_calls"] }
"""


def test_the_table_is_parsed_with_the_suite_defaults() -> None:
    table = matrix.load_proofs(TABLE)
    correct, fault = table.proofs
    assert correct.id == "demo/correct" and correct.fault is None and correct.skipped == {"test_s"}
    assert fault.id == "demo/no-tool-parser" and fault.args == ("-m", "not slo")
    assert fault.paths[0].endswith("suites/test_demo.py")
    assert fault.messages == {"test_a": ("tool_calls", "status:")}  # the suite's evidence texts added
    assert fault.checks == {"test_a", "test_c"} and table.fault_proofs(["test_demo.py"]) == [fault]
    assert table.fault_proofs(["test_other.py"]) == []


@pytest.mark.parametrize("edit,error", [
    (("fail = ", "fial = "), "unknown keys ['fial']"),
    (('suite = "demo"\nfault', 'suite = "dmeo"\nfault'), "unknown suite 'dmeo'"),
    (('fault = "no-tool-parser"', 'name = "correct"'), "cases named twice: ['demo/correct']"),
    (('pass = ["test_c"]', 'pass = "test_c"'), "expected a list of strings"),
])
def test_a_typo_in_the_table_is_an_error(edit: tuple[str, str], error: str) -> None:
    with pytest.raises(matrix.ProofTableError, match=error.replace("[", r"\[").replace("]", r"\]")):
        matrix.load_proofs(TABLE.replace(*edit))


def test_the_shipped_table_loads() -> None:
    table = matrix.load_proofs()
    assert table.fault_proofs(["test_tools.py"]) and all(why.strip() for why in table.unproven.values())


def test_a_proof_is_judged_strictly() -> None:
    _, proof = matrix.load_proofs(TABLE).proofs
    good = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "failed", "test_c": "passed", "test_s": "skipped"},
                           {"test_a": "no tool_calls; status: 200"})
    assert proof.judge(good) == ""
    stray = matrix.SuiteRun("no-tool-parser", 1, {**good.outcomes, "test_d": "failed"}, good.messages)
    assert "unexpected failures ['test_d']" in proof.judge(stray)
    mute = matrix.SuiteRun("no-tool-parser", 1, good.outcomes, {"test_a": "no tool_calls"})
    assert "test_a's failure does not say 'status:'" in proof.judge(mute)
    spared = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "failed"}, good.messages)
    assert "checks did not run and pass: {'test_c': 'not run'}" in proof.judge(spared)
    assert "no check ran" in proof.judge(matrix.SuiteRun("no-tool-parser", 4))
    errored = matrix.SuiteRun("no-tool-parser", 1, {**good.outcomes, "test_a": "error"}, good.messages)
    why = proof.judge(errored)
    assert "fault no-tool-parser was not caught by ['test_a']" in why and "errors, not failures" in why


def test_a_fault_proof_must_say_what_each_failure_shows() -> None:
    with pytest.raises(matrix.ProofTableError, match=r"messages names no reason for \['test_a'\]"):
        matrix.load_proofs(TABLE.replace('messages = { test_a = ["tool_calls"] }', ""))


def test_checks_the_session_stops_are_named_as_errors_not_failures() -> None:
    table = matrix.load_proofs(TABLE.replace('fail = ["test_a"]', 'errored = ["test_a"]'))
    _, proof = table.proofs
    run = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "error", "test_c": "passed"},
                          {"test_a": "tool_calls status:"})
    assert proof.judge(run) == ""
    assert "checks not reported as errors" in proof.judge(matrix.SuiteRun("no-tool-parser", 1, {
        "test_a": "failed", "test_c": "passed"}, run.messages))


def test_render_judges_a_fault_by_its_proof() -> None:
    _, proof = matrix.load_proofs(TABLE).proofs
    correct = matrix.SuiteRun(None, 0, {"test_a": "passed", "test_b": "passed", "test_c": "passed"})
    caught = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "failed", "test_b": "passed", "test_c": "passed"})
    out = matrix.render(correct, [caught], {"no-tool-parser": proof})
    assert "fault no-tool-parser: caught by its 1 expected check(s)\n    test_a" in out
    assert matrix.verdict(correct, [caught], {"no-tool-parser": proof})
    messy = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "passed", "test_b": "failed", "test_c": "passed"})
    out = matrix.render(correct, [messy], {"no-tool-parser": proof})
    assert "expected checks passed: test_a  <-- UNCAUGHT" in out and "also failed: test_b  <-- UNEXPECTED" in out
    assert not matrix.verdict(correct, [messy], {"no-tool-parser": proof})


SHARED = TABLE + """
[[proof]]
suite = "demo"
fault = "untyped-tool-args"
args = ["-k", "typed"]
fail = ["test_t"]
messages = { test_t = ["typed"] }
share = "one"
"""


def test_fault_proofs_that_share_a_run_join_their_faults_and_k() -> None:
    table = matrix.load_proofs(SHARED.replace('fault = "no-tool-parser"\n', 'fault = "no-tool-parser"\nshare = "one"\n'
                                              'args = ["-k", "parsed"]\n'))
    members = matrix.shares(table.proofs)["demo/one"]
    assert [p.fault for p in members] == ["no-tool-parser", "untyped-tool-args"]
    faults, args = matrix.shared_run(members)
    assert faults == ["no-tool-parser", "untyped-tool-args"]
    assert args == ["-m", "not slo", "-k", "(parsed) or (typed)", "--glmv-fault", "untyped-tool-args"]
    run = matrix.SuiteRun("no-tool-parser", 1, {"test_a": "failed", "test_c": "passed", "test_t": "failed"},
                          {"test_a": "tool_calls status:"})
    assert members[0].judge(run, excused=members[1].fail) == ""
    assert "unexpected failures ['test_t']" in members[0].judge(run)


def test_fault_proofs_that_share_a_run_must_differ_only_in_fault_and_k() -> None:
    clash = SHARED.replace('fault = "no-tool-parser"\n', 'fault = "no-tool-parser"\nshare = "one"\n'
                           'args = ["--glmv-request-timeout", "8"]\n')
    with pytest.raises(matrix.ProofTableError, match="differ in more than their fault and -k"):
        matrix.load_proofs(clash)
    twice = SHARED.replace('fault = "no-tool-parser"\n', 'fault = "no-tool-parser"\nshare = "one"\n'
                           'args = ["-k", "t"]\n').replace('fail = ["test_t"]\nmessages = { test_t',
                                                        'fail = ["test_a"]\nmessages = { test_a')
    with pytest.raises(matrix.ProofTableError, match="target of two"):
        matrix.load_proofs(twice)
