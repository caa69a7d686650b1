"""report.html: one self-contained page (inline CSS, plots as PNG data URIs, no script, nothing fetched).

Everything that comes from a run passes through esc(): failure texts carry model output and server
answers, which may hold markup on purpose (the security suite sends it). The page is rendered from
the report.json document alone, so an archived JSON can be turned into a page again.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterable, Mapping, Sequence

from . import findings, plots
from .collect import AREAS, id_of
from .target_view import header, target_rows
from .terminal import COLUMNS, KIND_LABEL, cells, verdict

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1b1b1b;max-width:1480px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px;font-family:ui-monospace,monospace;word-break:break-all}
table{border-collapse:collapse;margin:6px 0} th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2} td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#dff3df} .FAIL{background:#f8d4d4} .none{color:#888} .muted{color:#666}
.banner{padding:8px 12px;border-radius:4px;margin:10px 0;font-weight:600}
.banner.pass{background:#dff3df} .banner.fail{background:#f8d4d4}
pre{background:#f7f7f7;border:1px solid #e2e2e2;padding:8px;overflow-x:auto;white-space:pre-wrap;
word-break:break-word;font-size:12px;max-height:480px;overflow-y:auto}
section.finding{border:1px solid #e3c4c4;border-left:6px solid #c94545;border-radius:4px;padding:4px 14px;
margin:12px 0} section.finding.known{border-left-color:#c9a045} section.finding h3{font-family:inherit}
.ex pre{max-height:200px;margin:4px 0 8px} table.checks td:first-child{white-space:nowrap}
#glmv-target td:first-child{white-space:nowrap;font-weight:600}
figure{margin:8px 0} figcaption{color:#555;font-size:12px} img{max-width:100%;border:1px solid #eee}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


class Markup(str):
    """Text already escaped (and marked up): table cells take it as it is."""


def prose(text: str) -> Markup:
    """Escaped text whose `backticked` parts show as code, as the notes are written."""
    parts = esc(text).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def _num(value: Any) -> str:
    if isinstance(value, Markup):
        return value
    if isinstance(value, float):
        return f"{value:.2f}"
    return esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], attrs: str = "", numeric: Sequence[int] = ()) -> str:
    """rows of cells; a cell given as (text, css_class) gets the class. Every text is escaped."""
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    out = [f"<table{attrs}>{head}<tbody>"]
    for row in rows:
        tds = []
        for i, cell in enumerate(row):
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            cls = (cls + (" n" if i in numeric else "")).strip()
            tds.append(f"<td class=\"{esc(cls)}\">{_num(text)}</td>" if cls else f"<td>{_num(text)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def _matrix(rep: Mapping[str, Any]) -> str:
    rows: list[list[Any]] = []
    by_area: dict[str, list[Mapping[str, Any]]] = {}
    for r in rep["summary"]["matrix"]:
        by_area.setdefault(r["area"], []).append(r)
    for area in (*AREAS, *[a for a in by_area if a not in AREAS]):
        if area not in by_area:
            rows.append([area, ("-", "none"), *[("", "none")] * len(COLUMNS), ("", "none"), ("not run", "none")])
            continue
        for r in by_area[area]:
            c, v = cells(r), verdict(r)
            rows.append([area, KIND_LABEL.get(r["kind"], r["kind"]), *[c[k] for k in COLUMNS], r.get("known", 0),
                         (v, v if v in ("ok", "FAIL") else "none")])
    return table(["area", "checks", *COLUMNS, "known upstream", "verdict"], rows, ' id="glmv-matrix"',
                 numeric=(2, 3, 4, 5, 6))


def _known(checks: Sequence[Mapping[str, Any]]) -> str:
    """Failures (and xfails) that are known faults of the server's release: reference and remedy."""
    rows = [[id_of(c), c.get("outcome") or "", k["id"], k["versions"], k.get("fixed_in") or "not yet",
             k["reference"], k["remedy"]] for c in checks if (k := c.get("known"))]
    if not rows:
        return ""
    return ("<h2>Known upstream findings</h2>"
            + table(["check", "outcome", "known fault", "affected", "fixed in", "reference", "remedy"], rows,
                    ' id="glmv-known"'))


def _baseline(cmp: Mapping[str, Any] | None) -> str:
    if not cmp:
        return ""
    regs = cmp["regressions"]
    out = [f"<h2>Baseline</h2><p>Compared with <code>{esc(cmp['path'])}</code>: {cmp['compared_checks']} "
           f"check(s), {cmp['compared_metrics']} SLO metric(s); tolerance {100 * cmp['tolerance']:g}% (latencies also "
           f"{cmp.get('slack_ms', 0):g} ms).</p>"]
    if regs:
        if cmp.get("incomparable"):
            out.append(f'<div class="banner fail">Not comparable: {esc(cmp["incomparable"])}</div>')
        out.append(f'<div class="banner fail">{len(regs)} regression(s): the run fails</div>')
        out.append(table(["kind", "what regressed", "baseline", "now", "change", "evidence"],
                         [[r["kind"], r["what"], r["baseline"], r["now"], r["change"] or "", r["detail"]]
                          for r in regs], ' id="glmv-regressions"', numeric=(2, 3, 4)))
    elif cmp.get("incomparable"):
        out.append(f'<div class="banner fail">Not comparable: {esc(cmp["incomparable"])}; the run fails</div>')
    else:
        out.append('<div class="banner pass">No regressions against the baseline</div>')
    if cmp["notes"]:
        out.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in cmp["notes"]) + "</ul>")
    return "\n".join(out)


