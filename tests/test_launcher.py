"""VllmServer against a fake `vllm`: readiness, exit, timeout, and that no process survives."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from pytest_glmv.lifecycle.server import ServerExited, ServerTimeout, VllmServer, free_port

MODEL = "zai-org/GLM-4.5V-FP8"


def argv(port: int) -> list[str]:
    return ["vllm", "serve", MODEL, "--served-model-name", MODEL, "--port", str(port), "--max-model-len", "4096"]


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def gone(pids: list[int], within: float) -> list[int]:
    """The pids still alive (not zombies) after waiting up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_ready_after_delay(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_VLLM_DELAY", "1.5")
    port = free_port()
    began = time.monotonic()
    with VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=30) as srv:
        waited = time.monotonic() - began
        assert srv.base_url == f"http://127.0.0.1:{port}/v1"
        assert (srv.model, srv.max_model_len, srv.version) == (MODEL, 4096, "0.0.0+fake")
        assert 1.5 <= waited < 10, waited
        assert "fake vllm starting" in srv.log_tail()
        pids = read_pids(fake_vllm)
    assert pids and not gone(pids, 2.0)


def test_exit_at_once_reported_within_a_second(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    port = free_port()
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=60)
    began = time.monotonic()
    with pytest.raises(ServerExited) as info:
        srv.start()
    took = time.monotonic() - began
    text = str(info.value)
    assert "exited with code 3 during startup" in text
    assert "ValueError: fake failure: the model does not fit" in text  # the log tail is in the message
    # Interpreter start-up of the fake itself is part of it: a coarse bound (fast vs hung).
    assert took < 1.0 + 2.0, took


def test_never_healthy_times_out_distinctly(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "never")
    port = free_port()
    notes: list[str] = []
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=2.5,
                     progress=notes.append, progress_every=1.0)
    began = time.monotonic()
    with pytest.raises(ServerTimeout) as info:
        srv.start()
    assert 2.5 <= time.monotonic() - began < 8
    assert "not ready after 2 s" in str(info.value) or "not ready after 3 s" in str(info.value)
    assert "Loading safetensors checkpoint shards" in str(info.value)
    # progress shows elapsed time and the latest meaningful log line
    assert notes and "Loading safetensors" in notes[-1] and " s: " in notes[-1]
    assert not gone(read_pids(fake_vllm), 2.0)


def test_grandchildren_ignoring_sigterm_are_killed(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "grandchildren")
    port = free_port()
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=30, stop_timeout=1.0)
    srv.start()
    pids = read_pids(fake_vllm)
    assert len(pids) == 3
    began = time.monotonic()
    srv.stop()
    assert time.monotonic() - began < 1.0 + 5.0
    assert not gone(pids, 1.0), "processes survived teardown"
    assert srv.survivors == []
    assert not Path(f"/dev/shm/psm_glmvfake{pids[0]}").exists(), "shm segment left behind"


SESSION_KILLED = textwrap.dedent("""
    import os, sys, time
    from pytest_glmv.lifecycle.server import VllmServer, free_port
    port = free_port()
    srv = VllmServer(["vllm", "serve", "m", "--port", str(port)], model="m", port=port,
                     log_dir=sys.argv[1], startup_timeout=30)
    srv.start()
    print("ready", flush=True)
    time.sleep(3600)
""")


def test_no_survivors_after_owner_is_sigkilled(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """The owner of a launched server dies by SIGKILL: the watchdog must take the tree down."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "grandchildren")
    owner = subprocess.Popen([sys.executable, "-c", SESSION_KILLED, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        pids = read_pids(fake_vllm)
        assert len(pids) == 3
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        # watchdog: EOF within its 0.5 s poll, 5 s SIGTERM grace (ignored here), then SIGKILL
        assert not gone(pids, 20.0), "processes outlived the killed owner"
        deadline = time.monotonic() + 5
        while Path(f"/dev/shm/psm_glmvfake{pids[0]}").exists():
            assert time.monotonic() < deadline, "the watchdog left the shm segment behind"
            time.sleep(0.1)
    finally:
        owner.kill()
