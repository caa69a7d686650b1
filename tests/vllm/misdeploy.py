"""The misdeployment table (fixtures/misdeploy.toml): its rows, checked as they load, and the verdict of a launch's
run on them. No vLLM needed here: tests/vllm/test_misdeploy_table.py holds the table to the suites without one."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from pytest_glmv.report import findings
from pytest_glmv.suiterun import SuiteRun

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
TABLE = FIXTURES / "misdeploy.toml"
RECOMMENDED = "recommended"  # the launch with the recommended flags: it must pass, and it excuses the weights
KEYS = {"name", "launch", "args", "fail", "may_fail", "messages", "cause", "pass", "induced", "tried", "why"}


class TableError(ValueError):
    pass


@dataclass(frozen=True)
class Row:
    name: str
    launch: str
    args: tuple[str, ...]
    fail: tuple[str, ...] = ()
    may_fail: tuple[str, ...] = ()
    messages: Mapping[str, tuple[str | tuple[str, ...], ...]] = field(default_factory=dict)  # inner tuple: any-of
    cause: str | None = None
    passes: tuple[str, ...] = ()
    induced: bool = True
    tried: str = ""
    why: str = ""

    @property
    def checks(self) -> set[str]:
        return {*self.fail, *self.may_fail, *self.passes}


def junit_name(check: str) -> str:
    """FILE::NAME[PARAM] -> the name junit (and SuiteRun) keys it by."""
    return check.split("::", 1)[1]


def suite_checks(suites: Path = ROOT / "suites") -> set[str]:
    """FILE::FUNCTION of every check in suites/, read from the source (nothing imported)."""
    return {f"{path.name}::{node.name}" for path in suites.glob("test_*.py")
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
            and node.name.startswith("test_")}


def load(path: Path = TABLE) -> list[Row]:
    rows = [_row(raw) for raw in tomllib.loads(path.read_text())["row"]]
    known, names, causes = suite_checks(), [r.name for r in rows], {c.id for c in findings.CAUSES}
    if len(set(names)) != len(names):
        raise TableError(f"{path.name}: a row name twice: {names}")
    for r in rows:
        missing = sorted(c for c in r.checks if c.split("[")[0] not in known)
        if missing:
            raise TableError(f"{path.name} row {r.name}: no such check in suites/: {missing}")
        untold = [c for c in (*r.fail, *r.may_fail) if not r.messages.get(c) or not all(r.messages[c])
                  or not all(isinstance(t, str) or all(isinstance(x, str) and x for x in t) for t in r.messages[c])]
        extra = sorted(set(r.messages) - {*r.fail, *r.may_fail})
        if untold or extra:
            raise TableError(f"{path.name} row {r.name}: messages must name exactly its fail and may_fail checks, "
                             f"each with its texts (without texts: {untold}; not failing here: {extra})")
        if r.cause is not None and r.cause not in causes:
            raise TableError(f"{path.name} row {r.name}: cause {r.cause!r} is none of {sorted(causes)}")
        if not r.induced and (r.fail or not (r.tried and r.why and r.passes)):
            raise TableError(f"{path.name} row {r.name}: induced = false takes tried, why and pass, and no fail")
        if r.induced and not r.fail:
            raise TableError(f"{path.name} row {r.name}: a misdeployment with no check that must fail proves nothing")
        if (r.launch == RECOMMENDED) != (not r.args):
            raise TableError(f"{path.name} row {r.name}: launch {RECOMMENDED!r} is exactly the one without args")
    for launch, group in launches(rows).items():
        seen: dict[str, str] = {}
        for r in group:
            for c in r.checks:
                if seen.setdefault(c, r.name) != r.name:
                    raise TableError(f"{path.name}: rows {seen[c]} and {r.name} share launch {launch} and both "
                                     f"name {c}: which of them a failure proves could not be told")
    return rows


def _row(raw: Mapping[str, Any]) -> Row:
    unknown = set(raw) - KEYS
    if unknown or not {"name", "launch", "args"} <= set(raw):
        raise TableError(f"misdeploy row {raw.get('name')!r}: unknown keys {sorted(unknown)} or no name/launch/args")
    return Row(name=raw["name"], launch=raw["launch"], args=tuple(raw["args"]), fail=tuple(raw.get("fail", ())),
               may_fail=tuple(raw.get("may_fail", ())), cause=raw.get("cause"), passes=tuple(raw.get("pass", ())),
               messages={k: tuple(t if isinstance(t, str) else tuple(t) for t in v)
                         for k, v in raw.get("messages", {}).items()},
               induced=raw.get("induced", True), tried=raw.get("tried", ""), why=raw.get("why", ""))


def launches(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """launch -> its rows, the recommended launch first (it is every other launch's baseline)."""
    out: dict[str, list[Row]] = {RECOMMENDED: []}
    for r in rows:
        out.setdefault(r.launch, []).append(r)
    return out


def plugin_args(group: Sequence[Row]) -> list[str]:
    return [a.replace("{fixtures}", str(FIXTURES)) for r in group for a in r.args]


def shows(text: str, want: str | tuple[str, ...]) -> bool:
    """The failure holds the text, or (a tuple) one of the texts."""
    return want in text if isinstance(want, str) else any(t in text for t in want)


def unproven(row: Row, run: SuiteRun, checks: Sequence[Mapping[str, Any]], baseline: SuiteRun,
             runs_here: Callable[[str], bool]) -> list[str]:
    """Why this launch does not prove the row ([] when it does). `checks`: report.json's checks of the launch;
    `runs_here(check)`: False for a behavior check the weights are not trusted for (never run, so not expected)."""
    why: list[str] = []
    must = [c for c in row.fail if runs_here(c)]
    if row.induced and not must:
        why.append(f"{row.name}: none of its must-fail checks runs on these weights: it proves nothing")
    for c in must:
        name = junit_name(c)
        if run.outcomes.get(name) != "failed":
            why.append(f"{row.name}: {c} did not fail ({run.outcomes.get(name, 'not run')})")
        if name in baseline.failed:
            why.append(f"{row.name}: {c} fails on the recommended launch too: the flag is not what fails it")
    for c in (*must, *row.may_fail):
        text = run.messages.get(junit_name(c), "")
        lost = [t for t in row.messages[c] if not shows(text, t)] if junit_name(c) in run.failed else []
        if lost:
            why.append(f"{row.name}: {c} failed without {lost}:\n{text[:1200]}")
    spared = [c for c in row.passes if runs_here(c) and run.outcomes.get(junit_name(c)) != "passed"]
    if spared:
        why.append(f"{row.name}: {spared} must pass here: {[run.outcomes.get(junit_name(c)) for c in spared]}")
    if row.cause is not None:
        mine = {junit_name(c) for c in (*row.fail, *row.may_fail)}
        ours = [c for c in checks if c.get("nodeid", "").split("::")[-1] in mine]
        got = {f.key[1] for f in findings.group(ours) if f.kind == "cause"}
        if got != {row.cause}:
            why.append(f"{row.name}: the report files its failures under causes {sorted(got)}, not {row.cause}")
    return why


def strays(group: Sequence[Row], run: SuiteRun, baseline: SuiteRun) -> dict[str, str]:
    """Failures no row of the launch explains and the recommended launch did not show, and any errors."""
    explained = {junit_name(c) for r in group for c in (*r.fail, *r.may_fail)} | baseline.failed
    odd = (run.failed - explained) | run.errors
    return {name: f"{run.outcomes[name]}: {run.messages.get(name, '')[:600]}" for name in sorted(odd)}
