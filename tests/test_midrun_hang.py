"""A server that hangs mid-run (issue 23 item 7): the canary passed at the start, then from its 21st chat request on
inference never answers while /health says 200. With the default timeouts (600 s a request, 60 s the canary)
each check would wait out its request; the run must instead say once that the server hangs and fail every
remaining check that needs it at once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_glmv.lifecycle import liveness

SUITES = Path(__file__).resolve().parents[1] / "suites"
REASON = "glmv: the server answers /health but a 1-token chat request got no answer in 60 s"


def test_a_server_that_hangs_after_20_chats_ends_the_run_within_3_minutes(pytester: pytest.Pytester) -> None:
    began = time.monotonic()
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-server", "reference", "--glmv-fault",
                                           "hang-after-20", "-p", "no:cacheprovider", timeout=240)
    took = time.monotonic() - began
    out = result.stdout.str()
    assert took < 180, f"the run took {took:.0f} s\n{out[-3000:]}"
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 5, outcomes  # checks ran and passed before the hang
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) >= 100, outcomes  # and the rest failed at once
    said = [line for line in out.splitlines() if line.startswith(REASON)]
    assert len(said) == 1, said  # the run says so once ...
    assert out.count(REASON.removeprefix("glmv: ")) >= 100  # ... and each failed check carries the reason
    assert "glmv verdict: FAIL" in out


def test_a_lost_request_is_found_in_the_failure_or_the_journal() -> None:
    import httpx

    try:
        try:
            raise httpx.ReadTimeout("timed out")
        except httpx.ReadTimeout as e:
            raise AssertionError("no answer") from e
    except AssertionError as e:
        chained = e
    assert liveness.lost_request(chained) == "ReadTimeout"
    assert liveness.lost_request(ValueError("x"), ["ConnectError"]) == "ConnectError"
    assert liveness.lost_request(AssertionError("500 is not a 400"), [None, ""]) is None


def test_the_stall_watch_fails_a_blocked_check_with_the_reason() -> None:
    """A check blocked in a socket read is interrupted once the probe finds the server hung."""
    import socket

    found: list[str] = []
    watch = liveness.StallWatch(lambda: "engine stuck", found.append, after=0.3)
    a, b = socket.socketpair()
    began = time.monotonic()
    try:
        watch.start()
        with pytest.raises(pytest.fail.Exception, match="glmv: engine stuck"):
            a.settimeout(10)
            a.recv(1)  # blocks: nothing is ever sent
    finally:
        watch.stop()
        a.close()
        b.close()
    assert time.monotonic() - began < 3
    assert found == ["engine stuck"]


def test_the_stall_watch_leaves_a_check_alone_while_the_server_answers() -> None:
    calls: list[int] = []
    watch = liveness.StallWatch(lambda: calls.append(1) or None, lambda r: None, after=0.1)
    watch.start()
    time.sleep(0.5)
    watch.stop()
    n = len(calls)
    assert n >= 2  # probed again while the check kept running
    time.sleep(0.3)
    assert len(calls) == n  # and never after it ended
