"""Prometheus text exposition (a server's /metrics), read one way for every caller.

vLLM writes one sample per line, `name{label="v",...} value`, with `# HELP` and `# TYPE` comments;
a metric appears once per engine and label set, so the usual question is a name's total over them.
"""
from __future__ import annotations

import re
from typing import Iterator

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def samples(text: str) -> Iterator[tuple[str, str, float]]:
    """(name, labels as written, value) of every sample line; comments and unreadable lines are skipped."""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        yield m.group(1), m.group(2) or "", value


def totals(text: str) -> dict[str, float]:
    """Metric name -> its value summed over all label sets (histograms: name_bucket, name_sum, name_count)."""
    out: dict[str, float] = {}
    for name, _, value in samples(text):
        out[name] = out.get(name, 0.0) + value
    return out


def total(text: str, name: str) -> float | None:
    """One metric's sum over every sample (all engines, all label sets); None when it is absent."""
    return totals(text).get(name)


def types(text: str) -> dict[str, str]:
    """Metric family -> its declared type, from the `# TYPE name type` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[:2] == ["#", "TYPE"]:
            out[parts[2]] = parts[3]
    return out
