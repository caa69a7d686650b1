"""Watchdog sidecar: `python -m pytest_glmv.lifecycle._watchdog LEADER PGID FD STATE_DIR [SHM_EVERY]`.

Polls the server's process tree while the pipe from the owner stays open, and every SHM_EVERY
seconds records the /dev/shm segments the tree maps or holds open (STATE_DIR/seen, one
'INODE NAME' a line; STATE_DIR/before lists the names that existed before the server started).
"ready" on the pipe: the server took requests. EOF without "bye" means the owner died: kill the
group and every descendant seen (SIGTERM grace 5 s after "ready", 2 s during startup), then free
the segments they left behind and remove the owner's temporary folders (STATE_DIR/remove, one path a
line: the run's logs and media) and STATE_DIR itself: a killed run leaves nothing.
"""
from __future__ import annotations

import os
import select
import shutil
import sys
import time
from pathlib import Path

from pytest_glmv.lifecycle import procs


def main(argv: list[str]) -> int:
    leader, pgid, fd, state = int(argv[0]), int(argv[1]), int(argv[2]), Path(argv[3])
    shm_every = float(argv[4]) if len(argv) > 4 else 2.0
    try:
        before = set(filter(None, (state / "before").read_text().splitlines()))
    except OSError:
        before = procs.shm_segments()
    tracker = procs.ShmTracker(before)
    seen = procs.descendants(leader)
    next_sample = 0.0
    buf = b""

    def sample() -> None:
        fresh = tracker.sample(p.pid for p in procs.alive(seen))
        if fresh:
            with open(state / "seen", "a") as f:
                f.writelines(f"{ino} {name}\n" for name, ino in fresh.items())

    while True:
        now = time.monotonic()
        if now >= next_sample:
            sample()
            next_sample = now + shm_every
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 64)
            if chunk:
                buf += chunk
                if b"bye" in buf:
                    return 0
                continue
            break  # EOF without bye: the owner is gone
        seen |= procs.descendants(leader)
    seen |= procs.descendants(leader)
    sample()  # right before the kill
    procs.kill_tree(pgid, seen, grace=5.0 if b"ready" in buf else 2.0)
    tracker.cleanup()
    try:
        remove = [Path(line) for line in (state / "remove").read_text().splitlines() if line.strip()]
    except OSError:
        remove = []
    for path in [*remove, state]:
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
