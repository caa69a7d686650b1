"""SLO specs: scenarios (how to load the server) and thresholds (what the result must meet).

Thresholds are keyed by the saved-result JSON keys of `vllm bench serve`, so a spec reads like
its output: `mean_ttft_ms = 500`, `p99_itl_ms = 50`, `output_throughput = 2000`. A metric table
says the same more compactly: `ttft_ms = { mean = 500, p99 = 900 }`. Latencies, `failed` and
`max_concurrent_requests` are ceilings; throughputs and `completed` are floors.

TOML layout (a single scenario may also sit at top level, with its thresholds under [slo]):

    [scenarios.rate20]
    request_rate = 20          # or "inf"
    num_prompts = 1000
    dataset = "random"         # or "synthetic" (images); random_input_len / random_output_len with it
    ignore_eos = true          # temperature = 0, extra_body = { ... }: vllm bench serve's body options
    tolerance = 0.10           # slack: ceilings x1.10, floors x0.90
    goodput = { ttft = 3000, tpot = 100 }   # ms, as vllm bench serve's --goodput
    [scenarios.rate20.slo]
    ttft_ms = { mean = 1678.96, p99 = 2790.90 }
    output_throughput = 2200.83

The same mapping comes from a marker (`@pytest.mark.slo(p99_ttft_ms=900, request_rate=5)`) or
from KEY=VALUE lines. Every problem is one line naming where it came from.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .. import documents
from .metrics import METRICS

FLOORS = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput", "completed",
          "max_output_tokens_per_s")
CEILINGS = ("failed", "max_concurrent_requests")
RUN_KEYS = {"num_prompts": int, "request_rate": float, "burstiness": float, "max_concurrency": int,
            "dataset": str, "max_tokens": int, "seed": int, "tolerance": float,
            # the request body and the random dataset, as vllm bench serve's options of the same names
            "ignore_eos": bool, "temperature": float, "extra_body": dict, "random_input_len": int,
            "random_output_len": int}
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
_STAT = r"(mean|median|std|p\d+(?:\.\d+)?)"
_LATENCY_KEY = re.compile(rf"^{_STAT}_({'|'.join(METRICS)})_ms$")


class SpecError(ValueError):
    """str() is one line: where, and what is wrong."""


@dataclass(frozen=True)
class Threshold:
    key: str  # a result key, e.g. p99_ttft_ms
    limit: float  # after tolerance
    ceiling: bool  # True: measured <= limit; False: measured >= limit
    nominal: float  # as written, before tolerance

    @property
    def percentile(self) -> float | None:
        m = _LATENCY_KEY.match(self.key)
        return float(m.group(1)[1:]) if m and m.group(1).startswith("p") else None

    def judge(self, measured: float | None) -> tuple[bool, str]:
        """(passed, one-line evidence with measured value, threshold and margin)."""
        sign = "<=" if self.ceiling else ">="
        nominal = "" if self.nominal == self.limit else f" (nominal {self.nominal:g} with tolerance)"
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            return False, f"{self.key}: not measured; threshold {sign} {self.limit:.2f}{nominal}"
        ok = measured <= self.limit if self.ceiling else measured >= self.limit
        margin = (self.limit - measured) if self.ceiling else (measured - self.limit)
        rel = f", {100 * margin / self.limit:+.1f}%" if self.limit else ""
        verdict = "meets" if ok else "MISSES"
        return ok, (f"{self.key} = {measured:.2f} {verdict} threshold {sign} {self.limit:.2f}{nominal}; "
                    f"margin {margin:+.2f}{rel}")


@dataclass(frozen=True)
class Scenario:
    name: str
    thresholds: tuple[Threshold, ...]
    run: Mapping[str, Any] = field(default_factory=dict)  # RUN_KEYS given by the spec
    goodput: Mapping[str, float] = field(default_factory=dict)

    @property
    def percentiles(self) -> tuple[float, ...]:
        """99 always (vLLM's default), plus every percentile a threshold asks for."""
        ps = {99.0} | {p for t in self.thresholds if (p := t.percentile) is not None}
        return tuple(sorted(ps))


@dataclass(frozen=True)
class Spec:
    source: str
    scenarios: tuple[Scenario, ...]


def _known_keys() -> list[str]:
    metric = [f"{s}_{m}_ms" for s in ("mean", "median", "std", "p50", "p90", "p95", "p99") for m in METRICS]
    return [*RUN_KEYS, *FLOORS, *CEILINGS, *metric, *(f"{m}_ms" for m in METRICS), "goodput", "slo", "scenarios",
            "description"]


def _did_you_mean(key: str) -> str:
    """'; did you mean X?' for a typo of a run key, a metric key or a table name (request_rat -> request_rate)."""
    close = difflib.get_close_matches(key, _known_keys(), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}: {key} = {value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"{where}: {key} = {value!r} must be a finite number >= 0")
    return float(value)


def _threshold(key: str, value: Any, tolerance: float, where: str) -> Threshold:
    if key in FLOORS or key in CEILINGS or _LATENCY_KEY.match(key):
        nominal = _number(value, where, key)
        ceiling = key not in FLOORS
        limit = nominal * (1 + tolerance) if ceiling else nominal * (1 - tolerance)
        return Threshold(key, limit, ceiling, nominal)
    valid = ", ".join(FLOORS + CEILINGS)
    hint = _did_you_mean(key)
    if hint:
        raise SpecError(f"{where}: unknown SLO key {key!r}{hint}")
    raise SpecError(f"{where}: unknown SLO key {key!r}; use STAT_METRIC_ms (STAT mean, median, std or pNN; "
                    f"METRIC {', '.join(METRICS)}) or one of {valid}")


def _run_value(key: str, value: Any, where: str) -> Any:
    kind = RUN_KEYS[key]
    is_inf = value == math.inf or (isinstance(value, str) and value.lower() in ("inf", "infinity"))
    if key == "request_rate" and is_inf:
        return math.inf  # TOML's inf, or "inf" as vllm bench serve spells it
    if kind is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: {key} = {value!r} must be a string")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: {key} = {value!r} must be true or false")
        return value
    if kind is dict:  # a table, or JSON text as vllm bench serve's --extra-body takes it
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise SpecError(f"{where}: {key} is not valid JSON ({e})") from None
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: {key} must be a table (or a JSON object), e.g. "
                            f"{key} = {{ chat_template_kwargs = {{ enable_thinking = false }} }}")
        return dict(value)
    number = _number(value, where, key)
    if kind is int:
        low = 0 if key == "seed" else 1  # vllm bench serve's default seed is 0
        if number != int(number) or number < low:
            raise SpecError(f"{where}: {key} = {value!r} must be a whole number >= {low}")
        return int(number)
    if key in ("request_rate", "burstiness") and number <= 0:
        raise SpecError(f"{where}: {key} = {value!r} must be above 0")
    if key == "tolerance" and number >= 1:
        raise SpecError(f"{where}: tolerance = {value!r} must be below 1 (it is a fraction, 0.1 = 10%)")
    return number


