"""suites/test_reasoning.py proven on the reference server: passes when right, each fault caught by name.

One suite run per case (a reference server each, about 2 s). The legacy-field cases attach to a reference
server started with `--reasoning-field reasoning_content`: launched by the plugin, the reference server takes
its field name from --glmv-reasoning-field, so "expects the current name, gets the legacy one" needs attach.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from pytest_glmv.matrix import SuiteRun, run_suite
from pytest_glmv.reference.launcher import ReferenceServer

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_reasoning.py")
MARKS = ["-m", "not slo"]  # behaviour checks too: the reference "model" answers the suite's questions
SERVER_LEVEL = {"test_reasoning_in_its_own_field", "test_reasoning_field_name", "test_thinking_off_gives_direct_answer",
                "test_no_think_tags_in_output", "test_box_tokens_stay_out_of_reasoning",
                "test_streamed_reasoning_matches_non_streamed", "test_tool_call_after_reasoning_is_a_tool_call",
                "test_streamed_tool_call_after_reasoning_is_a_tool_call",
                "test_history_reasoning_is_accepted[reasoning]",
                "test_history_reasoning_is_accepted[reasoning_content]"}
BEHAVIOUR = {"test_stepwise_question_is_reasoned", "test_thinking_off_answer_is_shorter",
             "test_reasoning_then_tool_call"}
# Each fault and the checks that must fail on it (others may fail too), and checks it must leave alone.
CAUGHT = {
    "no-reasoning-parser": {"test_reasoning_in_its_own_field", "test_reasoning_field_name",
                            "test_no_think_tags_in_output"},
    "thinking-toggle-ignored": {"test_thinking_off_gives_direct_answer", "test_thinking_off_answer_is_shorter"},
    "reasoning-streamed-as-content": {"test_streamed_reasoning_matches_non_streamed"},
    "box-tokens-leak": {"test_box_tokens_stay_out_of_reasoning"},
    "no-tool-parser": {"test_tool_call_after_reasoning_is_a_tool_call",
                       "test_streamed_tool_call_after_reasoning_is_a_tool_call"},
    "tool-call-in-reasoning": {"test_tool_call_after_reasoning_is_a_tool_call",
                               "test_streamed_tool_call_after_reasoning_is_a_tool_call"},
    "history-reasoning-content-dropped": {"test_history_reasoning_is_accepted[reasoning_content]"},
}
UNTOUCHED = {
    "reasoning-streamed-as-content": {"test_reasoning_in_its_own_field", "test_thinking_off_gives_direct_answer"},
    "thinking-toggle-ignored": {"test_reasoning_in_its_own_field", "test_streamed_reasoning_matches_non_streamed"},
    "history-reasoning-content-dropped": {"test_history_reasoning_is_accepted[reasoning]"},
}


def _attached(base_url: str, expect: str) -> SuiteRun:
    """The suite attached to a legacy-field server we started, told which field name to expect."""
    run = run_suite([SUITE], extra=[*MARKS, "-rw"], target=["--glmv-base-url", base_url, "--glmv-reasoning-field",
                                                             expect])
    run.fault = f"legacy server, expect {expect}"
    return run


LEGACY_EXPECTS = ("auto", "reasoning", "reasoning_content")


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[SuiteRun]]]:
    """Every suite run of this module, started at once: each is mostly waiting on pytest and server start-up."""
    with ReferenceServer(reasoning_field="reasoning_content") as legacy, ThreadPoolExecutor(4) as pool:
        jobs = {"correct": pool.submit(run_suite, [SUITE], None, MARKS),
                "glm-4.1v-thinking": pool.submit(run_suite, [SUITE], None, [*MARKS, "--glmv-profile",
                                                                             "glm-4.1v-thinking"])}
        jobs.update({fault: pool.submit(run_suite, [SUITE], fault, MARKS) for fault in CAUGHT})
        jobs.update({f"legacy/{e}": pool.submit(_attached, legacy.base_url, e) for e in LEGACY_EXPECTS})
        yield jobs
        for job in jobs.values():
            job.cancel()


def test_correct_server_passes_every_check(runs: dict[str, Future[SuiteRun]]) -> None:
    run = runs["correct"].result()
    assert not run.failed, f"checks fail on the correct reference server: {sorted(run.failed)}\n{run.output[-3000:]}"
    missing = (SERVER_LEVEL | BEHAVIOUR) - run.passed
    assert not missing, f"checks did not run and pass: {sorted(missing)}\n{run.outcomes}"
    assert "reasoning field: `reasoning` (" in run.output, f"the field name is not reported\n{run.output[-2000:]}"


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught(runs: dict[str, Future[SuiteRun]], fault: str) -> None:
    run = runs[fault].result()
    why = run.unproven(fault, CAUGHT[fault], UNTOUCHED.get(fault, set()))
    assert not why, why


def test_thinking_model_always_reasons(runs: dict[str, Future[SuiteRun]]) -> None:
    run = runs["glm-4.1v-thinking"].result()
    assert not run.failed, f"{sorted(run.failed)}\n{run.output[-3000:]}"
    assert "test_thinking_model_always_reasons" in run.passed, run.outcomes
    assert run.outcomes.get("test_thinking_off_gives_direct_answer") == "skipped", run.outcomes


def test_legacy_server_fails_when_the_current_name_is_expected(runs: dict[str, Future[SuiteRun]]) -> None:
    run = runs["legacy/reasoning"].result()
    assert run.failed == {"test_reasoning_field_name"}, f"{sorted(run.failed)}\n{run.output[-3000:]}"
    assert "says clients read `reasoning`" in run.messages["test_reasoning_field_name"], run.messages


@pytest.mark.parametrize("expect", ["auto", "reasoning_content"])
def test_legacy_server_passes_and_is_reported(runs: dict[str, Future[SuiteRun]], expect: str) -> None:
    run = runs[f"legacy/{expect}"].result()
    assert not run.failed, f"{sorted(run.failed)}\n{run.output[-3000:]}"
    assert "reasoning field: `reasoning_content` ONLY" in run.output, run.output[-2000:]
    # with auto the user said nothing, so the legacy-only server gets a warning as well
    assert ("LegacyReasoningField" in run.output) == (expect == "auto"), run.output[-2000:]
