"""SLO spec parsing (TOML, pairs, marker kwargs), direction of thresholds, one-line error texts."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_glmv.slo import spec
from pytest_glmv.slo.spec import SpecError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "slo.toml"
    p.write_text(text)
    return p


def test_single_scenario_file_flat_and_table_forms(tmp_path: Path) -> None:
    s = spec.load_file(write(tmp_path, """
num_prompts = 50
request_rate = "inf"
max_concurrency = 4
goodput = { ttft = 300 }
[slo]
ttft_ms = { mean = 200, p90 = 400 }
p99_itl_ms = 50
output_throughput = 100
request_goodput = 1.5
"""))
    (sc,) = s.scenarios
    assert sc.name == "slo"
    assert sc.run == {"num_prompts": 50, "request_rate": math.inf, "max_concurrency": 4}
    assert sc.goodput == {"ttft": 300.0}
    got = {t.key: (t.limit, t.ceiling) for t in sc.thresholds}
    assert got == {"mean_ttft_ms": (200.0, True), "p90_ttft_ms": (400.0, True), "p99_itl_ms": (50.0, True),
                   "output_throughput": (100.0, False), "request_goodput": (1.5, False),
                   "failed": (0.0, True)}  # failures are not allowed unless the spec says so
    assert sc.percentiles == (90.0, 99.0)


def test_tolerance_widens_ceilings_and_lowers_floors() -> None:
    sc = spec.scenario("x", {"tolerance": 0.1, "mean_ttft_ms": 100, "output_throughput": 100, "failed": 2}, "here")
    got = {t.key: round(t.limit, 6) for t in sc.thresholds}
    assert got == {"mean_ttft_ms": 110.0, "output_throughput": 90.0, "failed": 2.2}


def test_default_spec_holds_the_reference_results() -> None:
    d = spec.default()
    assert "4xH100" in d.source
    rate20, c1 = d.scenarios
    nominal = {t.key: t.nominal for t in rate20.thresholds}
    assert nominal["mean_ttft_ms"] == 1678.96 and nominal["p99_itl_ms"] == 434.72
    assert nominal["output_throughput"] == 2200.83 and rate20.run["request_rate"] == 20
    assert c1.run["max_concurrency"] == 1 and {t.key: t.nominal for t in c1.thresholds}["p99_tpot_ms"] == 9.16


def test_judge_message_carries_value_threshold_and_margin() -> None:
    t = spec.scenario("x", {"p99_ttft_ms": 500}, "w").thresholds[0]
    ok, msg = t.judge(612.5)
    assert not ok
    assert msg == "p99_ttft_ms = 612.50 MISSES threshold <= 500.00; margin -112.50, -22.5%"
    assert t.judge(400.0)[0]
    floor = spec.scenario("x", {"output_throughput": 100}, "w").thresholds[0]
    assert floor.judge(120.0) == (True, "output_throughput = 120.00 meets threshold >= 100.00; margin +20.00, +20.0%")


def test_seed_zero_is_a_seed() -> None:  # vllm bench serve's default; a spec must be able to say it
    (sc,) = spec.from_pairs(["seed=0", "p99_ttft_ms=900"]).scenarios
    assert sc.run == {"seed": 0}


def test_pairs_are_toml_values() -> None:
    (sc,) = spec.from_pairs(["p99_ttft_ms=900", "request_rate=inf", "num_prompts = 10"]).scenarios
    assert sc.run == {"request_rate": math.inf, "num_prompts": 10}


@pytest.mark.parametrize("text,problem", [
    ("[slo\nx = 1", "invalid TOML: "),
    ("[slo]\nmean_ttft = 5", "unknown SLO key 'mean_ttft'"),
    ("[slo]\np99_ttft_ms = 'fast'", "p99_ttft_ms = 'fast' is not a number"),
    ("num_prompts = 2.5\n[slo]\nmean_ttft_ms = 1", "num_prompts = 2.5 must be a whole number >= 1"),
    ("request_rate = 0\n[slo]\nmean_ttft_ms = 1", "request_rate = 0 must be above 0"),
    ("seed = 1.5\n[slo]\nmean_ttft_ms = 1", "seed = 1.5 must be a whole number >= 0"),
    ("num_prompts = 5", "scenario 'slo' has no thresholds"),
    ("[slo]\nrequest_goodput = 1", "request_goodput needs a goodput table"),
    ("tolerance = 10\n[slo]\nmean_ttft_ms = 1", "must be below 1"),
    ("x = 1\n[scenarios.a]\nmean_ttft_ms = 1", "top-level keys ['x'] next to [scenarios]"),
    ("[scenarios.a]\ngoodput = { latency = 5 }\nmean_ttft_ms = 1", "goodput key 'latency' is not one of"),
])
def test_bad_spec_is_one_line_naming_file_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        spec.load_file(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"glmv: SLO spec {path}") and problem in msg, msg


def test_multi_scenario_errors_name_the_scenario(tmp_path: Path) -> None:
    path = write(tmp_path, "[scenarios.fast]\nmean_ttft_ms = 1\n[scenarios.slow]\nmean_tpot_ms = -1\n")
    with pytest.raises(SpecError, match=r"\[scenarios.slow\]: mean_tpot_ms = -1 must be a finite number >= 0"):
        spec.load_file(path)


def test_bad_pair() -> None:
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        spec.from_pairs(["p99_ttft_ms"])


@pytest.mark.parametrize("text,says", [
    ("request_rat = 5\n[slo]\nmean_ttft_ms = 1", "unknown SLO key 'request_rat'; did you mean 'request_rate'?"),
    ("[scenario.a]\nrequest_rate = 5\n[scenario.a.slo]\nmean_ttft_ms = 1",
     "unknown table 'scenario'; did you mean 'scenarios'?"),
    ("[scenarios.a]\n[scenarios.a.slo]\nmean_tft_ms = 1", "[scenarios.a]: unknown SLO key 'mean_tft_ms'; did you mean "
     "'mean_ttft_ms'?"),
    ("[slo]\nttft_mss = { mean = 1 }", "unknown table 'ttft_mss'; did you mean 'ttft_ms'?"),
    ("[slo]\nlatency = { mean = 1 }", "unknown table 'latency'; a table of thresholds is named after a metric"),
])
def test_typos_get_a_did_you_mean_over_run_and_metric_keys(text: str, says: str) -> None:
    import tomllib

    with pytest.raises(SpecError) as e:
        spec.parse(tomllib.loads(text), "my.toml")
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
