"""GLM-4V's image token arithmetic, and what the double "sees" in a synthetic picture.

Token counts follow transformers' Glm4vImageProcessor.smart_resize as vLLM's
glm4_1v.py uses it: 14-pixel patches merged 2x2 (factor 28), an image is two
identical frames (temporal patch 2) so the pixel bounds apply to 2*h*w.
Pillow and numpy are imported on first use: /health must come up fast.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

PATCH = 14
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE
# PIL's own decompression-bomb threshold; refusing before decode keeps a bomb a quick 400.
MAX_DECLARED_PIXELS = 89_478_485


class MediaError(ValueError):
    """Undecodable or refused media; str() is the client-facing message."""


def smart_resize(frames: int, height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    if height < FACTOR or width < FACTOR:
        scale = max(FACTOR / height, FACTOR / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        ratio = max(height, width) / min(height, width)
        raise MediaError(f"absolute aspect ratio must be smaller than 200, got {ratio}")
    h_bar = max(FACTOR, round(height / FACTOR) * FACTOR)
    w_bar = max(FACTOR, round(width / FACTOR) * FACTOR)
    t_bar = max(TEMPORAL, round(frames / TEMPORAL) * TEMPORAL)
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h_bar = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width * frames))
        h_bar = math.ceil(height * beta / FACTOR) * FACTOR
        w_bar = math.ceil(width * beta / FACTOR) * FACTOR
    return h_bar, w_bar


def image_tokens(width: int, height: int, min_pixels: int, max_pixels: int) -> int:
    h, w = smart_resize(TEMPORAL, height, width, min_pixels, max_pixels)
    return (h // FACTOR) * (w // FACTOR)


@dataclass
class Seen:
    """What the double noticed in one image (or video frame)."""

    width: int
    height: int
    dominant: str = "unknown"
    background: str = "unknown"
    foreground: list[str] = field(default_factory=list)
    shapes: int = 0
    bbox: tuple[int, int, int, int] | None = None  # 0-1000 scale, GLM's grounding convention
    # The double cannot read pixels: the multimodal suite's word images carry their word in a PNG text chunk.
    text: str | None = None


@dataclass
class Media:
    kind: str  # image | video
    tokens: int
    seen: list[Seen]
    frames: int = 1


_PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (220, 20, 20)), ("red", (255, 0, 0)), ("green", (0, 128, 0)), ("green", (0, 255, 0)),
    ("blue", (0, 0, 255)), ("blue", (30, 60, 200)), ("yellow", (255, 255, 0)), ("white", (255, 255, 255)),
    ("black", (0, 0, 0)), ("gray", (128, 128, 128)), ("orange", (255, 140, 0)), ("purple", (128, 0, 128)),
    ("pink", (255, 105, 180)), ("cyan", (0, 255, 255)), ("magenta", (255, 0, 255)), ("brown", (139, 69, 19)),
)


def colour_name(rgb: tuple[int, ...]) -> str:
    return min(_PALETTE, key=lambda p: sum((a - b) ** 2 for a, b in zip(rgb, p[1], strict=False)))[0]


def open_image(data: bytes) -> Any:
    """Decode to RGB; refuses undecodable bytes and bomb-sized declarations before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise MediaError(f"Failed to load image: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MediaError("Failed to load image: cannot identify image file <_io.BytesIO object>") from e
    w, h = img.size
    if w * h > MAX_DECLARED_PIXELS:
        raise MediaError(f"Failed to load image: Image size ({w * h} pixels) exceeds limit of "
                         f"{MAX_DECLARED_PIXELS} pixels, could be decompression bomb DOS attack.")
    return img


def bgr(img: Any) -> Any:
    """The image with red and blue swapped (channels-bgr)."""
    from PIL import Image

    return Image.merge("RGB", img.convert("RGB").split()[::-1])


def frames_of(img: Any, limit: int = 32) -> list[Any]:
    """Every frame of an animated image (a GIF stands in for a short video)."""
    out = []
    for i in range(min(getattr(img, "n_frames", 1), limit)):
        img.seek(i)
        out.append(img.convert("RGB"))
    return out


def look(img: Any) -> Seen:
    """Background = most common border colour; shapes = connected non-background regions."""
    import numpy as np

    try:
        rgb = img.convert("RGB")
    except (OSError, ValueError) as e:
        raise MediaError(f"Failed to load image: {e}") from e
    width, height = rgb.size
    scale = min(1.0, 160 / max(width, height))
    small = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))), 0) if scale < 1 else rgb
    a = np.asarray(small, dtype=np.int32)
    h, w = a.shape[:2]
    flat = a.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    dominant = colour_name(tuple(int(x) for x in colours[counts.argmax()]))
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bc, bn = np.unique(border, axis=0, return_counts=True)
    bg = bc[bn.argmax()]
    mask = np.abs(a - bg).sum(axis=2) > 60
    seen = Seen(width, height, dominant=dominant, background=colour_name(tuple(int(x) for x in bg)))
    seen.text = (getattr(img, "info", None) or {}).get("glmv:text")
    if not mask.any():
        return seen
    ys, xs = np.nonzero(mask)
    seen.bbox = (int(xs.min() * 1000 // w), int(ys.min() * 1000 // h),
                 int(math.ceil((xs.max() + 1) * 1000 / w)), int(math.ceil((ys.max() + 1) * 1000 / h)))
    seen.shapes, fg = _components(mask, a, min_area=max(2, h * w // 1000))
    seen.foreground = fg
    return seen


def _components(mask: Any, a: Any, min_area: int) -> tuple[int, list[str]]:
    h, w = mask.shape
    todo = mask.copy()
    count = 0
    names: list[str] = []
    for y0, x0 in zip(*todo.nonzero(), strict=False):
        if not todo[y0, x0]:
            continue
        stack, area, first = [(int(y0), int(x0))], 0, a[y0, x0]
        todo[y0, x0] = False
        while stack:
            y, x = stack.pop()
            area += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and todo[ny, nx]:
                    todo[ny, nx] = False
                    stack.append((ny, nx))
        if area >= min_area:
            count += 1
            name = colour_name(tuple(int(v) for v in first))
            if name not in names:
                names.append(name)
    return count, names
