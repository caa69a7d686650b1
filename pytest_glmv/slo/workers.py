"""Past one core: the load generator's schedule, drawn once, released by several worker processes.

One asyncio loop in one process releases requests on time up to some rate (PER_WORKER_RATE, measured
with benchmarks/slo_workers.py); above it the loop itself is late, and send lag grows. Workers, as AIPerf and
GuideLLM have them, spread the releases and the stream parsing over processes, with these rules:

- One schedule, drawn once by the parent exactly as the one-process run draws it (schedule.arrivals with the
  run's seed), and split round-robin by request index: worker k of w gets requests k, k+w, k+2w, ... with
  their absolute due offsets. Never one seed per worker (GuideLLM seeds every worker alike, so their gaps
  repeat): the union of the shares is the one-process schedule, offset for offset.
- One clock: every worker is spawned, has imported everything, built its pool and pre-encoded its requests
  and frozen gc before it says "ready"; only then does the parent take the common start (perf_counter, which
  on Linux is CLOCK_MONOTONIC, one clock for every process) a little ahead (LEAD) and hand it to all. Spawn
  and import time are never billed as send lag. Connections are opened by the first requests, as in the
  one-process run and in vllm bench serve (no ready check by default), so timings mean the same thing.
- max_concurrency holds globally: it is split into per-worker limits that sum to it (worker k gets
  c // w, plus one for the first c % w workers; never more workers than c). The split is static, so a request
  may wait for its own worker's slot while another worker has one free: that wait shows as client queue time,
  never as more requests in flight than asked for. Slot lag stays each worker's own (a freed slot of its own
  left unused), which is what the validity rule asks about.
- Records come back with their schedule index and are merged in index order; metrics.compute runs on the
  merged list as on one process's; duration runs from the common start to the last worker's end; client CPU
  seconds are the workers' sum.

The 'spawn' context, since the pytest process may have threads (fork would copy held locks). A worker ignores
Ctrl-C (the parent gets it and kills every worker); once running it watches its pipe, and anything there (the
parent stopping it, or the pipe's end when the parent died) ends it at once, so no worker outlives its run. A
worker that dies is seen through its process sentinel and becomes one-line WorkerError, never a hang.
"""
from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Sequence

from . import client

# The rate one worker is given: a worker spent 2.5-4.2 ms of CPU per 128-token stream (benchmarks/slo_workers.py,
# docs/slo.md), so 200 req/s keeps it at 50-85 % of a core, with some room to release requests on time.
PER_WORKER_RATE = 200.0
LEAD = 0.1  # seconds from handing out the start to the start: every worker must be waiting for it by then
READY_TIMEOUT = 120.0  # a spawned worker imports numpy and aiohttp; a loaded host makes that slow
AUTO = "auto"


class WorkerError(Exception):
    """A worker failed to start, crashed or answered nothing; the message is one line."""


@dataclass(frozen=True)
class Share:
    indices: list[int]  # request indices in the one schedule (increasing)
    slots: int | None  # this worker's part of max_concurrency


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto(rate: float, cpu_count: int | None = None) -> int:
    """The 'auto' rule: one worker per PER_WORKER_RATE req/s of the configured rate (rounded up), at most one
    per CPU this process may run on; one at an infinite rate (everything is due at once, the concurrency
    limit paces the run) and whenever the rate fits one worker, so such runs stay the one-process run."""
    if math.isinf(rate):
        return 1
    return max(1, min(math.ceil(rate / PER_WORKER_RATE), cpu_count or cpus()))


def resolve(workers: int | str, rate: float, n: int, max_concurrency: int | None) -> int:
    """The number of workers that will run: 'auto' by the rate, never more than requests or slots."""
    want = auto(rate) if workers == AUTO else int(workers)
    return max(1, min(want, n, max_concurrency or n))


def plan(n: int, workers: int, max_concurrency: int | None) -> list[Share]:
    """Round-robin by index: every request in exactly one share; the slots sum to max_concurrency."""
    w = resolve(workers, math.inf, n, max_concurrency)
    shares = []
    for k in range(w):
        slots = None if max_concurrency is None else max_concurrency // w + (1 if k < max_concurrency % w else 0)
        shares.append(Share(list(range(k, n, w)), slots))
    return shares


def merge(outputs: Sequence[client.RunOutput], start: float, n: int) -> client.RunOutput:
    """One RunOutput from the workers': records in index order (each index exactly once), duration from the
    common start to the last worker's end, CPU seconds summed."""
    records = sorted((r for o in outputs for r in o.records), key=lambda r: r.index)
    if [r.index for r in records] != list(range(n)):
        raise WorkerError(f"glmv: SLO client workers returned {len(records)} records for {n} requests")
    end = max(o.started + o.duration for o in outputs)
    return client.RunOutput(records, end - start, sum(o.cpu_seconds for o in outputs), None, started=start,
                            stamps=(sum(o.stamps[0] for o in outputs), sum(o.stamps[1] for o in outputs)))


