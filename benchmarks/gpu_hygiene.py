"""Process hygiene of `pytest --glmv-model tiny` on a GPU machine: what is left after pytest ends.

    python benchmarks/gpu_hygiene.py [--cases a,b,c] [--out DIR] -- [extra pytest args, e.g. --glmv-tp 2]

Cases (each runs `python -m pytest --glmv-model tiny ...` in a process group of its own):
  a  normal teardown after a short run (one context check)
  b  SIGINT to pytest's process group (what Ctrl-C does) --sigint-after seconds after start, while vLLM loads
  c  SIGKILL of pytest's process group --sigkill-after seconds after vLLM became ready, mid-suites

After pytest ends (a) or is interrupted (b, c) it polls for up to --poll seconds and prints, each poll:
vLLM processes left (`ps -eo pid,comm,args`, comm or the command's first words containing vllm/VLLM),
GPU memory used per GPU against the baseline taken before the case, compute apps (nvidia-smi), and /dev/shm
entries created since the case started. It prints the seconds until everything was back to baseline, and one
summary line per case ("hygiene: case ..."). Whatever is still there after the poll is killed by this script
(and said so) so that the next case starts clean: only processes descended from the pytest it started,
tracked by (pid, start time) while the case runs, are counted as left over or killed; vLLM processes of
others are counted apart ("others_not_ours") and never touched; /dev/shm entries are reported, never removed.

Exit status: 0 all cases back to baseline, 1 some case was not, 2 no nvidia-smi (one line; --allow-no-gpu
measures processes and /dev/shm only, for trying the script on a CPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = ["suites/test_context.py", "-k", "test_models_reports_the_window"]
MEM_SLACK_MIB = 64  # the driver's own use may move by a few MiB


def sh(argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live pid, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rfind(")") + 2:].split()
    return int(f[1]), int(f[19])


class Tracker:
    """Every process descended from pytest (vLLM runs in a session of its own but is pytest's child), as
    (pid, start time), so that a pid reused by somebody else's process is never counted or killed."""

    def __init__(self, root: int) -> None:
        self.seen: set[tuple[int, int]] = set()
        st = _stat(root)
        if st:
            self.seen.add((root, st[1]))
        self.root = root

    def scan(self) -> None:
        table = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                st = _stat(int(d.name))
                if st:
                    table[int(d.name)] = st
        alive_seen = {pid for pid, t in self.seen if table.get(pid, (0, -1))[1] == t}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, t) in table.items():
                if ppid in alive_seen and pid not in alive_seen:
                    self.seen.add((pid, t))
                    alive_seen.add(pid)
                    grew = True

    def alive(self) -> set[int]:
        self.scan()
        return {pid for pid, t in self.seen if (st := _stat(pid)) is not None and st[1] == t}


