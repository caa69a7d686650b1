"""A verdict only when the client kept up: a run whose client released requests late (p99 send lag) or left
freed concurrency slots unused (p99 slot lag) beyond --glmv-slo-max-send-lag-ms fails every threshold as
'run not valid' instead of passing or failing the server."""
from __future__ import annotations

import time
from typing import Any

import pytest

from pytest_glmv.slo import client, metrics, promcheck, report, runner, spec
from pytest_glmv.slo.metrics import Record, client_fell_behind
from pytest_glmv.slo.selection import Check


def record(i: int, send_lag: float = 0.0, slot_lag: float = 0.0) -> Record:
    return Record(i, start=float(i), ok=True, ttft=0.05, latency=0.5, itl=[0.01] * 9, output_tokens=10,
                  send_lag=send_lag, slot_lag=slot_lag)


def outcome(records: list[Record], bound_ms: float = 10.0) -> runner.Outcome:
    sc = spec.parse({"mean_ttft_ms": 1000, "completed": 1}, "spec.toml").scenarios[0]
    result: dict[str, Any] = {**metrics.compute(records, 100.0), "run_not_valid": None}
    result["run_not_valid"] = client_fell_behind(result, bound_ms)
    return runner.Outcome(sc, runner.Params(max_send_lag_ms=bound_ms), result, records,
                          promcheck.CrossCheck(False, note="none"), report.block(result))


def test_a_client_that_kept_up_gets_verdicts() -> None:
    o = outcome([record(i, send_lag=0.002) for i in range(100)])
    assert o.result["run_not_valid"] is None
    assert all(o.judge(t)[0] for t in o.scenario.thresholds)
    Check(o).check()


def test_late_releases_make_every_threshold_fail_as_not_valid() -> None:
    recs = [record(i, send_lag=0.030 if i % 10 == 0 else 0.0) for i in range(100)]  # p99 30 ms
    o = outcome(recs)
    for t in o.scenario.thresholds:
        ok, msg = o.judge(t)
        first = msg.splitlines()[0]
        assert not ok and first.startswith("run not valid: the client fell behind (p99 send lag 30.00 ms > 10 ms)")
        assert "(measured anyway: " + t.key in msg  # the value is still shown, but judged nothing
        assert "--glmv-slo-max-send-lag-ms" in first
    assert "RUN NOT VALID: the client fell behind" in o.block
    try:
        Check(o).check()
    except AssertionError as e:
        assert str(e).startswith("run not valid") and str(e).count("run not valid") == 1
    else:
        raise AssertionError("a user's slo check passed on a run whose client fell behind")
    # the bound is the user's: with 50 ms allowed the same run is judged
    assert outcome(recs, bound_ms=50.0).result["run_not_valid"] is None


def test_at_an_infinite_rate_send_lag_is_task_creation_not_lateness() -> None:
    result = {"request_rate": "inf", "p99_send_lag_ms": 25.0, "p99_slot_lag_ms": 0.05}
    assert client_fell_behind(result, 10.0) is None
    assert "p99 slot lag 12.00 ms" in (client_fell_behind({**result, "p99_slot_lag_ms": 12.0}, 10.0) or "")
    assert client_fell_behind({**result, "request_rate": 20.0}, 10.0) is not None


def test_an_unused_freed_slot_counts_as_falling_behind() -> None:
    o = outcome([record(i, slot_lag=0.015 if i % 5 == 0 else 0.0) for i in range(100)])
    assert o.result["p99_slot_lag_ms"] > 10 and "p99 slot lag 15.00 ms > 10 ms" in o.result["run_not_valid"]


def test_the_client_measures_its_slot_lag_under_a_concurrency_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.slo.test_client import USAGE, chunk, run, streamer

    out = run(streamer([(0.002, chunk("a")), (0, USAGE)]), 6, max_concurrency=1)
    queued = [r for r in out.records if r.queue_time > 0.001]
    assert len(queued) >= 4 and all(0 < r.slot_lag < 0.005 for r in queued)  # the loop starts the next at once
    assert out.records[0].slot_lag == 0.0  # it never waited

    # a client that is slow to start the next request once a slot frees shows it as slot lag
    real = client.send

    async def late(pool: Any, request: bytes, rec: Record, timeout: float | None = None, awake: Any = None) -> None:
        time.sleep(0.02)  # blocks the loop, as a busy client would
        await real(pool, request, rec, timeout, awake)

    monkeypatch.setattr(client, "send", late)
    out = run(streamer([(0.002, chunk("a")), (0, USAGE)]), 4, max_concurrency=1)
    assert min(r.slot_lag for r in out.records[1:]) > 0.015
