"""The report's pure parts, without a server: comparison rules, escaping, trimming, keys."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_glmv.report import FORMAT, baseline, collect, html, terminal


def _check(key: str, outcome: str, **kw: Any) -> dict[str, Any]:
    return {"id": key, "nodeid": key, "key": key, "outcome": outcome, "area": "tools", "behavior": False,
            "phase": "call", "duration": 0.1, "reason": None, "evidence": None, "properties": {}, "sections": {}, **kw}


def _slo(**result: Any) -> dict[str, Any]:
    params = {"num_prompts": 8, "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 4,
              "dataset": "synthetic", "seed": 0, "max_tokens": 128}
    return {"scenario": "s", "params": params, "result": result}


@pytest.mark.parametrize("key, base, now, regressed", [
    ("mean_ttft_ms", 100.0, 110.0, False),  # exactly at the tolerance: allowed
    ("mean_ttft_ms", 100.0, 110.5, True),
    ("p99_itl_ms", 10.0, 5.0, False),  # better
    ("output_throughput", 1000.0, 900.0, False),
    ("output_throughput", 1000.0, 899.0, True),  # higher is better
    ("request_throughput", 10.0, 20.0, False),
    ("failed", 0, 1, True),  # any failure where there was none
    ("mean_tpot_ms", 0.0, 5.0, False),  # no samples in the baseline: nothing to compare
    ("p99_itl_ms", 0.3, 0.9, False),  # tripled, but by less than the 1 ms slack: jitter
    ("p99_itl_ms", 0.3, 1.4, True),
])
def test_direction_and_tolerance(key: str, base: float, now: float, regressed: bool) -> None:
    cmp = baseline.compare({"checks": [], "slo": [_slo(**{key: base})]}, [], [_slo(**{key: now})], 0.10,
                           slack_ms=1.0)
    assert bool(cmp["regressions"]) is regressed, cmp


def test_spread_and_client_side_metrics_are_not_gated() -> None:
    keys = {"std_ttft_ms": 1.0, "mean_send_lag_ms": 1.0, "p99_client_queue_time_ms": 1.0, "completed": 8}
    cmp = baseline.compare({"checks": [], "slo": [_slo(**keys)]}, [], [_slo(**{k: v * 100 for k, v in keys.items()})],
                           0.1)
    assert cmp["regressions"] == [] and cmp["compared_metrics"] == 0, cmp


def test_runs_with_other_parameters_are_noted_not_compared() -> None:
    now = _slo(mean_ttft_ms=1e6)
    now["params"] = {**now["params"], "num_prompts": 200}
    cmp = baseline.compare({"checks": [], "slo": [_slo(mean_ttft_ms=1.0)]}, [], [now], 0.1)
    assert cmp["regressions"] == [] and "num_prompts 8 then, 200 now" in cmp["notes"][0], cmp


def test_check_outcomes() -> None:
    base = {"checks": [_check("a", "passed"), _check("b", "passed"), _check("c", "failed"), _check("d", "passed"),
                       _check("e", "passed")], "slo": []}
    now = [_check("a", "failed", evidence="x\nE       AssertionError: tool_calls missing\nmore"),
           _check("b", "skipped", reason="no media host"), _check("c", "failed"), _check("e", "error")]
    cmp = baseline.compare(base, now, [], 0.1)
    regs = {r["what"]: r for r in cmp["regressions"]}
    assert set(regs) == {"a", "e"}, regs  # c failed before too; b skipped and d not run are notes
    assert regs["a"]["detail"] == "AssertionError: tool_calls missing"
    assert any("b: passed in the baseline, skipped now (no media host)" in n for n in cmp["notes"]), cmp["notes"]
    assert any("1 check(s) that passed in the baseline did not run now" in n for n in cmp["notes"]), cmp["notes"]


def test_check_ids_do_not_depend_on_where_pytest_runs() -> None:
    for nodeid in ("suites/test_tools.py::test_a[x/y]", "test_tools.py::test_a[x/y]",
                   "../../site-packages/pytest_glmv/suites/test_tools.py::test_a[x/y]"):
        assert collect.check_id("tools", nodeid) == "tools/a[x/y]"
    assert collect.check_id(None, "tests/sub/test_y.py::TestK::t") == collect.check_id(None, "test_y.py::TestK::t") \
        == "test_y.py::TestK::t"
    # report.json written before ids: the id comes from the legacy key
    assert collect.id_of({"area": "tools", "key": "suites/test_tools.py::test_a[x/y]"}) == "tools/a[x/y]"
    assert collect.id_of({"id": "tools/b", "area": "tools", "key": "suites/test_tools.py::test_a"}) == "tools/b"


def test_an_old_baseline_is_compared_by_the_ids_of_its_keys() -> None:
    old = {"checks": [{"key": "suites/test_tools.py::test_a", "area": "tools", "outcome": "passed"}], "slo": []}
    assert baseline.compare(old, [_check("x", "passed", id="tools/a")], [], 0.1)["compared_checks"] == 1
    cmp = baseline.compare(old, [_check("test_tools.py::test_a", "failed", id="tools/a")], [], 0.1)
    assert [r["what"] for r in cmp["regressions"]] == ["tools/a"] and cmp["incomparable"] is None, cmp


def test_a_baseline_sharing_fewer_than_half_of_its_checks_fails_the_gate() -> None:
    base = {"checks": [_check(f"k{i}", "passed", id=f"tools/c{i}") for i in range(10)], "slo": []}
    half = [_check(f"k{i}", "passed", id=f"tools/c{i}") for i in range(5)]
    assert baseline.compare(base, half, [], 0.1)["incomparable"] is None
    cmp = baseline.compare(base, half[:4], [], 0.1)
    assert cmp["regressions"] == [] and cmp["incomparable"] == (
        "the baseline cannot judge this run: this run shares 4 of its 10 checks (fewer than half); run the "
        "baseline's selection and options, or record a new baseline"), cmp
    lines = terminal.regression_lines(cmp)
    assert lines[1].startswith("NOT COMPARABLE: ") and lines[1].endswith("; the run fails") and \
        "no regressions" not in lines, lines
    # an SLO baseline with no metric compared: the SLO side went unjudged
    cmp = baseline.compare({"checks": [], "slo": [_slo(mean_ttft_ms=5.0)]}, [], [], 0.1)
    assert "none of its 1 SLO metrics was compared" in (cmp["incomparable"] or ""), cmp


def test_trim_keeps_head_and_the_evidence_at_the_end() -> None:
    text = "HEAD" + "x" * 10000 + "E   AssertionError: the end"
    out = collect.trim(text, 600)
    assert out.startswith("HEAD") and out.endswith("the end") and "characters trimmed" in out and len(out) < 700


def _report(evidence: str) -> dict[str, Any]:
    checks = [_check("suites/test_tools.py::t", "failed", evidence=evidence, sections={"glmv log": "<b>x</b>"})]
    return {"format": FORMAT, "version": 1, "exitstatus": 1, "collection_errors": [], "slo": [], "baseline": None,
            "environment": {"python": "3.11", "args": ["--glmv-fault", "<x>"]},
            "target": {"model": "<img src=x onerror=alert(1)>", "base_url": "http://h/v1", "faults": []},
            "summary": {"outcomes": collect.counts(checks), "deselected": 0, "matrix": collect.matrix(checks)},
            "checks": checks}


def test_html_escapes_model_output_and_loads_nothing() -> None:
    page = html.render(_report('answer: "<script>alert(1)</script>" & <think>'))
    assert "<script" not in page and "<img src=x" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;think&gt;" in page
    # Self-contained: no external stylesheet, script, font or image.
    assert not re.search(r"<(link|script|iframe)\b", page) and not re.search(r"(src|href)=\"(?!data:)", page)
    assert 'id="glmv-matrix"' in page and ">FAIL<" in page


def _failed(cid: str, response: str = "", status: int = 200, error: str | None = None, **kw: Any) -> dict[str, Any]:
    ex = {"method": "POST", "path": "/v1/chat/completions", "request": '{"model": "m"}', "status": status,
          "error_type": "InternalServerError" if error else None, "error_message": error, "headers": {},
          "elapsed_s": 0.1, "response": response}
    return _check(cid, "failed", evidence="def test_x():\n>       assert 500 < 500\nE   AssertionError: raw",
                  server_evidence={"exchange": ex, "exchanges": 1, "log": [], "notes": {}, "message": f"{cid} says"},
                  **kw)


def test_findings_group_by_what_the_server_did_not_by_check_name() -> None:
    from pytest_glmv.report import findings

    checks = [_failed(f"tools/c{i}", '{"content": "<tool_call>get_weather\\n<arg_key>city"}') for i in range(3)]
    checks += [_failed("robustness/bomb", status=500, error="DecompressionBombError: Image size (1600000000 pixels)"),
               _failed("robustness/bomb2", status=500, error="DecompressionBombError: Image size (99 pixels)"),
               # a check named like a tools check, whose answer shows nothing of a tool parser: its own finding
               _failed("tools/no_tool_markup_in_content", '{"content": "Sunny."}'),
               _check("security/x", "failed", evidence="E   Failed: finding media-path-root: the launch allows /"),
               _check("tools/ok", "passed")]
    groups = findings.group(checks)
    assert [(g.kind, len(g.checks)) for g in groups] == [("cause", 3), ("server", 2), ("deployment", 1),
                                                         ("check", 1)], [(g.kind, g.title) for g in groups]
    assert groups[0].title.startswith("No tool parser") and "--tool-call-parser glm45" in groups[0].remedy
    assert groups[1].title == "The server answered status 500: DecompressionBombError: Image size (N pixels)"
    assert groups[2].title == "Finding of this deployment, media-path-root: the launch allows /"
    assert groups[3].title == "tools/no_tool_markup_in_content says"
    # no cause recognised, the same message: one finding (an invalid SLO run fails each of its thresholds)
    same = [_check(f"slo/s[{k}]", "failed", area="slo", server_evidence={"message": "run not valid: the client fell "
                                                                         "behind (p99 send lag 402.27 ms > 10 ms)"})
            for k in ("a", "b", "c")]
    (one,) = findings.group(same)
    assert len(one.checks) == 3 and one.title.startswith("run not valid")
    page = html.render({**_report(""), "checks": checks,
                        "summary": {"outcomes": collect.counts(checks), "deselected": 0,
                                    "matrix": collect.matrix(checks)}})
    assert "Findings (4, from 7 failed checks)" in page and "def test_x" not in page and "assert 500" not in page
    assert "Request</b> <code>POST /v1/chat/completions</code>" in page and "media-path-root" in page


def test_a_check_without_server_evidence_shows_its_message_not_the_traceback() -> None:
    from pytest_glmv.report import findings

    old = _check("tools/t", "failed", evidence="    def test_t(glmv_http):\n>       assert r.status_code < 500, r"
                 "\nE   AssertionError: 500 on a bomb\nE   assert 500 < 500"
                 "\nE    +  where 500 = Exchange(method='POST')")
    assert findings.message(old) == "AssertionError: 500 on a bomb"
    page = html.render({**_report(""), "checks": [old]})
    assert "500 on a bomb" in page and "Exchange(" not in page and "def test_t" not in page


def test_html_renders_an_slo_run_with_plots() -> None:
    rep = _report("E boom")
    q = [float(i) for i in range(201)]
    rep["slo"] = [{"scenario": "s", "params": {}, "result": {"completed": 3}, "statistics": {"ttft": {"mean": 1.0}},
                   "thresholds": [{"key": "mean_ttft_ms", "measured": 1.0, "limit": 2.0, "nominal": 2.0,
                                   "ceiling": True, "passed": True}],
                   "distributions": {"cdf_ms": {"ttft": {"n": 3, "quantiles": q}, "itl": {"n": 0, "quantiles": []}},
                                     "histogram_ms": {"ttft": {"edges": [0.0, 1.0, 2.0], "counts": [1, 2]}},
                                     "timeline": {"output_tokens": [5.0, 3.0], "in_flight": [2, 1]}}}]
    page = html.render(rep)
    assert page.count('src="data:image/png;base64,') == 3, "CDFs, histograms, throughput over time"


def test_the_ci_example_uses_only_options_that_exist() -> None:
    from pathlib import Path

    import yaml  # in the dev extra: this check must run, never skip

    from pytest_glmv.lifecycle.config import OPTIONS

    path = Path(__file__).resolve().parents[2] / "docs" / "github-actions-gate.yml"
    text = path.read_text(encoding="utf-8")
    steps = yaml.safe_load(text)["jobs"]["gate"]["steps"]
    assert any("upload-artifact" in s.get("uses", "") for s in steps), "the report must be uploaded"
    used = set(re.findall(r"--glmv-[a-z-]+", text))
    unknown = used - {o.flag for o in OPTIONS}
    assert not unknown and {"--glmv-base-url", "--glmv-report", "--glmv-baseline"} <= used, unknown


def test_any_test_with_an_area_marker_is_in_the_matrix(pytester: pytest.Pytester) -> None:
    """A user's own checks outside suites/ count by their markers; a run of unmarked tests gets no matrix."""
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.tools
        def test_a(record_property):
            record_property("calls", 3)

        @pytest.mark.security
        @pytest.mark.behavior
        def test_b():
            assert "<b>" == "", "model said <b>"

        @pytest.mark.security
        @pytest.mark.xfail(reason="waived", strict=True)
        def test_c():
            assert False

        def test_unmarked():
            pass
    """)
    result = pytester.runpytest_subprocess("--glmv-report", "out", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # passed failed skipped xfailed, then known upstream and wall seconds, then the verdict
    result.stdout.re_match_lines([r"multimodal +- +not run",
                                  r"tools +server-level +1 +0 +0 +0 +0 +[\d.]+ +ok",
                                  r"security +server-level +0 +0 +0 +1 +0 +[\d.]+ +ok",
                                  r" +behaviour +0 +1 +0 +0 +0 +[\d.]+ +FAIL"])
    rep = json.loads((pytester.path / "out" / "report.json").read_text())
    by_name = {c["nodeid"].split("::")[1]: c for c in rep["checks"]}
    assert by_name["test_a"]["properties"] == {"calls": 3} and by_name["test_unmarked"]["area"] is None
    assert by_name["test_b"]["behavior"] and "model said <b>" in by_name["test_b"]["evidence"]
    assert by_name["test_c"]["outcome"] == "xfailed" and by_name["test_c"]["reason"] == "waived"
    assert "&lt;b&gt;" in (pytester.path / "out" / "report.html").read_text()
    plain = pytester.runpytest_subprocess("-k", "unmarked", "-p", "no:cacheprovider")
    assert "glmv conformance matrix" not in plain.stdout.str()


def test_verdict_counts_deployment_findings_apart_from_upstream_and_unexplained() -> None:
    from pytest_glmv.report.recorder import Recorder

    def check(key: str, evidence: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"key": key, "area": "security", "outcome": "failed", "evidence": evidence, "known": known}

    rec = Recorder(settings=SimpleNamespace(baseline=None), is_worker=False)
    rec.result = {"written": [], "report": {
        "summary": {"matrix": [{"passed": 5, "failed": 3, "error": 0, "skipped": 1, "xfailed": 0, "xpassed": 0}]},
        "target": {"base_url": "http://h/v1", "target": "vllm", "vllm_version": "0.32.0"},
        "checks": [
            check("a", "E   Failed: finding media-path-root: the launch allows --allowed-local-media-path /"),
            check("b", "E   AssertionError: 500 on a decompression bomb", {"id": "x", "regression": False}),
            check("c", "E   AssertionError: something nobody knows"),
        ]}}
    assert rec.verdict() == ("glmv verdict: FAIL: 3 failed (1 known upstream, 1 finding of this deployment "
                             "(--glmv-waive ID), 1 unexplained), 5 passed, 1 skipped, 0 xfailed; "
                             "http://h/v1 (vllm, vLLM 0.32.0)")


@pytest.mark.parametrize("flag, value, says", [
    ("--glmv-report", "/proc/nope", "--glmv-report /proc/nope: cannot create a file in /proc"),
    ("--glmv-slo-json", "/proc/nope/slo.json", "--glmv-slo-json /proc/nope/slo.json: cannot create a file in /proc"),
    ("--glmv-report", "{file}/sub", "is not a directory, so nothing can be written there"),
    ("--glmv-slo-json", "{dir}", "is a directory; give a file name"),
])
def test_an_unwritable_output_is_a_usage_error_before_anything_starts(pytester: pytest.Pytester, flag: str,
                                                                     value: str, says: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    raise SystemExit('must not run')\n")
    afile = pytester.path / "afile"
    afile.write_text("x")
    value = value.format(file=afile, dir=pytester.path)
    result = pytester.runpytest_subprocess(flag, value, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [ln for ln in result.stderr.lines if ln.strip()]
    assert len(errors) == 1 and says in errors[0], errors


def test_a_report_that_cannot_be_written_at_the_end_fails_the_run(pytester: pytest.Pytester) -> None:
    # writable at the start; the test then puts a file where the folder was to be
    pytester.makepyfile(test_x="""
        import pytest

        @pytest.mark.tools
        def test_x():
            open("out", "w").write("in the way")
    """)
    result = pytester.runpytest_subprocess("--glmv-report", "out", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    lost = [ln for ln in result.stdout.lines if "FAILED to write the report" in ln]
    assert len(lost) == 1 and "the run fails" in lost[0], out
    assert "glmv verdict: FAIL: 0 failed, 1 passed" in out and "report not written" in out, out


def test_the_matrix_counts_only_a_single_unregressed_match_as_known() -> None:
    # an AMBIGUOUS match explains nothing (known.category counts it apart), and a regression is not "known" either
    def match(**kw: Any) -> dict[str, Any]:
        return {"id": "vllm-x", "regression": False, "ambiguous": [], **kw}

    checks = [_check("tools/a", "xfailed", known=match()),
              _check("tools/b", "failed", known=match(ambiguous=["vllm-y"])),
              _check("tools/c", "failed", known=match(regression=True)), _check("tools/d", "failed", known=None)]
    (row,) = collect.matrix(checks)
    assert row["known"] == 1 and row["failed"] == 3 and row["xfailed"] == 1
