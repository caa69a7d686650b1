"""The assertion sites of suites/ and which of them a failure shows: what the proof table's "every assertion
fires under some fault" test compares (tests/suites/test_proofs.py, fixtures/proofs.toml [unproven_assertions]).

A site is an `assert`, a `pytest.fail(...)` or a `report(...)` of a finding in a suites module, keyed by where
it is and what it says (not its line, which moves with every edit):

    test_robustness.py::test_decompression_bomb_is_refused_quickly: refusing the bomb took

A failing check's JUnit text names the line that raised last (`/…/suites/test_x.py:77: AssertionError`); a
finding, reported without a traceback (pytrace=False), is known by its `finding ID:` line instead.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

_LOCATION = re.compile(r"^(?P<path>\S*?(?P<file>test_\w+\.py)):(?P<line>\d+): ", re.M)
_FINDING = re.compile(r"^(?:\S+: )?finding (?P<id>[\w.-]+): ", re.M)


@dataclass(frozen=True)
class Site:
    file: str  # the module's file name, e.g. test_robustness.py
    func: str  # the top-level function it is in
    line: int
    end: int
    kind: str  # assert | fail | finding
    text: str  # its message as written, values by name, cut at 80 (a finding: "finding ID"; none: the condition)
    words: tuple[str, ...] = field(default=(), compare=False)  # the message's literal runs, whole

    @property
    def key(self) -> str:
        return f"{self.file}::{self.func}: {self.text}"


def _literal(node: ast.expr | None) -> str:
    """A message as written, its values by name: `f"refusing {n} took {x:.1f} s"` -> "refusing {n} took {x} s"."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp):  # "..." + "..." or "..." % x
        return _literal(node.left) + _literal(node.right)
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal(v) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                       if isinstance(v, ast.FormattedValue) else "" for v in node.values)
    return "{" + ast.unparse(node) + "}"


def _words(node: ast.expr | None) -> tuple[str, ...]:
    """The literal runs of a message, each as it shows in the failure (what a proof row can require)."""
    runs = re.split(r"\{[^{}]*\}|\n", _literal(node))
    return tuple(r.strip() for r in runs if len(r.strip()) >= 6)


def _clean(text: str) -> str:
    return " ".join(text.replace("{ex.evidence()}", "").replace("{ex}", "").split())[:80].strip()


def _finding_id(call: ast.Call) -> str:
    """'finding ID' of `report(Finding("ID", ...), waived)`; "finding" when the id is not a literal."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Call) and getattr(arg.func, "id", None) == "Finding" and arg.args:
        first = arg.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return f"finding {first.value}"
    return "finding"


def sites_of(path: Path) -> list[Site]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[Site] = []
    for top in tree.body:
        if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(top):
            end: int = getattr(node, "end_lineno", None) or getattr(node, "lineno", 0) or 0
            if isinstance(node, ast.Assert):
                text = _literal(node.msg) or ast.unparse(node.test)
                out.append(Site(path.name, top.name, node.lineno, end, "assert", _clean(text), _words(node.msg)))
            elif isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name == "pytest.fail":
                    msg = node.args[0] if node.args else None
                    text = _literal(msg) or "pytest.fail"
                    out.append(Site(path.name, top.name, node.lineno, end, "fail", _clean(text), _words(msg)))
                elif name == "report":
                    out.append(Site(path.name, top.name, node.lineno, end, "finding", _finding_id(node)))
    out.sort(key=lambda s: s.line)
    seen: dict[str, int] = {}
    for i, site in enumerate(out):  # two sites that read the same: the second is "... (#2)"
        seen[site.key] = seen.get(site.key, 0) + 1
        if seen[site.key] > 1:
            out[i] = replace(site, text=f"{site.text} (#{seen[site.key]})")
    return out


def suite_sites(folder: Path) -> list[Site]:
    """Every site of every suites module (test_*.py) in `folder`."""
    return [s for p in sorted(folder.glob("test_*.py")) for s in sites_of(p)]


def fired(sites: Iterable[Site], check: str, text: str) -> set[str]:
    """The keys of the sites a failure's JUnit `text` shows fired in `check` (a test name, params and all)."""
    sites = list(sites)
    # The innermost frame is the last location pytest prints (of the last exception, when one was raised while
    # handling another); an assertion of the kit's (the canary's) fires no suites site, whoever called it.
    last = list(_LOCATION.finditer(text))[-1:]
    keys = {s.key for s in sites for m in last if s.file == m["file"] and s.line <= int(m["line"]) <= s.end}
    func = check.split("[", 1)[0]
    for m in _FINDING.finditer(text):  # a finding is failed without a traceback: its id and its check tell
        mine = [s for s in sites if s.func == func and s.kind == "finding"]
        named = [s for s in mine if s.text == f"finding {m['id']}"]
        keys |= {s.key for s in (named or [s for s in mine if s.text == "finding"])}
    return keys
