"""Reports of a conformance run: the terminal matrix, report.json, report.html and the baseline gate.

    collect.py   what a run did, as one JSON-able dict (checks, target, environment, SLO runs)
    slo_data.py  an SLO run (slo.runner.Outcome) condensed to results, verdicts and distributions
    terminal.py  the conformance matrix and the regression table as text
    baseline.py  report.json of an earlier run: load it, compare, list regressions
    plots.py     PNG plots drawn with Pillow (CDFs, histograms, throughput over time)
    html.py      the single self-contained report.html
    recorder.py  what the session does with reports: stamp, gather, build, write, gate, summarise
"""
from __future__ import annotations

FORMAT = "pytest-glmv-report"  # report.json's "format": how a baseline is recognised
VERSION = 1
