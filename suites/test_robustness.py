"""Robustness: bad requests are refused, and the server keeps serving.

Each probe sends something hostile or odd and states what a correct server does;
after every probe that could hurt the server the canary (text + a small image)
must still be served. Sources: CVE-2026-22778 and friends (images), CVE-2026-34755
(video frames), CVE-2026-34756 (huge n), CVE-2025-48956 (huge header),
CVE-2025-48944 (tool schemas), vLLM #39863 (dead engine, healthy /health).
Every loop here is bounded in count and time.
"""
from __future__ import annotations

import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pytest_glmv.kit.evidence import CHAT, chat, request
from pytest_glmv.kit.hardening import (
    Finding,
    body,
    bomb_png,
    canary,
    image_message,
    jpeg_frames_video_url,
    max_logprobs,
    odd_images,
    report,
    tiny_png_url,
    tree_rss,
    undecodable_images,
)
from pytest_glmv.kit.media import data_url

pytestmark = pytest.mark.robustness

VLLM_DEFAULT_IMAGE_LIMIT = 999  # vLLM's per-prompt image limit when --limit-mm-per-prompt does not say
QUICK = 5.0  # seconds a refusal that needs no model work may take
VLLM_IMAGE_FETCH_TIMEOUT = 5.0  # vLLM's default for image URLs
UNDECODABLE = undecodable_images()
ODD = odd_images()


@pytest.mark.parametrize("kind", sorted(UNDECODABLE))
def test_undecodable_image_is_a_400(glmv_http: httpx.Client, glmv_server: Any, kind: str) -> None:
    raw, mime = UNDECODABLE[kind]
    ex = chat(glmv_http, body(glmv_server.model, image_message(data_url(raw, mime))))
    assert ex.status == 400, f"a {kind} image must be refused with 400 (the client's fault)\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, f"a {kind} image")


@pytest.mark.parametrize("kind", list(ODD))
def test_odd_image_never_a_5xx(glmv_http: httpx.Client, glmv_server: Any, kind: str) -> None:
    raw, mime = ODD[kind]
    ex = chat(glmv_http, body(glmv_server.model, image_message(data_url(raw, mime))))
    assert ex.status < 500, f"a valid {kind} image must be served or refused, never crash the request\n{ex.evidence()}"
    if ex.status >= 400:
        assert ex.error_message, f"a refused {kind} image must say why\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, f"a {kind} image")


def test_decompression_bomb_is_refused_quickly(glmv_http: httpx.Client, glmv_server: Any) -> None:
    bomb = bomb_png(40000)  # ~200 KB on the wire, 1.6 gigapixels decoded
    before = tree_rss(getattr(glmv_server, "pid", None))
    ex = chat(glmv_http, body(glmv_server.model, image_message(data_url(bomb, "image/png"))))
    after = tree_rss(getattr(glmv_server, "pid", None))
    assert 400 <= ex.status < 500, f"a 40000x40000 decompression bomb must be refused with a 4xx\n{ex.evidence()}"
    if before is not None and after is not None:  # a server this session launched (the reference server too)
        grew = (after - before) / 2 ** 20
        assert grew < 256, f"the server's memory grew by {grew:.0f} MiB on the bomb: it was decoded\n{ex.evidence()}"
    assert ex.elapsed < QUICK, f"refusing the bomb took {ex.elapsed:.1f} s: it was decoded first\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, "a decompression bomb")


def test_more_images_than_the_limit_is_a_400(glmv_http: httpx.Client, glmv_server: Any) -> None:
    n = VLLM_DEFAULT_IMAGE_LIMIT + 1
    content = [{"type": "image_url", "image_url": {"url": tiny_png_url(i)}} for i in range(n)]
    ex = chat(glmv_http, body(glmv_server.model, [*content, {"type": "text", "text": "How many?"}], max_tokens=1))
    assert ex.status == 400, (f"{n} images exceed vLLM's default per-prompt limit of {VLLM_DEFAULT_IMAGE_LIMIT} "
                              f"(--limit-mm-per-prompt); a 400 was due\n{ex.evidence()}")
    canary(glmv_http, glmv_server.model, f"{n} images in one prompt")


