"""Arrival schedule, as `vllm bench serve` draws it (vllm/benchmarks/serve.py, get_request).

Facts carried over from vLLM 0.32: every request (the first one too) gets a gamma-distributed
gap with shape=burstiness and scale=1/(rate*burstiness); the gaps are summed; the sums are
then rescaled so that the last arrival lands exactly at N/rate (without ramp-up). An infinite
rate sends everything at t=0; an infinite burstiness gives constant gaps of 1/rate. vLLM draws
from numpy's global legacy RNG seeded with --seed; drawing the same numbers from a
RandomState(seed) gives the same schedule as long as nothing else consumed the global RNG first.
"""
from __future__ import annotations

import math

import numpy as np


def arrivals(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Offsets in seconds from the start of the run at which each of n requests is due."""
    if n < 1:
        raise ValueError(f"need at least one request, got {n}")
    if not rate > 0:
        raise ValueError(f"request rate must be above 0 (or inf), got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be above 0, got {burstiness}")
    if math.isinf(rate):
        return [0.0] * n
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / rate)
    else:
        # One vectorised draw: the legacy generator yields the same stream as n scalar draws.
        gaps = np.random.RandomState(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    times = np.cumsum(gaps)
    if times[-1] != 0:
        times = times * ((n / rate) / times[-1])
    return [float(t) for t in times]
