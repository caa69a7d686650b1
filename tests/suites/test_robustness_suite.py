"""suites/test_robustness.py proven on the reference server: passes when right, each fault caught by name.

Fault runs select only the checks a fault targets (-k) and cap requests at 8 s
(--glmv-request-timeout), so a wedged server costs seconds, not minutes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_glmv.matrix import SuiteRun, run_suite

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_robustness.py")
# fault -> checks that must fail on it
CAUGHT: dict[str, set[str]] = {
    "bad-image-500": {"test_undecodable_image_is_a_400[garbage]"},
    "engine-dead-after-bad-image": {"test_undecodable_image_is_a_400[garbage]"},
    "bomb-500": {"test_decompression_bomb_is_refused_quickly"},
    "no-image-limit": {"test_more_images_than_the_limit_is_a_400"},
    "video-frames-unbounded": {"test_video_with_thousands_of_frames_is_bounded"},
    "n-unbounded": {"test_huge_n_is_a_quick_400_and_health_stays_fast"},
    "header-unbounded": {"test_huge_header_or_body_is_refused[header]"},
    "tool-schema-500": {"test_malformed_tool_schema_is_refused[bad-pattern]",
                        "test_malformed_tool_schema_is_refused[bad-type]"},
    "validation-500": {"test_malformed_body_is_refused[json-array]", "test_malformed_body_is_refused[invalid-utf8]",
                       "test_malformed_body_is_refused[lone-surrogate]", "test_logprobs_out_of_range_is_a_400[21]",
                       "test_huge_header_or_body_is_refused[body]"},
    "streams-never-freed": {"test_streams_left_midway_are_freed"},
    "no-fetch-timeout": {"test_slow_or_huge_media_url_fails_in_time[trickle]"},
    "sigterm-drops-requests": {"test_sigterm_under_load_is_clean"},
    "orphan-worker": {"test_sigterm_under_load_is_clean"},
}
# The machine is small: faults whose checks never meet share a run. Within a run each selected check is
# targeted by exactly one of its faults, and every one of these checks passes on the correct server.
RUNS: list[tuple[str, ...]] = [
    ("bad-image-500",),  # wedges the server: alone
    ("engine-dead-after-bad-image", "orphan-worker"),  # orphan-worker only touches the SIGTERM check's own server
    ("bomb-500", "no-image-limit", "video-frames-unbounded", "header-unbounded", "tool-schema-500"),
    ("n-unbounded", "streams-never-freed", "no-fetch-timeout"),  # the slow ones: seconds of waiting each
    ("validation-500", "sigterm-drops-requests"),
]
assert sorted(f for run in RUNS for f in run) == sorted(CAUGHT)


def _run(faults: tuple[str, ...] | None) -> SuiteRun:
    extra = ["-m", "not slo", "--glmv-request-timeout", "8"]
    if faults:
        checks = set().union(*(CAUGHT[f] for f in faults))
        extra += ["-k", " or ".join(sorted({c.split("[")[0] for c in checks}))]
        for f in faults[1:]:
            extra += ["--glmv-fault", f]
    return run_suite([SUITE], fault=faults[0] if faults else None, extra=extra, timeout=300)


@pytest.fixture(scope="module")
def runs() -> dict[str | None, SuiteRun]:
    # Three at a time: most runs wait on sleeps, timeouts and their reference server.
    keys: list[tuple[str, ...] | None] = [None, *RUNS]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = dict(zip(keys, pool.map(_run, keys), strict=True))
    out: dict[str | None, SuiteRun] = {None: done[None]}
    for faults in RUNS:
        out.update({f: done[faults] for f in faults})
    return out


def test_correct_server_passes_every_check(runs: dict[str | None, SuiteRun]) -> None:
    run = runs[None]
    assert not run.failed, f"checks fail on the correct reference server: {sorted(run.failed)}\n{run.output[-3000:]}"
    assert len(run.passed) >= 30 and not run.named("skipped"), f"{run.outcomes}\n{run.output[-2000:]}"


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught(fault: str, runs: dict[str | None, SuiteRun]) -> None:
    run = runs[fault]
    missed = CAUGHT[fault] - run.failed
    assert not missed, (f"fault {fault} was not caught by {sorted(missed)}; failed: {sorted(run.failed)}\n"
                        f"{run.output[-3000:]}")


def test_engine_dead_is_caught_by_the_canary_not_the_status(runs: dict[str | None, SuiteRun]) -> None:
    """The bad image itself still gets its 400: only the canary after it can tell the engine died."""
    msg = runs["engine-dead-after-bad-image"].messages.get("test_undecodable_image_is_a_400[garbage]", "")
    assert "canary" in msg, msg[-2000:]
