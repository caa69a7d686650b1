"""SLO checks: latency and throughput, measured exactly as `vllm bench serve` measures them.

One test per threshold of the SLO spec in effect (--glmv-slo FILE, else the built-in reference
results for GLM-4.5V-FP8 on 4xH100), all sharing one load run per scenario. Each failure
states the measured value, the threshold and the margin. Run with `-m slo`; a plain run leaves
them out (see pytest_glmv/slo/selection.py).
"""
from __future__ import annotations

import importlib.util

import pytest

from pytest_glmv.session import session_of

pytestmark = [pytest.mark.slo]
if importlib.util.find_spec("xdist") is not None:
    # Under `-n --dist loadgroup` all SLO checks share one worker, so one load run, not one per worker.
    pytestmark.append(pytest.mark.xdist_group("glmv-slo"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    spec = session_of(metafunc.config).slo_spec
    if "slo_threshold" in metafunc.fixturenames:
        cases = [(sc, t) for sc in spec.scenarios for t in sc.thresholds]
        metafunc.parametrize("slo_scenario,slo_threshold", cases,
                             ids=[f"{sc.name}-{t.key}" for sc, t in cases])
    elif "slo_scenario" in metafunc.fixturenames:
        metafunc.parametrize("slo_scenario", list(spec.scenarios), ids=[sc.name for sc in spec.scenarios])


@pytest.fixture
def slo_outcome(request: pytest.FixtureRequest, slo_scenario, glmv_slo_runs):  # type: ignore[no-untyped-def]
    return glmv_slo_runs.get(slo_scenario, request)


def test_slo(request, slo_outcome, slo_threshold) -> None:  # type: ignore[no-untyped-def]
    # The measured value and its limit as junit properties, so CI systems show them next to the verdict
    # (user_properties directly: record_property warns under pytest's default junit_family xunit2).
    request.node.user_properties += [(slo_threshold.key, slo_outcome.result.get(slo_threshold.key)),
                                     (f"{slo_threshold.key}_limit", slo_threshold.limit)]
    ok, message = slo_outcome.judge(slo_threshold)
    spec = session_of(request.config).slo_spec
    assert ok, (f"{message}\nthe spec: {spec.source}; give your own with --glmv-slo FILE.toml or "
                "--glmv-slo-threshold KEY=VALUE (docs: README, 'SLOs')")


def test_server_metrics_agree(slo_outcome) -> None:  # type: ignore[no-untyped-def]
    """The server's own /metrics must agree with the client: same completed count, TTFT not lower."""
    cc = slo_outcome.cross
    if not cc.available:
        pytest.skip(cc.note)
    assert not cc.problems, "\n".join(cc.lines())
