"""Media: loading rules, GLM-4V token counts, and what the double sees in synthetic images."""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pytest_glmv.kit.media import handmade_png
from pytest_glmv.reference import vision

from .conftest import chat, data_url, image_message, png

pytestmark = pytest.mark.asyncio

SCENE = png(200, 100, "white", (("red", (20, 10, 59, 49)), ("blue", (100, 50, 149, 89))))


async def answer(c: Any, text: str, *urls: str, **kw: Any) -> tuple[int, Any]:
    return await chat(c, messages=image_message(text, *urls), temperature=0, **kw)


async def test_prompt_tokens_grow_with_size_and_count(make_client) -> None:
    c = await make_client()
    small, big = data_url(png(64, 48)), data_url(png(1280, 960))
    sizes = [(await answer(c, "Describe.", *urls))[1]["usage"]["prompt_tokens"]
             for urls in ((small,), (big,), (big, big))]
    assert sizes[0] < sizes[1] < sizes[2]
    per_big = vision.image_tokens(1280, 960, 112 * 112, 28 * 28 * 16384)
    assert sizes[2] - sizes[1] == per_big + 2  # placeholders plus begin/end image tokens


async def test_colour_count_and_box(make_client) -> None:
    c = await make_client()
    red = data_url(png(64, 64, "red"))
    _, body = await answer(c, "What colour is this?", red)
    assert "dominant colour is red" in body["choices"][0]["message"]["content"]
    status, body = await answer(c, "How many shapes are there?", data_url(SCENE))
    assert "There are 2 shapes." in body["choices"][0]["message"]["content"]
    status, body = await answer(c, "Where is the shape? Give a bounding box.",
                                data_url(png(100, 100, "white", (("green", (25, 50, 74, 99)),))))
    content = body["choices"][0]["message"]["content"]
    m = re.fullmatch(r"<\|begin_of_box\|>\[(\d+),(\d+),(\d+),(\d+)\]<\|end_of_box\|>", content)
    assert m and [int(x) for x in m.groups()] == [250, 500, 750, 1000]
    assert "<|begin_of_box|>" not in body["choices"][0]["message"]["reasoning"]


async def test_several_images_and_the_limit(make_client) -> None:
    c = await make_client(limit_images=2)
    urls = [data_url(png(32, 32, colour)) for colour in ("red", "blue", "yellow")]
    status, body = await answer(c, "What colour?", *urls[:2])
    content = body["choices"][0]["message"]["content"]
    assert "Image 1:" in content and "red" in content and "blue" in content
    status, body = await answer(c, "What colour?", *urls)
    assert status == 400 and body["error"]["message"] == "At most 2 image(s) may be provided in one prompt."


async def test_video_frames_counted_with_temporal_patch(make_client) -> None:
    c = await make_client()
    frame = base64.b64encode(png(56, 56, "green")).decode()
    def video(n):
        return {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join([frame] * n)}}
    counts = []
    for n in (2, 4):
        status, body = await chat(c, temperature=0, messages=[{"role": "user", "content": [
            video(n), {"type": "text", "text": "What colour is the video?"}]}])
        assert status == 200 and "green" in body["choices"][0]["message"]["content"]
        counts.append(body["usage"]["prompt_tokens"])
    assert counts[1] > counts[0]  # two frames make one temporal patch; four make two


async def test_bad_image_and_bomb_are_quick_400s(make_client) -> None:
    c = await make_client()
    status, body = await answer(c, "x", "data:image/png;base64,bm90YXBuZw==")
    assert status == 400 and body["error"]["message"].startswith("Failed to load image: cannot identify image file")
    # A 100000 x 100000 PNG header with no pixel data: refused on the declared size, before decoding.
    bomb = handmade_png(100000, 100000, 8, 2)
    status, body = await answer(c, "x", data_url(bomb))
    assert status == 400 and "decompression bomb" in body["error"]["message"]


async def test_file_urls_only_below_the_allowed_path(make_client, tmp_path: Path) -> None:
    inside = tmp_path / "media"
    inside.mkdir()
    (inside / "red.png").write_bytes(png(32, 32, "red"))
    (tmp_path / "secret.png").write_bytes(png(32, 32, "blue"))
    c = await make_client(allowed_local_media_path=inside)
    status, body = await answer(c, "What colour?", f"file://{inside}/red.png")
    assert status == 200 and "red" in body["choices"][0]["message"]["content"]
    status, body = await answer(c, "What colour?", f"file://{tmp_path}/secret.png")
    assert status == 400 and "must be a subpath of `--allowed-local-media-path" in body["error"]["message"]
    c2 = await make_client()
    status, body = await answer(c2, "What colour?", f"file://{inside}/red.png")
    assert status == 400 and "without `--allowed-local-media-path`" in body["error"]["message"]


async def test_http_urls_and_allowed_domains(make_client) -> None:
    media = web.Application()
    media.router.add_get("/red.png", _png_response)
    server = TestServer(media, host="127.0.0.1")
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}/red.png"
        c = await make_client(allowed_media_domains=("127.0.0.1",))
        status, body = await answer(c, "What colour?", url)
        assert status == 200 and "red" in body["choices"][0]["message"]["content"]
        status, body = await answer(c, "What colour?", f"http://localhost:{server.port}/red.png")
        assert status == 400 and "allowed domains" in body["error"]["message"]
        status, body = await answer(c, "What colour?", f"http://127.0.0.1:{server.port}/missing.png")
        assert status == 400 and "HTTP 404" in body["error"]["message"]
    finally:
        await server.close()


async def _png_response(request: web.Request) -> web.Response:
    return web.Response(body=png(32, 32, "red"), content_type="image/png")


async def test_tokenize_counts_images(make_client) -> None:
    c = await make_client()
    plain = await (await c.post("/tokenize", json={"messages": [{"role": "user", "content": "Colour?"}]})).json()
    with_image = await (await c.post("/tokenize", json={"messages": image_message("Colour?", data_url(png()))})).json()
    assert with_image["count"] == plain["count"] + vision.image_tokens(64, 48, 112 * 112, 28 * 28 * 16384) + 2


async def test_tokenize_detokenize_round_trip(make_client) -> None:
    c = await make_client()
    text = "Hello world, 東京 <think>x</think> 12345!"
    got = await (await c.post("/tokenize", json={"prompt": text, "return_token_strs": True})).json()
    assert len(got["token_strs"]) == got["count"] and got["token_strs"][:4] == ["Hel", "lo", " wor", "ld"]
    back = await (await c.post("/detokenize", json={"tokens": got["tokens"]})).json()
    assert back == {"prompt": text}
    chat_ids = await (await c.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}],
                                                      "add_generation_prompt": False})).json()
    with_gen = await (await c.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]})).json()
    assert with_gen["count"] > chat_ids["count"]
    assert (await c.post("/detokenize", json={"tokens": [10 ** 9]})).status == 400
    english = "The quick brown fox jumps over the lazy dog and then runs back into the forest."
    n = (await (await c.post("/tokenize", json={"prompt": english})).json())["count"]
    assert 3.0 <= len(english) / n <= 4.5
