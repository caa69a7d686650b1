"""suites/test_tools.py proven on the reference server: passes when right, each fault caught by name.

One suite run per case (a reference server each, a few seconds), all started at once: each is mostly
waiting on pytest start-up and the server. The hypothesis check does not shrink, so a fault run costs the
same dozen requests as a correct one.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from pytest_glmv.matrix import SuiteRun, render, run_suite

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_tools.py")
MARKS = ["-m", "not slo"]  # behaviour checks too: the reference "model" answers the suite's questions
BEHAVIOUR = {"test_picks_the_right_tool", "test_two_questions_two_parallel_calls", "test_no_call_when_no_tool_fits",
             "test_tool_result_is_used_in_the_answer", "test_required_arguments_are_filled_verbatim",
             "test_tool_call_from_an_image"}
# Each fault and the checks that must fail on it (others may fail too) ...
CAUGHT = {
    "no-tool-parser": {"test_required_returns_valid_calls", "test_named_choice_calls_only_that_function",
                       "test_no_tool_markup_in_content", "test_zero_argument_tools[empty-properties]"},
    "no-auto-tool-choice": {"test_auto_tool_choice_is_enabled", "test_tool_results_are_accepted_and_answered",
                            "test_generated_tools_never_5xx_and_calls_validate"},
    "untyped-tool-args": {"test_argument_values_are_typed", "test_generated_tools_never_5xx_and_calls_validate"},
    "stream-tool-args-broken": {"test_streamed_calls_reassemble_to_the_answer", "test_unicode_and_whitespace_survive",
                                "test_streamed_forced_call_matches_non_streamed"},
    "tool-calls-finish-stop": {"test_auto_tool_choice_is_enabled", "test_required_returns_valid_calls"},
    "parallel-calls-collapsed": {"test_two_questions_two_parallel_calls"},
}
# ... and checks it must leave alone, so that a check fails for its own reason and not for any breakage.
UNTOUCHED = {
    "stream-tool-args-broken": {"test_required_returns_valid_calls", "test_argument_values_are_typed"},
    "tool-calls-finish-stop": {"test_named_choice_calls_only_that_function",
                               "test_streamed_calls_reassemble_to_the_answer"},
    "parallel-calls-collapsed": {"test_streamed_calls_reassemble_to_the_answer", "test_required_returns_valid_calls"},
    "untyped-tool-args": {"test_zero_argument_tools[empty-properties]", "test_unicode_and_whitespace_survive"},
    "no-auto-tool-choice": {"test_required_returns_valid_calls", "test_named_choice_calls_only_that_function"},
}


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[SuiteRun]]]:
    with ThreadPoolExecutor(4) as pool:
        jobs = {"correct": pool.submit(run_suite, [SUITE], None, MARKS),
                "glm-4.1v-thinking": pool.submit(run_suite, [SUITE], None, [*MARKS, "--glmv-profile",
                                                                             "glm-4.1v-thinking"])}
        jobs.update({fault: pool.submit(run_suite, [SUITE], fault, MARKS) for fault in CAUGHT})
        yield jobs
        for job in jobs.values():
            job.cancel()


@pytest.mark.parametrize("case", ["correct", "glm-4.1v-thinking"])
def test_suite_passes_on_the_correct_server(runs: dict[str, Future[SuiteRun]], case: str) -> None:
    run = runs[case].result()
    assert run.outcomes, run.output[-3000:]
    assert not run.failed, {name: run.messages.get(name, "")[:800] for name in run.failed}
    assert BEHAVIOUR <= run.passed, run.outcomes
    assert len(run.passed) >= 20, run.outcomes


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught_by_name(runs: dict[str, Future[SuiteRun]], fault: str) -> None:
    run = runs[fault].result()
    missed = CAUGHT[fault] - run.failed
    assert not missed, f"{fault} not caught by {sorted(missed)}\n{render(runs['correct'].result(), [run])}"
    spoiled = UNTOUCHED.get(fault, set()) & run.failed
    assert not spoiled, f"{fault} also broke {sorted(spoiled)}: " + str({n: run.messages[n][:400] for n in spoiled})


def test_auto_refusal_names_the_missing_flags(runs: dict[str, Future[SuiteRun]]) -> None:
    message = runs["no-auto-tool-choice"].result().messages["test_auto_tool_choice_is_enabled"]
    assert "--enable-auto-tool-choice --tool-call-parser glm45" in message, message