def _exchange(ex: Mapping[str, Any]) -> str:
    """One exchange as a person reads it: what was sent, what came back."""
    sent = f"<div class=\"ex\"><b>Request</b> <code>{esc(findings.request_line(ex))}</code>"
    if ex.get("request"):
        sent += f"<pre>{esc(ex['request'])}</pre>"
    back = f"<b>Response</b> <code>{esc(findings.answer_line(ex))}</code>"
    body = ex.get("response") or (ex.get("error_message") if ex.get("status") is not None else "")
    if body:
        back += f"<pre>{esc(body)}</pre>"
    return sent + back + "</div>"


def _evidence(c: Mapping[str, Any]) -> str:
    """The check's evidence: its exchange with the server, its notes and the server's log lines; without any
    (a check that made no request), its own message is the evidence."""
    raw = c.get("server_evidence")
    ev: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    out = []
    ex = findings.exchange_of(c)
    if ex:
        many = ev.get("exchanges") or 0
        out.append(_exchange(ex) + (f"<p class=\"muted\">one of {esc(many)} exchanges this check made</p>"
                                    if isinstance(many, int) and many > 1 else ""))
    notes = ev.get("notes") or {}
    if notes:
        out.append(table([], [[k, v] for k, v in notes.items()], ' class="notes"'))
    log = ev.get("log") or []
    if log:
        out.append(f"<details><summary>server log while this check ran ({len(log)} lines)</summary>"
                   f"<pre>{esc(chr(10).join(map(str, log)))}</pre></details>")
    if not out:
        where = " (the SLO run's numbers: the SLO section below)" if c.get("area") == "slo" else ""
        out.append(f"<p class=\"muted\">no request recorded for this check; its message above is the evidence"
                   f"{where}</p>")
    return "\n".join(out)


def _failures(checks: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]]) -> str:
    groups = findings.group(checks)
    if not groups and not errors:
        return "<h2>Findings</h2><p>None: every check that ran passed (or was skipped or waived).</p>"
    n = sum(len(g.checks) for g in groups)
    out = [f"<h2>Findings ({len(groups)}, from {n} failed check{'s' if n != 1 else ''})</h2>",
           "<p class=\"muted\">Grouped by cause, read from the server's answers; the cause that fails most checks "
           "first. pytest's full text of each failure is in report.json (checks[].evidence).</p>"]
    for i, g in enumerate(groups, 1):
        first = g.checks[0]
        out.append(f"<section class=\"finding {esc(g.kind)}\" id=\"finding-{i}\"><h3>{i}. {esc(g.title)}</h3>")
        facts = [f"{len(g.checks)} check{'s' if len(g.checks) != 1 else ''} failed"]
        if g.remedy:
            facts.append(f"<b>Remedy</b>: {prose(g.remedy)}")
        if g.reference:
            facts.append(f"<b>Upstream</b>: {_link(g.reference)}")
        out.append("<p>" + "; ".join(facts) + "</p>")
        rows = [[Markup(f"<code>{esc(id_of(c))}</code>"), (c.get("outcome") or "", "FAIL"), findings.message(c)]
                for c in g.checks]
        out.append(table(["check (AREA/NAME)", "outcome", "what it found"], rows, ' class="checks"'))
        out.append(f"<p class=\"muted\">Evidence of <code>{esc(id_of(first))}</code>:</p>" + _evidence(first))
        out.append("</section>")
    for e in errors:
        lines = [ln for ln in str(e.get("evidence") or "").splitlines() if ln.strip()]
        out.append(f"<h3>Could not collect {esc(e['nodeid'])}</h3><p>{esc(lines[-1] if lines else '')}</p>")
    return "\n".join(out)


def _link(ref: str) -> Markup:
    if re.match(r"https://[^\s\"<>]+$", ref):
        return Markup(f"<a href=\"{esc(ref)}\">{esc(ref)}</a>")
    return Markup(esc(ref))


def _paragraphs(lines: Sequence[str]) -> list[str]:
    """Terminal lines as paragraphs: an indented line continues the one before it."""
    out: list[str] = []
    for line in lines:
        if line.startswith("  ") and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line.strip())
    return out


