"""report.json holds what the run did: the reference server with --glmv-fault no-reasoning-parser."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from pytest_glmv.suiterun import read_junit

from .conftest import Run


def test_every_check_is_in_the_json_with_the_outcome_junit_gives(runs: dict[str, Run]) -> None:
    run = runs["fault"]
    junit_outcomes, _ = read_junit(run.junit)
    report = {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in run.report["checks"]}
    assert report == junit_outcomes, f"report.json and junit disagree:\n{report}\n{junit_outcomes}"
    assert run.report["exitstatus"] == run.rc == 1, run.output[-2000:]
    failed = sum(1 for o in junit_outcomes.values() if o == "failed")
    assert run.report["summary"]["outcomes"]["failed"] == failed == 3, run.report["summary"]


def test_failure_evidence_area_and_target(runs: dict[str, Run]) -> None:
    rep = runs["fault"].report
    c = runs["fault"].check("test_no_think_tags_in_output")
    assert c["outcome"] == "failed" and c["phase"] == "call" and c["area"] == "reasoning" and not c["behavior"]
    # The evidence is the assertion with the server's answer: the think tags left in content.
    assert "thinking on, content holds ['<think>', '</think>']" in c["evidence"], c["evidence"]
    # ... and what the server did, as the contract between helpers shapes it (report.json's "server_evidence")
    ev = c["server_evidence"]
    assert ev["message"] == "thinking on, content holds ['<think>', '</think>']", ev
    ex = ev["exchange"]
    assert (ex["method"], ex["path"], ex["status"]) == ("POST", "/v1/chat/completions", 200), ex
    assert '"content": "<think>' in ex["response"] and "17 + 25" in ex["request"], ex
    assert c["duration"] >= 0 and c["id"] == "reasoning/no_think_tags_in_output"
    assert c["key"] == "suites/test_reasoning.py::test_no_think_tags_in_output"  # legacy, for older readers
    t = rep["target"]
    assert t["faults"] == ["no-reasoning-parser"] and t["target"] == "reference", t
    assert t["model"] == "glmv-reference" and t["profile"] == "glm-4.5v-fp8" and t["vllm_version"], t
    assert t["base_url"].startswith("http://127.0.0.1:"), t
    # No field carried reasoning: the suite says "none", and so does the report.
    assert t["reasoning_field"] == "none", t
    assert runs["correct"].report["target"]["reasoning_field"] == "reasoning"
    env = rep["environment"]
    for key in ("python", "platform", "plugin_version", "pytest_version", "started", "finished"):
        assert env.get(key), f"environment lacks {key}: {env}"
    assert "--glmv-fault" in env["args"]


def test_matrix_counts_by_area_and_kind(runs: dict[str, Run]) -> None:
    rows = {(r["area"], r["kind"]): r for r in runs["fault"].report["summary"]["matrix"]}
    assert set(rows) == {("reasoning", "server"), ("slo", "server")}, rows
    reasoning = rows[("reasoning", "server")]
    assert reasoning["failed"] == 3 and reasoning["passed"] + reasoning["failed"] == reasoning["total"], reasoning
    assert runs["fault"].report["summary"]["deselected"] >= 1  # the behaviour checks left out with -m
    out = runs["fault"].output
    assert "glmv conformance matrix" in out and "reasoning field none" in out, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("reasoning ") and "server-level" in ln)
    cells = line.split()[2:]  # passed failed skipped xfailed known wall-seconds verdict
    assert cells[:5] + cells[6:] == ["7", "3", "0", "0", "0", "FAIL"], line


def test_slo_results_statistics_and_measured_values(runs: dict[str, Run]) -> None:
    run = runs["fault"]
    (slo,) = run.report["slo"]
    res = slo["result"]
    assert slo["scenario"] == "small" and res["completed"] == 8 and res["failed"] == 0, res
    assert slo["params"]["num_prompts"] == 8 and slo["params"]["max_concurrency"] == 4
    assert slo["statistics"]["ttft"]["mean"] == res["mean_ttft_ms"] and "p99" in slo["statistics"]["itl"]
    verdict = {t["key"]: t for t in slo["thresholds"]}
    assert verdict["mean_ttft_ms"]["passed"] and verdict["mean_ttft_ms"]["limit"] == 60000
    dist = slo["distributions"]
    assert dist["cdf_ms"]["ttft"]["n"] == 8 and len(dist["cdf_ms"]["ttft"]["quantiles"]) == 201
    assert sum(dist["histogram_ms"]["ttft"]["counts"]) == 8
    assert round(sum(dist["timeline"]["output_tokens"])) == res["total_output_tokens"], dist["timeline"]
    # The measured value a check records (record_property) is the run's own value.
    props = run.check("test_slo[small-mean_ttft_ms]")["properties"]
    assert props == {"mean_ttft_ms": res["mean_ttft_ms"], "mean_ttft_ms_limit": 60000.0}, props


def test_junit_carries_measured_values_as_properties(runs: dict[str, Run]) -> None:
    props: dict[str, dict[str, str]] = {}
    for case in ET.parse(runs["correct"].junit).getroot().iter("testcase"):
        props[case.get("name", "")] = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
    slo = props["test_slo[small-mean_ttft_ms]"]
    assert float(slo["mean_ttft_ms"]) > 0 and slo["mean_ttft_ms_limit"] == "60000.0", slo
    assert float(props["test_slo[small-output_throughput]"]["output_throughput"]) > 1
    # every check carries its stable id, which the JUnit nodeid (rootdir-dependent) does not give
    assert props["test_reasoning_field_name"] == {"glmv_reasoning_field": "reasoning",
                                                  "glmv_id": "reasoning/reasoning_field_name"}
    assert props["test_slo[small-mean_ttft_ms]"]["glmv_id"] == "slo/slo[small-mean_ttft_ms]"
