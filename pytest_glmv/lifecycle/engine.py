"""Which engine a server is, from what it says about itself, decided once when the target starts.

vLLM is recognised by its own shapes: /version answers exactly {"version": <PEP 440>}, every card of /v1/models
is owned_by "vllm", and /metrics exposes vLLM's core `vllm:` families. The reference double says it is the
double (a "double" field in /version, owned_by "glmv-reference", a glmv_reference_info metric) unless it was
told to pose as a vLLM release. Anything else is "unknown": no vLLM knowledge-base entry matches it, and its
failures stay failures. Where the evidence disagrees (a /version with extra fields, none at all, a vLLM-looking
version on a server that is otherwise not vLLM) the identity carries one clear line saying so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

VLLM, DOUBLE, UNKNOWN = "vllm", "glmv-reference", "unknown"
# Families every vLLM release with the V1 engine exposes (0.11 to 0.33 read; the CPU build's 0.32.0 has 74).
CORE_METRICS = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds",
                "vllm:e2e_request_latency_seconds")
DOUBLE_METRIC = "glmv_reference_info"
_FAMILY = re.compile(r"^(?:# (?:TYPE|HELP) )?(vllm:[A-Za-z0-9_:]+?)(?:_bucket|_count|_sum|_total|_created)?[{ ]",
                     re.MULTILINE)


@dataclass
class Identity:
    engine: str
    evidence: str  # what decided it, e.g. "/version {version} only; owned_by vllm in /v1/models; 74 vllm: metrics"
    problems: list[str] = field(default_factory=list)  # clear lines for the report: lies, odd shapes


def metric_families(text: str) -> set[str]:
    """The `vllm:` metric families a Prometheus text exposition names (samples or HELP/TYPE lines)."""
    return set(_FAMILY.findall(text))


def identify(version: tuple[int, Any], models: tuple[int, Any], metrics: tuple[int, Any]) -> Identity:
    """The engine from the (status, body) answers of GET /version, /v1/models and /metrics."""
    facts: list[str] = []
    problems: list[str] = []
    double = False
    # /version
    v_status, v_body = version
    claimed: str | None = None
    version_ok = False
    if v_status != 200 or not isinstance(v_body, dict):
        facts.append(f"no /version ({v_status or 'no answer'})")
        problems.append(f"the server answers no /version ({v_status or 'no answer'}); every vLLM release does: "
                        "engine unknown, no vLLM knowledge-base entry applies")
    else:
        claimed = str(v_body.get("version")) if v_body.get("version") is not None else None
        extra = sorted(set(v_body) - {"version"})
        if v_body.get("double") == DOUBLE:
            double = True
            facts.append("/version names the glmv reference double")
        elif extra:
            facts.append(f"/version has fields vLLM's has not: {', '.join(extra)}")
            problems.append(f"the server's /version answers {sorted(v_body)}; vLLM's answers only 'version': "
                            "not taken for vLLM's")
        if claimed is None:
            facts.append("/version names no version")
        else:
            try:
                Version(claimed.lstrip("vV"))
                version_ok = not extra
            except InvalidVersion:
                problems.append(f"the server's /version says {claimed!r}, which is no release number")
            if version_ok:
                facts.append("/version {version} only")
    # /v1/models
    m_status, m_body = models
    cards = [c for c in (m_body.get("data") or []) if isinstance(c, dict)] if isinstance(m_body, dict) else []
    owners = sorted({str(c.get("owned_by")) for c in cards})
    owned_vllm = bool(cards) and owners == ["vllm"]
    if owners:
        facts.append(f"owned_by {', '.join(owners)} in /v1/models")
        double = double or DOUBLE in owners
    else:
        facts.append(f"no model cards in /v1/models ({m_status or 'no answer'})")
    # /metrics
    p_status, p_text = metrics
    text = p_text if isinstance(p_text, str) else ""
    families = metric_families(text)
    core = all(name in families for name in CORE_METRICS)
    facts.append(f"{len(families)} vllm: metrics" + ("" if core or not families else " (not vLLM's core set)")
                 if p_status == 200 else f"no /metrics ({p_status or 'no answer'})")
    double = double or bool(re.search(rf"^{DOUBLE_METRIC}\b", text, re.MULTILINE))
    evidence = "; ".join(facts)
    if double:
        return Identity(DOUBLE, evidence, problems)
    if version_ok and owned_vllm and core:
        return Identity(VLLM, evidence, problems)
    if claimed and version_ok:
        problems.append(f"the server's /version says {claimed} in vLLM's shape, but the rest is not vLLM's "
                        f"({'; '.join(facts[1:])}): engine unknown, no vLLM knowledge-base entry applies")
    return Identity(UNKNOWN, evidence, problems)


def probe(root_url: str, api_key: str | None = None, timeout: float = 5.0) -> Identity:
    """Ask the server (three GETs) and identify it."""
    from .server import http_json

    root = root_url.rstrip("/")
    return identify(http_json(root + "/version", api_key, timeout), http_json(root + "/v1/models", api_key, timeout),
                    http_json(root + "/metrics", api_key, timeout))
