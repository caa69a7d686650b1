"""Run pytest in a subprocess and read its JUnit: the one helper for that (the proof matrix, the tests on
real vLLM, the benchmarks). `target=None` means the reference server, with a fault injected when one is named.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping


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
        """Checks whose own call failed. Not errors: a fixture or setup that broke is no caught fault."""
        return self.named("failed")

    @property
    def errors(self) -> set[str]:
        return self.named("error")

    @property
    def passed(self) -> set[str]:
        return self.named("passed")

    def unproven(self, fault: str, must_fail: Iterable[str], must_pass: Iterable[str] = (),
                 strict: bool = False) -> str:
        """Why this run does not prove that the fault is caught ('' when it does): a check that should
        catch it passed or errored, a check that has nothing to do with it failed or never ran, or (strict) any
        other check failed. With the run's output tail."""
        must_fail = set(must_fail)
        missed, spared = must_fail - self.failed, set(must_pass) - self.passed
        stray = self.failed - must_fail if strict else set()
        why = []
        if missed:
            why.append(f"fault {fault} was not caught by {sorted(missed)}; failed: {sorted(self.failed)}")
        if self.errors:  # an error is a broken fixture or setup, whatever check it hit
            why.append("errors, not failures (a fixture or setup broke: no caught fault): "
                       + str({n: self.messages.get(n, "")[:300] for n in sorted(self.errors)}))
        if spared | stray:
            why.append(f"fault {fault} also failed unrelated checks {sorted(spared | stray)}")
        return "\n".join([*why, self.output[-3000:]]) if why else ""


def read_junit(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A JUnit XML file's checks: (name -> passed|failed|error|skipped|xfailed, name -> failure text)."""
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
              cwd: Path | None = None, timeout: float = 600, target: list[str] | None = None,
              junit: Path | None = None, files: Mapping[str, str] | None = None, quiet: bool = True,
              env: Mapping[str, str] | None = None) -> SuiteRun:
    """One pytest run of `paths` against `target` (default: the reference server, with `fault` injected).

    `junit` keeps the JUnit file at that path (default: a temporary one); `files` are written into the
    working directory first (default: a temporary one), e.g. an SLO spec the arguments name. `target=[]`:
    the target is among `paths`/`extra` already. `env` is added to the run's environment, which otherwise has
    no GLMV_* variable of the caller's (e.g. GLMV_TINY_WEIGHTS=dummy: the tiny model with random weights)."""
    with tempfile.TemporaryDirectory(prefix="glmv-matrix-") as tmp:
        workdir = cwd or Path(tmp)
        for name, text in (files or {}).items():
            (workdir / name).write_text(text, encoding="utf-8")
        xml = junit or Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", *paths,
                *(target if target is not None else ["--glmv-server", "reference"]), "-p", "no:cacheprovider",
                *(["-q"] if quiet else []), f"--junitxml={xml}", "-o", "junit_family=xunit2", *(extra or [])]
        if fault:
            argv += ["--glmv-fault", fault]
        run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("GLMV_")}, **(env or {})}
        try:
            proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=run_env,
                                  check=False)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:  # a verdict with what it printed, not an exception
            code, output = 124, f"{_text(e.stdout)}{_text(e.stderr)}\nglmv matrix: timed out after {timeout:.0f} s"
        outcomes, messages = read_junit(xml) if xml.exists() else ({}, {})
    return SuiteRun(fault, code, outcomes, messages, output)


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""
