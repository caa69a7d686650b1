"""benchmarks/slo_clients.py reads each vllm bench serve release's --save-detailed result (0.26-0.28 save no
per-request "latencies": the benchmark crashed there with KeyError: 'latencies')."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def slo_clients():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("slo_clients", BENCH / "slo_clients.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_latencies_from_releases_that_save_them_and_from_those_that_do_not(slo_clients) -> None:  # type: ignore[no-untyped-def]
    new = {"latencies": [1.5, 2.0], "ttfts": [0.1, 0.2], "itls": [[0.1], [0.2]]}  # 0.31+: as saved
    old = {"ttfts": [0.1, 0.2], "itls": [[0.01, 0.02], []]}  # 0.26-0.28: derived
    assert slo_clients.latencies(new) == [1.5, 2.0]
    assert slo_clients.latencies(old) == pytest.approx([0.13, 0.2])
