"""Watchdog sidecar: `python -m pytest_glmv.lifecycle._watchdog LEADER PGID FD SHM_BEFORE`.

Polls the server's process tree while the pipe from the owner stays open. EOF
without "bye" means the owner died: kill the group and every descendant seen,
then free the /dev/shm segments they left behind.
"""
from __future__ import annotations

import os
import select
import sys

from pytest_glmv.lifecycle import procs


def main(argv: list[str]) -> int:
    leader, pgid, fd = int(argv[0]), int(argv[1]), int(argv[2])
    shm_before = set(filter(None, argv[3].split(","))) if len(argv) > 3 else set()
    seen = procs.descendants(leader)
    buf = b""
    while True:
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
    procs.kill_tree(pgid, seen, grace=5.0)
    procs.cleanup_shm(shm_before)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
