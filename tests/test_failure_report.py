"""A failing suite check reads like a short bug report by default (issue 24 item 4): its own message (no pytest
assertion rewriting of internal objects), what was sent and what came back, the known upstream entry and its
remedy, the server log lines of that check only, the finding id; -v and --tb=long keep pytest's whole report."""
from __future__ import annotations

import json
import re

import pytest

from pytest_glmv import failure

CHECK = '''
import dataclasses
import httpx
import pytest

@dataclasses.dataclass
class Exchange:
    status: int
    text: str

@pytest.mark.robustness
def test_bomb_is_a_4xx():
    ex = Exchange(500, "x" * 2000)
    assert ex.status < 500, "a decompression bomb must be refused with a 4xx\\n  status: 500 after 0.10 s"

@pytest.mark.robustness
def test_trickle_times_out():
    try:
        raise httpx.ReadTimeout("timed out")
    except httpx.ReadTimeout as e:
        raise httpx.ReadTimeout("timed out") from e
'''


def test_the_default_report_is_short_and_has_no_rewrite_or_chain(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checks=CHECK)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_checks.py")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    body = out.split("= FAILURES =")[1].split("\n", 1)[1].split("\n=")[0]  # up to the next section
    blocks = [b for b in body.split("\n_") if b.strip()]  # each failure opens with pytest's ____ title ____
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) <= 15 for b in blocks), body
    assert "robustness/bomb_is_a_4xx: a decompression bomb must be refused with a 4xx" in body
    assert "status: 500 after 0.10 s" in body
    assert "where" not in body and "Exchange(" not in body and "assert 500 < 500" not in body
    assert "robustness/trickle_times_out: ReadTimeout: timed out" in body
    assert "direct cause" not in body and body.count("timed out") == 1
    # what reads the failure as text keeps pytest's full report: JUnit XML (the proof runner finds the assertion
    # that fired by its location) and report.json's evidence
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_checks.py", "--junitxml=junit.xml",
                                  "--glmv-report", "out")
    xml = (pytester.path / "junit.xml").read_text()
    assert re.search(r"test_checks.py:\d+: AssertionError", xml) and "direct cause" in xml
    checks = json.loads((pytester.path / "out" / "report.json").read_text())["checks"]
    assert any("assert 500 < 500" in (c.get("evidence") or "") for c in checks), checks
    # asked for: pytest's whole report
    long = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=long", "test_checks.py").stdout.str()
    assert "Exchange(" in long and "direct cause" in long


def test_render_fits_a_full_failure_in_15_lines() -> None:
    ev = {"exchange": {"method": "POST", "path": "/v1/chat/completions", "request": '{"model": "m"}' * 40,
                       "status": 500, "error_type": "InternalServerError", "error_message": "boom " * 100,
                       "elapsed_s": 0.5, "response": "{}"},
          "exchanges": 3, "notes": {"exited_after_s": None}, "log": [f"line {i}" for i in range(20)]}
    known = {"id": "vllm-x", "reference": "vllm#1 (issue)", "summary": "a 500", "remedy": "do this",
             "regression": False}
    text = failure.render("robustness/x", "a 4xx expected\nassert 500 < 500\n +  where 500 = Exchange(...)", ev,
                          known, None)
    lines = text.splitlines()
    assert len(lines) <= 15, text
    assert all(len(line) <= 240 for line in lines), text
    assert lines[0] == "robustness/x: a 4xx expected"
    assert "500 InternalServerError after 0.50 s: boom" in text and "known:    vllm-x (vllm#1 (issue))" in text
    assert "remedy:   do this" in text and "line 19" in text and "line 15" not in text  # the last few log lines
    assert "Exchange" not in text
