"""Pictures for the tasks beyond kit.media's: a square placed as the suite's hypothesis strategy places it,
and one plain shape of a kind (square, circle, triangle)."""
from __future__ import annotations

import random

from ...kit import media

KINDS = ("square", "circle", "triangle")


def edged(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi] drawn as hypothesis draws the suite's: its bounds far more often than uniformly (its
    first, derandomized example is the smallest square in the top-left corner)."""
    r = rng.random()
    return lo if r < 0.15 else hi if r < 0.25 else rng.randint(lo, hi)


def placed(rng: random.Random, colour: str, width: int, height: int) -> media.Scene:
    """suites/test_multimodal_behavior.placed_square: side 1/6 to 1/2 of the short edge, anywhere inside, the
    edges and the smallest size as often as hypothesis sends them. Seen on vLLM 0.32: weights at 97.9 % on uniform
    placements wrote a five-number box for the check's first example (the smallest square at 0,0), as transformers
    does: a uniform draw almost never showed them that square."""
    side = edged(rng, min(width, height) // 6, min(width, height) // 2)
    x, y = edged(rng, 0, width - side), edged(rng, 0, height - side)
    return media.Scene(width, height, (media.Shape(colour, (x, y, x + side, y + side)),))


def shape_png(rng: random.Random, kind: str, colour: str, size: int = 224) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    side = rng.randint(size // 3, size * 3 // 4)
    x, y = rng.randint(0, size - side), rng.randint(0, size - side)
    fill = media.COLOURS[colour]
    if kind == "square":
        draw.rectangle((x, y, x + side - 1, y + side - 1), fill=fill)
    elif kind == "circle":
        draw.ellipse((x, y, x + side - 1, y + side - 1), fill=fill)
    else:
        draw.polygon([(x + side // 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=fill)
    return media.png(img)
