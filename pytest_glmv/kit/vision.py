"""GLM-4V image arithmetic and answer parsing for the multimodal suite.

Written from the processor's rule (transformers' Glm4vImageProcessor.smart_resize,
as vLLM's glm4_1v.py calls it), not imported from the reference server: a
check that borrowed the double's arithmetic could not catch the double's error.

The rule: sides rounded to multiples of patch*merge (28 px), an image counted
as `temporal` (2) identical frames when the pixel bounds are applied, then one
token per merged 28x28 cell. The bounds come from the deployment's
preprocessor_config (GLM-4.5V: shortest_edge 112*112; the project's tiny
model: longest_edge 448*448), so exact expectations are only hard-coded for
sizes whose count no plausible bounds change (`bounds_free`).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from .media import COLOURS, Scene, encode

TEMPORAL = 2
# <|begin_of_image|> and <|end_of_image|> surround the expanded <|image|> placeholder in GLM's template.
IMAGE_MARKERS = 2
# The tightest bounds seen in a deployment (the project's tiny model); GLM-4.5V's are wider.
SAFE_MIN_PIXELS = 112 * 112
SAFE_MAX_PIXELS = 448 * 448


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, patch: int = 14, merge: int = 2,
                 frames: int = TEMPORAL) -> tuple[int, int]:
    factor = patch * merge
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio over 200: {width}x{height}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    t_bar = max(TEMPORAL, round(frames / TEMPORAL) * TEMPORAL)
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width * frames))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(width: int, height: int, min_pixels: int, max_pixels: int, patch: int = 14, merge: int = 2) -> int:
    """<|image|> tokens one image expands to (markers not included)."""
    h, w = smart_resize(height, width, min_pixels, max_pixels, patch, merge)
    return (h // (patch * merge)) * (w // (patch * merge))


def bounds_free(width: int, height: int, patch: int = 14, merge: int = 2) -> bool:
    """True when the count is the same under the tightest known bounds and under no bounds at all."""
    return (image_tokens(width, height, SAFE_MIN_PIXELS, SAFE_MAX_PIXELS, patch, merge)
            == image_tokens(width, height, 1, 10 ** 12, patch, merge))


def image_limit(argv: Sequence[str], default: int) -> int:
    """The per-prompt image limit a `vllm serve` command line sets (--limit-mm-per-prompt), else `default`."""
    from .hardening import launch_flag  # here, not at the top: the tiny model's training imports this module
    # where neither httpx nor pytest is installed (pytest_glmv.tiny.train)

    raw = launch_flag(argv, "--limit-mm-per-prompt")
    if raw is None:
        return default
    try:
        value = json.loads(raw).get("image", default)
    except (ValueError, AttributeError):
        return default
    # newer vLLM also takes {"image": {"count": N, ...}}
    return int(value.get("count", default) if isinstance(value, dict) else value)


# -- images in every form a client sends -----------------------------------------------------
def plain(size: tuple[int, int], colour: tuple[int, int, int] = (220, 30, 30), mode: str = "RGB") -> Any:
    from PIL import Image

    return Image.new("RGB", size, colour).convert(mode) if mode != "RGB" else Image.new("RGB", size, colour)


def in_format(scene: Scene, variant: str) -> tuple[bytes, str]:
    """(bytes, mime) of the scene as PNG, JPEG, WEBP, GIF (animated: the first frame is the scene),
    RGBA, grayscale (L) or palette (P) PNG."""
    if variant in ("PNG", "JPEG", "WEBP"):
        return encode(scene.render(), variant), f"image/{variant.lower()}"
    if variant == "GIF":
        first = scene.render().convert("P")
        second = plain((scene.width, scene.height), COLOURS["blue"]).convert("P")
        return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0), "image/gif"
    if variant in ("RGBA", "L", "P"):
        return encode(scene.render(variant), "PNG"), "image/png"
    raise ValueError(f"unknown image variant {variant!r}")


def word_png(word: str, size: tuple[int, int] = (320, 128)) -> bytes:
    """A short word in large black letters on white.

    The word is also stored in a PNG text chunk (`glmv:text`): the reference
    server is a double that cannot read pixels and answers from it; a real
    server never looks at PNG metadata, so the pixels are what it is judged on.
    """
    from PIL import Image, ImageDraw, ImageFont
    from PIL.PngImagePlugin import PngInfo

    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size[1] // 2)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text(((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top), word, fill=(0, 0, 0),
              font=font)
    info = PngInfo()
    info.add_text("glmv:text", word)
    return encode(img, "PNG", pnginfo=info)


# -- answers ------------------------------------------------------------------------------------
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_BOXED = re.compile(re.escape(BOX_OPEN) + r"(.*?)" + re.escape(BOX_CLOSE), re.S)
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_FOUR = re.compile(r"[\[(]+" + ",".join([_NUM] * 4) + r"[\])]+")


def boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every [x1,y1,x2,y2] inside GLM's box markup; bracket styles vary ([..], [[..]], (..))."""
    out = []
    for inner in _BOXED.findall(text or ""):
        for m in _FOUR.finditer(inner):
            x1, y1, x2, y2 = (float(g) for g in m.groups())
            out.append((x1, y1, x2, y2))
    return out


def coordinate_boxes(text: str) -> list[str]:
    """Box markup whose content is coordinates (a grounding answer), as opposed to a boxed prose answer."""
    return [inner for inner in _BOXED.findall(text or "") if _FOUR.search(inner)]


def unboxed(text: str) -> str:
    return (text or "").replace(BOX_OPEN, "").replace(BOX_CLOSE, "")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


_NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}


def numbers(text: str) -> list[int]:
    """Counts stated in an answer, digits or words, in order."""
    out = []
    for tok in re.findall(r"\d+|[a-z]+", (text or "").lower()):
        if tok.isdigit():
            out.append(int(tok))
        elif tok in _NUMBER_WORDS:
            out.append(_NUMBER_WORDS[tok])
    return out


def colours_named(text: str) -> set[str]:
    words = set(re.findall(r"[a-z]+", (text or "").lower()))
    return {c for c in COLOURS if c in words}


def ordinal(text: str) -> int | None:
    """Which image an answer points at: 1 or 2 (first/second, image 1/2), None when unclear or both."""
    low = (text or "").lower()
    hits = set()
    if re.search(r"\b(first|1st|left|former)\b|\b(image|picture) ?(#|no\.? ?)?1\b", low):
        hits.add(1)
    if re.search(r"\b(second|2nd|right|latter)\b|\b(image|picture) ?(#|no\.? ?)?2\b", low):
        hits.add(2)
    if not hits:
        bare = re.findall(r"\b[12]\b", low)
        hits = {int(b) for b in bare}
    return hits.pop() if len(hits) == 1 else None
