"""suites/test_context.py proven on the reference server: passes when right, each fault caught by name."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_glmv.matrix import SuiteRun, run_suite

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_context.py")
# Each fault and the checks that must fail on it (a subset: others may fail too).
CAUGHT = {
    "small-window": {"test_prompt_filling_the_window_is_accepted", "test_needle_is_retrieved_near_the_window[50pct]"},
    "silent-truncation": {"test_prompt_one_token_over_is_rejected", "test_prompt_longer_than_the_window_is_rejected"},
    "images-ignored": {"test_images_count_against_the_window"},
    "overflow-500": {"test_prompt_longer_than_the_window_is_rejected"},
}


def _run(fault: str | None) -> SuiteRun:
    return run_suite([SUITE], fault=fault, extra=["-m", "not slo"])


@pytest.fixture(scope="module")
def runs() -> dict[str | None, SuiteRun]:
    # Two at a time: each run is mostly a subprocess waiting on its reference server.
    names: list[str | None] = [None, *sorted(CAUGHT)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(_run, names), strict=True))


def test_correct_server_passes_every_check(runs: dict[str | None, SuiteRun]) -> None:
    run = runs[None]
    assert not run.failed, f"checks fail on the correct reference server: {sorted(run.failed)}\n{run.output[-3000:]}"
    assert len(run.passed) == 10, f"expected all 10 context checks to pass: {run.outcomes}\n{run.output[-2000:]}"


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught(fault: str, runs: dict[str | None, SuiteRun]) -> None:
    run = runs[fault]
    why = run.unproven(fault, CAUGHT[fault])
    assert not why, why
    # A fault that breaks the window must not break checks it has nothing to do with.
    assert "test_models_reports_the_window" in run.passed, f"{fault}: {run.outcomes}"
