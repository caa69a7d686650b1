"""Whole pytest sessions against the reference server with --glmv-report and --glmv-baseline, shared by the
report tests: one correct run (the baseline), then three runs compared with it.

    correct      reasoning + a small SLO run on the correct server          -> the baseline
    fault        the same with --glmv-fault no-reasoning-parser             -> check regressions
    slow         the same with --glmv-fault slow-first-token                -> SLO regressions alone
    unchanged    the correct run again, from another folder without paths   -> no regressions, 14 checks compared
                 (pytest's rootdir is the suites folder: nodeids differ from the baseline's, ids do not),
                 `--glmv-baseline PATH` with a space
    equals       the same with `--glmv-baseline=PATH`                        -> the same comparison
    narrow       reasoning only                                              -> not comparable: no SLO metric
    misdeployed  tools + the bomb check, --glmv-fault no-tool-parser,bomb-500 -> report.html groups by cause

The SLO spec is lax on purpose (TTFT up to a minute): every SLO check passes even with the slow
first token, so in `slow` nothing but the baseline gate can fail the run.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv.suiterun import run_suite

ROOT = Path(__file__).resolve().parents[2]
REASONING = str(ROOT / "suites" / "test_reasoning.py")
TOOLS = str(ROOT / "suites" / "test_tools.py")
BOMB = str(ROOT / "suites" / "test_robustness.py") + "::test_decompression_bomb_is_refused_quickly"
SLO = str(ROOT / "suites" / "test_slo.py")
SPEC = """
num_prompts = 8
request_rate = "inf"
max_concurrency = 4
[slo]
mean_ttft_ms = 60000
output_throughput = 1
"""
# Wide enough that a loaded 2-core host never flags an unchanged rerun (latencies must be 4x and 250 ms
# worse; throughputs are not gated at a tolerance of 1 or more); slow-first-token adds 1500 ms to a TTFT
# of tens of ms, far beyond both.
TOLERANCE = "3"
SELECT = "(reasoning or slo) and not behavior"  # the baseline's checks, chosen by marker instead of by path
SLACK_MS = "250"


@dataclass
class Run:
    name: str
    rc: int
    output: str
    report_dir: Path
    junit: Path

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.report_dir / "report.json").read_text(encoding="utf-8"))

    def check(self, name: str) -> dict[str, Any]:
        """The report's check whose nodeid ends with ::name."""
        found = [c for c in self.report["checks"] if c["nodeid"].endswith("::" + name)]
        assert len(found) == 1, f"{self.name}: {len(found)} checks named {name} in report.json"
        return found[0]


def session_run(args: list[str], cwd: Path, name: str, timeout: float = 300, select: str = "not behavior") -> Run:
    """One pytest session in a subprocess (the plugin's hooks, servers and exit status all real)."""
    report_dir = cwd / f"report-{name}"
    junit = cwd / f"junit-{name}.xml"
    run = run_suite(args, target=[], extra=["-m", select, "--glmv-report", str(report_dir)], cwd=cwd,
                    timeout=timeout, junit=junit, quiet=False)
    return Run(name, run.returncode, run.output, report_dir, junit)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    cwd = tmp_path_factory.mktemp("glmv-report-runs")
    spec = cwd / "small.toml"
    spec.write_text(SPEC, encoding="utf-8")
    common = ["--glmv-server", "reference", "--glmv-slo", str(spec)]
    correct = session_run([REASONING, SLO, *common], cwd, "correct")
    assert correct.rc == 0, f"the correct run must pass to serve as a baseline:\n{correct.output[-3000:]}"
    base = str(correct.report_dir / "report.json")
    limits = ["--glmv-baseline-tolerance", TOLERANCE, "--glmv-baseline-slack-ms", SLACK_MS]
    gate = ["--glmv-baseline", base, *limits]
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir()
    # (args, folder, -m): no test paths, so pytest's rootdir is the suites folder itself
    plans: dict[str, tuple[list[str], Path, str]] = {
        "fault": ([REASONING, SLO, *common, "--glmv-fault", "no-reasoning-parser", *gate], cwd, "not behavior"),
        "slow": ([REASONING, SLO, *common, "--glmv-fault", "slow-first-token", *gate], cwd, "not behavior"),
        "unchanged": ([*common, *gate], elsewhere, SELECT),
        "equals": ([*common, f"--glmv-baseline={base}", *limits], elsewhere, SELECT),
        "narrow": ([REASONING, *common, *gate], cwd, "not behavior"),
        "misdeployed": ([TOOLS, BOMB, "--glmv-server", "reference", "--glmv-fault", "no-tool-parser", "--glmv-fault",
                         "bomb-500"], cwd, "not behavior"),
    }
    # Two at a time: each run mostly waits on its own reference server.
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(plans, pool.map(lambda kv: session_run(kv[1][0], kv[1][1], kv[0], select=kv[1][2]),
                                        plans.items()), strict=True))
    return {"correct": correct, **done}
