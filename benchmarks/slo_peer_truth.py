"""Each tool's runs against the reference server's truth trace, for benchmarks/slo_vs_peers.py.

The trace (CLOCK_MONOTONIC) holds per request when its first bytes arrived and when each chunk was written:
chunks[0] is vLLM's role chunk (delta {"role": "assistant", "content": ""}), chunks[1] the first chunk with
text (reasoning or content; the reference server, like vLLM, sends no empty delta after the role chunk),
chunks[-3] the last token chunk, then the usage chunk and [DONE]. Two truths per request:
- vLLM's definition (vllm bench serve and pytest-glmv measure it): TTFT = chunks[0] - arrived,
  TPOT = (chunks[-3] - chunks[0]) / (completion_tokens - 1);
- first-text definition (GuideLLM's and AIPerf's TTFT; their ITL): TTFT = chunks[1] - arrived,
  ITL = (chunks[-3] - chunks[1]) / (completion_tokens - 1).
A tool's number against vLLM's truth is what a user comparing it with vLLM's TTFT/TPOT sees; against its own
definition's truth it is the client's own error. Requests are paired with trace rows in order (the tool's
send order, the server's arrival order): runs never overlap, and every answer has the same length.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from slo_peer_tools import AIPERF, GUIDELLM, OURS, VLLM, Run

FIRST_TEXT = (GUIDELLM, AIPERF)  # tools whose TTFT ends at the first chunk with text
MONOTONIC = (OURS, VLLM)  # tools whose start stamps are perf_counter (CLOCK_MONOTONIC), the trace's clock


def chunks(rows: Sequence[dict[str, Any]]) -> int:
    """Chunks with choices the server wrote (role chunk and token chunks), over these rows."""
    return sum(len(r["chunks"]) - 2 for r in rows)


def accuracy(run: Run) -> dict[str, float] | None:
    """Means (and p99) in ms of TTFT bias, mean |TPOT error| in %, by vLLM's and by the tool's definition."""
    p = run.parsed.ordered()
    rows = run.rows
    k = min(len(rows), p.completed)
    if k == 0:
        return None
    own_first = 1 if run.tool in FIRST_TEXT else 0
    tpots = p.tpot()
    b_vllm, b_own, e_vllm, e_own, gap, sent = [], [], [], [], [], []
    for i in range(k):
        r = rows[i]
        c, n = r["chunks"], int(r["completion_tokens"])
        b_vllm.append((p.ttft[i] - (c[0] - r["arrived"])) * 1000)
        b_own.append((p.ttft[i] - (c[own_first] - r["arrived"])) * 1000)
        gap.append((c[1] - c[0]) * 1000)
        if run.tool in MONOTONIC:  # the bias's first half: client start -> the server's arrival stamp
            sent.append((r["arrived"] - p.starts[i]) * 1000)
        mine = tpots[i]
        if mine is None or n < 2:
            continue
        t_vllm, t_own = (c[-3] - c[0]) / (n - 1), (c[-3] - c[own_first]) / (n - 1)
        e_vllm.append(abs(mine - t_vllm) / t_vllm * 100)
        e_own.append(abs(mine - t_own) / t_own * 100)
    return {"paired": k, "unpaired": abs(len(rows) - p.completed),
            "bias_vllm": float(np.mean(b_vllm)), "bias_vllm_p99": float(np.percentile(b_vllm, 99)),
            "bias_own": float(np.mean(b_own)), "bias_own_p99": float(np.percentile(b_own, 99)),
            "tpot_vllm": float(np.mean(e_vllm)) if e_vllm else float("nan"),
            "tpot_own": float(np.mean(e_own)) if e_own else float("nan"), "role_to_text_ms": float(np.mean(gap)),
            "sent": float(np.mean(sent)) if sent else float("nan")}


def pooled(runs: Sequence[Run]) -> dict[str, float] | None:
    """Accuracy over several runs of one tool, weighted by paired requests."""
    accs = [a for a in (accuracy(r) for r in runs) if a is not None]
    if not accs:
        return None
    w = np.array([a["paired"] for a in accs], dtype=float)
    out = {k: float(np.average([a[k] for a in accs], weights=w)) for k in accs[0] if k not in ("paired", "unpaired")}
    out["bias_vllm_p99"] = max(a["bias_vllm_p99"] for a in accs)
    out["bias_own_p99"] = max(a["bias_own_p99"] for a in accs)
    out["paired"], out["unpaired"] = sum(a["paired"] for a in accs), sum(a["unpaired"] for a in accs)
    return out


def cpu(small: Run, big: Run) -> tuple[float, float] | None:
    """(client CPU s per 1000 chunks net of start-up, start-up CPU s) from two run sizes."""
    cs, cb = chunks(small.rows), chunks(big.rows)
    if cb <= cs:
        return None
    slope = (big.cpu - small.cpu) / (cb - cs)
    return slope * 1000, small.cpu - slope * cs


def lag_p99_ms(run: Run) -> float | None:
    lags = run.parsed.send_lags
    return None if not lags else float(np.percentile(lags, 99)) * 1000


def achieved(run: Run) -> tuple[float, str]:
    """Fraction of the schedule kept: the tool's own schedule where it keeps one, else the configured rate
    against the span of the server's arrivals (a Poisson draw of n requests is itself ~1/sqrt(n) off)."""
    if run.parsed.fraction is not None:
        return run.parsed.fraction, "schedule"
    arr = [r["arrived"] for r in run.rows]
    if len(arr) < 2:
        return float("nan"), "n/a"
    return (len(arr) - 1) / (max(arr) - min(arr)) / run.rate, "rate"