def test_video_with_thousands_of_frames_is_bounded(glmv_http: httpx.Client, glmv_server: Any,
                                                   glmv_profile: Any) -> None:
    if not glmv_profile.video:
        pytest.skip(f"profile {glmv_profile.name} takes no video")
    frames = 2000
    part = {"type": "video_url", "video_url": {"url": jpeg_frames_video_url(frames)}}
    ex = chat(glmv_http, body(glmv_server.model, [part, {"type": "text", "text": "What happens?"}], max_tokens=1))
    assert ex.status < 500, f"{frames} video frames crashed the request\n{ex.evidence()}"
    if ex.status == 200:
        # Each kept frame pair costs at least 3 prompt tokens; 2000 frames kept would be 3000+.
        used = (ex.json.get("usage") or {}).get("prompt_tokens", 0)
        assert used < 1500, (f"all {frames} frames of a video/jpeg data URL were decoded ({used} prompt tokens): "
                             f"the frame limit is bypassed (CVE-2026-34755)\n{ex.evidence()}")
    assert ex.elapsed < 30, f"{frames} frames took {ex.elapsed:.1f} s: decoded without a bound\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, f"a video of {frames} frames")


def test_huge_n_is_a_quick_400_and_health_stays_fast(glmv_http: httpx.Client, glmv_server: Any) -> None:
    req = body(glmv_server.model, "Say hi.", max_tokens=1, n=10 ** 9)
    health: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(chat, glmv_http, req, timeout=30)
        for _ in range(20):  # /health while the huge-n request is being refused: it must not stall
            began = time.monotonic()
            glmv_http.get("/health", timeout=10)
            health.append(time.monotonic() - began)
            if fut.done():
                break
            time.sleep(0.1)
        ex = fut.result()
    assert 400 <= ex.status < 500, f"n=10^9 must be refused with a 4xx (CVE-2026-34756)\n{ex.evidence()}"
    assert ex.elapsed < QUICK, f"refusing n=10^9 took {ex.elapsed:.1f} s\n{ex.evidence()}"
    assert max(health) < 1.0, (f"/health took up to {max(health):.1f} s while n=10^9 was handled: the event "
                               f"loop was blocked\n{ex.evidence()}")
    canary(glmv_http, glmv_server.model, "n=10^9")


HUGE_BODY_MIB = 64
HUGE_BODY_WITHIN = 20.0  # seconds: uploading and parsing 64 MiB of JSON, then refusing it without tokenizing


