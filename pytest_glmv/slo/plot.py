"""Latency CDFs (TTFT, TPOT, ITL) of a run's raw records as a PNG, for --glmv-slo-json: one panel per
metric, x in milliseconds, y the fraction of samples, with P50/P90/P99 marked so a reader can check the
text report against the picture. Drawn on report/plots.py's plotting base, as report.html's plots are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..report import plots
from .metrics import Record, tpots

SIZE = (420, 320)  # one panel: larger than report.html's, this picture stands alone


def series(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Milliseconds per metric, sorted, vLLM's definitions (TPOT only for > 1 output token)."""
    ok = [r for r in records if r.ok]
    return {
        "TTFT": np.sort(np.array([r.ttft for r in ok], dtype=float) * 1000),
        "TPOT": np.sort(np.array(tpots(ok), dtype=float) * 1000),
        "ITL": np.sort(np.array([g for r in ok for g in r.itl], dtype=float) * 1000),
    }


def _step_curve(values: np.ndarray, columns: int) -> list[tuple[float, float]]:
    """The exact step CDF of sorted values; long series thinned to a few points per pixel column (the shape
    is kept)."""
    n = len(values)
    if not n:
        return []
    idx = np.unique(np.linspace(0, n - 1, min(n, 4 * columns)).astype(int))
    pts: list[tuple[float, float]] = [(float(values[0]), 0.0)]
    for i in idx:
        x = float(values[i])
        pts += [(x, pts[-1][1]), (x, (i + 1) / n)]
    return pts


def _panel(name: str, values: np.ndarray) -> Image.Image:
    hi = (float(values[-1]) * 1.05 or 1.0) if len(values) else 0.0
    marks = [(q, float(np.percentile(values, q))) for q in (50, 90, 99)] if len(values) else []
    columns = SIZE[0] - plots.PAD_L - plots.PAD_R
    return plots.cdf(name, len(values), hi, _step_curve(values, columns), marks, SIZE)


def cdf_png(records: Sequence[Record], path: Path, title: str = "latency CDFs") -> Path:
    out = plots.row([_panel(name, vals) for name, vals in series(records).items()], title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG")
    return path
