"""Security: the API key, what error answers give away, what media the server will fetch or read.

Problems are findings with stable ids (see pytest_glmv.kit.hardening): each fails
the check with its remedy unless waived (`--glmv-waive ID`), then it is an xfail.
Findings of the recommended launch itself fail too (`--allowed-local-media-path /`;
no `--allowed-media-domains`): users deserve to know. Probes only ever reach the
server under test and loopback listeners started here; the SSRF canary listens on
127.0.0.2, never on the media host (127.0.0.1), so an allowlist that admits the media
host is not mistaken for an open fetcher. Sources: GHSA-3f6c-7fw2-ppm4, CVE-2026-24779,
CVE-2026-22778, vLLM #58144.
"""
from __future__ import annotations

import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from pytest_glmv.kit.evidence import CHAT, Exchange, chat, request
from pytest_glmv.kit.hardening import (
    Finding,
    body,
    image_message,
    inside,
    launch_flag,
    notice,
    report,
    undecodable_images,
)
from pytest_glmv.kit.media import MediaServer, data_url, encode, square

pytestmark = pytest.mark.security

CANARY_HOST = "127.0.0.2"  # Linux routes all of 127/8 to loopback; the media server sits on 127.0.0.1


def _need_key(glmv_server: Any) -> str:
    if not glmv_server.api_key:
        pytest.skip("no API key configured (--glmv-api-key): nothing to enforce")
    return str(glmv_server.api_key)


@pytest.fixture
def anon(glmv_server: Any, glmv_settings: Any) -> Iterator[httpx.Client]:
    """The server's root without any Authorization header."""
    with httpx.Client(base_url=glmv_server.root_url, timeout=min(60.0, glmv_settings.request_timeout)) as c:
        yield c


@pytest.mark.parametrize("key", ["none", "wrong"])
def test_v1_refuses_requests_without_the_key(glmv_server: Any, glmv_settings: Any, anon: httpx.Client,
                                             key: str) -> None:
    _need_key(glmv_server)
    headers = {"Authorization": "Bearer not-the-key"} if key == "wrong" else {}
    for ex in (request(anon, "GET", "/v1/models", headers=headers),
               chat(anon, body(glmv_server.model, "Say hi.", max_tokens=1), headers=headers)):
        if ex.status != 401:
            report(Finding("api-key-not-enforced", f"{ex.method} {ex.path} with {key} key answered {ex.status}, "
                           f"not 401", "start the server with --api-key and keep /v1 behind it", ex.evidence()),
                   glmv_settings.waive)


# (finding id, method, path, body, a hole (fails) or a notice (passes, shown as a warning), what it exposes)
OUTSIDE_V1 = [
    ("open-endpoint-invocations", "POST", "/invocations", "chat", True, "unauthenticated inference (vLLM #58144)"),
    ("open-endpoint-tokenize", "POST", "/tokenize", "tokenize", False, "the tokenizer and chat template"),
    ("open-endpoint-pause", "GET", "/pause", None, True, "pausing generation for every client"),
    ("open-endpoint-dev", "GET", "/server_info", None, True, "dev-mode endpoints (VLLM_SERVER_DEV_MODE)"),
    ("open-endpoint-profiler", "GET", "/start_profile", None, True, "the torch profiler (fills the disk)"),
]


@pytest.mark.parametrize("fid,method,path,kind,hole,what", OUTSIDE_V1, ids=[o[0] for o in OUTSIDE_V1])
def test_endpoints_outside_v1_ask_for_the_key(glmv_server: Any, glmv_settings: Any, anon: httpx.Client, fid: str,
                                              method: str, path: str, kind: str | None, hole: bool,
                                              what: str) -> None:
    _need_key(glmv_server)
    # Action endpoints are only knocked on (GET on a POST route): 405 proves the route is there and open,
    # without pausing or profiling anything. 404 is absent, 401/403 guarded.
    payload = {"chat": body(glmv_server.model, "Say hi.", max_tokens=1),
               "tokenize": {"model": glmv_server.model, "prompt": "hi"}}.get(kind or "")
    ex = request(anon, method, path, payload)
    if ex.status in (401, 403, 404):
        return
    finding = Finding(fid, f"{path} answers {ex.status} without the API key: it exposes {what}",
                      "vLLM's --api-key guards /v1 only: expose /v1 alone through a reverse proxy (or "
                      "firewall the port)", ex.evidence())
    if hole:
        report(finding, glmv_settings.waive)
    notice(finding)


