"""A failing suite check as a short bug report: its structured evidence (`report.glmv_evidence`, built from
kit/journal.py's record of the check's exchanges and the server log lines written meanwhile) and the at
most ~12 lines that pytest prints for it by default.

What was sent, what came back (status, the server's own message), what the check expected (its message's
first line), the finding id, the known upstream fault and remedy when one matched, and the server's log
lines written while this check ran. `-v` or `--tb=long` keep pytest's full report instead.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

INTERRUPTED = "interrupted"  # `lost` of a check the stall watch stopped: the server hung while it waited
LOG_LINES = 20  # the evidence keeps at most this many log lines of the check; the terminal shows the last few
SHOWN_LOG = 4
WIDTH = 200  # characters of one rendered field
_REWRITE = re.compile(r"^(assert |AssertionError$|\s*\+\s+where )")


def collect(log_path: Path | None, mark: int | None, message: str) -> dict[str, Any]:
    """report.glmv_evidence: what the kit's journal saw of the server during the check (the exchange it cited,
    else its last; how many; its notes), the log lines the server wrote meanwhile, and the check's message."""
    from .kit import evidence

    checked = getattr(evidence, "checked", None)  # the journal (kit/journal.py); absent: no exchange to show
    lines = getattr(evidence, "log_lines", None)
    try:
        ev = dict(checked()) if callable(checked) else {"exchange": None, "exchanges": 0, "notes": {}}
        log = list(lines(log_path, mark, LOG_LINES)) if callable(lines) and log_path is not None else []
    except Exception as e:  # evidence that cannot be read never breaks the run; the report says so
        ev, log = {"exchange": None, "exchanges": 0, "notes": {"evidence_error": repr(e)[:200]}}, []
    first = own_message(message)
    ev.update(log=log, message=first[0] if first else "")
    return ev


def own_message(text: str) -> list[str]:
    """The check's own message, without the lines pytest's assertion rewriting adds (`assert 500 < 500`,
    `+ where 500 = Exchange(...)`) and without a leading 'AssertionError: '."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if i and _REWRITE.match(line):
            break
        out.append(line.removeprefix("AssertionError: ") if i == 0 else line)
    while out and not out[-1].strip():
        out.pop()
    return out


def crash_message(report: Any, excinfo: Any = None) -> str:
    """The failure's message: the exception's own (not its chain: 'timed out ... direct cause of ... timed
    out'), with its type when it is not an assertion."""
    if excinfo is not None:
        exc = excinfo.value
        text = str(exc) or type(exc).__name__
        if isinstance(exc, AssertionError):
            return text
        name = type(exc).__name__
        return text if name in ("Failed", "Skipped", "XFailed") else f"{name}: {text}"
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(getattr(crash, "message", "") or report.longreprtext or "")


def _cut(text: Any, limit: int = WIDTH) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def render(finding: str, message: str, ev: dict[str, Any] | None, known: dict[str, Any] | None,
           lost: str | None = None) -> str:
    """The default terminal report of a failing suite check, about a dozen lines."""
    own = own_message(message) or ["(no message)"]
    lines = [f"{finding}: {_cut(own[0], 300)}"]
    ev = ev or {}
    ex = ev.get("exchange")
    if isinstance(ex, dict):
        if lost == INTERRUPTED:
            lines.append("  stopped while waiting for an answer that never came; the last exchange answered before:")
        sent = f"{ex.get('method', '')} {ex.get('path', '')} {ex.get('request') or ''}".strip()
        lines.append(f"  sent:     {_cut(sent)}")
        status, err = ex.get("status"), ex.get("error_type")
        took = f" after {ex['elapsed_s']:.2f} s" if isinstance(ex.get("elapsed_s"), (int, float)) else ""
        if err and not status:
            got = f"no answer{took}: {err}: {ex.get('error_message') or ''}"
        else:
            said = ex.get("error_message") or ex.get("response") or ""
            kind = f" {err}" if err else ""
            got = f"{status}{kind}{took}: {said}"
        lines.append(f"  got:      {_cut(got)}")
        n = ev.get("exchanges") or 0
        if n > 1:
            lines.append(f"            (one of the {n} exchanges the check made)")
    else:  # no structured evidence: the check's own lines (request/status/answer from Exchange.evidence())
        lines += [f"  {_cut(line.strip())}" for line in own[1:7] if len(line.strip()) > 2]
    if lost and lost != INTERRUPTED:
        lines.append(f"  the request got no answer in time or lost its connection ({lost}); the canary then "
                     "checked that the server still answers")
    notes = ev.get("notes") or {}
    if notes:
        lines.append("  notes:    " + _cut(", ".join(f"{k}={v}" for k, v in notes.items())))
    if known:
        ref = f" ({known['reference']})" if known.get("reference") else ""
        what = "REGRESSION of " if known.get("regression") else ""
        lines.append(f"  known:    {what}{known.get('id')}{ref}: {_cut(known.get('summary', ''), 160)}")
        if known.get("remedy"):
            lines.append(f"  remedy:   {_cut(known['remedy'])}")
    log = ev.get("log") or []
    if log:
        lines.append(f"  server log while it ran ({len(log)} line{'s' if len(log) != 1 else ''}, last "
                     f"{min(len(log), SHOWN_LOG)}):")
        lines += [f"    {_cut(line, 180)}" for line in log[-SHOWN_LOG:]]
    lines.append(f"  finding {finding}; the full traceback: pytest -v or --tb=long")
    return "\n".join(lines)


def shape(report: Any, finding: str | None, message: str, ev: dict[str, Any], lost: str | None, short: bool) -> None:
    """The short report replaces pytest's longrepr and the plugin's own sections; otherwise pytest's report
    stays whole and gains the log lines the server wrote while the check ran (when any)."""
    if short and finding is not None:
        report.longrepr = Short(render(finding, message, ev, getattr(report, "glmv_known", None), lost),
                                report.longrepr)
        report.sections = [(t, c) for t, c in report.sections if not t.startswith("glmv ")]
    elif ev.get("log"):
        n = len(ev["log"])
        report.sections.append((f"glmv server log while this check ran ({n} line{'s' if n != 1 else ''})",
                                "\n".join(ev["log"])))


class Short:
    """A longrepr that prints the short report in the terminal, while everything that reads it as text (JUnit
    XML's failure body, the proof runner's reading of which assertion fired, xdist's transport) still gets
    pytest's full report, and the summary line its crash message."""

    def __init__(self, text: str, full: Any) -> None:
        self.text = text
        self.full = full
        self.reprcrash = getattr(full, "reprcrash", None)

    def toterminal(self, tw: Any) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return str(self.full)


def full_text(report: Any) -> str:
    """pytest's full text of a failure (what report.json keeps as the check's evidence), also where the terminal
    shows the short one."""
    longrepr = getattr(report, "longrepr", None)
    return str(longrepr.full) if isinstance(longrepr, Short) else (report.longreprtext or "")
