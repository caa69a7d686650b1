"""Known upstream findings: the knowledge base's format, version rules, evidence-only matching, and a run
against reference-server faults where one imitates a known vLLM fault and one does not."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glmv import known

SUITES = Path(__file__).resolve().parents[1] / "suites"
ENTRY = """
[[finding]]
id = "x-500"
check = "robustness/thing_is_refused"
engine = "vllm"
versions = ">=0.20,<0.28"
fixed_in = "0.28.0"
summary = "thing answers 500"
reference = "vllm#1"
remedy = "upgrade"
[finding.evidence]
status = 500
pattern = "no attribute 'get'"
"""
BOOM = ("request: POST /v1/chat/completions [1]\n  status: 500 after 0.01 s\n"
        "  answer: 'list' object has no attribute 'get'")


def kb_of(tmp_path: Path, text: str = ENTRY) -> known.KnowledgeBase:
    path = tmp_path / "kb.toml"
    path.write_text(text)
    return known.load([path])


@pytest.mark.parametrize("text,release", [("0.32.0+cpu", "0.32.0"), ("0.11.1.dev123+gabc", "0.11.1"),
                                          ("v0.26.0", "0.26.0"), ("0.28.0rc1", "0.28.0")])
def test_versions_vllm_reports_parse(text: str, release: str) -> None:
    v = known.parse_version(text)
    assert v is not None and ".".join(map(str, v.release)) == release


@pytest.mark.parametrize("text", ["", None, "unknown", "main", "0.32-cpu-build"])
def test_other_version_strings_are_no_match(tmp_path: Path, text: str | None) -> None:
    assert known.parse_version(text) is None
    assert kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", text) is None


def test_matched_inside_the_range_with_its_text(tmp_path: Path) -> None:
    m = kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", "0.26.0")
    assert m is not None and not m.regression
    assert m.text == ("known vLLM fault x-500 in vllm <0.28,>=0.20, fixed in 0.28.0 (vllm#1): thing answers 500; "
                      "remedy: upgrade")
    assert m.record()["fixed_in"] == "0.28.0" and m.record()["server_version"] == "0.26.0"


def test_local_and_dev_parts_do_not_move_a_release_out_of_range(tmp_path: Path) -> None:
    kb = kb_of(tmp_path)
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.27.1+cu130") is not None
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.20.0.dev5+gabc") is not None
    assert kb.match("robustness/thing_is_refused", BOOM, "vllm", "0.19.1") is None  # before the range


def test_only_the_evidence_matches_never_the_check_name(tmp_path: Path) -> None:
    kb = kb_of(tmp_path)
    other_500 = BOOM.replace("'list' object has no attribute 'get'", "CUDA error: an illegal memory access")
    assert kb.match("robustness/thing_is_refused", other_500, "vllm", "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", BOOM.replace("status: 500", "status: 502"), "vllm", "0.26.0") is None
    assert kb.match("robustness/other_check", BOOM, "vllm", "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", BOOM, "sglang", "0.26.0") is None
    assert kb.match("robustness/thing_is_refused", BOOM, None, "0.26.0") is None


def test_at_or_past_the_fix_the_same_evidence_is_a_regression(tmp_path: Path) -> None:
    for version in ("0.28.0", "0.32.0+cpu"):
        m = kb_of(tmp_path).match("robustness/thing_is_refused", BOOM, "vllm", version)
        assert m is not None and m.regression, version
        assert m.text.startswith("REGRESSION of known vLLM fault x-500") and f"reports {version}" in m.text


@pytest.mark.parametrize("change,says", [
    (("[[finding]]", "[[finding]"), "invalid TOML"),
    (('engine = "vllm"', 'engine = "tgi"'), "unknown engine 'tgi'; known: vllm, sglang"),
    (('versions = ">=0.20,<0.28"', 'versions = "0.20 to 0.28"'), "is not a PEP 440 specifier"),
    (('fixed_in = "0.28.0"', 'fixed_in = "soon"'), "fixed_in 'soon' is not a PEP 440 version"),
    (('pattern = "no attribute \'get\'"', 'pattern = "(["'), "evidence.pattern is not a regular expression"),
    (('status = 500\n', 'status = 5000\n'), "is not an HTTP status"),
    (('reference = "vllm#1"', 'referense = "vllm#1"'), "unknown key(s) referense"),
    (('check = "robustness/thing_is_refused"', 'check = "thing_is_refused"'), "is not a finding id AREA/NAME"),
    (('check = "robustness/thing_is_refused"', 'check = []'), "'check' is required: a finding id AREA/NAME, or a list"),
    (('remedy = "upgrade"\n', ''), "'remedy' is required"),
])
def test_a_bad_knowledge_base_is_one_clear_line(tmp_path: Path, change: tuple[str, str], says: str) -> None:
    assert change[0] in ENTRY
    with pytest.raises(known.KnowledgeBaseError) as e:
        kb_of(tmp_path, ENTRY.replace(*change))
    assert says in str(e.value) and "\n" not in str(e.value) and "kb.toml" in str(e.value)


def test_an_entry_without_evidence_is_refused(tmp_path: Path) -> None:
    text = ENTRY.split("[finding.evidence]")[0]
    with pytest.raises(known.KnowledgeBaseError, match="needs a status or a pattern: a check name alone never"):
        kb_of(tmp_path, text)


def test_the_shipped_knowledge_base_loads_and_names_real_checks(pytester: pytest.Pytester) -> None:
    kb = known.load()
    assert len(kb.entries) >= 8 and len({e.id for e in kb.entries}) == len(kb.entries)
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-server", "reference", "--collect-only", "-q",
                                           "-m", "not slo")
    ids = set()
    for line in result.stdout.lines:
        if "::" in line:
            path, _, name = line.partition("::")
            ids.add(f"{Path(path).stem[5:]}/{name[5:]}")
    missing = [c for e in kb.entries for c in e.checks if c not in ids]
    assert not missing, f"knowledge-base entries name checks that do not exist: {missing}"
    assert all(e.reference and e.remedy for e in kb.entries)


# -- against the reference server's faults: imitation matched, anything else not ---------------------------
def _run(pytester: pytest.Pytester, fault: str, k: str, *extra: str) -> tuple[pytest.RunResult, dict]:
    report = pytester.path / "rep"
    result = pytester.runpytest_subprocess(
        str(SUITES / "test_robustness.py"), "--glmv-server", "reference", "--glmv-fault", fault, "-k", k,
        "--glmv-report", str(report), f"--junitxml={pytester.path / 'junit.xml'}", "-rfx", *extra)
    return result, json.loads((report / "report.json").read_text())


def test_a_fault_that_imitates_a_known_finding_is_matched_everywhere(pytester: pytest.Pytester) -> None:
    result, rep = _run(pytester, "bomb-500", "decompression_bomb")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "glmv known upstream finding" in out and "known vLLM fault vllm-decompression-bomb-500" in out
    assert "remedy: refuse oversized images before vLLM" in out
    result.stdout.fnmatch_lines(["known upstream: 1 of the failures and xfails above*",
                                 "*glmv known upstream findings*",
                                 "FAILED robustness/decompression_bomb_is_refused_quickly: known vLLM fault*"])
    (check,) = [c for c in rep["checks"] if "decompression_bomb" in c["key"]]
    assert check["outcome"] == "failed" and check["known"]["id"] == "vllm-decompression-bomb-500"
    assert check["known"]["server_version"] == "0.32.0" and not check["known"]["regression"]
    row = next(r for r in rep["summary"]["matrix"] if r["area"] == "robustness")
    assert row["known"] == 1
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="glmv_known_finding" value="vllm-decompression-bomb-500"' in junit
    html = (pytester.path / "rep" / "report.html").read_text()
    assert 'id="glmv-known"' in html and "vllm-decompression-bomb-500" in html


def test_xfail_policy_keeps_a_pinned_gate_green_but_lists_them(pytester: pytest.Pytester) -> None:
    result, rep = _run(pytester, "bomb-500", "decompression_bomb", "--glmv-known-findings", "xfail")
    result.assert_outcomes(xfailed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["XFAILED robustness/decompression_bomb_is_refused_quickly: known vLLM fault*",
                                 "XFAIL*decompression_bomb*known vLLM fault vllm-decompression-bomb-500*"])
    (check,) = [c for c in rep["checks"] if "decompression_bomb" in c["key"]]
    assert check["outcome"] == "xfailed" and check["known"]["id"] == "vllm-decompression-bomb-500"


def test_a_fault_that_does_not_imitate_stays_an_unexplained_failure(pytester: pytest.Pytester) -> None:
    # tool-schema-500 answers a 500, but not vLLM's KeyError 'triggers': same checks, other evidence
    result, rep = _run(pytester, "tool-schema-500", "malformed_tool_schema and bad", "--glmv-known-findings",
                       "xfail")
    assert result.ret == 1
    outcomes = {c["key"].split("::")[-1]: c for c in rep["checks"]}
    failed = {k for k, c in outcomes.items() if c["outcome"] == "failed"}
    assert failed and all(outcomes[k]["known"] is None for k in failed), outcomes
    assert "glmv known upstream findings" not in result.stdout.str()


def test_any_finding_can_be_waived_by_its_id(pytester: pytest.Pytester) -> None:
    result, rep = _run(pytester, "tool-schema-500", "malformed_tool_schema and bad-type and not loose", "--glmv-waive",
                       "robustness/malformed_tool_schema_is_refused[bad-type]")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["*waived finding robustness/malformed_tool_schema_is_refused?bad-type?*"])


def test_bad_policy_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--glmv-known-findings", "ignore")
    result.stderr.fnmatch_lines(["*--glmv-known-findings: unknown value 'ignore'; valid choices: fail, xfail*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_the_signature_is_held_against_the_message_not_the_traceback_source(pytester: pytest.Pytester) -> None:
    # Same check name and the entry's text in the source of an assertion that was never reached: no match.
    pytester.makepyfile(test_mine='''
import pytest

@pytest.mark.robustness
def test_decompression_bomb_is_refused_quickly(glmv_server):
    if glmv_server.version == "never":
        assert False, "status: 500 ... could be decompression bomb DOS attack"
    assert glmv_server.version == "x", "status: 500 after 0.01 s: something else went wrong"
''')
    result = pytester.runpytest_subprocess("test_mine.py", "--glmv-server", "reference")
    result.assert_outcomes(failed=1)
    assert "glmv known upstream finding" not in result.stdout.str()


def test_an_earlier_report_is_read_again_under_todays_knowledge_base(tmp_path: Path) -> None:
    import subprocess
    import sys

    def check(key: str, area: str, evidence: str) -> dict:
        return {"key": f"suites/test_{area}.py::{key}", "area": area, "outcome": "failed", "evidence": evidence}

    report = {"target": {"vllm_version": "0.26.0"}, "checks": [
        check("test_decompression_bomb_is_refused_quickly", "robustness",
              "    def test_x():\n>       assert 400 <= ex.status < 500\n"
              "E       AssertionError: a bomb must be refused\n"
              "E           status: 500 after 0.01 s\nE           answer: could be decompression bomb DOS attack."),
        check("test_decompression_bomb_is_refused_quickly", "robustness",  # same check, other evidence
              "E       AssertionError: a bomb must be refused\nE           status: 502 after 0.01 s"),
        check("test_launch_does_not_open_the_whole_disk", "security",
              "Failed: finding media-path-root: the server was launched with ... /"),
        {"key": "tests/test_x.py::test_mine", "area": None, "outcome": "failed", "evidence": "x"}]}
    rows = known.rematch(report, known.load())
    assert [v for *_, v in rows] == ["vllm-decompression-bomb-500", "unexplained",
                                     "deployment finding media-path-root (waive with --glmv-waive media-path-root)"]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, "-m", "pytest_glmv.known", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "1 known upstream, 1 findings of the deployment, 1 unexplained" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "pytest_glmv.known", str(tmp_path / "none.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "none.json" in bad.stderr
    (tmp_path / "list.json").write_text("[1, 2]")
    odd = subprocess.run([sys.executable, "-m", "pytest_glmv.known", str(tmp_path / "list.json")],
                         capture_output=True, text=True)
    assert odd.returncode == 2 and odd.stderr.count("\n") == 1 and "not a report.json" in odd.stderr


def test_one_entry_can_explain_several_checks(tmp_path: Path) -> None:
    kb = kb_of(tmp_path, ENTRY.replace('check = "robustness/thing_is_refused"',
                                       'check = ["robustness/thing_is_refused", "robustness/other_thing"]'))
    for finding in ("robustness/thing_is_refused", "robustness/other_thing"):
        m = kb.match(finding, BOOM, "vllm", "0.26.0")
        assert m is not None and m.record()["finding"] == finding
    assert kb.match("robustness/third", BOOM, "vllm", "0.26.0") is None


def test_a_regression_is_not_counted_as_known(pytester: pytest.Pytester) -> None:
    # The reference reports 0.32.0; forced calls not enforced is known for 0.28-0.30, fixed in 0.31.0.
    result = pytester.runpytest_subprocess(str(SUITES / "test_tools.py"), "--glmv-server", "reference",
                                           "--glmv-fault", "forced-call-not-enforced", "-k", "required_returns",
                                           "--glmv-known-findings", "xfail")
    result.assert_outcomes(failed=1)  # xfail policy or not, a regression fails
    result.stdout.fnmatch_lines(["*REGRESSION of known vLLM fault vllm-forced-tool-call-not-enforced*",
                                 "glmv verdict: FAIL: 1 failed (1 regression of known faults, 0 unexplained)*"])
    result.stdout.re_match_lines([r"tools +server-level +0 +1 +0 +0 +0 +"])
