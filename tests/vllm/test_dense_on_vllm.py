"""The dense layout (Glm4vForConditionalGeneration: GLM-4.6V-Flash, GLM-4.1V-Thinking) served for real.

`--glmv-model tiny-dense` launches real vLLM-CPU on the tiny dense model, as a user would. Under the
glm-4.6v-flash profile every server-level check runs; under glm-4.1v-thinking (a model that always thinks) the
reasoning and tool suites run, and the reasoning checks must hold for it. Failures that are known vLLM faults are
xfails from the shipped knowledge base, as in test_suites_on_vllm.py; anything else fails here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glmv.suiterun import SuiteRun, run_suite

from .tinyserver import require_vllm

SUITES = Path(__file__).resolve().parents[2] / "suites"

require_vllm()

CASES = {
    "glm-4.6v-flash": ([str(SUITES)], ["--glmv-api-key", "sk-glmv-ci", "--glmv-vllm-arg=--allowed-media-domains",
                                        "--glmv-vllm-arg=127.0.0.1", "-m", "not behavior and not slo"]),
    "glm-4.1v-thinking": ([str(SUITES / "test_reasoning.py"), str(SUITES / "test_tools.py")],
                          ["-m", "not behavior and not slo"]),
}


@pytest.fixture(scope="module", params=list(CASES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, SuiteRun]:
    profile = request.param
    paths, extra = CASES[profile]
    logs = tmp_path_factory.mktemp(f"dense-{profile}")
    target = ["--glmv-model", "tiny-dense", "--glmv-profile", profile, "--glmv-log-dir", str(logs),
              "--glmv-known-findings", "xfail", "--glmv-waive", "media-path-root"]
    # random weights, as the server-level checks and the knowledge base were established on (the shipped trained
    # weights write calls and boxes of their own: docs/tiny-vllm.md)
    result = run_suite(paths, target=target, extra=[*extra, "-p", "no:randomly"], cwd=SUITES.parent, timeout=2400,
                       env={"GLMV_TINY_WEIGHTS": "dummy"})
    summary = {o: len(result.named(o)) for o in ("passed", "failed", "error", "skipped", "xfailed")}
    print(f"\ndense tiny model on real vLLM-CPU, profile {profile}: {summary}")
    return profile, result


def test_the_dense_model_serves_and_every_failure_is_known(run: tuple[str, SuiteRun]) -> None:
    profile, result = run
    assert len(result.passed) >= 20, f"{profile}: too few checks passed (exit {result.returncode}):\n" \
                                     f"{result.output[-3000:]}"
    details = "\n\n".join(f"{name}:\n{result.messages.get(name, '')[:1500]}" for name in sorted(result.failed))
    assert not result.failed, f"{profile}: {len(result.failed)} check(s) failed, not known upstream:\n{details}"
    assert f"profile {profile}" in result.output


def test_reasoning_holds_for_the_model_that_always_thinks(run: tuple[str, SuiteRun]) -> None:
    profile, result = run
    core = {"test_reasoning_in_its_own_field", "test_no_think_tags_in_output",
            "test_streamed_reasoning_matches_non_streamed", "test_tool_call_after_reasoning_is_a_tool_call"}
    assert core <= result.passed, {n: result.outcomes.get(n, "did not run") for n in core}
    assert "reasoning field reasoning" in result.output, result.output[-2000:]
