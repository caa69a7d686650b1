"""The load generator over worker processes (pytest_glmv/slo/workers.py): one schedule split, records merged
into what one process would have produced, the concurrency limit held across workers, workers that never
outlive their run, and the --glmv-slo-workers option. Time bounds are coarse: the host is shared."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web

from pytest_glmv.lifecycle import config as cfg
from pytest_glmv.slo import client, metrics, runner, schedule, spec, workers
from pytest_glmv.slo.metrics import Record

ROOT = Path(__file__).resolve().parents[2]
TOKEN = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n'


class Server:
    """An SSE server in a thread of this process that counts the requests in flight at once."""

    def __init__(self, hold: float = 0.05) -> None:
        self.hold, self.now, self.peak, self.seen = hold, 0, 0, 0
        self.url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.now += 1
        self.seen += 1
        self.peak = max(self.peak, self.now)
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for _ in range(4):
                await asyncio.sleep(self.hold / 4)
                await resp.write(TOKEN)
            await resp.write(USAGE)
            await resp.write_eof()
            return resp
        finally:
            self.now -= 1

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
            self._ready.set()
        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


# -- the split ---------------------------------------------------------------------------------------
def test_the_split_covers_every_request_once_with_the_one_process_offsets() -> None:
    n = 1001
    times = schedule.arrivals(n, 400.0, 1.0, 7)
    shares = workers.plan(n, 3, None)
    assert [s.indices[:3] for s in shares] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # round-robin by index
    assert sorted(i for s in shares for i in s.indices) == list(range(n))
    # what each worker is given is the one schedule's offsets for its indices: nothing is redrawn per worker
    merged = sorted((i, times[i]) for s in shares for i in s.indices)
    assert [t for _, t in merged] == times
    assert workers.plan(3, 8, None) == [workers.Share([0], None), workers.Share([1], None), workers.Share([2], None)]


def test_max_concurrency_is_split_into_limits_that_sum_to_it() -> None:
    assert [s.slots for s in workers.plan(100, 3, 7)] == [3, 2, 2]
    assert [s.slots for s in workers.plan(100, 4, 2)] == [1, 1]  # never a worker without a slot
    assert [s.slots for s in workers.plan(100, 2, None)] == [None, None]
    for n, w, c in ((50, 2, 5), (50, 4, 64), (9, 3, 1)):
        assert sum(s.slots or 0 for s in workers.plan(n, w, c)) == c


def test_auto_is_one_worker_until_the_measured_rate_then_one_more_per_step_up_to_the_cpus() -> None:
    per = workers.PER_WORKER_RATE
    assert workers.auto(float("inf"), 8) == 1
    assert workers.auto(per, 8) == 1
    assert workers.auto(per + 1, 8) == 2
    assert workers.auto(5 * per, 8) == 5
    assert workers.auto(5 * per, 2) == 2
    assert workers.resolve("auto", 10 * per, 1, None) == 1  # never more than requests
    assert workers.resolve(4, 1.0, 100, 2) == 2


# -- the merge ---------------------------------------------------------------------------------------
def records(n: int, t0: float) -> list[Record]:
    out = []
    for i in range(n):
        start = t0 + 0.01 * i + 0.0003 * (i % 7)
        out.append(Record(i, scheduled=0.01 * i, dispatched=start - 0.0001, start=start, ok=i % 11 != 5,
                          error="" if i % 11 != 5 else "HTTP 500", ttft=0.02 + 0.001 * (i % 5),
                          latency=0.2 + 0.01 * (i % 3), itl=[0.01 + 0.0001 * k for k in range(6)],
                          output_tokens=7, prompt_tokens=11, chunks=7, send_lag=0.0001 * (i % 13),
                          queue_time=0.001 * (i % 4), slot_lag=0.00005 * (i % 9)))
    return out


def test_the_merge_keeps_indices_and_reproduces_compute_for_the_same_records() -> None:
    t0, n = 1000.0, 60
    one = records(n, t0)
    end = max(r.start + r.latency for r in one) + 0.001
    shares = workers.plan(n, 2, None)
    outs = [client.RunOutput([one[i] for i in s.indices], end - 0.05 * k - t0, 0.5, None, started=t0)
            for k, s in enumerate(shares)]
    merged = workers.merge(outs, t0, n)
    assert [r.index for r in merged.records] == list(range(n))
    assert merged.records == one and merged.duration == pytest.approx(end - t0) and merged.cpu_seconds == 1.0
    pct = (50, 90, 99)
    assert metrics.compute(merged.records, merged.duration, pct, {"ttft": 22}) == metrics.compute(
        one, end - t0, pct, {"ttft": 22})  # send lag, slot lag and queue time included


def test_a_merge_missing_or_repeating_a_request_is_refused() -> None:
    one = records(4, 0.0)
    with pytest.raises(workers.WorkerError, match="3 records for 4 requests"):
        workers.merge([client.RunOutput(one[:3], 1.0, 0.0, None)], 0.0, 4)
    with pytest.raises(workers.WorkerError, match="5 records for 4 requests"):
        workers.merge([client.RunOutput(one + one[:1], 1.0, 0.0, None)], 0.0, 4)


# -- real worker processes ---------------------------------------------------------------------------
def test_the_concurrency_limit_holds_across_workers(server: Server) -> None:
    n = 24
    out = workers.run(server.url, [b"{}"] * n, [0.0] * n, workers=2, max_concurrency=3)
    assert [r.index for r in out.records] == list(range(n)) and all(r.ok for r in out.records)
    assert server.seen == n and server.peak <= 3
    b = metrics.buckets(out.records)
    assert b is not None and int(b.at_once.max()) <= 3  # the client's own view agrees
    assert sum(1 for r in out.records if r.queue_time > 0) >= n - 3  # the rest waited for a slot


def test_two_workers_release_the_one_schedule_against_a_common_start(server: Server) -> None:
    n = 40
    times = schedule.arrivals(n, 100.0, 1.0, 3)
    t_call = time.perf_counter()
    out = workers.run(server.url, [b"{}"] * n, times, workers=2)
    assert [(r.index, r.scheduled) for r in out.records] == list(enumerate(times))
    assert out.started > t_call  # the clock started after both workers were up, not at the call
    for r in out.records:  # every send lag is against the one start
        assert r.dispatched - (out.started + r.scheduled) == pytest.approx(r.send_lag, abs=1e-9)
    assert out.duration == pytest.approx(max(r.start + r.latency for r in out.records) - out.started, abs=0.05)


def spawned() -> set[int]:
    """This process's spawned workers (not multiprocessing's resource tracker, which stays by design)."""
    return {k.pid for k in psutil.Process().children() if "spawn_main" in " ".join(k.cmdline())}


def test_a_worker_that_fails_is_one_line_and_no_worker_is_left() -> None:
    before = spawned()
    with pytest.raises(workers.WorkerError) as info:
        workers.run("ftp://nowhere/v1/chat/completions", [b"{}"] * 4, [0.0] * 4, workers=2)
    assert re.fullmatch(r"glmv: SLO client worker [01] failed: ValueError: 'ftp://nowhere\S*': only http:// and "
                        r"https:// URLs are supported", str(info.value))  # whichever worker says so first
    assert spawned() <= before


def test_a_worker_that_dies_silently_is_named_not_waited_for() -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=os._exit, args=(7,))
    proc.start()
    theirs.close()
    t = time.monotonic()
    with pytest.raises(workers.WorkerError, match=r"worker 0 (died \(exit code 7\)|closed its pipe) before 'ready'"):
        workers._collect([mine], [proc], "ready", time.monotonic() + 60)
    assert time.monotonic() - t < 30
    proc.join(5)


PARENT = """
import sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {here!r})
from test_workers import Server
from pytest_glmv.slo import workers
if __name__ == "__main__":
    with Server() as s:
        # the second request of each worker is due in 100 s: only the stop can end them sooner
        workers.run(s.url, [b"{{}}"] * 4, [0.0, 0.0, 100.0, 100.0], workers=2)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "parent-killed"])
