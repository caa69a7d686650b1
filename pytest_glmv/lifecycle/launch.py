"""The `vllm serve` command line the plugin launches, built from settings and a profile."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

from .config import Settings
from .profiles import Profile


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    served_name: str
    parallel_note: str  # which TP/DP was used and why, for the report header
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of the server


def visible_gpus(environ: dict[str, str] | None = None) -> tuple[int, str]:
    """How many GPUs vLLM would see, and where that number came from."""
    env = os.environ if environ is None else environ
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        ids = [x for x in cvd.split(",") if x.strip() and x.strip() != "-1"]
        return len(ids), f"CUDA_VISIBLE_DEVICES={cvd!r}"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
            count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
            return count, "nvidia-smi -L"
        except (OSError, subprocess.SubprocessError):
            pass
    return 0, "no GPU found (no CUDA_VISIBLE_DEVICES, no nvidia-smi)"


def parallelism(s: Settings, environ: dict[str, str] | None = None) -> tuple[list[str], str]:
    if s.dp is not None and s.tp is None:
        return ["--data-parallel-size", str(s.dp)], f"DP {s.dp} (--glmv-dp, {s.sources.get('dp')})"
    if s.tp is not None:
        flags = ["--tensor-parallel-size", str(s.tp)]
        note = f"TP {s.tp} (--glmv-tp, {s.sources.get('tp')})"
        if s.dp is not None:
            flags += ["--data-parallel-size", str(s.dp)]
            note += f", DP {s.dp}"
        return flags, note
    count, why = visible_gpus(environ)
    tp = max(count, 1)
    return ["--tensor-parallel-size", str(tp)], f"TP {tp} ({count} GPUs visible: {why})"


def build(s: Settings, profile: Profile, port: int, model_path: str | None = None,
          served_name: str | None = None, extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
          executable: str | None = None, environ: dict[str, str] | None = None) -> LaunchPlan:
    """The launch: `vllm serve MODEL` + recommended flags + hardware + user extras, in that order.

    The served name is the model as the user gave it, so requests and reports use
    one stable name whatever path the weights are loaded from.
    """
    assert s.model is not None
    served = served_name or s.model
    par, note = parallelism(s, environ)
    flags = list(profile.vllm_flags())
    if s.allowed_media_path is not None:
        flags[flags.index("--allowed-local-media-path") + 1] = str(s.allowed_media_path)
    argv = [executable or s.vllm_executable, "serve", model_path or s.model, "--served-model-name", served,
            "--host", "127.0.0.1", "--port", str(port), *par, *flags, *extra]
    if s.max_model_len is not None:
        argv += ["--max-model-len", str(s.max_model_len)]
    if s.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if s.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.api_key:
        argv += ["--api-key", s.api_key]
    argv += list(s.vllm_arg)
    return LaunchPlan(argv=argv, served_name=served, parallel_note=note, env=dict(env or {}))
