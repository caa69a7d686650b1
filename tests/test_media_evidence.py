"""Synthetic media, the media server, and evidence formatting."""
from __future__ import annotations

import base64
import io
import json
import urllib.request

import httpx
import pytest
from PIL import Image

from pytest_glmv.kit import evidence, media


def test_scene_renders_what_it_claims() -> None:
    scene = media.scatter(3, seed=7)
    img = scene.render()
    assert img.size == (448, 448)
    for shape in scene.shapes:
        x1, y1, x2, y2 = shape.box
        assert img.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)) == media.COLOURS[shape.colour]
        assert img.getpixel((x1 - 1, y1 - 1)) == (255, 255, 255)  # separated by background
    assert media.scatter(3, seed=7) == scene and media.scatter(3, seed=8) != scene
    assert media.square("blue", 200).box_1000() == (250, 250, 750, 750)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_encode_round_trips(fmt: str) -> None:
    data = media.encode(media.square("green").render("RGBA" if fmt == "PNG" else "RGB"), fmt)
    url = media.data_url(data, media.MIME[fmt])
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.format == fmt and back.size == (224, 224)


def test_media_server_serves_records_and_redirects() -> None:
    with media.MediaServer() as srv:
        url = srv.add("/a.png", b"PNGDATA")
        assert urllib.request.urlopen(url).read() == b"PNGDATA"
        srv.redirect("/r", url)
        assert urllib.request.urlopen(srv.url("/r")).read() == b"PNGDATA"  # followed
        assert [h.path for h in srv.hits] == ["/a.png", "/r", "/a.png"]
        assert len(srv.hits_on("/a.png")) == 2
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(srv.url("/missing"))


def test_evidence_shortens_data_urls_and_carries_status() -> None:
    body = {"messages": [{"role": "user", "content": [media.image_part(media.png_url())]}]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad image", "type": "BadRequestError",
                                                   "param": None, "code": 400}})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x") as http:
        ex = evidence.chat(http, body)
    assert ex.status == 400 and ex.error_message == "bad image"
    text = ex.evidence()
    assert "POST /v1/chat/completions" in text and "status: 400" in text and "bad image" in text
    assert "base64,<" in text and " bytes>" in text and len(text) < 1500


def test_stream_helpers_reassemble() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning": "think"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                             "function": {"name": "f", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": "}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"completion_tokens": 5}},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x") as http:
        ex = evidence.stream(http, {"messages": []})
    assert ex.raw_lines[-1] == "data: [DONE]" and len(ex.events) == 7
    assert evidence.joined(ex.events, "reasoning") == "think"
    assert evidence.finish_reasons(ex.events) == ["tool_calls"]
    (call,) = evidence.streamed_tool_calls(ex.events)
    assert (call["id"], call["name"], json.loads(call["arguments"]), call["id_count"]) == ("c1", "f", {"a": 1}, 1)
