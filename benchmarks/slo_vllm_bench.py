"""`vllm bench serve`, kept resident: one process imports vLLM once and runs one benchmark per job.

Each `vllm bench serve` start costs 20-27 s of imports on the GPU machine (docs/gpu.md), more than most runs
of a sweep take, and device time is scarce. The resident process runs vLLM's own CLI entry point
(`vllm.entrypoints.cli.main.main()` with the job's argv, exactly what the `vllm` command runs) once per job,
after one import; every job builds its parser, dataset, tokenizer and aiohttp session afresh, as a new process
would. The CPU of the timed region is read inside the process as benchmarks/slo_clients.py's wrapper reads it:
from vllm.benchmarks.serve.benchmark()'s entry to calculate_metrics() (every request answered), so start-up
and imports are never in it, resident or not.

Jobs go in on stdin (one JSON line: argv, the CPU file); the process says "done" on a pipe of its own (vLLM
prints freely to stdout, which goes to the log). A job that overruns its timeout kills the process (the next
job starts a new one) and raises TimeoutError; a process that dies raises RuntimeError with the log's tail.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

from slo_clients import VLLM_CPU_MARK

RESIDENT = VLLM_CPU_MARK + r"""
done = os.fdopen(int(os.environ["GLMV_DONE_FD"]), "w")
done.write("ready\n"); done.flush()
for line in sys.stdin:
    job = json.loads(line)
    mark.clear()
    sys.argv = ["vllm"] + job["argv"]
    rc = 0
    try:
        main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        rc = 1
    sys.stdout.flush(); sys.stderr.flush()
    with open(job["cpu_out"], "w") as f:
        json.dump({"cpu_in_run": mark.get("t1", 0.0) - mark.get("t0", 0.0), "rc": rc}, f)
    done.write("done\n"); done.flush()
"""


class Resident:
    def __init__(self, python: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.python, self.log, self.env = python, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self._done: int | None = None
        self.ready = False
        self.import_s = 0.0  # how long the imports took (the start-up every fresh process would pay)

    def start(self) -> None:
        """Start importing in the background (e.g. while vLLM itself starts)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        r, w = os.pipe()
        env = {**(self.env or os.environ), "GLMV_DONE_FD": str(w)}
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([self.python, "-c", RESIDENT], stdin=subprocess.PIPE, stdout=f,
                                         stderr=subprocess.STDOUT, env=env, pass_fds=(w,), start_new_session=True)
        os.close(w)
        self._done, self.ready, self._t0 = r, False, time.monotonic()

    def _line(self, timeout: float) -> str:
        assert self.proc is not None and self._done is not None
        ready, _, _ = select.select([self._done], [], [], max(0.0, timeout))
        if not ready:
            self.close()
            raise TimeoutError(f"vllm bench serve gave no answer in {timeout:.0f} s (stopped it)")
        data = os.read(self._done, 64).decode()
        if not data:
            code = self.proc.wait(10)
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            self.close()
            raise RuntimeError(f"vllm bench serve exited {code}: " + " | ".join(tail)[-600:])
        return data.strip()

    def run(self, argv: list[str], cpu_out: Path, timeout: float) -> tuple[int, float]:
        """(exit status, CPU s of the timed region) of `vllm <argv>`; raises TimeoutError, RuntimeError."""
        self.start()
        if not self.ready:
            deadline = self._t0 + 300
            if self._line(deadline - time.monotonic()) != "ready":
                raise RuntimeError("vllm bench serve: no 'ready' from the resident process")
            self.ready, self.import_s = True, time.monotonic() - self._t0
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"argv": argv, "cpu_out": str(cpu_out)}) + "\n").encode())
        self.proc.stdin.flush()
        if self._line(timeout) != "done":
            raise RuntimeError("vllm bench serve: unexpected answer from the resident process")
        got = json.loads(cpu_out.read_text())
        return int(got["rc"]), float(got["cpu_in_run"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        if self._done is not None:
            os.close(self._done)
        self.proc, self._done, self.ready = None, None, False
