"""The built-in SLO spec: the reference results of `vllm bench serve` for GLM-4.5V-FP8.

Hardware and workload these numbers belong to: 4x H100, zai-org/GLM-4.5V-FP8, VisionArena-Chat,
1000 prompts, 128 max output tokens. They say nothing about other hardware: on anything else,
pass your own spec with --glmv-slo. A tolerance of 10% absorbs run-to-run noise on the same
hardware (ceilings x1.10, floors x0.90); the nominal values are the published ones.
"""
from __future__ import annotations

REFERENCE_TOML = """
description = "vllm bench serve, GLM-4.5V-FP8 on 4xH100, VisionArena-Chat, 1000 prompts"

[scenarios.rate20]
description = "Poisson arrivals at 20 req/s"
request_rate = 20
num_prompts = 1000
tolerance = 0.10
[scenarios.rate20.slo]
request_throughput = 18.30
output_throughput = 2200.83
ttft_ms = { mean = 1678.96, median = 1808.10, p99 = 2790.90 }
mean_tpot_ms = 72.62
p99_itl_ms = 434.72

[scenarios.concurrency1]
description = "one request at a time"
max_concurrency = 1
request_rate = "inf"
num_prompts = 1000
tolerance = 0.10
[scenarios.concurrency1.slo]
output_throughput = 81.42
mean_ttft_ms = 487.21
tpot_ms = { mean = 8.51, p99 = 9.16 }
p99_itl_ms = 12.14
"""
