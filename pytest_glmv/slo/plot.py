"""Latency CDFs (TTFT, TPOT, ITL) as a PNG, drawn with Pillow: matplotlib is too heavy a dependency
for three step curves. One panel per metric, x in milliseconds, y the fraction of samples,
with P50/P90/P99 marked so a reader can check the text report against the picture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .metrics import Record, tpots

W, H = 420, 320  # one panel
PAD_L, PAD_R, PAD_T, PAD_B = 60, 20, 34, 46
COLOURS = {"TTFT": (31, 119, 180), "TPOT": (255, 127, 14), "ITL": (44, 160, 44)}


def series(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Milliseconds per metric, vLLM's definitions (TPOT only for > 1 output token)."""
    ok = [r for r in records if r.ok]
    return {
        "TTFT": np.sort(np.array([r.ttft for r in ok], dtype=float) * 1000),
        "TPOT": np.sort(np.array(tpots(ok), dtype=float) * 1000),
        "ITL": np.sort(np.array([g for r in ok for g in r.itl], dtype=float) * 1000),
    }


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """Axis ticks at 1/2/2.5/5 x 10^k up to hi."""
    if hi <= 0:
        return [0.0]
    raw = hi / n
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [float(i * step) for i in range(int(hi // step) + 1)]


def _panel(name: str, values: np.ndarray, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = PAD_L, PAD_T, W - PAD_R, H - PAD_B
    d.text((x0, 8), f"{name} CDF (n={len(values)})", fill="black", font=font)
    if len(values) == 0:
        d.rectangle((x0, y0, x1, y1), outline="black")
        d.text((x0 + 10, (y0 + y1) // 2), "no samples", fill="gray", font=font)
        return img
    hi = float(values[-1]) * 1.05 or 1.0
    px = lambda v: x0 + (x1 - x0) * v / hi  # noqa: E731
    py = lambda f: y1 - (y1 - y0) * f  # noqa: E731
    for t in nice_ticks(hi):
        d.line((px(t), y1, px(t), y1 + 4), fill="black")
        d.text((px(t) - 10, y1 + 6), f"{t:g}", fill="black", font=font)
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line((x0 - 4, py(f), x0, py(f)), fill="black")
        d.line((x0, py(f), x1, py(f)), fill=(230, 230, 230))
        d.text((8, py(f) - 6), f"{f:.2f}", fill="black", font=font)
    d.text(((x0 + x1) // 2 - 20, H - 18), "ms", fill="black", font=font)
    n = len(values)
    # Step curve; long series are thinned to one point per pixel column (the shape is kept).
    idx = np.unique(np.linspace(0, n - 1, min(n, 4 * (x1 - x0))).astype(int))
    pts: list[tuple[float, float]] = [(px(float(values[0])), py(0.0))]
    for i in idx:
        x = px(float(values[i]))
        pts += [(x, pts[-1][1]), (x, py((i + 1) / n))]
    d.line(pts, fill=COLOURS[name], width=2)  # drawn before the frame and labels
    for row, q in enumerate((50, 90, 99)):
        v = float(np.percentile(values, q))
        d.line((px(v), y0, px(v), y1), fill=(200, 200, 200))
        # Labels stacked down the right-hand side, so close percentiles stay readable.
        d.text((x1 - 110, y0 + 60 + row * 13), f"P{q} {v:.2f} ms", fill=(90, 90, 90), font=font)
    d.rectangle((x0, y0, x1, y1), outline="black")
    return img


def cdf_png(records: Sequence[Record], path: Path, title: str = "latency CDFs") -> Path:
    font = ImageFont.load_default()
    panels = [_panel(name, vals, font) for name, vals in series(records).items()]
    out = Image.new("RGB", (W * len(panels), H + 24), "white")
    ImageDraw.Draw(out).text((8, 4), title, fill="black", font=font)
    for i, p in enumerate(panels):
        out.paste(p, (i * W, 24))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG")
    return path