LEAKS = {  # finding id -> what an error answer must never carry
    "error-traceback": re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"),
    "error-address-leak": re.compile(r"\b0x[0-9a-fA-F]{8,}\b"),  # CVE-2026-22778: 0x7f... heap addresses
    "error-server-path": re.compile(r"(/[\w.-]+)+/(site|dist)-packages/|(/[\w.-]+)+\.py\b"),
}


def _errors(model: str, window: int) -> dict[str, tuple[str, str, Any]]:
    garbage, truncated = (data_url(*undecodable_images()[k]) for k in ("garbage", "truncated"))
    return {
        "undecodable-image": ("POST", CHAT, body(model, image_message(garbage))),
        "truncated-image": ("POST", CHAT, body(model, image_message(truncated))),
        "missing-file": ("POST", CHAT, body(model, image_message(f"file:///glmv-no-such-dir/{uuid.uuid4().hex}.png"))),
        "unknown-model": ("POST", CHAT, body("glmv-no-such-model", "Say hi.")),
        "max-tokens-over-window": ("POST", CHAT, body(model, "Say hi.", max_tokens=window + 1)),
        "bad-json": ("POST", CHAT, b'{"model": '),
        "unknown-route": ("GET", "/v1/glmv-no-such-route", None),
    }


@pytest.mark.parametrize("kind", list(_errors("m", 1)))
def test_error_answers_give_nothing_away(glmv_http: httpx.Client, glmv_server: Any, glmv_profile: Any,
                                         glmv_settings: Any, kind: str) -> None:
    method, path, payload = _errors(glmv_server.model, glmv_profile.max_model_len)[kind]
    if isinstance(payload, bytes):
        ex = request(glmv_http, method, path, content=payload, headers={"Content-Type": "application/json"})
    else:
        ex = request(glmv_http, method, path, payload)
    assert ex.status >= 400, f"the {kind} request was not refused\n{ex.evidence()}"
    for fid, pattern in LEAKS.items():
        m = pattern.search(ex.text)
        if m:
            report(Finding(fid, f"the {kind} error answer carries {m.group(0)!r}",
                           "return the message only; log tracebacks server-side (upgrade vLLM for CVE-2026-22778)",
                           ex.evidence(2000)), glmv_settings.waive)


# -- media fetching (SSRF) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def canary_listener(glmv_target: Any) -> Iterator[MediaServer]:
    if not glmv_target.is_local:
        pytest.skip("the server is remote: a loopback canary would test our machine, not the server's")
    with MediaServer(CANARY_HOST) as srv:
        srv.add("/canary.png", encode(square("red", 56).render()))
        yield srv


def _fetch(http: httpx.Client, model: str, url: str, canary: MediaServer) -> tuple[Exchange, int]:
    """Send an image URL; return the answer and how many requests reached the canary meanwhile (any path)."""
    before = len(canary.hits)
    ex = chat(http, body(model, image_message(url)), timeout=30)
    time.sleep(0.3)  # a fetch may still be under way when the answer is a refusal
    return ex, len(canary.hits) - before


@pytest.fixture(scope="module")
def reaches_any_host(glmv_http_module: httpx.Client, glmv_server: Any, canary_listener: MediaServer) -> Exchange | None:
    """The direct probe, once per module: the exchange when the server fetched from the canary host."""
    path = f"/direct-{uuid.uuid4().hex}.png"
    canary_listener.add(path, encode(square("red", 56).render()))
    ex, hits = _fetch(glmv_http_module, glmv_server.model, canary_listener.url(path), canary_listener)
    return ex if hits else None


@pytest.fixture(scope="module")
def glmv_http_module(glmv_http_shared: httpx.Client) -> httpx.Client:
    return glmv_http_shared


def test_media_is_fetched_only_from_allowed_hosts(reaches_any_host: Exchange | None, glmv_settings: Any) -> None:
    if reaches_any_host is not None:
        report(Finding("media-domains-open", f"an image URL on {CANARY_HOST} (a loopback address nobody allowed) "
                       "was fetched: any client can make the server request internal hosts (GHSA-3f6c-7fw2-ppm4)",
                       "start vLLM with --allowed-media-domains <your media hosts> (with the plugin: "
                       "--glmv-vllm-arg=--allowed-media-domains=HOST)", reaches_any_host.evidence()),
               glmv_settings.waive)


BYPASSES = {  # variant -> (finding id, remedy)
    "redirect": ("media-redirect-followed", "set VLLM_MEDIA_URL_ALLOW_REDIRECTS=0 in vLLM's environment"),
    "backslash": ("media-url-confusion", "upgrade vLLM to 0.14.1 or later (CVE-2026-24779)"),
    "at-sign": ("media-url-confusion", "check the allowlist against the host the HTTP client connects to"),
    "fragment": ("media-url-confusion", "check the allowlist against the host the HTTP client connects to"),
}