def scenario(name: str, mapping: Mapping[str, Any], where: str) -> Scenario:
    """One scenario from a flat or nested mapping (a TOML table, marker kwargs, KEY=VALUE pairs)."""
    run: dict[str, Any] = {}
    goodput: dict[str, float] = {}
    raw: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if key == "description":
            continue
        if key in RUN_KEYS:
            run[key] = _run_value(key, value, where)
        elif key == "goodput":
            if not isinstance(value, Mapping):
                raise SpecError(f"{where}: goodput must be a table like {{ ttft = 3000, tpot = 100 }} (ms)")
            for g, ms in value.items():
                if g not in GOODPUT_KEYS:
                    raise SpecError(f"{where}: goodput key {g!r} is not one of {', '.join(GOODPUT_KEYS)}")
                goodput[g] = _number(ms, where, f"goodput.{g}")
        elif key == "slo":
            if not isinstance(value, Mapping):
                raise SpecError(f"{where}: slo must be a table of thresholds")
            raw.extend(value.items())
        else:
            raw.append((key, value))
    tolerance = float(run.get("tolerance", 0.0))
    thresholds: list[Threshold] = []
    for key, value in raw:
        if isinstance(value, Mapping):  # ttft_ms = { mean = 500, p99 = 900 }
            metric = key[:-3] if key.endswith("_ms") else key
            if metric not in METRICS:  # e.g. [scenario.a] for [scenarios.a]: a table no metric is named after
                hint = _did_you_mean(key) or ("; a table of thresholds is named after a metric ("
                                              + ", ".join(f"{m}_ms" for m in METRICS) + ")")
                raise SpecError(f"{where}: unknown table {key!r}{hint}")
            for stat, v in value.items():
                thresholds.append(_threshold(f"{stat}_{metric}_ms", v, tolerance, where))
        else:
            thresholds.append(_threshold(key, value, tolerance, where))
    if not thresholds:
        raise SpecError(f"{where}: scenario {name!r} has no thresholds")
    if "request_goodput" in {t.key for t in thresholds} and not goodput:
        raise SpecError(f"{where}: request_goodput needs a goodput table (per-request ttft/tpot/e2el in ms)")
    if "failed" not in {t.key for t in thresholds}:  # failures are never hidden: none allowed unless stated
        thresholds.append(Threshold("failed", 0.0, True, 0.0))
    return Scenario(name, tuple(thresholds), run, goodput)


