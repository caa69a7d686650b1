"""One frozen settings object, resolved from CLI > env > ini > default in one place.

Every option is declared once in OPTIONS; plugin.py turns the table into
`--glmv-*` flags and `glmv_*` ini keys, and `GLMV_*` env vars are read here.
Bad values become `pytest.UsageError` with one line that names the valid choices.
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from . import profiles

TARGETS = ("reference", "vllm", "external")


@dataclass(frozen=True)
class Opt:
    name: str  # attribute name; flag --glmv-<name with dashes>, ini glmv_<name>, env GLMV_<NAME>
    kind: str  # str | int | int_auto (int or 'auto') | float | rate (a float or inf) | bool | list | choice | path
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    metavar: str | None = None
    open_min: bool = False  # the minimum itself is not allowed

    @property
    def flag(self) -> str:
        return "--glmv-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "GLMV_" + self.name.upper()

    @property
    def ini(self) -> str:
        return "glmv_" + self.name


OPTIONS: tuple[Opt, ...] = (
    # target
    Opt("model", "str", None, "launch vLLM serving this model (HF id or path; 'tiny' = built-in tiny GLM-4.5V, "
        "'tiny-dense' = tiny GLM-4.6V-Flash / 4.1V layout)"),
    Opt("base_url", "str", None, "judge a server that is already running, e.g. http://host:8000/v1"),
    Opt("server", "choice", None, "which target: reference (built-in double), vllm (launch), external (attach)",
        choices=TARGETS),
    Opt("api_key", "str", None, "API key sent to the server (and passed to a launched vLLM as --api-key)"),
    Opt("profile", "choice", None, "model profile; detected from the model name when not given",
        choices=tuple(profiles.PROFILES)),
    # launch
    Opt("tp", "int", None, "tensor parallel size (default: GPUs visible, else 1)", minimum=1),
    Opt("dp", "int", None, "data parallel size, the alternative to tensor parallel", minimum=1),
    Opt("max_model_len", "int", None, "context window to launch with; in attach mode, the window the server "
        "must have", minimum=1),
    Opt("max_num_batched_tokens", "int", None, "vLLM --max-num-batched-tokens", minimum=1),
    Opt("gpu_memory_utilization", "float", None, "vLLM --gpu-memory-utilization (0-1]", minimum=0.0, maximum=1.0,
        open_min=True),
    Opt("vllm_arg", "list", (), "extra argument appended verbatim to `vllm serve` (repeatable)", metavar="ARG"),
    Opt("vllm_drop_arg", "list", (), "a flag of the recommended launch to leave out of `vllm serve`, with its value "
        "(repeatable), e.g. --reasoning-parser", metavar="FLAG"),
    Opt("vllm_executable", "str", "vllm", "the vllm command to run (a path, or a name on PATH)"),
    Opt("allowed_media_path", "path", None, "launch vLLM with --allowed-local-media-path DIR instead of the "
        "recommended / (which lets any client read any file the server can)"),
    Opt("startup_timeout", "float", 2400.0, "seconds to wait for a launched server to become ready "
        "(a cold 106B FP8 load takes 10-20 minutes)", minimum=1.0),
    Opt("request_timeout", "float", 600.0, "seconds a single request may take before the check calls the server "
        "hung", minimum=0.1),
    Opt("canary_timeout", "float", 60.0, "seconds the first inference request may take before the server is "
        "called hung and the run stops (/health can say 200 while the engine is stuck: vLLM #39863)", minimum=0.1),
    Opt("log_dir", "path", None, "directory for launched servers' logs (default: a temporary directory)"),
    Opt("print_command", "bool", False, "print the exact `vllm serve` command and exit"),
    Opt("fault", "list", (), "reference server fault mode to inject (repeatable; see python -m "
        "pytest_glmv.reference --list-faults)", metavar="NAME"),
    # suites
    Opt("media_host", "str", None, "address a remote server can reach the suite's media server at"),
    Opt("remote_media_path", "str", None, "path of an image on an attached server's disk, inside its allowed "
        "media path, for the file:// checks"),
    Opt("reasoning_field", "choice", "auto", "reasoning field the server must use",
        choices=("auto", "reasoning", "reasoning_content")),
    Opt("waive", "list", (), "finding id to report as xfail instead of failing (repeatable): a check's AREA/NAME, "
        "a security finding's id, or a known upstream finding's id", metavar="ID"),
    Opt("known_findings", "choice", "fail", "what a failure that matches a known upstream fault does: fail "
        "(default; the text says which fault, since when, the remedy) or xfail (a gate on a pinned release stays "
        "green while listing them; unmatched failures and regressions still fail)", choices=("fail", "xfail")),
    Opt("iou_threshold", "float", 0.5, "grounding boxes must overlap the truth at least this much",
        minimum=0.0, maximum=1.0),
    # SLO harness (named after vllm bench serve's options)
    Opt("num_prompts", "int", 200, "requests in an SLO run", minimum=1),
    Opt("request_rate", "rate", float("inf"), "requests per second (inf: all at once, limited by "
        "--glmv-max-concurrency)"),
    Opt("burstiness", "float", 1.0, "gamma shape of arrivals; 1 is Poisson", minimum=0.0, open_min=True),
    Opt("max_concurrency", "int", None, "most requests in flight at once", minimum=1),
    Opt("seed", "int", 0, "seed for workloads and arrivals"),
    Opt("dataset", "str", "synthetic", "workload: synthetic (VisionArena-Chat-shaped, offline), random (text of "
        "--glmv-random-input-len tokens, --glmv-random-output-len out, ignore_eos on, as vllm bench serve's random) "
        "or lmarena-ai/VisionArena-Chat (needs the datasets extra and the hub)"),
    Opt("random_input_len", "int", 1024, "input tokens per request of --glmv-dataset random (cut to length with "
        "the server's /tokenize)", minimum=1),
    Opt("random_output_len", "int", 128, "output tokens per request of --glmv-dataset random", minimum=1),
    Opt("ignore_eos", "bool", False, "send ignore_eos: true (vllm bench serve's --ignore-eos): every answer runs "
        "to its max tokens; --glmv-dataset random turns it on, as vllm bench serve does"),
    Opt("temperature", "float", None, "sampling temperature sent with every SLO request (vllm bench serve's "
        "--temperature; unset: none sent, the server's default)", minimum=0.0),
    Opt("extra_body", "str", None, "JSON object merged into every SLO request body (vllm bench serve's "
        "--extra-body), e.g. '{\"chat_template_kwargs\": {\"enable_thinking\": false}}'", metavar="JSON"),
    Opt("slo_max_send_lag_ms", "float", 10.0, "the client kept up only when its p99 send lag (and, under "
        "--glmv-max-concurrency, nothing else) stays within this many ms; otherwise every SLO threshold check "
        "fails as 'run not valid' instead of judging the server", minimum=0.0, open_min=True),
    Opt("slo_workers", "int_auto", "auto", "processes that send the SLO load, one seeded schedule split among them "
        "(max concurrency too); auto: one per 200 req/s of --glmv-request-rate, at most one per CPU, one at rate "
        "inf", minimum=1, maximum=64, metavar="N|auto"),
    Opt("slo", "path", None, "TOML file with SLO thresholds (default: the reference results)"),
    Opt("slo_json", "path", None, "write the SLO run's results here, with vllm bench serve's keys"),
    Opt("slo_threshold", "list", (), "SLO threshold KEY=VALUE (repeatable), e.g. p99_ttft_ms=900; replaces the "
        "built-in spec", metavar="KEY=VALUE"),
    Opt("slo_records", "bool", False, "add per-request records (vllm's --save-detailed lists plus send lags) to "
        "--glmv-slo-json"),
    # reports
    Opt("report", "path", None, "directory for report.json and report.html"),
    Opt("baseline", "path", None, "report.json of an earlier run to compare against"),
    Opt("baseline_tolerance", "float", 0.10, "how much worse an SLO metric may be than in --glmv-baseline before "
        "the run fails (a fraction, 0.1 is a tenth; latencies may rise, throughputs fall, by this much)", minimum=0.0),
    Opt("baseline_slack_ms", "float", 1.0, "a latency must also be this many ms worse than in --glmv-baseline to "
        "count as a regression (sub-millisecond jitter of ITL/TPOT is not one)", minimum=0.0),
)

BY_NAME = {o.name: o for o in OPTIONS}


def _convert(opt: Opt, raw: Any, source: str) -> Any:
    where = {"cli": opt.flag, "env": opt.env, "ini": f"ini {opt.ini}"}[source]
    if opt.kind == "list":
        if isinstance(raw, str):
            raw = shlex.split(raw) if source == "env" else [raw]
        return tuple(str(x) for x in raw)
    text = str(raw).strip()
    if opt.kind in ("str", "path"):
        if not text:
            raise pytest.UsageError(f"{where}: empty value")
        return Path(text).expanduser() if opt.kind == "path" else text
    if opt.kind == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise pytest.UsageError(f"{where}: {text!r} is not a boolean; use one of: true, false, 1, 0, yes, no")
    if opt.kind == "choice":
        if text.lower() not in opt.choices:
            raise pytest.UsageError(f"{where}: unknown value {text!r}; valid choices: {', '.join(opt.choices)}")
        return text.lower()
    if opt.kind == "rate" and text.lower() in ("inf", "infinity"):
        return float("inf")
    if opt.kind == "int_auto" and text.lower() == "auto":
        return "auto"
    number: float
    try:
        number = int(text) if opt.kind in ("int", "int_auto") else float(text)
    except ValueError:
        kind = {"int": "a whole number", "int_auto": "a whole number or auto", "float": "a number"}.get(
            opt.kind, "a number or inf")
        raise pytest.UsageError(f"{where}: {text!r} is not {kind}") from None
    if opt.kind == "rate" and not number > 0:
        raise pytest.UsageError(f"{where}: {text} must be above 0 (or inf)")
    if opt.kind in ("float", "rate") and not math.isfinite(number):
        raise pytest.UsageError(f"{where}: {text!r} must be finite")
    above_min = opt.minimum is None or (number > opt.minimum if opt.open_min else number >= opt.minimum)
    if not above_min or (opt.maximum is not None and number > opt.maximum):
        if opt.maximum is None:
            bounds = f"at least {opt.minimum:g}"
        elif opt.open_min:
            bounds = f"above {opt.minimum:g} and at most {opt.maximum:g}"
        else:
            bounds = f"from {opt.minimum:g} to {opt.maximum:g}"
        raise pytest.UsageError(f"{where}: {text} is out of range; it must be {bounds}")
    return number


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    base_url: str | None = None
    server: str | None = None
    api_key: str | None = None
    profile: str | None = None
    tp: int | None = None
    dp: int | None = None
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    vllm_arg: tuple[str, ...] = ()
    vllm_drop_arg: tuple[str, ...] = ()
    vllm_executable: str = "vllm"
    allowed_media_path: Path | None = None
    startup_timeout: float = 2400.0
    request_timeout: float = 600.0
    canary_timeout: float = 60.0
    log_dir: Path | None = None
    print_command: bool = False
    fault: tuple[str, ...] = ()
    media_host: str | None = None
    remote_media_path: str | None = None
    reasoning_field: str = "auto"
    waive: tuple[str, ...] = ()
    known_findings: str = "fail"
    iou_threshold: float = 0.5
    num_prompts: int = 200
    request_rate: float = float("inf")
    burstiness: float = 1.0
    max_concurrency: int | None = None
    seed: int = 0
    dataset: str = "synthetic"
    random_input_len: int = 1024
    random_output_len: int = 128
    ignore_eos: bool = False
    temperature: float | None = None
    extra_body: str | None = None
    slo_max_send_lag_ms: float = 10.0
    slo_workers: int | str = "auto"
    slo: Path | None = None
    slo_json: Path | None = None
    slo_threshold: tuple[str, ...] = ()
    slo_records: bool = False
    report: Path | None = None
    baseline: Path | None = None
    baseline_tolerance: float = 0.10
    baseline_slack_ms: float = 1.0
    # which source each value came from: cli, env, ini or default
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def target(self) -> str:
        """reference | vllm | external, after the checks in validate()."""
        if self.server:
            return self.server
        if self.model:
            return "vllm"
        if self.base_url:
            return "external"
        return "reference"

    @property
    def explicit_target(self) -> bool:
        return bool(self.server or self.model or self.base_url)


def resolve(
    cli: Callable[[str], Any], ini: Callable[[str], Any], env: Mapping[str, str] | None = None
) -> Settings:
    """Build Settings from three lookups; `cli(name)` and `ini(name)` return None when unset."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        raw_cli = cli(opt.name)
        if raw_cli not in (None, [], ()):
            values[opt.name], sources[opt.name] = _convert(opt, raw_cli, "cli"), "cli"
            continue
        if env.get(opt.env, "") != "":
            values[opt.name], sources[opt.name] = _convert(opt, env[opt.env], "env"), "env"
            continue
        raw_ini = ini(opt.name)
        if raw_ini not in (None, "", [], ()):
            values[opt.name], sources[opt.name] = _convert(opt, raw_ini, "ini"), "ini"
            continue
        values[opt.name], sources[opt.name] = opt.default, "default"
    settings = Settings(**values, sources=sources)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.model and s.base_url:
        raise pytest.UsageError(
            "--glmv-model and --glmv-base-url exclude each other: launch a model, or attach to a running server"
        )
    wants = {"vllm": "--glmv-model", "external": "--glmv-base-url"}
    if s.server in wants and not (s.model if s.server == "vllm" else s.base_url):
        raise pytest.UsageError(f"--glmv-server {s.server} needs {wants[s.server]}")
    if s.server == "reference" and (s.model or s.base_url):
        raise pytest.UsageError("--glmv-server reference takes neither --glmv-model nor --glmv-base-url")
    if s.server and s.server != "vllm" and s.model:
        raise pytest.UsageError(f"--glmv-model launches vLLM; it does not go with --glmv-server {s.server}")
    if s.server and s.server != "external" and s.base_url:
        raise pytest.UsageError(f"--glmv-base-url attaches; it does not go with --glmv-server {s.server}")
    if s.base_url and not s.base_url.startswith(("http://", "https://")):
        raise pytest.UsageError(f"--glmv-base-url {s.base_url!r} must start with http:// or https://")
    if s.fault and s.target != "reference":
        raise pytest.UsageError("--glmv-fault injects faults into the reference server only")
    if s.fault:
        from ..reference.faults import FAULTS

        unknown = [f for f in s.fault if f not in FAULTS]
        if unknown:
            raise pytest.UsageError(f"--glmv-fault: unknown fault {unknown[0]!r}; list them with "
                                    f"`python -m pytest_glmv.reference --list-faults`")
    if s.vllm_drop_arg and s.target != "vllm":
        raise pytest.UsageError("--glmv-vllm-drop-arg changes a launch; it needs --glmv-model")
    bad = next((f for f in s.vllm_drop_arg if not f.startswith("--")), None)
    if bad is not None:
        raise pytest.UsageError(f"--glmv-vllm-drop-arg {bad!r}: give the flag itself, e.g. --reasoning-parser")
    if s.print_command and s.target != "vllm":
        raise pytest.UsageError("--glmv-print-command needs --glmv-model (it prints the vllm serve command)")
    for name in ("log_dir", "report"):
        path = getattr(s, name)
        if path is not None and path.exists() and not path.is_dir():
            raise pytest.UsageError(f"{BY_NAME[name].flag} {path}: exists and is not a directory")
    # What the run writes at its end must be writable now: a report lost after an hour's run is a failed run.
    if s.report is not None:
        _writable_dir(s.report, BY_NAME["report"].flag)
    if s.slo_json is not None:
        if s.slo_json.is_dir():
            raise pytest.UsageError(f"--glmv-slo-json {s.slo_json}: is a directory; give a file name")
        _writable_dir(s.slo_json.parent, "--glmv-slo-json", s.slo_json)
    if s.slo is not None and not (s.slo.is_file() and os.access(s.slo, os.R_OK)):
        raise pytest.UsageError(f"--glmv-slo {s.slo}: not a readable file")
    if s.baseline is not None and not (s.baseline.is_file() and os.access(s.baseline, os.R_OK)):
        raise pytest.UsageError(f"--glmv-baseline {s.baseline}: not a readable file")


def _writable_dir(path: Path, flag: str, given: Path | None = None) -> None:
    """`path` is a directory this process can create files in, or can be made one: tried with a file that
    vanishes on close, in it or in its nearest existing parent (access() says yes to root even on /proc)."""
    import tempfile

    shown = given or path
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise pytest.UsageError(f"{flag} {shown}: {probe} is not a directory, so nothing can be written there")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise pytest.UsageError(f"{flag} {shown}: cannot create a file in {probe} ({e.strerror or e})") from None
    if given is not None and given.exists() and not os.access(given, os.W_OK):
        raise pytest.UsageError(f"{flag} {shown}: the file is not writable")
