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
    "aspect-500": {"test_odd_image_never_a_5xx[1x10000]"},  # the multimodal suite's fault, caught here too
    "rgba-500": {"test_odd_image_never_a_5xx[rgba]"},  # likewise
    "mode-500": {"test_odd_image_never_a_5xx[cmyk]", "test_odd_image_never_a_5xx[16-bit]",
                 "test_odd_image_never_a_5xx[animated]"},
    "tiny-500": {"test_odd_image_never_a_5xx[1x1]", "test_odd_image_never_a_5xx[1x10000]"},
    "batch-poisoned": {"test_concurrent_images_with_malformed_ones"},
    "bomb-decoded": {"test_decompression_bomb_is_refused_quickly"},
}
# The machine is small: faults whose checks never meet share a run. Within a run each selected check is
# targeted by exactly one of its faults, and every one of these checks passes on the correct server.
RUNS: list[tuple[str, ...]] = [
    ("bad-image-500",),  # wedges the server: alone
    ("engine-dead-after-bad-image", "orphan-worker"),  # orphan-worker only touches the SIGTERM check's own server
    ("bomb-500", "no-image-limit", "video-frames-unbounded", "header-unbounded", "tool-schema-500",
     "aspect-500", "rgba-500", "mode-500"),
    ("n-unbounded", "streams-never-freed", "no-fetch-timeout"),  # the slow ones: seconds of waiting each
    ("validation-500", "sigterm-drops-requests", "tiny-500", "batch-poisoned", "bomb-decoded"),
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
    why = run.unproven(fault, CAUGHT[fault])
    assert not why, why


ODD = "test_odd_image_never_a_5xx"
# fault -> checks its run selects that it must NOT break (sibling cases above all): a fault that fails
# everything would otherwise pass for caught
_OTHER_ODD = {f"{ODD}[{k}]" for k in ("rgba", "cmyk", "16-bit", "animated")}
SPARED: dict[str, set[str]] = {
    "aspect-500": {f"{ODD}[1x1]"}, "rgba-500": {f"{ODD}[1x1]"}, "mode-500": {f"{ODD}[1x1]"},
    "tiny-500": _OTHER_ODD,
    "batch-poisoned": _OTHER_ODD,  # one image at a time is still served
    "bomb-decoded": _OTHER_ODD,
}


@pytest.mark.parametrize("fault", sorted(SPARED))
def test_a_fault_spares_the_checks_it_does_not_target(fault: str, runs: dict[str | None, SuiteRun]) -> None:
    run = runs[fault]
    broken = SPARED[fault] - run.passed
    assert not broken, f"fault {fault} also broke {sorted(broken)}: {run.outcomes}"


def test_bomb_decoded_is_caught_by_the_memory_not_the_status(runs: dict[str | None, SuiteRun]) -> None:
    """bomb-decoded still answers a 4xx: only the server's RSS growth tells (the reference is a launched child)."""
    msg = runs["bomb-decoded"].messages.get("test_decompression_bomb_is_refused_quickly", "")
    assert "memory grew" in msg, msg[-2000:]


def test_engine_dead_is_caught_by_the_canary_not_the_status(runs: dict[str | None, SuiteRun]) -> None:
    """The bad image itself still gets its 400: only the canary after it can tell the engine died."""
    msg = runs["engine-dead-after-bad-image"].messages.get("test_undecodable_image_is_a_400[garbage]", "")
    assert "canary" in msg, msg[-2000:]