def parse(data: Mapping[str, Any], where: str, default_name: str = "default") -> Spec:
    scenarios = data.get("scenarios")
    if scenarios is None:
        return Spec(where, (scenario(default_name, data, where),))
    extra = sorted(set(data) - {"scenarios", "description"})
    if extra:
        raise SpecError(f"{where}: top-level keys {extra} next to [scenarios]; put them inside a scenario")
    if not isinstance(scenarios, Mapping) or not scenarios:
        raise SpecError(f"{where}: [scenarios] must hold at least one [scenarios.NAME] table")
    out = []
    for name, table in scenarios.items():
        if not isinstance(table, Mapping):
            raise SpecError(f"{where}: scenarios.{name} must be a table")
        out.append(scenario(name, table, f"{where} [scenarios.{name}]"))
    return Spec(where, tuple(out))


def load_file(path: Path) -> Spec:
    data = documents.load(path, tomllib.loads, lambda e: SpecError(f"glmv: SLO spec {path}: cannot read it: {e}"),
                          lambda e: SpecError(f"glmv: SLO spec {path}: invalid TOML: {e}"))
    try:
        return parse(data, str(path), default_name=Path(path).stem)
    except SpecError as e:
        raise SpecError(f"glmv: SLO spec {e}") from None


def from_pairs(pairs: Iterable[str], where: str = "--glmv-slo-threshold") -> Spec:
    """KEY=VALUE lines (ini or CLI), one scenario named 'custom'; values are TOML values."""
    mapping: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"glmv: {where} {pair!r}: expected KEY=VALUE, e.g. p99_ttft_ms=900")
        try:
            mapping[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            mapping[key.strip()] = value.strip()
    try:
        return parse(mapping, where, default_name="custom")
    except SpecError as e:
        raise SpecError(f"glmv: {e}") from None


def default() -> Spec:
    """The default spec, shipped as fixtures/slo_default.toml: the 4xH100 GLM-4.5V-FP8 results."""
    text = documents.shipped("slo_default.toml").read_text(encoding="utf-8")
    return parse(tomllib.loads(text), "built-in reference spec (GLM-4.5V-FP8 on 4xH100)")
