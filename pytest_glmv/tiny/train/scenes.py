"""Pictures for the tasks beyond kit.media's: a square placed as the suite's hypothesis strategy places it,
and one plain shape of a kind (square, circle, triangle)."""
from __future__ import annotations

import random

from ...kit import media

KINDS = ("square", "circle", "triangle")


def placed(rng: random.Random, colour: str, width: int, height: int) -> media.Scene:
    """suites/test_multimodal_behavior.placed_square: side 1/6 to 1/2 of the short edge, anywhere inside."""
    side = rng.randint(min(width, height) // 6, min(width, height) // 2)
    x, y = rng.randint(0, width - side), rng.randint(0, height - side)
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
