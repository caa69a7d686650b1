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


# -- /dev/shm: what the tree maps or holds, never a name pattern ---------------------------------------

def shm_names(path: Path, count: int, within: float = 10.0) -> list[str]:
    """The segment names the fake wrote to FAKE_VLLM_SHM, once there are `count` of them."""
    deadline = time.monotonic() + within
    while True:
        names = path.read_text().split() if path.exists() else []
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def shm_gone(names: list[str], within: float) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        left = [n for n in names if Path("/dev/shm", n).exists()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def fake_shm(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """FAKE_VLLM_SHM for the fake; the segments it listed are removed after the test, whatever happened."""
    path = tmp_path / "shm"
    monkeypatch.setenv("FAKE_VLLM_SHM", str(path))
    yield path
    for name in (path.read_text().split() if path.exists() else []):
        Path("/dev/shm", name).unlink(missing_ok=True)


def test_teardown_removes_the_segments_the_tree_mapped(fake_shm: Path, fake_vllm: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """vLLM's vllm_mm_<id> (mapped by the API server and the engine) goes with the server, whatever its name."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "shm")
    port = free_port()
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=30)
    srv.start()
    names = shm_names(fake_shm, 2)
    assert len(names) == 2 and all(n.startswith("vllm_mm_") and Path("/dev/shm", n).exists() for n in names)
    began = time.monotonic()
    srv.stop()
    took = time.monotonic() - began
    print(f"normal teardown of a ready server (SIGTERM honoured): {took:.2f} s")
    assert took < 5.0, took
    assert not gone(read_pids(fake_vllm), 1.0)
    assert shm_gone(names, 0) == [], "segments mapped by the server's processes were left in /dev/shm"
    assert sorted(srv.shm_removed) == sorted(names)


OUTSIDER = textwrap.dedent("""
    import mmap, os, sys, time
    keep = []
    fd = os.open(sys.argv[1], os.O_RDWR)          # one of the server's segments: mapped by us too
    keep.append(mmap.mmap(fd, 0)); os.close(fd)
    held = open(sys.argv[2], "wb")                # our own, created during the run, held open (not mapped)
    print("ready", flush=True)
    time.sleep(3600)
""")


def test_segments_that_are_not_only_the_trees_are_kept(fake_shm: Path, fake_vllm: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Kept: a segment that existed before the start (even though the server maps it), one of the server's
    that an unrelated process still maps, and one an unrelated process created during the run and holds open."""
    token = os.urandom(4).hex()
    before = Path(f"/dev/shm/psm_glmvtest_before_{token}")
    mine = Path(f"/dev/shm/psm_glmvtest_outsider_{token}")
    before.write_bytes(b"x" * 4096)
    outsider = None
    try:
        monkeypatch.setenv("FAKE_VLLM_MODE", "shm")
        monkeypatch.setenv("FAKE_VLLM_MAP", str(before))
        port = free_port()
        srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=30)
        srv.start()
        parent_seg, engine_seg = shm_names(fake_shm, 2)
        outsider = subprocess.Popen([sys.executable, "-c", OUTSIDER, f"/dev/shm/{engine_seg}", str(mine)],
                                    stdout=subprocess.PIPE, text=True)
        assert outsider.stdout is not None and outsider.stdout.readline().strip() == "ready"
        srv.stop()
        assert not Path("/dev/shm", parent_seg).exists(), "the server's own segment was left behind"
        assert before.exists(), "a segment that existed before the server started was removed"
        assert Path("/dev/shm", engine_seg).exists(), "a segment a live unrelated process maps was removed"
        assert mine.exists(), "a segment an unrelated process created during the run was removed"
    finally:
        if outsider is not None:
            outsider.kill()
            outsider.wait()
        before.unlink(missing_ok=True)
        mine.unlink(missing_ok=True)


INTERRUPTED = textwrap.dedent("""
    import sys
    from pytest_glmv.lifecycle.server import VllmServer, free_port
    port = free_port()
    srv = VllmServer(["vllm", "serve", "m", "--port", str(port)], model="m", port=port,
                     log_dir=sys.argv[1], startup_timeout=120, progress=print)
    try:
        srv.start()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
""")


def test_ctrl_c_during_startup_stops_the_tree_at_once(fake_shm: Path, fake_vllm: Path,
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """vLLM ignores SIGTERM while it loads: Ctrl-C must not wait out a 30 s grace, and must say what it stops."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "shm,slow")
    owner = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        names = shm_names(fake_shm, 2)
        assert len(names) == 2
        time.sleep(1.0)  # the watchdog's first shm sample is in, and the fake is in its SIGTERM-deaf load
        pids = read_pids(fake_vllm)
        began = time.monotonic()
        owner.send_signal(signal.SIGINT)
        out, _ = owner.communicate(timeout=30)
        took = time.monotonic() - began
        print(f"Ctrl-C during startup to exit: {took:.2f} s")
        assert took < 10, took
        assert f"glmv: interrupted while vllm was starting: stopping its process tree (pid {pids[0]})" in out
        assert "interrupted" in out.splitlines()[-1]
        assert not gone(pids, 1.0), "processes of the tree survived Ctrl-C"
        assert shm_gone(names, 0) == [], "segments survived Ctrl-C"
    finally:
        owner.kill()


def test_ready_server_gets_an_announced_grace(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """A ready server may have requests in flight: SIGTERM grace, said once it takes time, then SIGKILL."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "grandchildren")  # ignores SIGTERM
    notes: list[str] = []
    port = free_port()
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path, startup_timeout=30, stop_timeout=2.0,
                     progress=notes.append)
    srv.start()
    began = time.monotonic()
    srv.stop()
    took = time.monotonic() - began
    assert 2.0 <= took < 2.0 + 5.0, took
    assert [n for n in notes if "in-flight" in n] == [
        f"glmv: waiting up to 2 s for vllm to finish in-flight requests (pid {read_pids(fake_vllm)[0]})"]


def test_watchdog_frees_mapped_segments_after_owner_sigkill(fake_shm: Path, fake_vllm: Path,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "shm")
    owner = subprocess.Popen([sys.executable, "-c", SESSION_KILLED, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        names = shm_names(fake_shm, 2)
        pids = read_pids(fake_vllm)
        assert len(names) == 2 and len(pids) == 2
        took = kill_owner_and_await_cleanup(owner, pids, names)
        print(f"watchdog after owner SIGKILL: tree and segments gone {took:.2f} s later")
    finally:
        owner.kill()


# -- messages ----------------------------------------------------------------------------------------

def test_missing_executable_says_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    srv = VllmServer([str(tmp_path / "no-vllm"), "serve", MODEL, "--port", str(port)], model=MODEL, port=port,
                     log_dir=tmp_path)
    with pytest.raises(ServerExited) as info:
        srv.start()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"glmv: cannot run '{tmp_path / 'no-vllm'}': No such file or directory; ")
    assert "--glmv-vllm-executable PATH" in text and "bash scripts/install_vllm_cpu.sh" in text


FLASHINFER_LOG = """\
(EngineCore_DP0 pid=4242) ERROR 11-30 05:09:12 [core.py:843] EngineCore failed to start.
(EngineCore_DP0 pid=4242) ERROR 11-30 05:09:12 [core.py:843] Traceback (most recent call last):
(EngineCore_DP0 pid=4242) ERROR 11-30 05:09:12 [core.py:843]   File "/v/vllm/v1/engine/core.py", line 834, in run
(EngineCore_DP0 pid=4242) ERROR 11-30 05:09:12 [core.py:843]     import flashinfer
(EngineCore_DP0 pid=4242) ERROR 11-30 05:09:12 [core.py:843] ModuleNotFoundError: No module named 'flashinfer'
(EngineCore_DP0 pid=4242) Process EngineCore_DP0:
(APIServer pid=4200) Traceback (most recent call last):
(APIServer pid=4200)   File "/v/bin/vllm", line 10, in <module>
(APIServer pid=4200)     raise RuntimeError(
(APIServer pid=4200) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""
OOM_LOG = """\
\x1b[1;36m(EngineCore pid=7)\x1b[0;0m ERROR [core.py:843] torch.OutOfMemoryError: CUDA out of memory. Tried to \
allocate 2.00 GiB
(APIServer pid=6) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""

# vLLM 0.26.0 on one H200 with --tensor-parallel-size 2 (2026-11-30, docs/gpu.md): pydantic's header names
# only the class; the reason is on the lines below it.
WORLD_SIZE_LOG = """\
(APIServer pid=1517) pydantic_core._pydantic_core.ValidationError: 1 validation error for ParallelConfig
(APIServer pid=1517)   Value error, World size (2) is larger than the number of available GPUs (1) in this node. \
If this is intentional and you are using:
(APIServer pid=1517) - ray, set '--distributed-executor-backend ray'.
(APIServer pid=1517) - multiprocessing, set '--nnodes' appropriately. [type=value_error, input_value=ArgsKwargs((), \
{'pipeline...'numa_bind_cpus': None}), input_type=ArgsKwargs]
(APIServer pid=1517)     For further information visit https://errors.pydantic.dev/2.14/v/value_error
"""
FIELD_LOG = """\
pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig
max_model_len
  Input should be greater than 0 [type=greater_than, input_value=-1, input_type=int]
    For further information visit https://errors.pydantic.dev/2.14/v/greater_than
"""


@pytest.mark.parametrize(("log", "cause"), [
    (WORLD_SIZE_LOG, "pydantic_core._pydantic_core.ValidationError: 1 validation error for ParallelConfig: Value "
                     "error, World size (2) is larger than the number of available GPUs (1) in this node. If this "
                     "is intentional and you are using: - ray, set '--distributed-executor-backend ray'. - "
                     "multiprocessing, set '--nnode..."),
    (FIELD_LOG, "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: max_model_len: "
                "Input should be greater than 0"),
    (FLASHINFER_LOG, "ModuleNotFoundError: No module named 'flashinfer'"),
    (OOM_LOG, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    ("INFO all fine\nValueError: bad --max-model-len\nINFO shutting down\n", "ValueError: bad --max-model-len"),
    ("INFO nothing raised here\nWARNING Error: not an exception line\n", None),
    ("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n", None),
])
def test_root_cause_from_canned_logs(log: str, cause: str | None) -> None:
    from pytest_glmv.lifecycle.logs import root_cause

    assert root_cause(log) == cause


def test_startup_death_names_vllms_root_cause_first(fake_vllm: Path, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    canned = tmp_path / "canned.log"
    canned.write_text(FLASHINFER_LOG)
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    monkeypatch.setenv("FAKE_VLLM_EXIT_LOG", str(canned))
    port = free_port()
    srv = VllmServer(argv(port), model=MODEL, port=port, log_dir=tmp_path / "logs", startup_timeout=60)
    with pytest.raises(ServerExited) as info:
        srv.start()
    first, _, rest = str(info.value).partition("\n")
    assert first == (f"glmv: vllm server exited with code 3 during startup: ModuleNotFoundError: No module named "
                     f"'flashinfer' (log {srv.log_path}); last 40 log lines:")
    assert "Engine core initialization failed" in rest


def kill_owner_and_await_cleanup(owner: subprocess.Popen, pids: list[int], names: list[str]) -> float:
    """SIGKILL the process that launched the server; the watchdog must take down its tree and segments (EOF
    within its poll, a 5 s SIGTERM grace, SIGKILL, then /dev/shm). Returns the seconds that took."""
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    began = time.monotonic()
    assert not gone(pids, 20.0), "the server's processes outlived the killed owner"
    assert shm_gone(names, 10.0) == [], "the watchdog left the server's /dev/shm segments behind"
    return time.monotonic() - began


def test_startup_progress_is_whole_info_lines_only() -> None:
    """The progress note shows the latest INFO message or progress bar, whole: never a cut line ('ngineCore
    pid=...') nor a warning's continuation ("reason: 'function' object has no attribute ..."), which read as errors."""
    from pytest_glmv.lifecycle.logs import progress_line

    message = "Loading weights took 12.34 seconds and used a good deal of memory on the way, " * 3
    log = ("\x1b[1;36m(EngineCore_DP0 pid=7)\x1b[0;0m INFO 12-06 07:00:00 [default_loader.py:291] " + message + "\n"
           "(EngineCore_DP0 pid=7) WARNING 12-06 07:00:01 [utils.py:99] Failed to finalize\n"
           "reason: 'function' object has no attribute 'finalize_loading'\n"
           'INFO:     127.0.0.1:5555 - "GET /health HTTP/1.1" 503 Service Unavailable\n')
    assert progress_line(log) == "EngineCore_DP0: " + message.strip()
    bar = "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:01<00:01,  1.20s/it]"
    assert progress_line(log + bar + "\n") == bar
    assert progress_line("Traceback (most recent call last):\nValueError: bad\n") == ""
