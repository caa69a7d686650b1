"""Output: vllm bench serve's "Serving Benchmark Result" block and saved-result JSON.

The block reproduces vLLM 0.32's labels and layout (40-wide labels, 50-wide rules, .2f) for its
default metric set (TTFT, TPOT, ITL, percentiles as selected), with E2EL, send lag and client
queue time added as further sections in the same style. The JSON carries vLLM's saved-result
keys (run metadata, counts, throughputs, {mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms,
max_concurrent_requests ...) plus ours (send_lag, client_queue_time, usage_missing and its note, cpu);
per-request lists use vLLM's --save-detailed names and are added only when asked for.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from .metrics import Record, pword

_SECTIONS = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
    ("send_lag", "Send Lag", "Send Lag (late vs schedule)"),
    ("client_queue_time", "Client Queue Time", "Client-side Queueing"),
)


def _row(label: str, value: Any, fmt: str = "") -> str:
    return ("{:<40} {:<10" + fmt + "}").format(label, value)


def block(result: Mapping[str, Any], percentiles: Sequence[float] = (99,), title: str = "") -> str:
    """The text vllm bench serve prints after a run, from a compute() result plus run metadata."""
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
    if title:
        lines.append(_row("Scenario:", title))
    lines.append(_row("Successful requests:", result["completed"]))
    lines.append(_row("Failed requests:", result["failed"]))
    if result.get("max_concurrency") is not None:
        lines.append(_row("Maximum request concurrency:", result["max_concurrency"]))
    if (result.get("client_workers") or 1) > 1:  # not in vLLM's block: the load came from several processes
        lines.append(_row("Client worker processes:", result["client_workers"]))
    rate = result.get("request_rate", "inf")
    if rate != "inf" and not (isinstance(rate, float) and math.isinf(rate)):
        lines.append(_row("Request rate configured (RPS):", float(rate), ".2f"))
    lines.append(_row("Benchmark duration (s):", result["duration"], ".2f"))
    lines.append(_row("Total input tokens:", result["total_input_tokens"]))
    lines.append(_row("Total generated tokens:", result["total_output_tokens"]))
    lines.append(_row("Request throughput (req/s):", result["request_throughput"], ".2f"))
    if result.get("request_goodput") is not None:
        lines.append(_row("Request goodput (req/s):", result["request_goodput"], ".2f"))
    lines.append(_row("Output token throughput (tok/s):", result["output_throughput"], ".2f"))
    lines.append(_row("Peak output token throughput (tok/s):", result["max_output_tokens_per_s"], ".2f"))
    lines += _peak_lines(result)
    lines.append(_row("Total token throughput (tok/s):", result["total_token_throughput"], ".2f"))
    for key, name, header in _SECTIONS:
        if key == "client_queue_time" and result.get("max_concurrency") is None:
            continue  # as in vLLM: queueing exists only under a concurrency limit
        lines.append("{s:{c}^{n}}".format(s=header, n=50, c="-"))
        lines.append(_row(f"Mean {name} (ms):", result[f"mean_{key}_ms"], ".2f"))
        lines.append(_row(f"Median {name} (ms):", result[f"median_{key}_ms"], ".2f"))
        for p in percentiles:
            w = pword(p)
            lines.append(_row(f"P{w[1:]} {name} (ms):", result[f"{w}_{key}_ms"], ".2f"))
    if result.get("usage_missing"):
        # Not in vLLM's block: a server that drops the usage chunk changes what TPOT and throughput count.
        lines.append(_row("Requests without a usage chunk:", result["usage_missing"]))
        lines.append("  (their output tokens: streamed chunks; vllm bench serve re-tokenizes the text)")
    lines += validity_lines(result)
    lines.append("=" * 50)
    return "\n".join(lines)


def _peak_lines(result: Mapping[str, Any]) -> list[str]:
    """The peak of this run at one instant; vLLM's per-second figure beside it only with what it counts."""
    vllm_peak = result["max_concurrent_requests"]
    exact = result.get("max_concurrent_requests_at_once")
    if exact is None or exact == vllm_peak:
        return [_row("Peak concurrent requests:", vllm_peak, ".2f")]
    return [_row("Peak concurrent requests:", exact),
            _row("Requests active in the busiest second:", vllm_peak, ".2f"),
            "  (vllm bench serve prints that as 'Peak concurrent requests': it counts every request active at",
            "  any time within a one-second bucket, so requests run one after another add up)"]


