"""suites/test_multimodal*.py proven on the reference server: passes when right, each fault caught by name.

One suite run per case, all started at once (each is mostly pytest and server start-up). Fault runs are
narrowed with -k to the checks that must catch the fault plus a few it must leave alone. The remote cases
attach to a reference server on a non-loopback address, the way a remote vLLM is judged: without
--glmv-media-host / --glmv-remote-media-path the http and file:// checks skip with the reason; with them
they run.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from pytest_glmv.kit import media
from pytest_glmv.matrix import SuiteRun, _parse_junit, run_suite
from pytest_glmv.reference.launcher import ReferenceServer

ROOT = Path(__file__).resolve().parents[2] / "suites"
SUITES = [str(ROOT / "test_multimodal.py"), str(ROOT / "test_multimodal_behavior.py")]
# behaviour checks too (the reference "model" answers the suite's questions); a short request timeout so a
# fault that wedges the server costs seconds, not minutes
MARKS = ["-m", "not slo", "--glmv-request-timeout", "10"]
SERVER_LEVEL = {
    "test_image_by_data_url_reaches_the_processor", "test_image_by_http_url", "test_image_by_file_url",
    "test_file_url_outside_the_allowed_path_is_refused", "test_4k_image", "test_image_tokens_follow_the_processor_rule",
    "test_prompt_tokens_grow_with_image_count_and_size", "test_images_across_turns",
    "test_more_images_than_the_limit_is_a_400", "test_video_frames_reach_the_processor",
    "test_more_videos_than_the_limit_is_a_400", "test_streamed_text_equals_non_streamed",
    "test_undecodable_image_is_a_400_and_the_server_survives",
    *(f"test_image_format_is_accepted[{f}]" for f in ("PNG", "JPEG", "WEBP", "GIF", "RGBA", "L", "P")),
    *(f"test_extreme_shape_never_5xx[{s}]" for s in ("1x1", "1x10000", "10000x1")),
}
BEHAVIOUR = {"test_names_the_colour_of_a_shape", "test_counts_the_shapes", "test_tells_which_image_shows_a_colour",
             "test_reads_a_rendered_word", "test_grounding_box_overlaps_the_truth",
             "test_gif_is_read_by_its_first_frame", "test_no_grounding_box_unless_asked"}
# fault -> (-k expression, checks that must fail, checks that must still pass)
CAUGHT: dict[str, tuple[str, set[str], set[str]]] = {
    "images-ignored": ("data_url or follow_the_processor or names_the_colour or counts",
                       {"test_image_by_data_url_reaches_the_processor", "test_image_tokens_follow_the_processor_rule",
                        "test_names_the_colour_of_a_shape", "test_counts_the_shapes"}, set()),
    "bad-image-500": ("undecodable or data_url", {"test_undecodable_image_is_a_400_and_the_server_survives"},
                      {"test_image_by_data_url_reaches_the_processor"}),
    "file-anywhere": ("file_url", {"test_file_url_outside_the_allowed_path_is_refused"}, {"test_image_by_file_url"}),
    "box-tokens-leak": ("box", {"test_no_grounding_box_unless_asked"}, {"test_grounding_box_overlaps_the_truth"}),
    "box-tokens-stripped": ("box", {"test_grounding_box_overlaps_the_truth"}, {"test_no_grounding_box_unless_asked"}),
    "only-first-image": ("grow or across or data_url", {"test_prompt_tokens_grow_with_image_count_and_size",
                                                        "test_images_across_turns"},
                         {"test_image_by_data_url_reaches_the_processor"}),
    "image-tokens-unmerged": ("follow_the_processor or across or grow",
                              {"test_image_tokens_follow_the_processor_rule", "test_images_across_turns"},
                              {"test_prompt_tokens_grow_with_image_count_and_size"}),
    "aspect-500": ("extreme", {"test_extreme_shape_never_5xx[1x10000]", "test_extreme_shape_never_5xx[10000x1]"},
                   {"test_extreme_shape_never_5xx[1x1]"}),
    "rgba-500": ("format", {"test_image_format_is_accepted[RGBA]"}, {"test_image_format_is_accepted[PNG]"}),
}
# Also caught (see benchmarks/multimodal_matrix.txt), proven by the suites that own them: no-image-limit,
# engine-dead-after-bad-image, reasoning-streamed-as-content.


def _public_ip() -> str | None:
    """An address of this machine that is not loopback (a "remote" server to the plugin), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def _attached(base_url: str, extra: list[str]) -> SuiteRun:
    """run_suite, but attached to a server we started (run_suite always launches its own)."""
    with tempfile.TemporaryDirectory(prefix="glmv-mm-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", SUITES[0], "--glmv-base-url", base_url, "-p", "no:cacheprovider",
                "-q", "-rs", f"--junitxml={junit}", "-o", "junit_family=xunit2", *MARKS, *extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLMV_")}
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=300, env=env, check=False)
        outcomes, messages = _parse_junit(junit) if junit.exists() else ({}, {})
    return SuiteRun(base_url, proc.returncode, outcomes, messages, proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Future[SuiteRun]]]:
    ip = _public_ip()
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(4))
        jobs = {"correct": pool.submit(run_suite, SUITES, None, MARKS)}
        jobs.update({f: pool.submit(run_suite, SUITES, f, [*MARKS, "-k", k]) for f, (k, _, _) in CAUGHT.items()})
        if ip is not None:
            allowed = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glmv-remote-media-")))
            image = allowed / "square.png"
            image.write_bytes(media.encode(media.square("red", 224).render()))
            remote = stack.enter_context(ReferenceServer(host="0.0.0.0", allowed_local_media_path=allowed,
                                                         allowed_media_domains=[ip]))
            url = f"http://{ip}:{urlsplit(remote.root_url).port}/v1"
            jobs["remote/bare"] = pool.submit(_attached, url, ["-k", "http_url or file_url"])
            jobs["remote/named"] = pool.submit(_attached, url, ["-k", "http_url or file_url", "--glmv-media-host", ip,
                                                                "--glmv-remote-media-path", str(image)])
        for job in jobs.values():
            job.exception()  # wait: the remote server must outlive its runs
        yield jobs