def test_no_worker_outlives_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(root=str(ROOT), here=str(Path(__file__).parent)))
    parent = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        kids: list[psutil.Process] = []
        while len(kids) < 2 and time.monotonic() < deadline:  # the two workers (spawn adds a tracker too)
            kids = [k for k in psutil.Process(parent.pid).children() if "spawn_main" in " ".join(k.cmdline())]
            time.sleep(0.2)
        assert len(kids) == 2
        time.sleep(3)  # past the start: both have sent their first request and sleep towards the second
        parent.send_signal(sig)
        parent.wait(30)
        gone, alive = psutil.wait_procs(kids, timeout=20)
        assert not alive, f"orphaned workers: {[k.pid for k in alive]}"
    finally:
        if parent.poll() is None:
            parent.kill()


# -- the option ----------------------------------------------------------------------------------------
def settings(**cli: str) -> cfg.Settings:
    return cfg.resolve(cli.get, lambda name: None, {})


def test_the_option_takes_auto_or_a_count() -> None:
    assert settings().slo_workers == "auto"
    assert settings(slo_workers="AUTO").slo_workers == "auto"
    assert settings(slo_workers="3").slo_workers == 3
    assert cfg.resolve(lambda n: None, lambda n: None, {"GLMV_SLO_WORKERS": "2"}).slo_workers == 2