class Probe:
    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.me = os.getpid()

    def vllm_procs(self, ignore: set[int], only: set[int] | None = None) -> list[tuple[int, str, str]]:
        """vLLM-named processes (and the plugin's watchdog); with `only`, exactly those pids, whatever their name."""
        rc, out = sh(["ps", "-eo", "pid,comm,args"])
        found = []
        for line in out.splitlines()[1:]:
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            pid, comm, args = int(parts[0]), parts[1], parts[2] if len(parts) > 2 else ""
            if pid in ignore or pid == self.me or (only is not None and pid not in only):
                continue
            head = " ".join(args.split()[:4])  # e.g. python3 -m vllm.entrypoints.cli.main serve
            if only is not None or "vllm" in comm.lower() or "vllm" in head.lower() or "pytest_glmv._watchdog" in head:
                found.append((pid, comm, args[:120]))
        return found

    def mem(self) -> dict[int, int]:
        if not self.gpu:
            return {}
        rc, out = sh(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"])
        res = {}
        for line in out.splitlines():
            try:
                i, m = (int(x.strip()) for x in line.split(","))
                res[i] = m
            except ValueError:
                continue
        return res

    def apps(self) -> list[str]:
        if not self.gpu:
            return []
        rc, out = sh(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"])
        return [ln.strip() for ln in out.splitlines() if ln.strip() and "No running" not in ln]

    @staticmethod
    def shm() -> set[str]:
        try:
            return set(os.listdir("/dev/shm"))
        except OSError:
            return set()


class Snapshot:
    def __init__(self, probe: Probe, ignore: set[int], shm0: set[str], mem0: dict[int, int],
                 ours: set[int]) -> None:
        self.procs = probe.vllm_procs(ignore, only=ours)
        self.others = len(probe.vllm_procs(ignore | ours))
        self.mem = probe.mem()
        self.apps = probe.apps()
        self.shm_new = sorted(probe.shm() - shm0)
        self.mem_over = {i: m - mem0.get(i, 0) for i, m in self.mem.items() if m - mem0.get(i, 0) > MEM_SLACK_MIB}

    @property
    def clean(self) -> bool:
        return not (self.procs or self.apps or self.shm_new or self.mem_over)

    def line(self, t: float) -> str:
        procs = ",".join(f"{p}:{c}" for p, c, _ in self.procs) or "-"
        mem = " ".join(f"gpu{i}={m}" for i, m in sorted(self.mem.items())) or "n/a"
        return (f"  t+{t:5.1f}s vllm_procs={len(self.procs)}[{procs}] others_not_ours={self.others} mem_MiB[{mem}] "
                f"over_baseline={self.mem_over or '-'} compute_apps={self.apps or '-'} new_shm={self.shm_new or '-'}")


def wait_ready(log_dir: Path, proc: subprocess.Popen, limit: float) -> float | None:
    """Seconds until the launched vLLM's log says the API server is up (None: it never did)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and proc.poll() is None:
        for f in log_dir.glob("*.log"):
            try:
                if "Application startup complete" in f.read_text(errors="replace"):
                    return time.monotonic() - t0
            except OSError:
                pass
        time.sleep(0.5)
    return None


def cleanup(probe: Probe, ignore: set[int], ours: set[int]) -> list[str]:
    """SIGKILL what is left of this case's own process tree; /dev/shm is reported, never touched (on a shared
    machine a new entry may be somebody else's)."""
    done = []
    for pid, comm, _ in probe.vllm_procs(ignore, only=ours):
        try:
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed {pid}:{comm}")
        except OSError:
            pass
    time.sleep(3)
    return done


def run_case(case: str, args: argparse.Namespace, probe: Probe, extra: list[str], out: Path) -> dict:
    ignore = {p for p, _, _ in probe.vllm_procs(set())}  # present before: not ours
    mem0, shm0 = probe.mem(), probe.shm()
    log_dir = Path(tempfile.mkdtemp(prefix=f"hyg-{case}-", dir=out))
    argv = [sys.executable, "-m", "pytest", "--glmv-model", "tiny", "--glmv-log-dir", str(log_dir),
            "-p", "no:cacheprovider", "-q", *extra]
    if args.vllm_executable:
        argv += ["--glmv-vllm-executable", args.vllm_executable]
    if case == "a":
        argv += SHORT
    else:
        argv += ["-m", "not behavior"]
    print(f"hygiene: case {case}: baseline mem_MiB={mem0 or 'n/a'} compute_apps={probe.apps() or '-'} "
          f"preexisting_vllm={sorted(ignore) or '-'}", flush=True)
    print(f"hygiene: case {case}: $ {' '.join(argv)}", flush=True)
    res: dict = {"case": case, "argv": argv, "baseline_mem": mem0}
    with open(out / f"pytest-{case}.out", "wb") as po:
        t_start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=po, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        pgid = proc.pid
        tracker = Tracker(proc.pid)
        scanning = threading.Event()
        scanning.set()

        def scan_loop() -> None:
            while scanning.is_set():
                tracker.scan()
                time.sleep(0.3)

        threading.Thread(target=scan_loop, daemon=True).start()
        ready = None
        if case == "a":
            try:
                proc.wait(timeout=args.case_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                res["note"] = f"short run exceeded {args.case_timeout} s; SIGKILLed"
            t_event = time.monotonic()
            res["event"] = f"pytest exited rc={proc.poll()} after {t_event - t_start:.1f} s"
        elif case == "b":
            time.sleep(args.sigint_after)
            alive = [c for _, c, _ in probe.vllm_procs(ignore, only=tracker.alive() - {proc.pid})]
            os.killpg(pgid, signal.SIGINT)
            t_event = time.monotonic()
            res["event"] = (f"SIGINT to pytest's group {t_event - t_start:.1f} s after start "
                            f"(vLLM processes then: {len(alive)} {sorted(set(alive))})")
        else:
            ready = wait_ready(log_dir, proc, args.case_timeout)
            if ready is None:
                res["note"] = "vLLM never reported ready; SIGKILL anyway"
            time.sleep(args.sigkill_after)
            alive = [c for _, c, _ in probe.vllm_procs(ignore, only=tracker.alive() - {proc.pid})]
            os.killpg(pgid, signal.SIGKILL)
            t_event = time.monotonic()
            res["event"] = (f"SIGKILL to pytest's group {t_event - t_start:.1f} s after start, "
                            f"{args.sigkill_after:.0f} s after vLLM ready (ready at "
                            f"{'n/a' if ready is None else f'{ready:.1f}'} s; vLLM processes then: {len(alive)})")
        res["ready_s"] = ready
        print(f"hygiene: case {case}: {res['event']}", flush=True)
        back = None
        pytest_exit = None
        last = None
        while True:
            t = time.monotonic() - t_event
            if pytest_exit is None and proc.poll() is not None:
                pytest_exit = t
            last = Snapshot(probe, ignore | {proc.pid}, shm0, mem0, tracker.alive())
            print(last.line(t), flush=True)
            if last.clean and proc.poll() is not None:
                back = t
                break
            if t >= args.poll:
                break
            time.sleep(args.interval)
        if proc.poll() is None:  # pytest itself still running after the poll window
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
            late = f" pytest still running {args.poll:.0f} s after the event; SIGKILLed"
            res["note"] = (res.get("note", "") + late).strip()
        res["pytest_rc"] = proc.returncode
        res["pytest_exit_s"] = pytest_exit
    res["back_s"] = back
    res["left"] = None if last is None or last.clean else {
        "procs": [f"{p}:{c} {a}" for p, c, a in last.procs], "mem_over": last.mem_over,
        "apps": last.apps, "shm": last.shm_new}
    if not (last and last.clean):
        res["cleanup"] = cleanup(probe, ignore | {proc.pid}, tracker.alive())
    scanning.clear()
    tail = (out / f"pytest-{case}.out").read_text(errors="replace").splitlines()[-6:]
    print("  pytest tail: " + "\n  pytest tail: ".join(tail), flush=True)
    if back is not None:
        verdict = f"back to baseline {back:.1f} s after the event"
    else:
        verdict = f"NOT back to baseline within {args.poll:.0f} s: {res['left']}"
    pe = "n/a" if res["pytest_exit_s"] is None else f"{res['pytest_exit_s']:.1f} s"
    print(f"hygiene: case {case}: {verdict}; pytest rc={res['pytest_rc']} exited {pe} after the event"
          + (f"; {res['note']}" if res.get("note") else "")
          + (f"; cleanup: {res['cleanup']}" if res.get("cleanup") else ""), flush=True)
    return res


def main(argv: list[str]) -> int:
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    else:
        extra = []
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="a,b,c")
    ap.add_argument("--sigint-after", type=float, default=20.0)
    ap.add_argument("--sigkill-after", type=float, default=15.0, help="seconds after vLLM ready (case c)")
    ap.add_argument("--poll", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--case-timeout", type=float, default=400.0)
    ap.add_argument("--vllm-executable")
    ap.add_argument("--out", help="folder for pytest outputs, vLLM logs and hygiene.json (default: a temp dir)")
    ap.add_argument("--allow-no-gpu", action="store_true", help="without nvidia-smi, measure processes and shm only")
    a = ap.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in ("a", "b", "c")]
    if bad:
        print(f"gpu_hygiene: unknown case(s) {bad}; use a, b, c")
        return 2
    gpu = shutil.which("nvidia-smi") is not None
    if gpu:
        rc, _ = sh(["nvidia-smi", "-L"])
        gpu = rc == 0
    if not gpu and not a.allow_no_gpu:
        print("gpu_hygiene: nvidia-smi not found or not working: this measures GPU process hygiene and needs a GPU "
              "machine (--allow-no-gpu to measure processes and /dev/shm only)")
        return 2
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="gpu-hygiene-"))
    out.mkdir(parents=True, exist_ok=True)
    probe = Probe(gpu)
    print(f"hygiene: nvidia-smi {'present' if gpu else 'ABSENT (processes and /dev/shm only)'}; out {out}; "
          f"extra pytest args {extra}", flush=True)
    results = []
    for c in cases:
        results.append(run_case(c, a, probe, extra, out))
    (out / "hygiene.json").write_text(json.dumps(results, indent=1, default=str))
    print("hygiene: summary")
    for r in results:
        b = f"{r['back_s']:.1f} s" if r["back_s"] is not None else "NOT back"
        print(f"hygiene: case {r['case']}: back_to_baseline={b} pytest_rc={r['pytest_rc']} event: {r['event']}")
    return 0 if all(r["back_s"] is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