def validity_lines(result: Mapping[str, Any]) -> list[str]:
    """The rule that decides whether the run judged the server or its own client, applied to this run."""
    bound = result.get("slo_max_send_lag_ms")
    invalid = result.get("run_not_valid")
    if bound is None:  # a result from elsewhere (no rule recorded): only a verdict it carries
        return ["RUN NOT VALID: " + str(invalid).removeprefix("run not valid: ")] if invalid else []
    burst = result.get("request_rate") in ("inf", math.inf)
    send, slot = result.get("p99_send_lag_ms"), result.get("p99_slot_lag_ms")
    lines = ["{s:{c}^{n}}".format(s="Run Validity (did the client keep up?)", n=50, c="-"),
             f"Rule: p99 send lag and p99 slot lag <= {bound:g} ms (--glmv-slo-max-send-lag-ms)"]
    if slot is not None:
        lines.append(_row("P99 slot lag (ms):", slot, ".2f"))
    if send is not None:
        lines.append(_row("P99 send lag (ms):", send, ".2f"))
        if burst:
            lines.append("  not counted: at rate inf every request is due at once, so send lag measures the")
            lines.append("  client creating its tasks, not lateness against a schedule")
    if invalid:
        lines.append("RUN NOT VALID: " + str(invalid).removeprefix("run not valid: "))
    else:
        lines.append(_row("Verdict:", "valid: the client kept up, the numbers are the server's"))
    return lines


def threshold_lines(thresholds: Sequence[Any], result: Mapping[str, Any]) -> list[str]:
    """Each threshold with what was measured, the limit and the margin: for a passing run too."""
    out = []
    for t in thresholds:
        ok, line = t.judge(result.get(t.key))
        out.append(f"SLO {'ok  ' if ok else 'MISS'} {line}")
    if result.get("run_not_valid") and out:
        out.append("(the run is not valid: every threshold check fails whatever it measured)")
    return out


def metadata(*, model: str | None, base_url: str, num_prompts: int, request_rate: float, burstiness: float,
             max_concurrency: int | None, dataset: str, seed: int, label: str = "pytest-glmv") -> dict[str, Any]:
    """Run description under vLLM's saved-result keys."""
    return {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai-chat",
        "backend": "openai-chat",
        "label": label,
        "model_id": model,
        "tokenizer_id": model,
        "num_prompts": num_prompts,
        "request_rate": request_rate if request_rate < float("inf") else "inf",
        "burstiness": burstiness,
        "max_concurrency": max_concurrency,
        "dataset_name": dataset,
        "seed": seed,
        "base_url": base_url,
    }


def detailed(records: Sequence[Record]) -> dict[str, list[Any]]:
    """Per-request lists under vLLM's --save-detailed names, plus our schedule fields."""
    return {
        "input_lens": [r.prompt_tokens for r in records],
        "output_lens": [r.output_len() if r.ok else 0 for r in records],
        "ttfts": [r.ttft for r in records],
        "itls": [r.itl for r in records],
        "latencies": [r.latency for r in records],
        "start_times": [r.start for r in records],
        "queue_times": [r.queue_time for r in records],
        "errors": [r.error for r in records],
        "scheduled_times": [r.scheduled for r in records],
        "send_lags": [r.send_lag for r in records],
    }


def _clean(value: Any) -> Any:
    # JSON has no inf/nan; vLLM writes "inf" for an unbounded rate, we do the same for any.
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    return value


def write_json(path: Path, result: Mapping[str, Any], records: Sequence[Record] | None = None) -> Path:
    data = {k: _clean(v) for k, v in result.items()}
    if records is not None:
        data.update(detailed(records))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def scenario_path(path: Path, name: str, many: bool) -> Path:
    """PATH itself for a one-scenario spec; PATH-<scenario>.json for each of several."""
    return path if not many else path.with_name(f"{path.stem}-{name}{path.suffix or '.json'}")