@pytest.mark.parametrize("value, message", [
    ("0", "--glmv-slo-workers: 0 is out of range; it must be from 1 to 64"),
    ("65", "--glmv-slo-workers: 65 is out of range; it must be from 1 to 64"),
    ("two", "--glmv-slo-workers: 'two' is not a whole number or auto"),
    ("1.5", "--glmv-slo-workers: '1.5' is not a whole number or auto"),
])
def test_bad_worker_counts_are_one_line(value: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        settings(slo_workers=value)
    assert str(info.value) == message


def test_params_carry_the_count_and_say_it_when_above_one() -> None:
    sc = spec.parse({"mean_ttft_ms": 1000}, "spec.toml").scenarios[0]
    p = runner.params_for(settings(slo_workers="2"), sc)
    assert p.workers == 2 and p.describe().endswith(", 2 client worker processes")
    assert "worker" not in runner.params_for(settings(), sc).describe()  # auto, not yet resolved
    assert "worker" not in runner.Params(workers=1).describe()


# -- end to end ----------------------------------------------------------------------------------------
def test_two_workers_against_the_reference_server_complete_every_request(pytester: pytest.Pytester) -> None:
    toml = "num_prompts = 12\nrequest_rate = 40\n[slo]\nmean_ttft_ms = 5000\ncompleted = 12\nfailed = 0\n"
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(str(ROOT / "suites" / "test_slo.py"), "--glmv-server", "reference",
                                           "--glmv-slo", str(pytester.makefile(".toml", small=toml)),
                                           "--glmv-slo-workers", "2", "--glmv-slo-json", str(out),
                                           # this proves completion, not timing: a shared host may lag
                                           "--glmv-slo-max-send-lag-ms", "1000")
    result.stdout.fnmatch_lines(["Successful requests: * 12*", "Client worker processes: * 2*"])
    data = json.loads(out.read_text())
    assert (data["completed"], data["failed"], data["client_workers"]) == (12, 0, 2)
    result.assert_outcomes(passed=4)  # three thresholds and the /metrics cross-check


def test_run_scenario_with_two_workers_keeps_the_schedule() -> None:
    from pytest_glmv.reference.launcher import ReferenceServer

    sc = spec.parse({"mean_ttft_ms": 5000}, "spec.toml").scenarios[0]
    p = runner.Params(num_prompts=10, request_rate=50.0, seed=5, workers=2, dataset="random", random_input_len=8,
                      random_output_len=8)
    with ReferenceServer() as srv:
        o = runner.run_scenario(srv.root_url, srv.model, sc, p)
    assert o.result["completed"] == 10 and o.params.workers == 2 and o.result["client_workers"] == 2
    assert [(r.index, r.scheduled) for r in o.records] == list(enumerate(schedule.arrivals(10, 50.0, 1.0, 5)))
    assert "Client worker processes:" in o.block and o.result["client_cpu_s"] > 0
