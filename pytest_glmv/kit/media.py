"""Synthetic media with known answers, and the loopback server the suites serve media from.

Images are generated, not shipped: a plain white background with solid, separated
shapes, so a checker knows the colour, the count and the box of every shape.
"""
from __future__ import annotations

import base64
import io
import random
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 210, 20),
    "black": (10, 10, 10), "purple": (130, 40, 160), "orange": (245, 130, 20),
}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class Shape:
    colour: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, inclusive-exclusive


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    shapes: tuple[Shape, ...]

    def box_1000(self, i: int = 0) -> tuple[int, int, int, int]:
        """The shape's box on GLM's 0-1000 grounding scale."""
        x1, y1, x2, y2 = self.shapes[i].box
        return (x1 * 1000 // self.width, y1 * 1000 // self.height, x2 * 1000 // self.width,
                y2 * 1000 // self.height)

    def render(self, mode: str = "RGB") -> "Image.Image":
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        for s in self.shapes:
            draw.rectangle((s.box[0], s.box[1], s.box[2] - 1, s.box[3] - 1), fill=COLOURS[s.colour])
        return img.convert(mode) if mode != "RGB" else img


def square(colour: str = "red", size: int = 224, frac: float = 0.5) -> Scene:
    side = int(size * frac)
    x = (size - side) // 2
    return Scene(size, size, (Shape(colour, (x, x, x + side, x + side)),))


def scatter(n: int, seed: int = 0, size: int = 448, colours: tuple[str, ...] | None = None) -> Scene:
    """n separated squares on a grid, colours and cells chosen by seed."""
    rng = random.Random(seed)
    grid = 4
    cell = size // grid
    cells = rng.sample(range(grid * grid), n)
    shapes = []
    for i, c in enumerate(cells):
        gx, gy = c % grid, c // grid
        side = rng.randint(cell // 3, cell * 2 // 3)
        x = gx * cell + rng.randint(2, cell - side - 2)
        y = gy * cell + rng.randint(2, cell - side - 2)
        colour = colours[i % len(colours)] if colours else rng.choice(list(COLOURS))
        shapes.append(Shape(colour, (x, y, x + side, y + side)))
    return Scene(size, size, tuple(shapes))


def encode(img: "Image.Image", fmt: str = "PNG", **save: Any) -> bytes:
    """The one image encoder: `img` as a `fmt` file (PIL's save options in `save`); JPEG gets an RGB copy of a
    mode it cannot hold."""
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def png(img: "Image.Image") -> bytes:
    return encode(img, "PNG")


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def jpeg_frames_url(frames: Sequence["Image.Image"]) -> str:
    """vLLM's video-as-frames form: `data:video/jpeg;base64,<frame>,<frame>,...` (a repeated frame is
    encoded once)."""
    encoded: dict[int, str] = {}
    for f in frames:
        if id(f) not in encoded:
            encoded[id(f)] = base64.b64encode(encode(f, "JPEG")).decode()
    return "data:video/jpeg;base64," + ",".join(encoded[id(f)] for f in frames)


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def png_url(image: "Scene | Image.Image | None" = None) -> str:
    """A PNG data URL of a scene (rendered; the default square when None) or of a PIL image."""
    image = square() if image is None else image
    return data_url(png(image.render() if isinstance(image, Scene) else image), "image/png")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes | None = None) -> bytes:
    """A PNG assembled chunk by chunk, not encoded: a header that declares any size, with the given
    compressed pixel data (or none). What decompression-bomb probes need and an encoder will not make."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    pixels = png_chunk(b"IDAT", idat) if idat is not None else b""
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + pixels + png_chunk(b"IEND", b"")


# -- serving media over HTTP ---------------------------------------------------------------------
@dataclass
class Hit:
    path: str
    when: float
    headers: dict[str, str]


@dataclass
class _Item:
    body: bytes
    mime: str
    status: int = 200
    location: str | None = None
    trickle: float = 0.0  # seconds between 1 KiB pieces


@dataclass
class MediaServer:
    """A loopback HTTP server for media, with a record of every request it got.

    Also serves as the canary listener of SSRF probes: a correct server never hits it.
    """

    host: str = "127.0.0.1"
    public_host: str | None = None  # the address a remote server reaches us at
    items: dict[str, _Item] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None

    def start(self) -> "MediaServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.hits.append(Hit(self.path, time.monotonic(), dict(self.headers.items())))
                item = server.items.get(self.path.split("?")[0])
                if item is None:
                    self.send_error(404)
                    return
                self.send_response(item.status)
                if item.location:
                    self.send_header("Location", item.location)
                self.send_header("Content-Type", item.mime)
                self.send_header("Content-Length", str(len(item.body)))
                self.end_headers()
                try:
                    for i in range(0, len(item.body), 1024):
                        self.wfile.write(item.body[i:i + 1024])
                        if item.trickle:
                            time.sleep(item.trickle)
                except OSError:
                    pass  # the client gave up: that is what trickle probes want

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None, "MediaServer not started"
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.public_host or self.host}:{self.port}{path}"

    def add(self, path: str, body: bytes, mime: str = "image/png", trickle: float = 0.0) -> str:
        self.items[path] = _Item(body, mime, trickle=trickle)
        return self.url(path)

    def redirect(self, path: str, location: str) -> str:
        self.items[path] = _Item(b"", "text/plain", status=302, location=location)
        return self.url(path)

    def hits_on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path.split("?")[0] == path]

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "MediaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