def run(url: str, bodies: Sequence[bytes], schedule: Sequence[float], *, workers: int = 1,
        max_concurrency: int | None = None, api_key: str | None = None, timeout: float = 600.0,
        metrics_url: str | None = None, awake: bool = False) -> client.RunOutput:
    """client.run over `workers` processes (one: in this process, as before). Raises WorkerError."""
    shares = plan(len(bodies), workers, max_concurrency)
    if len(shares) == 1:
        return asyncio.run(client.run(url, bodies, schedule, max_concurrency=max_concurrency, api_key=api_key,
                                      timeout=timeout, metrics_url=metrics_url, awake=awake))
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    conns: list[Connection] = []
    try:
        for k, share in enumerate(shares):
            mine, theirs = ctx.Pipe()
            args = (theirs, url, [bodies[i] for i in share.indices], [schedule[i] for i in share.indices],
                    share.indices, share.slots, api_key, timeout, awake)
            proc = ctx.Process(target=_worker, args=args, name=f"glmv-slo-worker-{k}", daemon=True)
            proc.start()
            theirs.close()  # only the worker holds its end: its death closes the pipe
            procs.append(proc)
            conns.append(mine)
        _collect(conns, procs, "ready", time.monotonic() + READY_TIMEOUT)
        before = asyncio.run(_scrape(metrics_url, api_key))
        start = time.perf_counter() + LEAD
        for conn in conns:
            conn.send(start)
        # generous: every request of the longest share one after another at its full timeout; crashes show sooner
        longest = max(math.ceil(len(s.indices) / (s.slots or len(s.indices))) for s in shares)
        outs = _collect(conns, procs, "done", time.monotonic() + LEAD + schedule[-1] + longest * timeout + 60)
        after = asyncio.run(_scrape(metrics_url, api_key))
    finally:
        for proc in procs:  # on success they have exited; on Ctrl-C or an error, none may outlive the run
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        for conn in conns:
            conn.close()
    out = merge(outs, start, len(bodies))
    out.metrics_before, out.metrics_after = before, after
    return out


def _collect(conns: list[Connection], procs: list[Any], what: str, deadline: float) -> list[Any]:
    """Each worker's next message, in worker order; a worker that dies or errs first is a WorkerError."""
    got: dict[int, Any] = {}
    while len(got) < len(conns):
        waiting: dict[Any, int] = {}
        for k in range(len(conns)):
            if k not in got:
                waiting[conns[k]] = waiting[procs[k].sentinel] = k
        ready = wait(list(waiting), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            late = ", ".join(str(k) for k in range(len(conns)) if k not in got)
            raise WorkerError(f"glmv: SLO client worker(s) {late} sent no '{what}' in time; stopped them")
        for k in sorted({waiting[r] for r in ready}):
            if not conns[k].poll():  # only its sentinel: it exited without a word
                procs[k].join(1)
                raise WorkerError(f"glmv: SLO client worker {k} died (exit code {procs[k].exitcode}) before "
                                  f"'{what}'")
            try:
                kind, value = conns[k].recv()
            except EOFError:
                raise WorkerError(f"glmv: SLO client worker {k} closed its pipe before '{what}'") from None
            if kind == "error":
                raise WorkerError(f"glmv: SLO client worker {k} failed: {value}")
            got[k] = value
    return [got[k] for k in range(len(conns))]


async def _scrape(url: str | None, api_key: str | None) -> str | None:
    """The parent's /metrics scrapes, right before the start and after the last worker, as client.run's."""
    if not url:
        return None
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await client._scrape(session, url, headers)


def _worker(conn: Connection, url: str, bodies: list[bytes], times: list[float], indices: list[int],
            slots: int | None, api_key: str | None, timeout: float, awake: bool) -> None:
    """A worker process: its share through client.run, started by the parent's clock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it kills us

    async def clock() -> float:
        conn.send(("ready", os.getpid()))
        start = conn.recv()  # blocking is fine: nothing is in flight yet
        # From here on the parent sends nothing: anything readable is a stop, or EOF because it died.
        asyncio.get_running_loop().add_reader(conn.fileno(), os._exit, 3)
        return float(start)

    try:
        out = asyncio.run(client.run(url, bodies, times, max_concurrency=slots, api_key=api_key, timeout=timeout,
                                     awake=awake, indices=indices, clock=clock))
        conn.send(("done", out))
    except BaseException as e:  # noqa: B036 - whatever it is, the parent gets one line, not a hang
        try:
            conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0][:300]))
        except OSError:
            pass  # the parent is gone
