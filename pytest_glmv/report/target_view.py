"""The target as a person reads it at the top of report.html: which model, on which engine and version, served
how (launch command), where, and how long it took to be ready; not raw keys, not a loopback URL as the title."""
from __future__ import annotations

import shlex
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

ENGINE_NAMES = {"vllm": "vLLM", "glmv-reference": "the glmv reference server", "sglang": "SGLang"}
SHOWN = {"target", "base_url", "model", "profile", "vllm_version", "engine", "engine_evidence", "launched",
         "ready_s", "max_model_len", "faults", "reasoning_field", "notes", "launch_argv"}
LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def engine_text(t: Mapping[str, Any]) -> str:
    """`vLLM 0.32.0`; the reference double says whose API it imitates; unknown says so."""
    version = t.get("vllm_version")
    engine = t.get("engine") or ("glmv-reference" if t.get("target") == "reference" else "vllm" if version else None)
    if engine == "glmv-reference":
        return "the glmv reference server" + (f" (a double imitating vLLM {version})" if version else " (a double)")
    if engine in (None, "unknown"):
        return "unknown engine" + (f" (its /version says {version})" if version else "")
    return f"{ENGINE_NAMES.get(engine, engine)} {version or '(version not reported)'}"


def served(t: Mapping[str, Any]) -> str:
    kind = t.get("target")
    if kind == "reference":
        return "launched by the run: the built-in reference server"
    if kind == "vllm":
        return "launched by the run: vllm serve"
    if kind == "external":
        return "attached: a server that was already running"
    return str(kind or "not started")


def _loopback(url: str | None) -> bool:
    return bool(url) and (urlparse(str(url)).hostname or "") in LOOPBACK


def header(t: Mapping[str, Any], env: Mapping[str, Any]) -> tuple[str, str]:
    """(title, subtitle): `pytest-glmv: MODEL on ENGINE VERSION` and where and when it ran."""
    title = f"pytest-glmv: {t.get('model') or 'no model'} on {engine_text(t)}"
    host = env.get("hostname") or "an unnamed host"
    where = (f"attached to {t.get('base_url')}" if t.get("target") == "external" and not _loopback(t.get("base_url"))
             else f"run on {host}")
    return title, f"{served(t)}; {where}; finished {env.get('finished') or '?'}"


def launch_text(t: Mapping[str, Any]) -> str:
    argv = t.get("launch_argv")
    if isinstance(argv, list) and argv:
        return shlex.join(str(a) for a in argv)
    if t.get("target") == "external":
        return "not known: the server was attached, not launched by the run"
    return "not recorded"


def target_rows(t: Mapping[str, Any], env: Mapping[str, Any], prose: Callable[[str], Any],
                value: Callable[[Any], Any] = str) -> list[list[Any]]:
    url = t.get("base_url")
    address = str(url or "none")
    if _loopback(url):
        address += " (loopback, on the host above, for the run's duration only)"
    ready = t.get("ready_s")
    rows: list[list[Any]] = [
        ["Model", f"{t.get('model') or '?'}" + (f" (profile {t['profile']})" if t.get("profile") else "")],
        ["Engine and version", engine_text(t)],
    ]
    if t.get("engine_evidence"):
        rows.append(["Engine identified by", prose(str(t["engine_evidence"]))])
    rows += [
        ["Served", served(t)],
        ["Launch command", launch_text(t)],
        ["Where it ran", f"{env.get('hostname') or '?'} ({env.get('platform') or '?'})"],
        ["Address", address],
        ["Time to ready", f"{float(ready):.1f} s" if isinstance(ready, (int, float)) else "not measured"],
        ["Context window", f"{t['max_model_len']} tokens" if t.get("max_model_len") else "not reported"],
        ["Reasoning field", t.get("reasoning_field") or "not observed (no reasoning check saw an answer)"],
    ]
    if t.get("faults"):
        rows.append(["Faults injected", ", ".join(map(str, t["faults"]))])
    for note in t.get("notes") or []:
        rows.append(["Note", prose(str(note))])
    for k, v in t.items():  # anything a newer target reports that this page does not know yet
        if k not in SHOWN and v not in (None, "", [], {}):
            rows.append([k, value(v)])
    return rows