@pytest.mark.parametrize("what", ["header", "body"])
def test_huge_header_or_body_is_refused(glmv_http: httpx.Client, glmv_server: Any, what: str) -> None:
    """header: CVE-2025-48956; vLLM's fix bounds a request's headers at 4 MiB (h11's max incomplete event size),
    and 8 MiB in one header is past any sane bound.

    body: valid JSON, one user message of 64 MiB of text (~1000x any GLM-4V window). No body-size limit stands in
    the way on vLLM 0.32 (uvicorn and Starlette read a body of any size, vLLM sets none), so the limit this probes
    is the context window checked BEFORE tokenizing: vLLM refuses text longer than max_model_len x its longest
    token with a 400 (renderers/params.py, _text_len_check). A correct server answers a 4xx (that 400, or a 413
    from a body limit or a proxy) or closes the connection, within HUGE_BODY_WITHIN s, and keeps serving; one that
    tokenizes 64 MiB first holds the request (and on the double, its event loop) for a minute."""
    try:
        if what == "header":
            ex = request(glmv_http, "GET", "/v1/models", headers={"X-Glmv-Pad": "a" * (8 << 20)}, timeout=30)
        else:
            raw = json.dumps(body(glmv_server.model, "hi " * ((HUGE_BODY_MIB << 20) // 3), max_tokens=1)).encode()
            try:
                ex = request(glmv_http, "POST", CHAT, content=raw, headers={"Content-Type": "application/json"},
                             timeout=HUGE_BODY_WITHIN)
            except httpx.TimeoutException as e:
                pytest.fail(f"a {HUGE_BODY_MIB} MiB JSON body (valid, ~1000x the window) got no answer within "
                            f"{HUGE_BODY_WITHIN:.0f} s ({e!r}): the server tokenizes before any size bound")
        assert 400 <= ex.status < 500, f"a huge {what} must be refused with a 4xx or a closed connection\n{ex}"
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        pass  # the server closed the connection: a correct refusal
    canary(glmv_http, glmv_server.model, f"a huge {what}")


def _tool(parameters: dict[str, Any], name: str = "lookup", strict: bool = False) -> dict[str, Any]:
    fn = {"name": name, "description": "Look something up.", "parameters": parameters}
    return {"type": "function", "function": {**fn, "strict": True} if strict else fn}


DEEP_REF = {"type": "object", "properties": {"a": {"$ref": "#/$defs/d0"}},
            "$defs": {f"d{i}": ({"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{i + 1}"}}} if i < 199
                                else {"type": "string"}) for i in range(200)}}
BAD_PATTERN = {"type": "object", "properties": {"q": {"type": "string", "pattern": "(["}}}
BAD_TYPE = {"type": "object", "properties": {"q": {"type": "no-such-type"}}}
# A tool's schema reaches a grammar compiler only when it is strict ("strict": true; vLLM builds a structural tag
# from it), so only a strict tool's invalid pattern must be refused (the CVE-2025-48944 crash probe); a
# non-strict tool's pattern is never compiled, and answering it harms nothing: there only a 5xx is a defect.
SCHEMAS: dict[str, tuple[dict[str, Any], Any, bool]] = {  # tools, tool_choice, must be a 4xx (else: never 5xx)
    "bad-pattern": (BAD_PATTERN, "required", True),  # sent as a strict tool
    "bad-pattern-loose": (BAD_PATTERN, "required", False),  # the same, not strict
    "bad-type": (BAD_TYPE, "required", True),  # sent as a strict tool
    "bad-type-loose": (BAD_TYPE, "required", False),
    "deep-ref": (DEEP_REF, "required", False),
    "unknown-named-tool": ({"type": "object", "properties": {"q": {"type": "string"}}},
                           {"type": "function", "function": {"name": "no_such_tool"}}, True),
}


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_malformed_tool_schema_is_refused(glmv_http: httpx.Client, glmv_server: Any, kind: str) -> None:
    params, choice, strict = SCHEMAS[kind]
    tool = _tool(params, strict=kind in ("bad-pattern", "bad-type"))
    ex = chat(glmv_http, body(glmv_server.model, "Look up cats.", max_tokens=8, tools=[tool], tool_choice=choice))
    if strict:
        assert 400 <= ex.status < 500, f"a {kind} tool schema must be refused with a 4xx (CVE-2025-48944)\n{ex}"
    else:  # a grammar compiler may take a deep $ref chain; crashing on it is the defect
        assert ex.status < 500, f"a {kind} tool schema crashed the request\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, f"a {kind} tool schema")


@pytest.mark.parametrize("over", ["one-over-max", "far-over-max", "negative"])
def test_logprobs_out_of_range_is_a_400(glmv_http: httpx.Client, glmv_server: Any, glmv_target: Any,
                                        over: str) -> None:
    bound, source = max_logprobs(glmv_target)
    if over == "negative":
        top = -5  # below -1 (-1 asks for the whole vocabulary) on every release
    elif bound is None:
        pytest.skip(f"the server's --max-logprobs is not known ({source}): no top_logprobs is known to be over it")
    else:
        top = bound + 1 if over == "one-over-max" else bound + 1000
    ex = chat(glmv_http, body(glmv_server.model, "Say hi.", max_tokens=1, logprobs=True, top_logprobs=top))
    allowed = "-1 or 0" if bound is None else f"-1 or 0-{bound}"
    assert ex.status == 400, (f"top_logprobs={top} is out of range (allowed: {allowed}; the bound from {source}): "
                              f"a 400 was due\n{ex.evidence()}")


RAW_BODIES: dict[str, tuple[bytes, bool]] = {  # body, must be a 4xx (else: never 5xx)
    "lone-surrogate": (b'{"messages": [{"role": "user", "content": "a \\ud800 b"}], "max_tokens": 1}', True),
    "raw-nul": (b'{"messages": [{"role": "user", "content": "a \x00 b"}], "max_tokens": 1}', True),
    "escaped-nul": (b'{"messages": [{"role": "user", "content": "a \\u0000 b"}], "max_tokens": 1}', False),
    "invalid-utf8": (b'{"messages": [{"role": "user", "content": "a \xff\xfe b"}], "max_tokens": 1}', True),
    "json-array": (b'[{"role": "user", "content": "hi"}]', True),
    "json-string": (b'"hi"', True),
    "json-null": (b"null", True),
}


@pytest.mark.parametrize("kind", list(RAW_BODIES))
def test_malformed_body_is_refused(glmv_http: httpx.Client, glmv_server: Any, kind: str) -> None:
    raw, strict = RAW_BODIES[kind]
    if raw.startswith(b"{"):  # name the served model, so only the probed defect can be refused
        raw = raw[:1] + f'"model": "{glmv_server.model}", '.encode() + raw[1:]
    ex = request(glmv_http, "POST", CHAT, content=raw, headers={"Content-Type": "application/json"})
    if strict:
        assert 400 <= ex.status < 500, f"a body with {kind} must be refused with a 4xx\n{ex.evidence()}"
    else:  # NUL escaped in JSON is a valid character: a server may serve it, never crash on it
        assert ex.status < 500, f"a body with {kind} crashed the request\n{ex.evidence()}"
    canary(glmv_http, glmv_server.model, f"a body with {kind}")


# -- load-shaped probes -------------------------------------------------------------------------------
def test_streams_left_midway_are_freed(glmv_http: httpx.Client, glmv_server: Any, glmv_profile: Any) -> None:
    from pytest_glmv.kit.robustness import leave_streams, running, wait_for_running

    before = running(glmv_http)
    if before is None:
        pytest.skip(f"/metrics has no {'vllm:num_requests_running'}: nothing to read the aborts from")
    # long enough that every stream is still generating when its client leaves (ignore_eos: vLLM's extra)
    req = body(glmv_server.model, "Tell a long story.", max_tokens=min(4096, glmv_profile.max_model_len // 2),
               ignore_eos=True)
    got = leave_streams(glmv_http, req, 16)
    assert got == 16, f"only {got} of 16 streams sent a first chunk"
    freed, seen = wait_for_running(glmv_http, at_most=before, within=5)
    assert freed, (f"16 streams whose clients left after the first chunk are still running 5 s later "
                   f"(num_requests_running {seen[0]} -> {seen[-1]}, was {before}): aborts never reach the engine")
    canary(glmv_http, glmv_server.model, "16 abandoned streams")


def test_concurrent_images_with_malformed_ones(glmv_http: httpx.Client, glmv_server: Any) -> None:
    from pytest_glmv.kit.robustness import burst

    bad = undecodable_images()["garbage"][0]
    bodies = [body(glmv_server.model, image_message(data_url(bad) if i % 5 == 0 else tiny_png_url(i)))
              for i in range(64)]  # 13 of 64 malformed, interleaved with the good ones
    outcomes = burst(glmv_http, bodies, timeout=min(300.0, glmv_http.timeout.read or 300.0))
    good = [o for i, o in enumerate(outcomes) if i % 5]
    broken = [o for i, o in enumerate(outcomes) if i % 5 == 0]
    failed = [o for o in good if o.status != 200]
    assert not failed, (f"{len(failed)} of {len(good)} good image requests failed while malformed ones ran "
                        f"alongside; first: {failed[0]}")
    wrong = [o for o in broken if o.status is None or not 400 <= o.status < 500]
    assert not wrong, f"{len(wrong)} malformed images were not refused with a 4xx; first: {wrong[0]}"
    canary(glmv_http, glmv_server.model, "64 concurrent image requests, 20% malformed")


@pytest.mark.parametrize("how", ["trickle", "huge"])
def test_slow_or_huge_media_url_fails_in_time(glmv_http: httpx.Client, glmv_server: Any, glmv_media: Any,
                                              glmv_settings: Any, how: str) -> None:
    if glmv_media is None:
        pytest.skip("the server is remote and no --glmv-media-host names an address it can fetch media from")
    path = f"/robustness/{uuid.uuid4().hex}.png"
    if how == "trickle":  # 64 KiB at 1 KiB per 0.2 s: 13 s, well past the fetch timeout
        url = glmv_media.add(path, b"\x89PNG\r\n\x1a\n" + b"\0" * (64 << 10), trickle=0.2)
    else:  # 32 MiB that is no image
        url = glmv_media.add(path, b"\x89PNG\r\n\x1a\n" + b"\0" * (32 << 20))
    bound = VLLM_IMAGE_FETCH_TIMEOUT + 5
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(chat, glmv_http, body(glmv_server.model, image_message(url)), timeout=bound)
        time.sleep(0.5)  # while the fetch hangs, an ordinary request must be served
        ok = canary(glmv_http, glmv_server.model, f"a {how} media URL in flight")
        try:
            ex = fut.result()
        except httpx.TimeoutException:
            # vLLM retries a media fetch on purpose (VLLM_MEDIA_FETCH_MAX_RETRIES, default 3, each timeout x4 the
            # last: 5 + 20 + 80 s plus back-off), so one such URL can hold a request ~110 s: a hardening finding.
            report(Finding("media-fetch-held", f"a {how} media URL held the request past {bound:.0f} s (fetch "
                           f"timeout {VLLM_IMAGE_FETCH_TIMEOUT:.0f} s + 5); with vLLM's fetch retries "
                           "(VLLM_MEDIA_FETCH_MAX_RETRIES=3, timeout x4 each) one request can be held ~110 s",
                           "bound it with VLLM_MEDIA_FETCH_MAX_RETRIES=1 and a smaller VLLM_IMAGE_FETCH_TIMEOUT in "
                           "vLLM's environment, or send media as data: URLs"), glmv_settings.waive)
    # The deadline is what this check is about: any error answer in time passes (which status is right for the
    # client's unusable media is test_slow_or_unreachable_media_is_a_client_error's question).
    assert ex.status >= 400, f"a {how} media URL (no image) must end in an error answer, in time\n{ex.evidence()}"
    assert ok.elapsed < QUICK, f"the canary took {ok.elapsed:.1f} s while a {how} fetch hung\n{ok.evidence()}"
    canary(glmv_http, glmv_server.model, f"a {how} media URL")


def _closed_port_url(media: Any) -> str:
    """A URL on the media host, at a port nothing listens on: connection refused."""
    with socket.socket() as s:
        s.bind((media.host, 0))
        port = s.getsockname()[1]
    return f"http://{urlsplit(media.url('/')).hostname}:{port}/robustness/nothing.png"


@pytest.mark.parametrize("how", ["slow", "unreachable"])
def test_slow_or_unreachable_media_is_a_client_error(glmv_http: httpx.Client, glmv_server: Any, glmv_media: Any,
                                                     how: str) -> None:
    """A media URL the server cannot fetch in time, or at all, is the client's problem: a 4xx saying so. A 500 says
    the server broke and tells the client nothing (vLLM 0.32: its catch-all handler answers a fetch timeout with
    500 InternalServerError, message '')."""
    if glmv_media is None:
        pytest.skip("the server is remote and no --glmv-media-host names an address it can fetch media from")
    if how == "slow":  # as the trickle probe: 13 s of bytes, well past the fetch timeout
        url = glmv_media.add(f"/robustness/{uuid.uuid4().hex}.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (64 << 10),
                             trickle=0.2)
    else:
        url = _closed_port_url(glmv_media)
    # vLLM retries a refused connection too (VLLM_MEDIA_FETCH_MAX_RETRIES: back-off 1 + 4 s)
    bound = VLLM_IMAGE_FETCH_TIMEOUT + 10
    try:
        ex = chat(glmv_http, body(glmv_server.model, image_message(url)), timeout=bound)
    except httpx.TimeoutException:
        pytest.skip(f"no answer within {bound:.0f} s: the deadline is test_slow_or_huge_media_url_fails_in_time's "
                    "finding; which status is due cannot be judged")
    assert 400 <= ex.status < 500, (f"the {how} media URL answered {ex.status}: the client's media could not be "
                                    f"fetched, a 4xx naming it was due, not a server error\n{ex.evidence()}")


def test_sigterm_under_load_is_clean(request: pytest.FixtureRequest, glmv_server: Any, glmv_settings: Any) -> None:
    """In-flight requests finish or are refused cleanly, every process exits, /dev/shm is freed (vllm#55510, an
    issue, shows the workers that outlive a SIGKILLed vLLM).

    SIGTERM ends a server, so this never stops a server another check still needs. The built-in
    reference server is cheap: a second one is started here, with the session's faults. A launched
    vLLM cannot be doubled (its GPUs are taken), so the session's own one is stopped, and only when
    this is the session's last check; otherwise run it alone: `pytest --glmv-model ... -k sigterm`.
    """
    from pytest_glmv.kit.evidence import note
    from pytest_glmv.kit.robustness import sigterm_under_load, summary
    from pytest_glmv.lifecycle import procs
    from pytest_glmv.lifecycle.server import VllmServer
    from pytest_glmv.reference.launcher import ReferenceServer

    if isinstance(glmv_server, ReferenceServer):
        shm_before = procs.shm_segments()
        server = ReferenceServer(faults=glmv_server.faults, tpot_ms=20, api_key=glmv_server.api_key,
                                 model=str(glmv_server.model)).start()
        exit_within = 10.0
    elif isinstance(glmv_server, VllmServer):
        if request.session.items[-1] is not request.node:
            pytest.skip("stops the launched vLLM, so it runs only as the session's last check; run it alone "
                        "with -k test_sigterm_under_load_is_clean")
        server, shm_before, exit_within = glmv_server, glmv_server._shm_before, 60.0
    else:
        pytest.skip("the server was not launched by this session: not ours to stop")
    try:
        req = body(str(server.model), "Tell a story.", max_tokens=32)
        report = sigterm_under_load(server, req, streams=8, shm_before=shm_before, exit_within=exit_within)
    finally:
        if server is not glmv_server:
            server.stop()
    cut = [r for r in report.streams if r.cut]
    for key, value in (("exited_after_s", report.exited_after), ("streams_cut", len(cut)),
                       ("survivors", len(report.survivors)), ("leaked_shm", len(report.leaked_shm))):
        note(key, value)
    assert not cut, f"{len(cut)} of 8 in-flight streams were cut mid-answer by SIGTERM\n{summary(report)}"
    assert report.exited_after is not None, (
        f"the server did not exit after SIGTERM: it did nothing for {exit_within:.0f} s (waited {report.waited:.1f} s; "
        f"a server still using CPU, draining or on a busy host, gets up to {3 * exit_within:.0f} s)\n{summary(report)}")
    assert not report.survivors, f"processes outlived the server's SIGTERM (orphans)\n{summary(report)}"
    assert not report.leaked_shm, f"/dev/shm segments were left behind\n{summary(report)}"