@pytest.mark.parametrize("variant", list(BYPASSES))
def test_media_allowlist_cannot_be_bypassed(glmv_http: httpx.Client, glmv_server: Any, glmv_settings: Any,
                                            glmv_media: Any, canary_listener: MediaServer,
                                            reaches_any_host: Exchange | None, variant: str) -> None:
    if reaches_any_host is not None:
        pytest.skip("the server fetches from any host (finding media-domains-open): no allowlist to bypass")
    if glmv_media is None:
        pytest.skip("no media server the target can reach")
    path = f"/{variant}-{uuid.uuid4().hex}.png"
    canary_listener.add(path, encode(square("red", 56).render()))
    allowed = f"{glmv_media.public_host or glmv_media.host}:{glmv_media.port}"
    target = f"{CANARY_HOST}:{canary_listener.port}"
    url = {"redirect": glmv_media.redirect(f"/to-canary-{uuid.uuid4().hex}", canary_listener.url(path)),
           "backslash": f"http://{target}\\@{allowed}{path}",
           "at-sign": f"http://{allowed}@{target}{path}",
           "fragment": f"http://{target}#@{allowed}{path}"}[variant]
    ex, hits = _fetch(glmv_http, glmv_server.model, url, canary_listener)
    if hits:
        fid, remedy = BYPASSES[variant]
        report(Finding(fid, f"the {variant} URL {url!r} reached the canary on {CANARY_HOST} past the media "
                       f"allowlist", remedy, ex.evidence()), glmv_settings.waive)


# -- local files ------------------------------------------------------------------------------------
def _allowed_media_path(glmv_target: Any) -> str | None:
    """The --allowed-local-media-path the plugin launched the server with (None when unknown)."""
    if glmv_target.plan is not None:
        return launch_flag(glmv_target.plan.argv, "--allowed-local-media-path")
    argv = getattr(glmv_target.server, "argv", None)
    return launch_flag(argv, "--allowed-local-media-path") if argv else None


def _media_path_root(what: str, evidence: str = "") -> Finding:
    return Finding("media-path-root", what, "launch with a narrow media folder: --glmv-allowed-media-path DIR "
                   "(vLLM: --allowed-local-media-path DIR) instead of the recommended /", evidence)


def test_local_files_outside_the_media_path_are_refused(glmv_http: httpx.Client, glmv_server: Any,
                                                        glmv_target: Any, glmv_settings: Any) -> None:
    if not glmv_target.is_local:
        pytest.skip("the server is remote: a file of ours is not on its disk")
    allowed = _allowed_media_path(glmv_target)
    with tempfile.TemporaryDirectory(prefix="glmv-canary-") as tmp:
        secret = Path(tmp) / "secret.png"
        secret.write_bytes(encode(square("green", 56).render()))
        if inside(secret, allowed) and allowed != "/":
            pytest.skip(f"the temporary directory {tmp} lies inside the allowed media path {allowed}")
        ex = chat(glmv_http, body(glmv_server.model, image_message(secret.as_uri())))
    if ex.status == 200:
        what = f"file://{secret} (outside any media folder of ours) was read"
        if allowed in ("/", None):  # None: attached, flags unknown; the recommended launch is the usual cause
            report(_media_path_root(what + f" because the server {'was launched' if allowed else 'is probably run'}"
                                    " with --allowed-local-media-path /: any client can read any file the server "
                                    "can", ex.evidence()), glmv_settings.waive)
        report(Finding("file-outside-media-path", what + f", outside the allowed media path {allowed or '?'}",
                       "keep --allowed-local-media-path to one media folder and upgrade the server",
                       ex.evidence()), glmv_settings.waive)
    assert 400 <= ex.status < 500, f"file:// outside the media path must be refused with a 4xx\n{ex.evidence()}"


def test_launch_does_not_open_the_whole_disk(glmv_target: Any, glmv_settings: Any) -> None:
    if glmv_target.kind != "vllm":
        pytest.skip("only a vLLM this session launched has launch flags to judge")
    allowed = _allowed_media_path(glmv_target)
    if allowed is not None and Path(allowed).resolve() == Path("/"):
        report(_media_path_root("the server was launched with the recommended --allowed-local-media-path /: "
                                "image URLs can read any file the server can (keys, configs, model weights)"),
               glmv_settings.waive)
