"""SLO harness: load generation and statistics defined exactly as `vllm bench serve` defines them.

Modules: schedule (arrival times), client (aiohttp streaming load generator), metrics
(statistics from per-request records), workload (requests), spec (thresholds), report
(result block, JSON, records), plot (CDF PNG with Pillow), promcheck (/metrics cross-check),
plugin (selection hooks and fixtures), runner (one run, end to end).
"""
