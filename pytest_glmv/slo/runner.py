"""One SLO scenario, end to end: workload, schedule, load, statistics, cross-check, outputs.

Usable outside pytest:

    from pytest_glmv.slo import runner, spec
    out = runner.run_scenario("http://127.0.0.1:8000", "model", spec.default().scenarios[0],
                              runner.Params(num_prompts=50, request_rate=5.0))
    print(out.block)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from . import client, metrics, promcheck, report, schedule, workers, workload
from .spec import Scenario, Threshold

# options that a scenario may set too (the spec key is the option's name)
RUN_FIELDS = ("num_prompts", "request_rate", "burstiness", "max_concurrency", "dataset", "seed", "ignore_eos",
              "temperature", "extra_body", "random_input_len", "random_output_len")


def extra_body(value: Any, where: str = "--glmv-extra-body") -> dict[str, Any] | None:
    """vllm bench serve's --extra-body: a JSON object (text, or a table from a spec); None when unset.
    Raises WorkloadError with one line."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise workload.WorkloadError(f"glmv: {where}: not valid JSON ({e}); give an object, e.g. "
                                         '\'{"chat_template_kwargs": {"enable_thinking": false}}\'') from None
    if not isinstance(value, Mapping):
        raise workload.WorkloadError(f"glmv: {where}: must be a JSON object, got {type(value).__name__} "
                                     f"{json.dumps(value)[:60]}")
    return dict(value)


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
    ignore_eos: bool = False
    temperature: float | None = None
    extra_body: Mapping[str, Any] | None = None
    random_input_len: int = workload.RANDOM_INPUT_LEN
    random_output_len: int = workload.OUTPUT_LEN
    max_send_lag_ms: float = 10.0  # the client kept up when its p99 send lag (and slot lag) stays within this
    workers: int | str = workers.AUTO  # load generator processes (workers.py); run_scenario resolves 'auto'

    def describe(self) -> str:
        rate = "inf" if math.isinf(self.request_rate) else f"{self.request_rate:g}"
        data = self.dataset
        if data == workload.RANDOM:
            data += f" ({self.random_input_len} in, {self.random_output_len} out)"
        body = [k for k, on in (("ignore_eos", self.ignore_eos), (f"temperature {self.temperature:g}"
                if self.temperature is not None else "", self.temperature is not None),
                (f"extra body {json.dumps(self.extra_body)[:80]}" if self.extra_body else "", bool(self.extra_body)))
                if on]
        return (f"{self.num_prompts} prompts of {data}, rate {rate} req/s, burstiness {self.burstiness:g}, "
                f"max concurrency {self.max_concurrency or 'unlimited'}, seed {self.seed}"
                + "".join(f", {b}" for b in body)
                + (f", {self.workers} client worker processes" if isinstance(self.workers, int)
                   and self.workers > 1 else ""))

    def body_extra(self) -> dict[str, Any]:
        """What vllm bench serve adds after stream_options, in its order: ignore_eos (when on), then its
        sampling parameters (temperature) updated by --extra-body (so extra keys replace earlier ones in place)."""
        extra: dict[str, Any] = {"ignore_eos": True} if self.ignore_eos else {}
        sampling = {} if self.temperature is None else {"temperature": self.temperature}
        extra.update({**sampling, **(self.extra_body or {})})
        return extra


