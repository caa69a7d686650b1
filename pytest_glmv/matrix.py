"""Mutation matrix: run suites against the correct reference server and each fault mode.

A check is proven when it passes on the correct server and fails on the fault it targets, while every other
check that ran still passes. What each fault must break is data: fixtures/proofs.toml (`load_proofs()`),
read by tests/suites/test_proofs.py and by this runner, which judges a suite only on the faults the table
means for it:

    python -m pytest_glmv.matrix suites/test_tools.py                    # the table's tools faults
    python -m pytest_glmv.matrix suites/test_tools.py --fault no-tool-parser -- --glmv-request-timeout 8

A fault the table does not mean for the given suites (named with --fault) is reported the old way: which
checks it broke, UNCAUGHT when none. Each run goes through suiterun.run_suite().
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .documents import shipped
from .suiterun import SuiteRun, run_suite

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MARKS = ["-m", "not slo"]  # the reference "model" answers the behaviour checks, so they run too


# ---------------------------------------------------------------------------------------------- the table

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
_SUITE_KEYS = {"files", "args", "fail_messages", "timeout", "workdir"}
_PROOF_KEYS = {"suite", "fault", "name", "args", "target", "server", "fail", "pass", "skipped", "min_passed",
               "output", "output_absent", "messages", "workdir", "timeout", "why", "xfailed", "suite_args", "share",
               "errored"}


class ProofTableError(ValueError):
    pass


@dataclass(frozen=True)
class Proof:
    """One suite run and what it must show. A fault proof (no name): the fault is caught by exactly the
    checks in `fail`; every other check that ran passes. A named case (the correct server and its variants,
    attached servers, waivers): the same rule with its own `fail`, usually none."""

    suite: str
    paths: tuple[str, ...]
    fault: str | None = None
    name: str | None = None
    args: tuple[str, ...] = ()  # the suite's args, then the case's (a later -m/-k wins)
    target: tuple[str, ...] = ()  # () = the reference server; else e.g. --glmv-base-url {legacy_url}
    server: str | None = None  # a server the test module starts and fills `target` placeholders from
    fail: frozenset[str] = frozenset()
    must_pass: frozenset[str] = frozenset()
    skipped: frozenset[str] | None = None  # the exact set of checks that skip, when given
    xfailed: frozenset[str] = frozenset()  # checks that must be reported xfail (a waived finding)
    errored: frozenset[str] = frozenset()  # checks the session stops before they run (never a caught fault)
    min_passed: int = 0
    output: tuple[str, ...] = ()
    output_absent: tuple[str, ...] = ()
    messages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)  # written into the run's working directory
    timeout: float = 600
    why: str = ""
    share: str | None = None  # fault proofs of one suite with the same `share` run as one suite run

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name or self.fault}"

    @property
    def checks(self) -> set[str]:
        """Every check name this case mentions (each must exist in its suite)."""
        return {*self.fail, *self.must_pass, *(self.skipped or ()), *self.xfailed, *self.errored, *self.messages}

    def judge(self, run: SuiteRun, excused: Iterable[str] = ()) -> str:
        """Why `run` does not prove this case ('' when it does), with the run's output tail. `excused`: the
        checks that other faults of a shared run must fail. A check that errored (its fixture or setup broke)
        never counts as failed: only `errored` names checks that must error (the session stopped them)."""
        if not run.outcomes:
            return f"{self.id}: no check ran (exit {run.returncode})\n{run.output[-3000:]}"
        why = []
        stray_errors = run.errors - self.errored
        if stray_errors:
            why.append("errors, not failures (a fixture or setup broke, which proves no check): "
                       + str({n: run.messages.get(n, "")[:300] for n in sorted(stray_errors)}))
        unerrored = self.errored - run.errors
        if unerrored:
            why.append("checks not reported as errors: " + str({n: run.outcomes.get(n, "not run") for n in unerrored}))
        missed, stray = self.fail - run.failed, run.failed - self.fail - set(excused)
        if missed:
            why.append(f"fault {self.fault} was not caught by {sorted(missed)}" if self.fault
                       else f"checks that must fail did not: {sorted(missed)}")
        if stray:  # every check the case does not name in `fail` must pass
            why.append(f"unexpected failures {sorted(stray)}: "
                       + str({n: run.messages.get(n, "")[:300] for n in sorted(stray)}))
        unpassed = self.must_pass - run.passed
        if unpassed:
            why.append("checks did not run and pass: " + str({n: run.outcomes.get(n, "not run") for n in unpassed}))
        unxfailed = self.xfailed - run.named("xfailed")
        if unxfailed:
            why.append("checks not reported xfail: " + str({n: run.outcomes.get(n, "not run") for n in unxfailed}))
        if self.skipped is not None and run.named("skipped") != self.skipped:
            why.append(f"skipped {sorted(run.named('skipped'))}, expected exactly {sorted(self.skipped)}")
        if len(run.passed) < self.min_passed:
            why.append(f"only {len(run.passed)} checks passed, expected at least {self.min_passed}")
        why += [f"output lacks {text!r}" for text in self.output if text not in run.output]
        why += [f"output holds {text!r}" for text in self.output_absent if text in run.output]
        for check, texts in self.messages.items():
            why += [f"{check}'s failure does not say {t!r}: {run.messages.get(check, '')[-800:]!r}"
                    for t in texts if t not in run.messages.get(check, "")]
        return "\n".join([f"{self.id}:", *why, run.output[-3000:]]) if why else ""


@dataclass(frozen=True)
class ProofTable:
    suites: Mapping[str, tuple[str, ...]]  # suite -> its files under suites/
    suite_args: Mapping[str, tuple[str, ...]]
    workdirs: Mapping[str, Mapping[str, str]]  # suite -> files its runs need in their working directory
    proofs: tuple[Proof, ...]
    unproven: Mapping[str, str]  # fault -> why no suite proves it
    unproven_assertions: Mapping[str, str] = field(default_factory=dict)  # assertion site -> why no fault fires it

    def fault_proofs(self, files: Iterable[str] = ()) -> list[Proof]:
        """The plain fault proofs (no name, no attached server) of the suites owning any of `files`."""
        wanted = set(files)
        return [p for p in self.proofs if p.fault and p.name is None and p.server is None
                and (not wanted or wanted & {Path(x).name for x in p.paths})]


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProofTableError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def load_proofs(text: str | None = None) -> ProofTable:
    """The proof table: fixtures/proofs.toml as shipped (package pytest_glmv.fixtures), or `text`."""
    if text is None:
        text = shipped("proofs.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    extra = set(data) - {"suite", "proof", "unproven", "unproven_assertions"}
    if extra:
        raise ProofTableError(f"unknown top-level keys {sorted(extra)}")
    suites: dict[str, tuple[str, ...]] = {}
    suite_args: dict[str, tuple[str, ...]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for name, table in data.get("suite", {}).items():
        bad = set(table) - _SUITE_KEYS
        if bad:
            raise ProofTableError(f"[suite.{name}]: unknown keys {sorted(bad)}")
        suites[name] = _strs(table["files"], f"[suite.{name}] files")
        suite_args[name] = _strs(table.get("args", DEFAULT_MARKS), f"[suite.{name}] args")
        defaults[name] = table
    proofs = []
    for i, entry in enumerate(data.get("proof", [])):
        where = f"[[proof]] #{i + 1} ({entry.get('suite')}/{entry.get('name') or entry.get('fault')})"
        bad = set(entry) - _PROOF_KEYS
        if bad:
            raise ProofTableError(f"{where}: unknown keys {sorted(bad)}")
        suite = entry.get("suite")
        if suite not in suites:
            raise ProofTableError(f"{where}: unknown suite {suite!r} (known: {sorted(suites)})")
        if not entry.get("fault") and not entry.get("name"):
            raise ProofTableError(f"{where}: needs a fault or a name")
        fail = frozenset(_strs(entry.get("fail", []), f"{where} fail"))
        errored = frozenset(_strs(entry.get("errored", []), f"{where} errored"))
        messages = {k: _strs(v, f"{where} messages.{k}") for k, v in entry.get("messages", {}).items()}
        mute = sorted(c for c in fail | errored if not messages.get(c))
        if mute:  # a proof judges why a check fails, not only that it does
            raise ProofTableError(f"{where}: messages names no reason for {mute}: say what each failure must show "
                                  "(text of the assertion that must fire, or of the evidence it carries)")
        if entry.get("fault") and not entry.get("name"):  # a fault proof: the evidence each catching check gives
            for check in fail:
                messages[check] = (*messages.get(check, ()), *_strs(defaults[suite].get("fail_messages", []),
                                                                     f"[suite.{suite}] fail_messages"))
        skipped = entry.get("skipped")
        own_args = _strs(entry.get("args", []), f"{where} args")
        proofs.append(Proof(
            suite=suite, paths=tuple(str(SUITES_DIR / f) for f in suites[suite]), fault=entry.get("fault"),
            name=entry.get("name"), args=(*(suite_args[suite] if entry.get("suite_args", True) else ()), *own_args),
            target=_strs(entry.get("target", []), f"{where} target"), server=entry.get("server"), fail=fail,
            must_pass=frozenset(_strs(entry.get("pass", []), f"{where} pass")),
            skipped=None if skipped is None else frozenset(_strs(skipped, f"{where} skipped")),
            xfailed=frozenset(_strs(entry.get("xfailed", []), f"{where} xfailed")), errored=errored,
            min_passed=int(entry.get("min_passed", 0)), output=_strs(entry.get("output", []), f"{where} output"),
            output_absent=_strs(entry.get("output_absent", []), f"{where} output_absent"),
            messages={k: v for k, v in messages.items() if v},
            files={**defaults[suite].get("workdir", {}), **entry.get("workdir", {})},
            timeout=float(entry.get("timeout", defaults[suite].get("timeout", 600))), why=entry.get("why", ""),
            share=entry.get("share")))
    for name, members in shares(proofs).items():
        rest = {(p.fault is None, p.name, p.server, p.target, tuple(a for a in p.args if a != "-k"
                 and a not in _k_exprs(p.args)), tuple(sorted(p.files.items()))) for p in members}
        if len(rest) > 1:
            raise ProofTableError(f"share {name}: its fault proofs differ in more than their fault and -k")
        fails = [c for p in members for c in p.fail]
        if len(fails) != len(set(fails)):
            raise ProofTableError(f"share {name}: a check is the target of two of its faults")
    ids = [p.id for p in proofs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ProofTableError(f"cases named twice: {dupes}")
    unproven = {k: str(v) for k, v in data.get("unproven", {}).items()}
    unproven_sites = {k: str(v) for k, v in data.get("unproven_assertions", {}).items()}
    silent = sorted(k for k, v in unproven_sites.items() if not v.strip())
    if silent:
        raise ProofTableError(f"[unproven_assertions]: no reason given for {silent}")
    workdirs = {name: dict(table.get("workdir", {})) for name, table in defaults.items()}
    return ProofTable(suites, suite_args, workdirs, tuple(proofs), unproven, unproven_sites)


def _k_exprs(args: Iterable[str]) -> list[str]:
    args = list(args)
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-k"]


def shares(proofs: Iterable[Proof]) -> dict[str, list[Proof]]:
    """Fault proofs that share one suite run, by "suite/share"."""
    out: dict[str, list[Proof]] = {}
    for p in proofs:
        if p.share:
            out.setdefault(f"{p.suite}/{p.share}", []).append(p)
    return out


def shared_run(members: list[Proof]) -> tuple[list[str], list[str]]:
    """(faults, pytest args) of one run of several fault proofs: all their faults, their -k joined."""
    first = members[0]
    args = [a for a in first.args if a != "-k" and a not in _k_exprs(first.args)]
    exprs = [e for p in members for e in _k_exprs(p.args)]
    if exprs and len(exprs) == len(members):
        args += ["-k", " or ".join(f"({e})" for e in dict.fromkeys(exprs))]
    faults = [p.fault for p in members if p.fault]
    for f in faults[1:]:
        args += ["--glmv-fault", f]
    return faults, args


# ------------------------------------------------------------------------------------------ the runner

def _files_of(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for p in map(Path, paths):
        out |= {f.name for f in p.glob("test_*.py")} if p.is_dir() else {p.name}
    return out


def render(correct: SuiteRun, runs: list[SuiteRun], proofs: Mapping[str, Proof] | None = None) -> str:
    """The matrix: per fault, caught by its expected checks or not, and any unexpected failures. A fault
    with no proof in `proofs` is reported by what it broke (UNCAUGHT when nothing)."""
    proofs = proofs or {}
    lines = [f"correct server: {len(correct.passed)} passed, {len(correct.failed)} failed, "
             f"{len(correct.named('skipped'))} skipped"]
    for name in sorted(correct.failed | correct.errors):
        lines.append(f"  NOT PROVEN (fails on the correct server): {name}")
    for run in runs:
        proof = proofs.get(run.fault or "")
        if proof is None:
            caught = sorted(run.failed - correct.failed)
            lines.append(f"fault {run.fault}: caught by {len(caught)} check(s)" + ("" if caught else "  <-- UNCAUGHT"))
            lines += [f"    {name}" for name in caught]
            continue
        expected = set(proof.fail) & set(correct.outcomes)  # the expected checks this selection runs
        missed = sorted(expected - run.failed)
        lines += [f"fault {run.fault}: {name} errored (a broken fixture is no caught fault)  <-- ERROR"
                  for name in sorted(run.errors - proof.errored)]
        unexpected = sorted(run.failed - proof.fail - correct.failed)
        if not expected:
            lines.append(f"fault {run.fault}: not judged: none of its expected checks is selected")
        elif missed:
            lines.append(f"fault {run.fault}: expected checks passed: {', '.join(missed)}  <-- UNCAUGHT")
        else:
            lines.append(f"fault {run.fault}: caught by its {len(expected)} expected check(s)")
        lines += [f"    {name}" for name in sorted(expected & run.failed)]
        lines += [f"    also failed: {name}  <-- UNEXPECTED" for name in unexpected]
    return "\n".join(lines)


def verdict(correct: SuiteRun, runs: list[SuiteRun], proofs: Mapping[str, Proof]) -> bool:
    """True when the matrix proves every fault it ran (see render)."""
    if correct.failed or correct.errors:
        return False
    for run in runs:
        proof = proofs.get(run.fault or "")
        if proof is None:
            if not run.failed:
                return False
            continue
        expected = set(proof.fail) & set(correct.outcomes)
        if expected - run.failed or run.failed - proof.fail or run.errors - proof.errored:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to every pytest run verbatim (e.g. --glmv-api-key K --glmv-request-timeout 8).
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.matrix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="arguments after -- are passed to every pytest run")
    ap.add_argument("paths", nargs="+", help="suite files or directories")
    ap.add_argument("--fault", action="append", default=[],
                    help="fault mode (repeatable; default: the faults fixtures/proofs.toml means for these suites)")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression (narrows every run)")
    ap.add_argument("-m", dest="markexpr", help="pytest -m expression (default: the table's, else 'not slo')")
    ap.add_argument("-j", dest="jobs", type=int, default=4, help="suite runs at once (default 4)")
    args = ap.parse_args(argv)
    paths = [str(Path(p).resolve()) for p in args.paths]
    table = load_proofs()
    owned = table.fault_proofs(_files_of(paths))
    proofs = {p.fault: p for p in owned if p.fault and (not args.fault or p.fault in args.fault)}
    faults = args.fault
    if not faults:
        faults = sorted(proofs)
        if not owned:  # a suite the table does not know: every fault, judged by what it breaks
            from .reference.faults import FAULTS

            faults = sorted(FAULTS)
    suite_args: list[str] = []
    workdir: dict[str, str] = {}
    for suite in dict.fromkeys(p.suite for p in owned):
        suite_args += table.suite_args[suite]
        workdir.update(table.workdirs[suite])
    user = (["-m", args.markexpr] if args.markexpr else []) + (["-k", args.keyword] if args.keyword else [])
    base = (suite_args or DEFAULT_MARKS) + user + passthrough

    def one(fault: str | None) -> SuiteRun:
        proof = proofs.get(fault) if fault else None
        extra = [*proof.args, *user, *passthrough] if proof else base
        return run_suite(paths, fault, extra, files=proof.files if proof else workdir)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(one, [None, *faults]))
    correct, runs = done[0], done[1:]
    print(render(correct, runs, proofs))
    return 0 if verdict(correct, runs, proofs) else 1


if __name__ == "__main__":
    sys.exit(main())
