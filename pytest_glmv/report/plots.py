"""Plots for report.html, drawn with Pillow from the condensed distributions in report.json.

matplotlib is not a dependency (too heavy for a few curves); slo/plot.py draws the CDF PNG of
--glmv-slo-json from raw records, this module draws from what report.json keeps (quantiles,
histogram counts, per-second buckets), so a report can be re-rendered from its JSON alone.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..kit.media import data_url, encode
from ..slo.plot import nice_ticks

W, H = 360, 260
PAD_L, PAD_R, PAD_T, PAD_B = 58, 16, 30, 40
COLOURS = {"ttft": (31, 119, 180), "tpot": (255, 127, 14), "itl": (44, 160, 44), "e2el": (148, 103, 189),
           "output_tokens": (31, 119, 180), "in_flight": (214, 39, 40)}
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font() -> Font:
    return ImageFont.load_default()


class Axes:
    """One panel: a frame, ticks and a mapping from data to pixels."""

    def __init__(self, title: str, xmax: float, ymax: float, xlabel: str, yfmt: str = "{:g}") -> None:
        self.img = Image.new("RGB", (W, H), "white")
        self.d = ImageDraw.Draw(self.img)
        self.font = _font()
        self.x0, self.y0, self.x1, self.y1 = PAD_L, PAD_T, W - PAD_R, H - PAD_B
        self.xmax, self.ymax = xmax or 1.0, ymax or 1.0
        self.d.text((self.x0, 8), title, fill="black", font=self.font)
        for t in nice_ticks(self.xmax):
            self.d.line((self.px(t), self.y1, self.px(t), self.y1 + 4), fill="black")
            self.d.text((self.px(t) - 10, self.y1 + 6), f"{t:g}", fill="black", font=self.font)
        for t in nice_ticks(self.ymax, 4):
            self.d.line((self.x0, self.py(t), self.x1, self.py(t)), fill=(232, 232, 232))
            self.d.text((4, self.py(t) - 6), yfmt.format(t), fill="black", font=self.font)
        self.d.text(((self.x0 + self.x1) // 2 - 3 * len(xlabel), H - 16), xlabel, fill="black", font=self.font)

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


def cdf_panel(name: str, n: int, quantiles: Sequence[float]) -> Image.Image:
    """The empirical CDF, from evenly spaced quantiles (q[i] is the i/(len-1) quantile), P50/P90/P99 marked."""
    hi = (max(quantiles) if quantiles else 0.0) * 1.05
    ax = Axes(f"{name.upper()} CDF (n={n})", hi, 1.0, "ms", "{:.2f}")
    if not quantiles:
        return ax.empty()
    m = len(quantiles) - 1
    pts = [(ax.px(q), ax.py(i / m)) for i, q in enumerate(quantiles)]
    ax.d.line(pts, fill=COLOURS.get(name, (0, 0, 0)), width=2)
    for row, p in enumerate((50, 90, 99)):
        v = quantiles[round(p / 100 * m)]
        ax.d.line((ax.px(v), ax.y0, ax.px(v), ax.y1), fill=(200, 200, 200))
        ax.d.text((ax.x1 - 100, ax.y1 - 50 + row * 13), f"P{p} {v:.2f} ms", fill=(80, 80, 80), font=ax.font)
    return ax.done()


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


def row(panels: Sequence[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (W * len(panels), H), "white")
    for i, p in enumerate(panels):
        out.paste(p, (i * W, 0))
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
            timeline_panel("requests in flight", {"in_flight": dist["timeline"]["in_flight"]})])),
    ]
    for caption, make in makers:
        try:
            figures.append((caption, data_uri(make())))
        except (KeyError, TypeError, ValueError):  # an older or hand-edited report.json: draw what we can
            continue
    return figures