def params_for(settings: Any, sc: Scenario) -> Params:
    """Options the user set (cli/env/ini) win over the scenario, which wins over option defaults.
    Raises WorkloadError (one line) for a bad --glmv-extra-body."""
    sources: Mapping[str, str] = getattr(settings, "sources", {}) or {}
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name in RUN_FIELDS:
        if sources.get(name, "default") != "default" or name not in sc.run:
            values[name] = getattr(settings, name, getattr(Params, name, None))
            where[name] = "--glmv-" + name.replace("_", "-")
        else:
            values[name] = sc.run[name]
            where[name] = f"scenario {sc.name}: {name}"
    values["extra_body"] = extra_body(values["extra_body"], where["extra_body"])
    if values["dataset"] == workload.RANDOM:
        values["ignore_eos"] = True  # as vllm bench serve does for its random dataset
    values["max_tokens"] = sc.run.get("max_tokens", workload.OUTPUT_LEN)
    values["timeout"] = settings.request_timeout
    values["max_send_lag_ms"] = getattr(settings, "slo_max_send_lag_ms", 10.0)
    values["workers"] = getattr(settings, "slo_workers", workers.AUTO)  # the client's, never a scenario's
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
        invalid = self.result.get("run_not_valid")
        if invalid:
            # A failure, not a skip: a skipped gate is green in CI, and a deployment would pass unjudged.
            ok, line = False, f"{invalid}\n(measured anyway: {line})"
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
    """Load the server at root_url (no /v1) with scenario sc under params p; never raises on failed requests
    (a client worker that dies raises workers.WorkerError)."""
    p = replace(p, workers=workers.resolve(p.workers, p.request_rate, p.num_prompts, p.max_concurrency))
    reqs = requests if requests is not None else workload.load(
        p.dataset, p.num_prompts, p.seed, p.max_tokens, input_len=p.random_input_len, output_len=p.random_output_len,
        align=aligner(root_url, model, api_key))
    extra = p.body_extra()
    bodies = [client.body(model or "", r.text, r.image_url, r.max_tokens, extra) for r in reqs]
    times = schedule.arrivals(p.num_prompts, p.request_rate, p.burstiness, p.seed)
    out = workers.run(root_url.rstrip("/") + "/v1/chat/completions", bodies, times, workers=int(p.workers),
                      max_concurrency=p.max_concurrency, api_key=api_key, timeout=p.timeout,
                      metrics_url=root_url.rstrip("/") + "/metrics", awake=True)
    result = report.metadata(model=model, base_url=root_url, num_prompts=p.num_prompts, request_rate=p.request_rate,
                             burstiness=p.burstiness, max_concurrency=p.max_concurrency, dataset=p.dataset,
                             seed=p.seed)
    result.update(metrics.compute(out.records, out.duration, sc.percentiles, sc.goodput or None))
    result["client_cpu_s"] = out.cpu_seconds  # all workers' together
    result["client_workers"] = p.workers
    result["slo_max_send_lag_ms"] = p.max_send_lag_ms
    result["run_not_valid"] = metrics.client_fell_behind(result, p.max_send_lag_ms)
    result["scenario"] = sc.name
    if out.probe is not None and not out.probe.ok:
        result["probe_error"] = out.probe.error
    cross = promcheck.cross_check(out.metrics_before, out.metrics_after, result)
    result["server_metrics"] = dict(cross.server) if cross.available else None
    result["server_metrics_problems"] = list(cross.problems)
    text = report.block(result, sc.percentiles, title=sc.name)
    return Outcome(sc, p, result, out.records, cross, text)


def aligner(root_url: str, model: str | None, api_key: str | None) -> workload.Align:
    """Cut texts to an exact token count with the server's /tokenize and /detokenize, as vllm bench serve
    re-aligns its random prompts; a server without them keeps the texts cut at ~4 characters a token."""
    import httpx

    def align(texts: list[str], n: int) -> list[str]:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        out: list[str] = []
        with httpx.Client(base_url=root_url.rstrip("/"), headers=headers, timeout=60) as http:
            for text in texts:
                try:
                    for _ in range(6):
                        r = http.post("/tokenize", json={"model": model, "prompt": text, "add_special_tokens": False})
                        r.raise_for_status()
                        tokens = r.json()["tokens"]
                        if len(tokens) >= n:
                            break
                        text = f"{text} {text}"
                    r = http.post("/detokenize", json={"model": model, "tokens": tokens[:n]})
                    r.raise_for_status()
                    out.append(r.json()["prompt"])
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    return [t[: 4 * n] for t in texts]  # no usable /tokenize: about 4 characters a token
        return out
    return align


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
