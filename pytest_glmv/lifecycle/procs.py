"""Process-tree control for launched servers.

vLLM's engine and workers rename themselves (`VLLM::EngineCore`, `VLLM::Worker_TP0`)
and orphaned ones hold GPUs for hours, so nothing here goes by process name: a
launched server lives in its own process group, its descendants are tracked by
(pid, create_time), and a watchdog process kills the lot if pytest itself dies.

Nor do /dev/shm segments go by name (vLLM's mm-processor cache is vllm_mm_<id>, 4 GiB
apparent size; its message queues are psm_*; other versions name them otherwise): an
ShmTracker records what the server's processes map or hold open while they live, and
after the tree is gone removes those of them that did not exist before the server
started and that no live process still maps or holds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil

SHM_DIR = Path("/dev/shm")

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


def kill_tree(pgid: int | None, idents: set[Ident], grace: float, reap: subprocess.Popen | None = None,
              on_slow: Callable[[], None] | None = None, slow_after: float = 1.0) -> list[int]:
    """SIGTERM the group and every known descendant, wait up to `grace`, then SIGKILL.

    `on_slow` is called once if the tree is still there `slow_after` seconds into the grace (to say
    why we wait). A KeyboardInterrupt during the grace cuts it short: SIGKILL, then it propagates.
    Returns the pids still alive afterwards (empty when the tree is gone).
    """
    if grace > 0:
        _signal_all(pgid, idents, signal.SIGTERM)
        try:
            if _wait_gone(pgid, idents, grace, reap, on_slow, slow_after):
                return []
        except KeyboardInterrupt:
            _signal_all(pgid, idents, signal.SIGKILL)
            _wait_gone(pgid, idents, 5.0, reap)
            raise
    _signal_all(pgid, idents, signal.SIGKILL)
    if _wait_gone(pgid, idents, 5.0, reap):
        return []
    return [p.pid for p in alive(idents)]


def _wait_gone(pgid: int | None, idents: set[Ident], timeout: float, reap: subprocess.Popen | None,
               on_slow: Callable[[], None] | None = None, slow_after: float = 1.0) -> bool:
    began = time.monotonic()
    deadline = began + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            reap.poll()  # a zombie leader keeps its group "alive" until reaped
        if not alive(idents) and not _group_alive(pgid):
            return True
        if on_slow is not None and time.monotonic() - began >= slow_after:
            on_slow()
            on_slow = None
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
    """Names of every file in /dev/shm now."""
    try:
        return {p.name for p in SHM_DIR.iterdir()}
    except OSError:
        return set()


def shm_in_use(pids: Iterable[int] | None = None) -> dict[str, int]:
    """/dev/shm files the given processes (default: every live one) map or hold open: name -> inode.

    A mapping shows in /proc/PID/maps (with its inode), an open descriptor as a /proc/PID/fd link.
    Segments already unlinked ("(deleted)") are left out: there is nothing to remove.
    """
    if pids is None:
        pids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    used: dict[str, int] = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text(errors="replace").splitlines():
                at = line.find(" /dev/shm/")
                if at < 0 or line.endswith(" (deleted)"):
                    continue
                fields = line[:at].split()
                used[line[at + 10:]] = int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 0
        except (OSError, ValueError):
            pass
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
                if target.startswith("/dev/shm/") and not target.endswith(" (deleted)"):
                    used[target[9:]] = os.stat(fd).st_ino
            except OSError:
                continue
    return used


def mapped_shm(pids: Iterable[int] | None = None) -> set[str]:
    """Names of /dev/shm files that the given processes (default: every live one) still map or hold open."""
    return set(shm_in_use(pids))


class ShmTracker:
    """The /dev/shm segments a process tree created, by what its processes map or hold open.

    `before` is every name in /dev/shm when the server started; `sample(pids)` while the processes
    live (each sample adds, nothing is forgotten); `cleanup()` after the tree is gone removes each
    recorded segment that is still the same file (inode), did not exist before, and that no live
    process maps or holds open.
    """

    def __init__(self, before: Iterable[str] | None = None) -> None:
        self.before = set(shm_segments() if before is None else before)
        self.seen: dict[str, int] = {}

    def sample(self, pids: Iterable[int]) -> dict[str, int]:
        """Record what `pids` use now; returns the segments that are new to the record."""
        fresh = {n: i for n, i in shm_in_use(pids).items() if n not in self.before and self.seen.get(n) != i}
        self.seen.update(fresh)
        return fresh

    def add(self, seen: Mapping[str, int]) -> None:
        self.seen.update({n: i for n, i in seen.items() if n not in self.before})

    def cleanup(self) -> list[str]:
        if not self.seen:
            return []
        in_use = shm_in_use()
        removed = []
        for name, ino in sorted(self.seen.items()):
            path = SHM_DIR / name
            try:
                st = path.lstat()
            except OSError:
                continue  # gone already
            if name in in_use or (ino and st.st_ino != ino) or not path.is_file():
                continue
            try:
                path.unlink()
                removed.append(name)
            except OSError:
                pass
        return removed


def read_seen(path: Path) -> dict[str, int]:
    """A watchdog's record: lines 'INODE NAME'."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text(errors="replace").splitlines():
            ino, _, name = line.partition(" ")
            if name and ino.isdigit():
                out[name] = int(ino)
    except OSError:
        pass
    return out


class Watchdog:
    """A sidecar that kills a server's tree if the process that started it dies.

    It holds the read end of a pipe; the pytest process holds the write end. When
    pytest exits in any way (even SIGKILL) the pipe closes and the watchdog kills
    the group and every descendant it has seen, then removes the /dev/shm segments
    it saw them map or hold (sampled every `shm_every` seconds; recorded in `state_dir`
    /seen, which the owner reads at a clean stop), the folders in `remove` and `state_dir`.
    "ready" says the server took requests (a 5 s SIGTERM grace then, else 2 s); a clean stop
    says "bye" first.
    """

    def __init__(self, leader_pid: int, pgid: int, state_dir: Path, shm_before: Iterable[str],
                 shm_every: float = 2.0, remove: Iterable[Path] = ()) -> None:
        self.state_dir = Path(state_dir)
        (self.state_dir / "before").write_text("\n".join(sorted(shm_before)) + "\n")
        (self.state_dir / "remove").write_text("".join(f"{Path(d).resolve()}\n" for d in remove))
        self.seen_path = self.state_dir / "seen"
        r, w = os.pipe()
        self._write = w
        args = [sys.executable, "-m", "pytest_glmv.lifecycle._watchdog", str(leader_pid), str(pgid), str(r),
                str(self.state_dir), str(shm_every)]
        self.proc = subprocess.Popen(
            args, pass_fds=(r,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
        os.close(r)
        os.set_inheritable(w, False)

    def ready(self) -> None:
        try:
            os.write(self._write, b"ready\n")
        except OSError:
            pass

    def dismiss(self) -> dict[str, int]:
        """Stop the watchdog; returns the segments it saw the tree use."""
        try:
            os.write(self._write, b"bye\n")
            os.close(self._write)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return read_seen(self.seen_path)