def _slo(runs: Sequence[Mapping[str, Any]]) -> str:
    if not runs:
        return ""
    out = ["<h2>SLO</h2>"]
    for run in runs:
        p, res = run.get("params") or {}, run.get("result") or {}
        out.append(f"<h3>scenario {esc(run.get('scenario'))}</h3><p>{esc(p.get('num_prompts'))} prompts of "
                   f"{esc(p.get('dataset'))}, rate {esc(p.get('request_rate'))} req/s, max concurrency "
                   f"{esc(p.get('max_concurrency') or 'unlimited')}; completed {esc(res.get('completed'))}, "
                   f"failed {esc(res.get('failed'))}, duration {_num(res.get('duration'))} s</p>")
        rows = []
        for t in run.get("thresholds") or []:
            sign = "<=" if t.get("ceiling") else ">="
            nominal = "" if t.get("nominal") == t.get("limit") else f" (nominal {_num(t.get('nominal'))})"
            ok = "meets" if t.get("passed") else "MISSES"
            m, lim = t.get("measured"), t.get("limit")
            margin = ""
            if isinstance(m, (int, float)) and isinstance(lim, (int, float)):
                d = (lim - m) if t.get("ceiling") else (m - lim)
                margin = f"{d:+.2f}" + (f" ({100 * d / lim:+.1f}%)" if lim else "")
            rows.append([t.get("key"), m, f"{sign} {_num(lim)}{nominal}", margin,
                         (ok, "ok" if t.get("passed") else "FAIL")])
        out.append(table(["metric", "measured", "threshold", "margin", "verdict"], rows, ' class="slo"',
                         numeric=(1, 3)))
        peak, vllm_peak = res.get("max_concurrent_requests_at_once"), res.get("max_concurrent_requests")
        if peak is not None:
            out.append(f"<p>Peak concurrent requests: {esc(peak)} at one instant"
                       + (f" (vllm bench serve's per-second figure, every request active within one second: "
                          f"{_num(vllm_peak)})" if vllm_peak != peak else "") + "</p>")
        if run.get("validity"):
            out.append("<p class=\"muted\">Run validity: " + "<br>".join(esc(v) for v in _paragraphs(run["validity"]))
                       + "</p>")
        stats = run.get("statistics") or {}
        names = sorted({s for v in stats.values() for s in v}, key=lambda s: (s[0] == "p", s))
        out.append(table(["metric (ms)", *names], [[m, *[v.get(s, "") for s in names]] for m, v in stats.items()],
                         numeric=tuple(range(1, len(names) + 1))))
        for para in _paragraphs((run.get("cross_check") or {}).get("lines") or []):
            out.append(f"<p class=\"muted\">{esc(para)}</p>")
        if run.get("errors"):
            out.append("<pre>" + esc("\n".join(run["errors"])) + "</pre>")
        for caption, uri in plots.slo_figures(run.get("distributions") or {}):
            out.append(f'<figure><img alt="{esc(caption)}" src="{uri}"><figcaption>{esc(caption)}</figcaption>'
                       "</figure>")
    return "\n".join(out)


def _all_checks(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in checks:
        props = "; ".join(f"{k}={v}" for k, v in (c.get("properties") or {}).items())
        o = c.get("outcome") or "?"
        rows.append([id_of(c), c.get("area") or "", "behaviour" if c.get("behavior") else "server-level",
                     (o, "FAIL" if o in ("failed", "error") else "ok" if o == "passed" else ""),
                     f"{c.get('duration', 0):.2f}", c.get("reason") or "", props])
    return (f"<h2>All checks ({len(checks)})</h2><details><summary>show</summary>"
            + table(["check", "area", "kind", "outcome", "s", "reason", "measured (properties)"], rows,
                    ' id="glmv-checks"', numeric=(4,)) + "</details>")


def _value(v: Any) -> Any:
    """A target field as a reader expects it: yes/no, a list joined, nothing for None."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list):
        return prose("; ".join(map(str, v)))
    if isinstance(v, str) and v.count("`") >= 2:
        return prose(v)
    return "" if v is None else v


def render(rep: Mapping[str, Any]) -> str:
    t, env, out = rep["target"], rep["environment"], rep["summary"]["outcomes"]
    cmp = rep.get("baseline")
    failing = rep["exitstatus"] != 0
    status = f"exit status {rep['exitstatus']}: " + (", ".join(f"{n} {k}" for k, n in out.items() if n) or "no checks")
    if cmp and cmp["regressions"]:
        status += f"; {len(cmp['regressions'])} regression(s) against the baseline"
    if cmp and cmp.get("incomparable"):
        status += "; the baseline could not judge this run"
    title, subtitle = header(t, env)
    env_rows = [[k, " ".join(v) if isinstance(v, list) else v] for k, v in env.items()]
    body = [
        f"<h1>{esc(title)}</h1><p class=\"muted\">{esc(subtitle)}</p>",
        f'<div class="banner {"fail" if failing else "pass"}">{esc(status)}</div>',
        "<h2>Target</h2>", table([], target_rows(t, env, prose, _value), ' id="glmv-target"'),
        _failures(rep["checks"], rep.get("collection_errors") or []),
        "<h2>Conformance matrix</h2>", _matrix(rep),
        f"<p class=\"muted\">{rep['summary'].get('deselected', 0)} check(s) deselected.</p>",
        _baseline(cmp), _known(rep["checks"]),
        _slo(rep.get("slo") or []),
        _all_checks(rep["checks"]), "<h2>Environment</h2>", table([], env_rows),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
