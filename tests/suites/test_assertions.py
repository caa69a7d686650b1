"""What the proof table's "every assertion fires" test stands on: the assertion sites of a suites module
(pytest_glmv.assertions) and which of them a failure's JUnit text shows fired; and the logprobs bound that
robustness/logprobs_out_of_range_is_a_400 reads from the launch."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_glmv.assertions import fired, sites_of, suite_sites
from pytest_glmv.kit.hardening import max_logprobs
from pytest_glmv.matrix import SUITES_DIR

MODULE = '''
import pytest
from pytest_glmv.kit.hardening import Finding, canary, report


def test_a(http, n):
    ex = http.get("/x")
    assert ex.status == 400, (f"a {n} thing must be refused "
                              f"with 400\\n{ex.evidence()}")
    assert ex.elapsed < 5, f"refusing took {ex.elapsed:.1f} s"
    canary(http)


def test_b(settings):
    report(Finding("media-held", "held"), settings.waive)
    report(Finding(settings.fid, "dynamic"), settings.waive)
    pytest.fail("no answer")
'''


def test_sites_are_keyed_by_what_they_say(tmp_path: Path) -> None:
    path = tmp_path / "test_demo.py"
    path.write_text(MODULE)
    sites = {s.key: s for s in sites_of(path)}
    assert set(sites) == {
        "test_demo.py::test_a: a {n} thing must be refused with 400",
        "test_demo.py::test_a: refusing took {ex.elapsed} s",
        "test_demo.py::test_b: finding media-held", "test_demo.py::test_b: finding",
        "test_demo.py::test_b: no answer"}
    first = sites["test_demo.py::test_a: a {n} thing must be refused with 400"]
    assert (first.line, first.end) == (8, 9)  # the whole statement: a traceback may name either line
    assert first.words == ("thing must be refused with 400",)  # what a proof row can require


def test_the_innermost_line_tells_which_assertion_fired(tmp_path: Path) -> None:
    path = tmp_path / "test_demo.py"
    path.write_text(MODULE)
    sites = sites_of(path)
    junit = "AssertionError: refusing took 6.1 s\n...\n\n/x/suites/test_demo.py:10: AssertionError"
    assert fired(sites, "test_a[big]", junit) == {"test_demo.py::test_a: refusing took {ex.elapsed} s"}
    # the canary (the kit's assertion) fired, called from line 11 of the check: no suites site fired
    canary = "/x/suites/test_demo.py:11: \n_ _ _\n\n/x/pytest_glmv/kit/hardening.py:52: AssertionError"
    assert fired(sites, "test_a", canary) == set()


def test_a_finding_is_known_by_its_id_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "test_demo.py"
    path.write_text(MODULE)
    sites = sites_of(path)
    held = fired(sites, "test_b", "finding media-held: held\n  remedy: ...")
    assert held == {"test_demo.py::test_b: finding media-held"}
    assert fired(sites, "test_b", "finding open-x: dynamic") == {"test_demo.py::test_b: finding"}


def test_the_shipped_suites_have_sites_with_distinct_keys() -> None:
    sites = suite_sites(SUITES_DIR)
    keys = [s.key for s in sites]
    assert len(sites) > 100 and len(keys) == len(set(keys))


@pytest.mark.parametrize("argv,bound,says", [
    (["vllm", "serve", "m"], 20, "vLLM's default is 20"),
    (["vllm", "serve", "m", "--max-logprobs", "5"], 5, "--max-logprobs 5"),
    (["vllm", "serve", "m", "--max-logprobs=-1"], None, "the whole vocabulary"),
    (["vllm", "serve", "m", "--max-logprobs", "many"], None, "no number"),
])
def test_the_logprobs_bound_comes_from_the_launch(argv: list[str], bound: int | None, says: str) -> None:
    got, source = max_logprobs(SimpleNamespace(plan=SimpleNamespace(argv=argv), server=None))
    assert got == bound and says in source


def test_an_attached_server_has_no_known_logprobs_bound() -> None:
    got, source = max_logprobs(SimpleNamespace(plan=None, server=SimpleNamespace()))
    assert got is None and "not launched by this session" in source
