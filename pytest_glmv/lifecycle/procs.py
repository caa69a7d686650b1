"""Process-tree control for launched servers.

vLLM's engine and workers rename themselves (`VLLM::EngineCore`, `VLLM::Worker_TP0`)
and orphaned ones hold GPUs for hours, so nothing here goes by process name: a
launched server lives in its own process group, its descendants are tracked by
(pid, create_time), and a watchdog process kills the lot if pytest itself dies.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

import psutil

SHM_DIR = Path("/dev/shm")
# multiprocessing.shared_memory names its segments psm_* (POSIX) — what vLLM's shm
# mm-processor cache and message queues use.
SHM_PREFIXES = ("psm_", "wnsm_")

Ident = tuple[int, float]  # (pid, create_time): a pid alone can be reused


def ident(p: psutil.Process) -> Ident | None:
    try:
        return (p.pid, p.create_time())
    except psutil.Error:
        return None


def descendants(pid: int) -> set[Ident]:
    """The process and everything below it, as (pid, create_time)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    return {i for i in map(ident, procs) if i is not None}


def alive(idents: Iterable[Ident]) -> list[psutil.Process]:
    out = []
    for pid, created in idents:
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _signal_all(pgid: int | None, idents: Iterable[Ident], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in alive(idents):
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def kill_tree(pgid: int | None, idents: set[Ident], grace: float, reap: subprocess.Popen | None = None) -> list[int]:
    """SIGTERM the group and every known descendant, wait `grace`, then SIGKILL.

    Returns the pids still alive afterwards (empty when the tree is gone).
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        _signal_all(pgid, idents, sig)
        if _wait_gone(pgid, idents, wait, reap):
            return []
    return [p.pid for p in alive(idents)]


def _wait_gone(pgid: int | None, idents: set[Ident], timeout: float, reap: subprocess.Popen | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap.poll()  # a zombie leader keeps its group "alive" until reaped
        if not alive(idents) and not _group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


def _group_alive(pgid: int | None) -> bool:
    if pgid is None:
        return False
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return False


def shm_segments() -> set[str]:
    try:
        return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(SHM_PREFIXES)}
    except OSError:
        return set()


def mapped_shm(pids: Iterable[int] | None = None) -> set[str]:
    """Names of /dev/shm files that the given processes (default: every live one) still map."""
    files = Path("/proc").glob("[0-9]*/maps") if pids is None else (Path(f"/proc/{pid}/maps") for pid in pids)
    used: set[str] = set()
    for maps in files:
        try:
            for line in maps.read_text(errors="replace").splitlines():
                at = line.find("/dev/shm/")
                if at >= 0:
                    used.add(line[at + 9:].split()[0])
        except OSError:
            continue
    return used


def cleanup_shm(before: set[str]) -> list[str]:
    """Remove segments that appeared since `before` and that no live process maps."""
    new = shm_segments() - before
    if not new:
        return []
    removed = []
    for name in sorted(new - mapped_shm()):
        try:
            (SHM_DIR / name).unlink()
            removed.append(name)
        except OSError:
            pass
    return removed


class Watchdog:
    """A sidecar that kills a server's tree if the process that started it dies.

    It holds the read end of a pipe; the pytest process holds the write end. When
    pytest exits in any way (even SIGKILL) the pipe closes and the watchdog kills
    the group and every descendant it has seen. A clean stop says "bye" first.
    """

    def __init__(self, leader_pid: int, pgid: int, shm_before: set[str]) -> None:
        r, w = os.pipe()
        self._write = w
        args = [sys.executable, "-m", "pytest_glmv.lifecycle._watchdog", str(leader_pid), str(pgid), str(r),
                ",".join(sorted(shm_before))]
        self.proc = subprocess.Popen(
            args, pass_fds=(r,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        os.close(r)
        os.set_inheritable(w, False)

    def dismiss(self) -> None:
        try:
            os.write(self._write, b"bye\n")
            os.close(self._write)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
