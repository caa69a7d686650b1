"""Mutation matrix: run suites against the correct reference server and each fault mode.

A check is proven when it passes on the correct server and fails on the fault it
targets. `python -m pytest_glmv.matrix suites/test_tools.py --fault no-tool-parser ...`
prints which checks caught which fault; tests/ use `run_suite()` for the same data.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable


@dataclass
class SuiteRun:
    fault: str | None
    returncode: int
    outcomes: dict[str, str] = field(default_factory=dict)  # test name -> passed|failed|error|skipped|xfailed
    messages: dict[str, str] = field(default_factory=dict)  # test name -> failure text
    output: str = ""

    def named(self, outcome: str) -> set[str]:
        return {name for name, o in self.outcomes.items() if o == outcome}

    @property
    def failed(self) -> set[str]:
        return self.named("failed") | self.named("error")

    @property
    def passed(self) -> set[str]:
        return self.named("passed")

    def unproven(self, fault: str, must_fail: Iterable[str], must_pass: Iterable[str] = ()) -> str:
        """Why this run does not prove that the fault is caught ('' when it does): a check that should
        catch it passed, or a check that has nothing to do with it failed. With the run's output tail."""
        missed, spared = set(must_fail) - self.failed, set(must_pass) - self.passed
        why = []
        if missed:
            why.append(f"fault {fault} was not caught by {sorted(missed)}; failed: {sorted(self.failed)}")
        if spared:
            why.append(f"fault {fault} also failed unrelated checks {sorted(spared)}")
        return "\n".join([*why, self.output[-3000:]]) if why else ""


def _parse_junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                messages[name] = (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                outcome = "xfailed" if (child.get("type") or "") == "pytest.xfail" else "skipped"
        outcomes[name] = "error" if name in outcomes and outcome == "error" else outcome
    return outcomes, messages


def run_suite(paths: list[str], fault: str | None = None, extra: list[str] | None = None,
              cwd: Path | None = None, timeout: float = 600, target: list[str] | None = None) -> SuiteRun:
    """One pytest run of `paths` against `target` (default: the reference server, with `fault` injected)."""
    with tempfile.TemporaryDirectory(prefix="glmv-matrix-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *paths, *(target or ["--glmv-server", "reference"]),
                "-p", "no:cacheprovider",
                "-q", f"--junitxml={junit}", "-o", "junit_family=xunit2", *(extra or [])]
        if fault:
            argv += ["--glmv-fault", fault]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLMV_")}
        proc = subprocess.run(argv, cwd=cwd or tmp, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
        outcomes, messages = _parse_junit(junit) if junit.exists() else ({}, {})
    return SuiteRun(fault, proc.returncode, outcomes, messages, proc.stdout + proc.stderr)


def matrix(paths: list[str], faults: list[str], extra: list[str] | None = None) -> tuple[SuiteRun, list[SuiteRun]]:
    return run_suite(paths, None, extra), [run_suite(paths, f, extra) for f in faults]


def render(correct: SuiteRun, runs: list[SuiteRun]) -> str:
    lines = [f"correct server: {len(correct.passed)} passed, {len(correct.failed)} failed, "
             f"{len(correct.named('skipped'))} skipped"]
    for name in sorted(correct.failed):
        lines.append(f"  NOT PROVEN (fails on the correct server): {name}")
    for run in runs:
        caught = sorted(run.failed - correct.failed)
        lines.append(f"fault {run.fault}: caught by {len(caught)} check(s)" + ("" if caught else "  <-- UNCAUGHT"))
        lines += [f"    {name}" for name in caught]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to every pytest run verbatim (e.g. --glmv-api-key K --glmv-request-timeout 8).
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.matrix", description=__doc__,
                                 epilog="arguments after -- are passed to every pytest run")
    ap.add_argument("paths", nargs="+", help="suite files or directories")
    ap.add_argument("--fault", action="append", default=[], help="fault mode (repeatable; default: all)")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression")
    ap.add_argument("-m", dest="markexpr", default="not behavior and not slo", help="pytest -m expression")
    args = ap.parse_args(argv)
    faults = args.fault
    if not faults:
        from .reference.faults import FAULTS

        faults = sorted(FAULTS)
    extra = ["-m", args.markexpr] + (["-k", args.keyword] if args.keyword else []) + passthrough
    paths = [str(Path(p).resolve()) for p in args.paths]
    correct, runs = matrix(paths, faults, extra)
    print(render(correct, runs))
    uncaught = [r.fault for r in runs if not (r.failed - correct.failed)]
    return 1 if correct.failed or uncaught else 0


if __name__ == "__main__":
    sys.exit(main())