def test_correct_server_passes_every_check(runs: dict[str, Future[SuiteRun]]) -> None:
    run = runs["correct"].result()
    assert not run.failed, f"checks fail on the correct reference server: {sorted(run.failed)}\n{run.output[-3000:]}"
    missing = (SERVER_LEVEL | BEHAVIOUR) - run.passed
    assert not missing, f"checks did not run and pass: {sorted(missing)}\n{run.outcomes}"


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught(runs: dict[str, Future[SuiteRun]], fault: str) -> None:
    run = runs[fault].result()
    _, must_fail, must_pass = CAUGHT[fault]
    why = run.unproven(fault, must_fail, must_pass)
    assert not why, why
    for name in must_fail:  # the evidence: what was sent, the status, the answer's start
        assert "request: POST" in run.messages[name] and "status:" in run.messages[name], run.messages[name]


def test_remote_server_without_media_options_skips_with_reasons(runs: dict[str, Future[SuiteRun]]) -> None:
    if "remote/bare" not in runs:
        pytest.skip("this machine has no non-loopback address to play a remote server on")
    run = runs["remote/bare"].result()
    expected = {"test_image_by_http_url", "test_image_by_file_url", "test_file_url_outside_the_allowed_path_is_refused"}
    assert run.named("skipped") == expected, f"{run.outcomes}\n{run.output[-3000:]}"
    for reason in ("--glmv-media-host", "--glmv-remote-media-path", "allowed path is unknown"):
        assert reason in run.output, f"skip reason naming {reason} missing\n{run.output[-3000:]}"


def test_remote_server_with_media_options_is_checked(runs: dict[str, Future[SuiteRun]]) -> None:
    if "remote/named" not in runs:
        pytest.skip("this machine has no non-loopback address to play a remote server on")
    run = runs["remote/named"].result()
    assert {"test_image_by_http_url", "test_image_by_file_url"} <= run.passed, f"{run.outcomes}\n{run.output[-3000:]}"
    assert not run.failed, f"{sorted(run.failed)}\n{run.output[-3000:]}"
