"""SuiteRun.unproven: what every suite proof file asserts about a fault run."""
from __future__ import annotations

from pytest_glmv.matrix import SuiteRun


def run(**outcomes: str) -> SuiteRun:
    return SuiteRun(fault="f", returncode=1, outcomes=outcomes, output="...tail of the run")


def test_a_fault_caught_by_its_checks_and_sparing_the_rest_is_proven() -> None:
    r = run(test_a="failed", test_b="error", test_c="passed")
    assert r.unproven("f", {"test_a", "test_b"}, {"test_c"}) == ""


def test_a_check_that_passed_under_its_fault_is_named_with_the_evidence() -> None:
    why = run(test_a="passed", test_b="failed").unproven("f", {"test_a", "test_b"})
    assert "fault f was not caught by ['test_a']; failed: ['test_b']" in why and why.endswith("...tail of the run")


def test_an_unrelated_check_that_failed_or_never_ran_is_named() -> None:
    why = run(test_a="failed", test_c="failed").unproven("f", {"test_a"}, {"test_c", "test_d"})
    assert "fault f also failed unrelated checks ['test_c', 'test_d']" in why
