"""SLO harness: load generation and statistics defined exactly as `vllm bench serve` defines them.

Modules: schedule (arrival times), client (the streaming load generator) on wire (lean HTTP/1.1), metrics
(statistics from per-request records), workload (requests), spec (thresholds), report
(result block, JSON, records), plot (CDF PNG with Pillow), promcheck (/metrics cross-check),
selection (which SLO checks run, the spec in effect, one run per scenario), runner (one run, end to end).
"""
