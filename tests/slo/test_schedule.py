"""Arrival schedule: vllm bench serve's gamma draws, seeded, rescaled to end at N/rate."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_glmv.slo.schedule import arrivals


def test_same_numbers_as_vllms_scalar_draws_from_the_seeded_global_rng() -> None:
    np.random.seed(7)  # what vllm bench serve does with --seed, then one gamma draw per request
    gaps = [np.random.gamma(shape=0.5, scale=1.0 / (4.0 * 0.5)) for _ in range(50)]
    cum = np.cumsum(gaps)
    want = cum * ((50 / 4.0) / cum[-1])
    assert arrivals(50, 4.0, 0.5, seed=7) == pytest.approx(list(want), abs=0, rel=1e-15)


@pytest.mark.parametrize("rate,burst", [(20.0, 1.0), (3.0, 0.2), (100.0, 5.0)])
def test_last_arrival_is_exactly_n_over_rate_and_times_increase(rate: float, burst: float) -> None:
    t = arrivals(200, rate, burst, seed=1)
    assert t[-1] == pytest.approx(200 / rate, rel=1e-12)
    assert all(b >= a for a, b in zip(t, t[1:], strict=False)) and t[0] > 0


def test_seeded_and_seed_sensitive() -> None:
    assert arrivals(100, 10.0, seed=3) == arrivals(100, 10.0, seed=3)
    assert arrivals(100, 10.0, seed=3) != arrivals(100, 10.0, seed=4)


def test_burstiness_changes_gap_spread() -> None:
    def cv(b: float) -> float:
        gaps = np.diff([0.0] + arrivals(5000, 10.0, b, seed=0))
        return float(np.std(gaps) / np.mean(gaps))

    # gamma shape k has coefficient of variation 1/sqrt(k): Poisson 1, bursty above, smooth below
    assert cv(1.0) == pytest.approx(1.0, abs=0.05)
    assert cv(0.25) == pytest.approx(2.0, abs=0.15)
    assert cv(4.0) == pytest.approx(0.5, abs=0.05)


def test_infinite_rate_and_infinite_burstiness() -> None:
    assert arrivals(4, math.inf) == [0.0] * 4
    assert arrivals(4, 2.0, math.inf) == pytest.approx([0.5, 1.0, 1.5, 2.0])


@pytest.mark.parametrize("n,rate,burst,msg", [(0, 1.0, 1.0, "at least one"), (3, 0.0, 1.0, "rate"),
                                              (3, 1.0, 0.0, "burstiness")])
def test_bad_arguments(n: int, rate: float, burst: float, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        arrivals(n, rate, burst)
