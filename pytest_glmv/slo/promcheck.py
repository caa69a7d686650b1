"""Cross-check the client's numbers against the server's own /metrics (Prometheus text).

Scraped right before the timed run (after the probe request, if any) and right after it; the deltas of
counters and of histogram _sum/_count pairs belong to the run alone, provided nothing else used
the server meanwhile. What must hold:
- requests the server counts as successful == requests the client completed;
- the client's mean TTFT is not below the server's: the client's clock starts before the
  request leaves and stops after the chunk arrives, so it can only see more time, never less.
Names are vLLM's (as vLLM 0.32's /metrics writes them): vllm:request_success_total,
vllm:time_to_first_token_seconds, vllm:e2e_request_latency_seconds, vllm:generation_tokens_total.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..kit.prometheus import totals

SUCCESS = "vllm:request_success_total"
TTFT = "vllm:time_to_first_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"
GEN_TOKENS = "vllm:generation_tokens_total"


@dataclass
class CrossCheck:
    available: bool
    server: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    note: str = ""
    client: dict[str, float] = field(default_factory=dict)  # the client's own means, to say how they differ

    def lines(self) -> list[str]:
        if not self.available:
            return [f"server /metrics cross-check skipped: {self.note}"]
        s = self.server
        out = [f"server /metrics over the run: {s.get('completed', 0):.0f} successful requests, "
               f"mean TTFT {s.get('mean_ttft_ms', float('nan')):.2f} ms, "
               f"mean E2E {s.get('mean_e2el_ms', float('nan')):.2f} ms"]
        c_ttft, s_ttft = self.client.get("mean_ttft_ms"), s.get("mean_ttft_ms")
        if c_ttft is not None and s_ttft is not None:
            out += [f"  client mean TTFT {c_ttft:.2f} ms vs the server's {s_ttft:.2f} ms ({c_ttft - s_ttft:+.2f} ms): "
                    "they time different spans.",
                    "  The client times sending the request to receiving its first token; the server's histogram",
                    "  (vllm:time_to_first_token_seconds) times the request reaching its engine to that token being",
                    "  made, leaving out HTTP, the work before the engine (parsing, media) and delivery"]
        return out + [f"MISMATCH: {p}" for p in self.problems]


def _delta(before: Mapping[str, float], after: Mapping[str, float], name: str) -> float | None:
    if name not in after:
        return None
    return after[name] - before.get(name, 0.0)


def mean_ms(before: Mapping[str, float], after: Mapping[str, float], hist: str) -> float | None:
    """A histogram's mean over the run in ms (delta of _sum / delta of _count); None when absent or empty."""
    total, count = _delta(before, after, hist + "_sum"), _delta(before, after, hist + "_count")
    if total is None or not count:
        return None
    return 1000.0 * total / count


def cross_check(before: str | None, after: str | None, result: Mapping[str, Any]) -> CrossCheck:
    if before is None or after is None:
        return CrossCheck(False, note="the server has no /metrics endpoint (or it did not answer 200)")
    b, a = totals(before), totals(after)
    if SUCCESS not in a:
        return CrossCheck(False, note=f"/metrics has no {SUCCESS} (not a vLLM-compatible metrics set)")
    cc = CrossCheck(True, client={k: float(result[k]) for k in ("mean_ttft_ms", "mean_e2el_ms")
                                  if isinstance(result.get(k), (int, float)) and result.get("completed")})
    completed = _delta(b, a, SUCCESS) or 0.0
    cc.server["completed"] = completed
    for key, hist in (("mean_ttft_ms", TTFT), ("mean_e2el_ms", E2E)):
        mean = mean_ms(b, a, hist)
        if mean is not None:
            cc.server[key] = mean
    gen = _delta(b, a, GEN_TOKENS)
    if gen is not None:
        cc.server["total_output_tokens"] = gen
    if int(round(completed)) != int(result["completed"]):
        cc.problems.append(f"the server counted {completed:.0f} successful requests during the run, "
                           f"the client completed {result['completed']} (failed {result['failed']})")
    server_ttft = cc.server.get("mean_ttft_ms")
    if server_ttft is not None and result["completed"] and result["mean_ttft_ms"] < server_ttft:
        cc.problems.append(f"client mean TTFT {result['mean_ttft_ms']:.3f} ms is below the server's "
                           f"{server_ttft:.3f} ms: one of the two clocks is wrong")
    return cc
