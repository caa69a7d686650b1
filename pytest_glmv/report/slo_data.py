"""An SLO run (slo.runner.Outcome) condensed for report.json: results, verdicts, statistics, distributions.

Per-request records can run to millions of ITL samples, too many for a report (and for xdist's
transport). What the plots need is kept in bounded form instead: 201 quantiles per latency metric
(enough for a CDF at pixel resolution), 30-bin histograms of TTFT and TPOT, and one-second buckets
over the run (output tokens, completions, requests in flight), bucketed as vLLM buckets its peaks.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np

from ..slo import metrics, report
from ..slo.metrics import Record
from .collect import jsonable

LATENCIES = ("ttft", "tpot", "itl", "e2el")
HISTOGRAMS = ("ttft", "tpot")
QUANTILES = 201
BINS = 30
_STAT_KEY = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_([a-z_]+)_ms$")


def statistics(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{'ttft': {'mean': .., 'median': .., 'std': .., 'p99': ..}, ...} from the flat vLLM keys."""
    out: dict[str, dict[str, float]] = {}
    for key, value in result.items():
        m = _STAT_KEY.match(key)
        if m and m.group(2) in metrics.METRICS and isinstance(value, (int, float)):
            out.setdefault(m.group(2), {})[m.group(1)] = float(value)
    return out


def samples_ms(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """Per-request samples in ms, by vLLM's definitions (successful requests; TPOT needs > 1 token)."""
    ok = [r for r in records if r.ok]
    return {
        "ttft": np.array([r.ttft for r in ok], dtype=float) * 1000,
        "tpot": np.array(metrics.tpots(ok), dtype=float) * 1000,
        "itl": np.array([g for r in ok for g in r.itl], dtype=float) * 1000,
        "e2el": np.array([r.latency for r in ok], dtype=float) * 1000,
    }


def distributions(records: Sequence[Record]) -> dict[str, Any]:
    samples = samples_ms(records)
    cdf = {name: {"n": int(len(v)),
                  "quantiles": [round(float(x), 4) for x in np.percentile(v, np.linspace(0, 100, QUANTILES))]
                  if len(v) else []}
           for name, v in samples.items()}
    hist: dict[str, Any] = {}
    for name in HISTOGRAMS:
        v = samples[name]
        if len(v):
            counts, edges = np.histogram(v, bins=BINS)
            hist[name] = {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}
        else:
            hist[name] = {"edges": [], "counts": []}
    return {"cdf_ms": cdf, "histogram_ms": hist, "timeline": timeline(records)}


def timeline(records: Sequence[Record]) -> dict[str, Any]:
    """One-second buckets from the first successful start, as vLLM's peak metrics bucket them."""
    b = metrics.buckets(records)
    if b is None:
        return {"bucket_s": 1.0, "output_tokens": [], "completed": [], "in_flight": [], "at_once": []}
    return {"bucket_s": 1.0, "output_tokens": [round(float(x), 2) for x in b.tokens],
            "completed": b.completed.tolist(), "in_flight": b.in_flight.tolist(), "at_once": b.at_once.tolist()}


def summarize(outcome: Any, key: str) -> dict[str, Any]:
    """report.json's entry for one SLO run (an slo.runner.Outcome); plain data only."""
    verdicts = []
    for t in outcome.scenario.thresholds:
        ok, message = outcome.judge(t)
        measured = outcome.result.get(t.key)
        verdicts.append({"key": t.key, "measured": measured, "limit": t.limit, "nominal": t.nominal,
                         "ceiling": t.ceiling, "passed": ok, "message": message.splitlines()[0]})
    cross = outcome.cross
    return jsonable({
        "key": key, "scenario": outcome.scenario.name, "params": asdict(outcome.params),
        "result": dict(outcome.result), "statistics": statistics(outcome.result), "thresholds": verdicts,
        "cross_check": {"available": cross.available, "problems": list(cross.problems), "lines": cross.lines()},
        # the rule, this run's lags and the verdict (without the block's rule line of dashes)
        "validity": [ln for ln in report.validity_lines(outcome.result) if not ln.startswith("---")],
        "errors": metrics.errors(outcome.records, 10), "distributions": distributions(outcome.records),
    })
