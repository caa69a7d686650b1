"""GLM-4V image arithmetic and images in every form for the multimodal suite.

Written from the processor's rule (transformers' Glm4vImageProcessor.smart_resize,
as vLLM's glm4_1v.py calls it), not imported from the reference server: a
check that borrowed the double's arithmetic could not catch the double's error.

How answers are read (boxes, colours, counts) is kit/judges.py.

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
