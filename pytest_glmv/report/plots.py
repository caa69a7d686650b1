"""The one plotting base, drawn with Pillow (matplotlib is too heavy a dependency for a few curves).

Axes (a frame, ticks and a mapping from data to pixels), the CDF panel and rows of panels serve both
pictures: report.html's plots, drawn here from the condensed distributions in report.json (quantiles,
histogram counts, per-second buckets), so a report can be re-rendered from its JSON alone; and
slo/plot.py's CDF PNG of --glmv-slo-json, drawn from raw records.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..kit.media import data_url, encode

W, H = 360, 260  # one panel of report.html
PAD_L, PAD_R, PAD_T, PAD_B = 58, 16, 30, 40
COLOURS = {"ttft": (31, 119, 180), "tpot": (255, 127, 14), "itl": (44, 160, 44), "e2el": (148, 103, 189),
           "output_tokens": (31, 119, 180), "in_flight": (214, 39, 40), "at_once": (44, 160, 44)}
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font() -> Font:
    return ImageFont.load_default()


def nice_ticks(hi: float, n: int = 5) -> list[float]:
    """Axis ticks at 1/2/2.5/5 x 10^k up to hi."""
    if hi <= 0:
        return [0.0]
    raw = hi / n
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [float(i * step) for i in range(int(hi // step) + 1)]


class Axes:
    """One panel: a frame, ticks and a mapping from data to pixels."""

    def __init__(self, title: str, xmax: float, ymax: float, xlabel: str, yfmt: str = "{:g}",
                 size: tuple[int, int] = (W, H)) -> None:
        width, height = size
        self.img = Image.new("RGB", size, "white")
        self.d = ImageDraw.Draw(self.img)
        self.font = _font()
        self.x0, self.y0, self.x1, self.y1 = PAD_L, PAD_T, width - PAD_R, height - PAD_B
        self.xmax, self.ymax = xmax or 1.0, ymax or 1.0
        self.d.text((self.x0, 8), title, fill="black", font=self.font)
        for t in nice_ticks(self.xmax):
            self.d.line((self.px(t), self.y1, self.px(t), self.y1 + 4), fill="black")
            self.d.text((self.px(t) - 10, self.y1 + 6), f"{t:g}", fill="black", font=self.font)
        for t in nice_ticks(self.ymax, 4):
            self.d.line((self.x0, self.py(t), self.x1, self.py(t)), fill=(232, 232, 232))
            self.d.text((4, self.py(t) - 6), yfmt.format(t), fill="black", font=self.font)
        self.d.text(((self.x0 + self.x1) // 2 - 3 * len(xlabel), height - 16), xlabel, fill="black", font=self.font)

    def px(self, v: float) -> float:
        return self.x0 + (self.x1 - self.x0) * min(v, self.xmax) / self.xmax

    def py(self, v: float) -> float:
        return self.y1 - (self.y1 - self.y0) * min(v, self.ymax) / self.ymax

    def empty(self) -> Image.Image:
        self.d.text((self.x0 + 10, (self.y0 + self.y1) // 2), "no samples", fill="gray", font=self.font)
        return self.done()

    def done(self) -> Image.Image:
        self.d.rectangle((self.x0, self.y0, self.x1, self.y1), outline="black")
        return self.img


def cdf(name: str, n: int, hi: float, curve: Sequence[tuple[float, float]], marks: Sequence[tuple[int, float]],
        size: tuple[int, int] = (W, H)) -> Image.Image:
    """A CDF panel: `curve` as (ms, fraction) points up to `hi` ms, each (percentile, ms) of `marks` a line
    with its label."""
    ax = Axes(f"{name.upper()} CDF (n={n})", hi, 1.0, "ms", "{:.2f}", size)
    if not curve:
        return ax.empty()
    ax.d.line([(ax.px(x), ax.py(f)) for x, f in curve], fill=COLOURS.get(name.lower(), (0, 0, 0)), width=2)
    for row, (p, v) in enumerate(marks):
        ax.d.line((ax.px(v), ax.y0, ax.px(v), ax.y1), fill=(200, 200, 200))
        ax.d.text((ax.x1 - 100, ax.y1 - 50 + row * 13), f"P{p} {v:.2f} ms", fill=(80, 80, 80), font=ax.font)
    return ax.done()


def cdf_panel(name: str, n: int, quantiles: Sequence[float]) -> Image.Image:
    """The empirical CDF, from evenly spaced quantiles (q[i] is the i/(len-1) quantile), P50/P90/P99 marked."""
    m = len(quantiles) - 1
    return cdf(name, n, (max(quantiles) if quantiles else 0.0) * 1.05,
               [(q, i / m) for i, q in enumerate(quantiles)] if m > 0 else [(q, 1.0) for q in quantiles],
               [(p, quantiles[round(p / 100 * m)]) for p in (50, 90, 99)] if quantiles else [])


def histogram_panel(name: str, edges: Sequence[float], counts: Sequence[int]) -> Image.Image:
    ax = Axes(f"{name.upper()} histogram (n={sum(counts)})", (edges[-1] if edges else 0.0) * 1.02,
              (max(counts) if counts else 0) * 1.1, "ms")
    if not counts:
        return ax.empty()
    for lo, hi, c in zip(edges, edges[1:], counts, strict=False):  # edges has one more entry
        if c:
            ax.d.rectangle((ax.px(lo), ax.py(c), max(ax.px(hi) - 1, ax.px(lo)), ax.y1),
                           fill=COLOURS.get(name, (0, 0, 0)))
    return ax.done()


def timeline_panel(title: str, series: Mapping[str, Sequence[float]], bucket_s: float = 1.0) -> Image.Image:
    """Per-bucket series over the run, each a line; the legend names them in their colours."""
    length = max((len(v) for v in series.values()), default=0)
    top = max((max(v) for v in series.values() if len(v)), default=0.0)
    ax = Axes(title, max(length * bucket_s, bucket_s), top * 1.1, "s since the first request")
    if not length:
        return ax.empty()
    for row, (name, values) in enumerate(series.items()):
        colour = COLOURS.get(name, (0, 0, 0))
        pts: list[tuple[float, float]] = []
        for i, v in enumerate(values):  # a step per bucket: the value held over that second
            pts += [(ax.px(i * bucket_s), ax.py(v)), (ax.px((i + 1) * bucket_s), ax.py(v))]
        ax.d.line(pts, fill=colour, width=2)
        ax.d.text((ax.x0 + 6, ax.y0 + 4 + row * 13), name.replace("_", " "), fill=colour, font=ax.font)
    return ax.done()


def row(panels: Sequence[Image.Image], title: str | None = None) -> Image.Image:
    """Panels side by side, under a title line when given."""
    top = 24 if title else 0
    out = Image.new("RGB", (sum(p.width for p in panels), max((p.height for p in panels), default=H) + top), "white")
    if title:
        ImageDraw.Draw(out).text((8, 4), title, fill="black", font=_font())
    x = 0
    for p in panels:
        out.paste(p, (x, top))
        x += p.width
    return out


def data_uri(img: Image.Image) -> str:
    return data_url(encode(img, "PNG", optimize=True), "image/png")


def slo_figures(dist: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(caption, PNG data URI) for one SLO run's distributions; a broken block is skipped, not fatal."""
    figures: list[tuple[str, str]] = []
    makers: list[tuple[str, Callable[[], Image.Image]]] = [
        ("Latency CDFs (TTFT, TPOT, ITL, end-to-end)", lambda: row(
            [cdf_panel(k, int(v.get("n", 0)), v.get("quantiles", [])) for k, v in dist["cdf_ms"].items()])),
        ("TTFT and TPOT histograms", lambda: row(
            [histogram_panel(k, v.get("edges", []), v.get("counts", [])) for k, v in dist["histogram_ms"].items()])),
        ("Throughput over time (one-second buckets)", lambda: row([
            timeline_panel("output tokens per second", {"output_tokens": dist["timeline"]["output_tokens"]}),
            timeline_panel("requests per second: active in it (vLLM's peak), at once (exact)",
                           {"in_flight": dist["timeline"]["in_flight"],
                            "at_once": dist["timeline"].get("at_once", [])})])),
    ]
    for caption, make in makers:
        try:
            figures.append((caption, data_uri(make())))
        except (KeyError, TypeError, ValueError):  # an older or hand-edited report.json: draw what we can
            continue
    return figures
