"""Every fault mode changes the behaviour it claims to, and the correct server does not show it."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pytest_glmv.reference.faults import FAULTS, Faults, UnknownFault

from .conftest import WEATHER_TOOL, chat, chunks, data_url, image_message, png

pytestmark = pytest.mark.asyncio

WEATHER = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
BOX_IMAGE = data_url(png(100, 100, "white", (("green", (25, 50, 74, 99)),)))
TESTED: set[str] = set()


def covers(*names: str) -> None:
    TESTED.update(names)


async def both(make_client, fault: str, **kw: Any) -> tuple[Any, Any]:
    covers(fault)
    return await make_client(**kw), await make_client(faults=[fault], **kw)


async def test_reasoning_and_tool_parsers(make_client) -> None:
    good, bad = await both(make_client, "no-reasoning-parser")
    _, ok = await chat(good, messages=WEATHER, temperature=0)
    _, body = await chat(bad, messages=WEATHER, temperature=0)
    assert ok["choices"][0]["message"]["reasoning"] and "<think>" not in ok["choices"][0]["message"]["content"]
    msg = body["choices"][0]["message"]
    assert msg["reasoning"] is None and msg["content"].startswith("<think>") and "</think>" in msg["content"]
    good, bad = await both(make_client, "no-tool-parser")
    _, ok = await chat(good, messages=WEATHER, tools=[WEATHER_TOOL], temperature=0)
    _, body = await chat(bad, messages=WEATHER, tools=[WEATHER_TOOL], temperature=0)
    assert ok["choices"][0]["message"]["tool_calls"]
    msg = body["choices"][0]
    assert "tool_calls" not in msg["message"] and "<tool_call>get_weather" in msg["message"]["content"]
    assert msg["finish_reason"] == "stop"


async def test_auto_tool_choice_and_untyped_args(make_client) -> None:
    good, bad = await both(make_client, "no-auto-tool-choice")
    assert (await chat(good, messages=WEATHER, tools=[WEATHER_TOOL]))[0] == 200
    status, body = await chat(bad, messages=WEATHER, tools=[WEATHER_TOOL], tool_choice="auto")
    assert status == 400 and body["error"]["message"] == \
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
    assert (await chat(bad, messages=WEATHER, tools=[WEATHER_TOOL], tool_choice="required"))[0] == 200
    good, bad = await both(make_client, "untyped-tool-args")
    args = [json.loads((await chat(c, messages=WEATHER, tools=[WEATHER_TOOL], temperature=0))[1]
                       ["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) for c in (good, bad)]
    assert args == [{"city": "Paris", "days": 3}, {"city": "Paris", "days": "3"}]


async def test_window_faults(make_client) -> None:
    long = [{"role": "user", "content": "the " * 40000}]
    good, bad = await both(make_client, "small-window")
    for c in (good, bad):
        assert (await (await c.get("/v1/models")).json())["data"][0]["max_model_len"] == 65536
        assert (await (await c.post("/tokenize", json={"prompt": "x"})).json())["max_model_len"] == 65536
    assert (await chat(good, messages=long, max_tokens=10))[0] == 200
    status, body = await chat(bad, messages=long, max_tokens=10)
    assert status == 400 and "maximum context length is 32768 tokens" in body["error"]["message"]
    good, bad = await both(make_client, "silent-truncation", max_model_len=4096)
    long = [{"role": "user", "content": "the " * 5000}]
    status, body = await chat(good, messages=long)
    assert status == 400 and body["error"]["param"] == "input_tokens"
    status, body = await chat(bad, messages=long, max_tokens=16)
    assert status == 200 and body["usage"]["prompt_tokens"] < 4096


async def test_images_ignored(make_client) -> None:
    good, bad = await both(make_client, "images-ignored")
    msgs = image_message("What colour is this image?", data_url(png(64, 64, "red")))
    _, ok = await chat(good, messages=msgs, temperature=0)
    _, body = await chat(bad, messages=msgs, temperature=0)
    assert "red" in ok["choices"][0]["message"]["content"]
    assert "red" not in body["choices"][0]["message"]["content"]
    assert body["usage"]["prompt_tokens"] < ok["usage"]["prompt_tokens"] - 10


async def test_bad_image_500_then_hangs(make_client) -> None:
    good, bad = await both(make_client, "bad-image-500")
    msgs = image_message("x", "data:image/png;base64,bm90YXBuZw==")
    assert (await chat(good, messages=msgs))[0] == 400
    assert (await good.get("/health")).status == 200
    status, body = await chat(bad, messages=msgs)
    assert status == 500 and body["error"]["type"] == "InternalServerError"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(bad.get("/health"), timeout=0.5)


async def test_box_token_faults(make_client) -> None:
    covers("box-tokens-leak", "box-tokens-stripped")
    good = await make_client()
    leak = await make_client(faults=["box-tokens-leak"])
    strip = await make_client(faults=["box-tokens-stripped"])
    ground = image_message("Where is the shape? Give its bounding box.", BOX_IMAGE)
    colour = image_message("What colour is the shape?", BOX_IMAGE)
    ok = (await chat(good, messages=ground, temperature=0))[1]["choices"][0]["message"]
    assert ok["content"] == "<|begin_of_box|>[250,500,750,1000]<|end_of_box|>" and "<|" not in ok["reasoning"]
    assert "<|" not in (await chat(good, messages=colour, temperature=0))[1]["choices"][0]["message"]["content"]
    leaked = (await chat(leak, messages=colour, temperature=0))[1]["choices"][0]["message"]
    assert "<|begin_of_box|>" in leaked["reasoning"] and leaked["content"].startswith("<|begin_of_box|>")
    stripped = (await chat(strip, messages=ground, temperature=0))[1]["choices"][0]["message"]
    assert stripped["content"] == "[250,500,750,1000]"


async def test_slow_first_token(make_client) -> None:
    good, bad = await both(make_client, "slow-first-token")
    loop = asyncio.get_running_loop()
    took = []
    for c in (good, bad):
        t = loop.time()
        await chat(c, messages=WEATHER, max_tokens=2)
        took.append(loop.time() - t)
    assert took[0] < 0.5 <= 1.4 <= took[1]


async def test_api_key_faults(make_client) -> None:
    good, bad = await both(make_client, "api-key-ignored", api_key="sekret")
    for path in ("/v1/models",):
        assert (await good.get(path)).status == 401
        assert await (await good.get(path)).json() == {"error": "Unauthorized"}
        assert (await good.get(path, headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await good.get(path, headers={"Authorization": "Bearer sekret"})).status == 200
        assert (await bad.get(path)).status == 200
    for path in ("/health", "/version", "/metrics"):
        assert (await good.get(path)).status == 200


async def test_media_access_faults(make_client, tmp_path: Path) -> None:
    inside = tmp_path / "media"
    inside.mkdir()
    (tmp_path / "secret.png").write_bytes(png(32, 32, "blue"))
    good, bad = await both(make_client, "file-anywhere", allowed_local_media_path=inside)
    msgs = image_message("What colour?", f"file://{tmp_path}/secret.png")
    assert (await chat(good, messages=msgs))[0] == 400
    status, body = await chat(bad, messages=msgs, temperature=0)
    assert status == 200 and "blue" in body["choices"][0]["message"]["content"]
    media = web.Application()

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png(32, 32, "red"), content_type="image/png")

    media.router.add_get("/red.png", image)
    server = TestServer(media, host="127.0.0.1")
    await server.start_server()
    try:
        good, bad = await both(make_client, "ssrf-open", allowed_media_domains=("media.example",))
        msgs = image_message("What colour?", f"http://127.0.0.1:{server.port}/red.png")
        assert (await chat(good, messages=msgs))[0] == 400
        status, body = await chat(bad, messages=msgs, temperature=0)
        assert status == 200 and "red" in body["choices"][0]["message"]["content"]
    finally:
        await server.close()


async def test_stream_usage_faults(make_client) -> None:
    """The usage chunk (choices [], last before [DONE]) carries the non-streamed counts; the faults drop it or
    count one token short."""
    body = {"messages": WEATHER, "temperature": 0, "max_tokens": 8, "ignore_eos": True}
    good, dropped = await both(make_client, "stream-usage-dropped")
    miscounted = await make_client(faults=["stream-usage-miscounted"])
    covers("stream-usage-miscounted")
    _, whole = await chat(good, **body)
    want = {k: whole["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    assert want["completion_tokens"] == 8

    async def streamed(client, **extra: Any) -> list[dict[str, Any]]:
        return chunks((await chat(client, stream=True, **body, **extra))[1])

    events = await streamed(good, stream_options={"include_usage": True})
    assert events[-1]["choices"] == [] and {k: events[-1]["usage"][k] for k in want} == want
    assert not [e for e in events[:-1] if "usage" in e]
    assert not [e for e in await streamed(good) if "usage" in e]  # not asked for: none
    assert not [e for e in await streamed(dropped, stream_options={"include_usage": True}) if "usage" in e]
    last = (await streamed(miscounted, stream_options={"include_usage": True}))[-1]["usage"]
    assert (last["completion_tokens"], last["total_tokens"]) == (7, want["total_tokens"] - 1)


async def test_stream_named_call_empty(make_client) -> None:
    good, bad = await both(make_client, "stream-named-call-empty")
    named = {"messages": WEATHER, "tools": [WEATHER_TOOL], "temperature": 0, "stream": True,
             "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
             "chat_template_kwargs": {"enable_thinking": False}}

    def deltas(text: str) -> list[dict[str, Any]]:
        return [c["delta"] for e in chunks(text) for c in e["choices"]]

    ok = deltas((await chat(good, **named))[1])
    assert any(d.get("tool_calls") for d in ok)
    empty = deltas((await chat(bad, **named))[1])
    assert not any(d.get("tool_calls") or d.get("content") for d in empty)
    assert empty[0] == {"role": "assistant", "content": ""}  # the role chunk, then only the finish
    # not named: untouched; and non-streamed named answers keep their call
    auto = deltas((await chat(bad, **{**named, "tool_choice": "auto"}))[1])
    assert any(d.get("tool_calls") for d in auto)
    _, whole = await chat(bad, **{**named, "stream": False})
    assert whole["choices"][0]["message"]["tool_calls"]


async def test_forced_call_args_dropped(make_client) -> None:
    """A named call keeps its envelope and loses its arguments (set_label({}) on vLLM 0.31.0); auto calls keep
    theirs."""
    good, bad = await both(make_client, "forced-call-args-dropped")
    named = {"messages": WEATHER, "tools": [WEATHER_TOOL], "temperature": 0,
             "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
             "chat_template_kwargs": {"enable_thinking": False}}

    def calls(body: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in body["choices"][0]["message"].get("tool_calls") or []]

    kept = calls((await chat(good, **named))[1])
    assert kept and all(args for _, args in kept)
    assert calls((await chat(bad, **named))[1]) == [(name, {}) for name, _ in kept]
    assert calls((await chat(bad, **{**named, "tool_choice": "auto"}))[1]) == \
        calls((await chat(good, **{**named, "tool_choice": "auto"}))[1])


async def test_reported_release_and_the_legacy_field(make_client) -> None:
    """/version: 0.32.0; a server sending `reasoning_content` plays 0.11.0 unless told its release; the
    reasoning-field-legacy fault is a 0.32.0 that sends the legacy name."""
    async def seen(client) -> tuple[str, list[str]]:
        version = (await (await client.get("/version")).json())["version"]
        _, body = await chat(client, messages=WEATHER, temperature=0)
        msg = body["choices"][0]["message"]
        assert body["system_fingerprint"].startswith(f"vllm-{version}-")
        return version, [k for k in ("reasoning", "reasoning_content") if msg.get(k)]

    good, bad = await both(make_client, "reasoning-field-legacy")
    assert await seen(good) == ("0.32.0", ["reasoning"])
    assert await seen(bad) == ("0.32.0", ["reasoning_content"])
    assert await seen(await make_client(reasoning_field="reasoning_content")) == ("0.11.0", ["reasoning_content"])
    told = await make_client(reasoning_field="reasoning_content", vllm_version="0.14.1")
    assert await seen(told) == ("0.14.1", ["reasoning_content"])
    assert (await seen(await make_client(faults=["reasoning-field-legacy"], vllm_version="0.20.0")))[0] == "0.20.0"


async def test_registry() -> None:
    with pytest.raises(UnknownFault, match="valid faults: no-reasoning-parser"):
        Faults(["nope"])
    with pytest.raises(KeyError):
        Faults().on("not-registered")


# The faults this module owns; faults other suites register are proven by their own tests.
OWN = {"no-reasoning-parser", "no-tool-parser", "no-auto-tool-choice", "untyped-tool-args", "small-window",
       "silent-truncation", "images-ignored", "bad-image-500", "box-tokens-leak", "box-tokens-stripped",
       "slow-first-token", "api-key-ignored", "file-anywhere", "ssrf-open", "stream-usage-dropped",
       "stream-usage-miscounted", "stream-named-call-empty", "reasoning-field-legacy", "forced-call-args-dropped"}


async def test_every_fault_here_has_a_test() -> None:
    """Runs last in this module: each fault it owns was exercised above."""
    if len(TESTED) < 5:
        pytest.skip("run with the whole module to check coverage of the registry")
    assert OWN <= set(FAULTS) and OWN - TESTED == set()
