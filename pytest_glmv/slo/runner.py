"""One SLO scenario, end to end: workload, schedule, load, statistics, cross-check, outputs.

Usable outside pytest:

    from pytest_glmv.slo import runner, spec
    out = runner.run_scenario("http://127.0.0.1:8000", "model", spec.default().scenarios[0],
                              runner.Params(num_prompts=50, request_rate=5.0))
    print(out.block)
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from . import client, metrics, promcheck, report, schedule, workload
from .spec import Scenario, Threshold

RUN_FIELDS = ("num_prompts", "request_rate", "burstiness", "max_concurrency", "dataset", "seed")


@dataclass(frozen=True)
class Params:
    num_prompts: int = 200
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    dataset: str = workload.SYNTHETIC
    seed: int = 0
    max_tokens: int = workload.OUTPUT_LEN
    timeout: float = 600.0

    def describe(self) -> str:
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:g}"
        return (f"{self.num_prompts} prompts of {self.dataset}, rate {rate} req/s, burstiness {self.burstiness:g}, "
                f"max concurrency {self.max_concurrency or 'unlimited'}, seed {self.seed}")


def params_for(settings: Any, sc: Scenario) -> Params:
    """Options the user set (cli/env/ini) win over the scenario, which wins over option defaults."""
    sources: Mapping[str, str] = getattr(settings, "sources", {}) or {}
    values: dict[str, Any] = {}
    for name in RUN_FIELDS:
        if sources.get(name, "default") != "default" or name not in sc.run:
            values[name] = getattr(settings, name)
        else:
            values[name] = sc.run[name]
    values["max_tokens"] = sc.run.get("max_tokens", workload.OUTPUT_LEN)
    values["timeout"] = settings.request_timeout
    return Params(**values)


@dataclass
class Outcome:
    scenario: Scenario
    params: Params
    result: dict[str, Any]
    records: list[metrics.Record]
    cross: promcheck.CrossCheck
    block: str
    written: list[Path] = field(default_factory=list)

    def __repr__(self) -> str:  # pytest prints fixture values in tracebacks: keep it to one line
        return (f"Outcome({self.scenario.name}: completed {self.result['completed']}, "
                f"failed {self.result['failed']})")

    def judge(self, t: Threshold) -> tuple[bool, str]:
        """(passed, message): the evidence, then the run it came from and any failures."""
        ok, line = t.judge(self.result.get(t.key))
        context = [f"scenario {self.scenario.name}: {self.params.describe()}",
                   f"completed {self.result['completed']}, failed {self.result['failed']}, "
                   f"duration {self.result['duration']:.2f} s"]
        errs = metrics.errors(self.records, 5)
        if errs:
            context.append("first failures: " + "; ".join(errs))
        if self.result.get("usage_missing_note"):
            context.append(self.result["usage_missing_note"])
        return ok, line + "\n" + "\n".join(context)


def run_scenario(root_url: str, model: str | None, sc: Scenario, p: Params, *, api_key: str | None = None,
                 requests: list[workload.Request] | None = None) -> Outcome:
    """Load the server at root_url (no /v1) with scenario sc under params p; never raises on failed requests."""
    reqs = requests if requests is not None else workload.load(p.dataset, p.num_prompts, p.seed, p.max_tokens)
    bodies = [client.body(model or "", r.text, r.image_url, r.max_tokens) for r in reqs]
    times = schedule.arrivals(p.num_prompts, p.request_rate, p.burstiness, p.seed)
    out = asyncio.run(client.run(root_url.rstrip("/") + "/v1/chat/completions", bodies, times,
                                 max_concurrency=p.max_concurrency, api_key=api_key, timeout=p.timeout,
                                 metrics_url=root_url.rstrip("/") + "/metrics"))
    result = report.metadata(model=model, base_url=root_url, num_prompts=p.num_prompts, request_rate=p.request_rate,
                             burstiness=p.burstiness, max_concurrency=p.max_concurrency, dataset=p.dataset,
                             seed=p.seed)
    result.update(metrics.compute(out.records, out.duration, sc.percentiles, sc.goodput or None))
    result["client_cpu_s"] = out.cpu_seconds
    result["scenario"] = sc.name
    if out.probe is not None and not out.probe.ok:
        result["probe_error"] = out.probe.error
    cross = promcheck.cross_check(out.metrics_before, out.metrics_after, result)
    result["server_metrics"] = dict(cross.server) if cross.available else None
    result["server_metrics_problems"] = list(cross.problems)
    text = report.block(result, sc.percentiles, title=sc.name)
    return Outcome(sc, p, result, out.records, cross, text)


def save(o: Outcome, json_path: Path | None, many: bool, detailed: bool = False, plot: bool = True) -> list[Path]:
    """Write the JSON (vLLM keys) and, next to it, the latency CDF plot."""
    if json_path is None:
        return []
    path = report.scenario_path(Path(json_path), o.scenario.name, many)
    written = [report.write_json(path, o.result, o.records if detailed else None)]
    if plot:
        from .plot import cdf_png

        written.append(cdf_png(o.records, path.with_suffix(".cdf.png"), title=f"{o.scenario.name}: latency CDFs"))
    o.written = written
    return written


def with_params(sc: Scenario, **run: Any) -> Scenario:
    return replace(sc, run={**sc.run, **run})
