"""Failed checks grouped by cause, for a page a person forwards: one misdeployment that fails twenty checks is
one finding ("no tool parser"), not twenty.

A failure's cause is read from what the server did (the check's "server_evidence": the exchange, its log lines),
never from the check's name. In order: the known upstream fault it matched (known.py), a finding of the
deployment itself (`finding ID: ...`), a recognised cause (CAUSES: markup a parser should have taken out, vLLM's
own message naming a launch flag), the server's error message with its numbers taken out, else the check's own
message (checks that say the same thing are one finding).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..known import deployment_finding, message_of
from .collect import id_of

FAILING = ("failed", "error")


@dataclass(frozen=True)
class Cause:
    id: str
    title: str
    remedy: str
    fields: tuple[str, ...]  # which fields of the exchange the pattern reads
    pattern: re.Pattern[str]


# Recognised misdeployments: each reads the server's answer, as a person reading the evidence would.
CAUSES: tuple[Cause, ...] = (
    Cause("no-tool-parser", "No tool parser: the model's tool-call markup comes back as text, never as tool_calls",
          "launch vLLM with --enable-auto-tool-choice --tool-call-parser glm45",
          ("response",), re.compile(r"<tool_call>|<arg_key>")),
    Cause("no-auto-tool-choice", "Automatic tool choice is off: vLLM refuses tool_choice \"auto\"",
          "launch vLLM with --enable-auto-tool-choice --tool-call-parser glm45",
          ("error_message", "response"), re.compile(r"--enable-auto-tool-choice")),
    Cause("no-reasoning-parser", "No reasoning parser: the model's thinking (<think>…</think>) stays in the answer",
          "launch vLLM with --reasoning-parser glm45",
          ("response",), re.compile(r"</?think>")),
)


def recognise(exchange: Mapping[str, Any] | None) -> Cause | None:
    if not exchange:
        return None
    for cause in CAUSES:
        if any(cause.pattern.search(str(exchange.get(f) or "")) for f in cause.fields):
            return cause
    return None


def normalise(text: str) -> str:
    """A server's error message with what differs between requests taken out: numbers, hex ids, long quotes."""
    text = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-f]{16,}\b", "…", text)
    text = re.sub(r"\d+(?:\.\d+)?", "N", text)
    return re.sub(r"\s+", " ", text).strip()[:200]


def message(check: Mapping[str, Any]) -> str:
    """What the check said, in one line: its own message, else pytest's first `E ` line (never the traceback)."""
    ev = check.get("server_evidence") or {}
    text = ev.get("message") if isinstance(ev, Mapping) else None
    if not text:
        text = message_of(check.get("evidence") or "").strip()
    first = next((ln.strip() for ln in str(text or "").splitlines() if ln.strip()), "")
    # pytest's rewritten asserts add "assert 500 < 500 / + where 500 = Exchange(...)": the message before them
    first = re.split(r"\s+assert\s.*?\+\s+where\s", first)[0]
    return first[:400] or f"{check.get('outcome')} with no message"


@dataclass
class Finding:
    key: tuple[str, ...]
    title: str
    kind: str  # known | deployment | cause | server | check
    remedy: str = ""
    reference: str = ""
    checks: list[Mapping[str, Any]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [id_of(c) for c in self.checks]


def exchange_of(check: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ev = check.get("server_evidence")
    ex = ev.get("exchange") if isinstance(ev, Mapping) else None
    return ex if isinstance(ex, Mapping) else None


def _finding_for(check: Mapping[str, Any]) -> Finding:
    k = check.get("known")
    if isinstance(k, Mapping) and k.get("id"):
        word = "REGRESSION of known" if k.get("regression") else "Known"
        fixed = f"fixed in {k['fixed_in']}" if k.get("fixed_in") else "not fixed upstream yet"
        return Finding(("known", str(k["id"])), f"{word} {k.get('engine', '')} fault {k['id']}: {k.get('summary', '')} "
                       f"({k.get('engine', '')} {k.get('versions', '')}, {fixed})", "known",
                       str(k.get("remedy") or ""), str(k.get("reference") or ""))
    said = message(check)
    own = deployment_finding(said.removeprefix("Failed: "))
    if own:
        what = said.removeprefix("Failed: ").removeprefix(f"finding {own}:").strip()
        return Finding(("deployment", own), f"Finding of this deployment, {own}: {what}", "deployment",
                       f"change the launch, or accept it with --glmv-waive {own}")
    ex = exchange_of(check)
    cause = recognise(ex)
    if cause is not None:
        return Finding(("cause", cause.id), cause.title, "cause", cause.remedy)
    if ex and (ex.get("error_type") or (isinstance(ex.get("status"), int) and ex["status"] >= 400
                                        and (ex.get("error_message") or ex["status"] >= 500))):
        what = ex.get("error_message") or ex.get("response") or ""
        head = f"status {ex['status']}" if ex.get("status") is not None else str(ex.get("error_type"))
        return Finding(("server", head, normalise(str(what))),
                       f"The server answered {head}: {normalise(str(what)) or 'no message'}", "server")
    # no cause recognised: checks that say the same (an invalid SLO run fails each of its thresholds) are one
    return Finding(("check", normalise(said)), said, "check")


def group(checks: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Failed and errored checks as findings, the one that fails most checks first."""
    out: dict[tuple[str, ...], Finding] = {}
    for c in checks:
        if c.get("outcome") not in FAILING:
            continue
        f = _finding_for(c)
        out.setdefault(f.key, f).checks.append(c)
    return sorted(out.values(), key=lambda f: (-len(f.checks), f.ids[0]))


def request_line(ex: Mapping[str, Any]) -> str:
    return f"{ex.get('method') or '?'} {ex.get('path') or '?'}"


def answer_line(ex: Mapping[str, Any]) -> str:
    """`200 application/json in 0.41 s`, or the transport error when no answer came."""
    if ex.get("status") is None:
        what = ": ".join(str(x) for x in (ex.get("error_type"), ex.get("error_message")) if x)
        return f"no answer ({what or 'nothing received'})"
    headers = ex.get("headers") or {}
    parts = [str(ex["status"]), str(headers.get("content-type") or "")]
    if ex.get("elapsed_s") is not None:
        parts.append(f"in {float(ex['elapsed_s']):.2f} s")
    return " ".join(p for p in parts if p)
