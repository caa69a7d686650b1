"""The `vllm serve` command line: a small LaunchSpec (what to serve, how) and a profile make a LaunchPlan.

The spec knows nothing of pytest, so the plugin (LaunchSpec.from_settings), the tiny model
(TinyModel.launch_spec), the tests and the benchmarks all build the same argv one way.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .profiles import Profile


class LaunchError(ValueError):
    """A launch that cannot be built as asked (a flag to drop that the launch does not have)."""


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    served_name: str
    parallel_note: str  # which TP/DP was used and why, for the report header
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of the server


@dataclass(frozen=True)
class LaunchSpec:
    model: str  # what `vllm serve` loads: an HF id or a directory
    served_name: str | None = None  # the name requests use (default: model)
    executable: str = "vllm"
    tp: int | None = None  # None: the GPUs visible, else 1
    dp: int | None = None
    allowed_media_path: Path | None = None  # replaces the recommended --allowed-local-media-path /
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    api_key: str | None = None
    extra: tuple[str, ...] = ()  # arguments the model itself needs (the tiny model's), after the profile's
    user_args: tuple[str, ...] = ()  # the user's own, verbatim and last
    drop: tuple[str, ...] = ()  # flags of the recommended launch (or the model's extras) left out, with their values
    env: Mapping[str, str] = field(default_factory=dict)
    why: Mapping[str, str] = field(default_factory=dict)  # where tp/dp came from, for the note

    @classmethod
    def from_settings(cls, s: Any, **over: Any) -> "LaunchSpec":
        """From the plugin's Settings (lifecycle.config.Settings); `over` replaces fields."""
        assert s.model is not None
        spec = cls(model=s.model, executable=s.vllm_executable, tp=s.tp, dp=s.dp,
                   allowed_media_path=s.allowed_media_path, max_model_len=s.max_model_len,
                   max_num_batched_tokens=s.max_num_batched_tokens,
                   gpu_memory_utilization=s.gpu_memory_utilization, api_key=s.api_key,
                   user_args=tuple(s.vllm_arg), drop=tuple(s.vllm_drop_arg),
                   why={k: f"--glmv-{k}, {s.sources.get(k)}" for k in ("tp", "dp")})
        return replace(spec, **over)


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
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


def parallelism(spec: LaunchSpec, environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    if spec.dp is not None and spec.tp is None:
        return ["--data-parallel-size", str(spec.dp)], f"DP {spec.dp} ({spec.why.get('dp', 'given')})"
    if spec.tp is not None:
        flags = ["--tensor-parallel-size", str(spec.tp)]
        note = f"TP {spec.tp} ({spec.why.get('tp', 'given')})"
        if spec.dp is not None:
            flags += ["--data-parallel-size", str(spec.dp)]
            note += f", DP {spec.dp}"
        return flags, note
    count, why = visible_gpus(environ)
    tp = max(count, 1)
    return ["--tensor-parallel-size", str(tp)], f"TP {tp} ({count} GPUs visible: {why})"


def dropped(flags: list[str], drop: tuple[str, ...]) -> list[str]:
    """`flags` without each flag of `drop` and its value (the next item, unless it is a flag itself). A flag the
    launch does not have is a LaunchError: a misdeployment asked for and silently not made proves nothing."""
    out = list(flags)
    for flag in drop:
        if flag not in out:
            have = " ".join(f for f in out if f.startswith("--"))
            raise LaunchError(f"--glmv-vllm-drop-arg {flag}: the launch has no such flag; it has {have}")
        at = out.index(flag)
        del out[at:at + (2 if at + 1 < len(out) and not out[at + 1].startswith("--") else 1)]
    return out


def plan(spec: LaunchSpec, profile: Profile, port: int, environ: Mapping[str, str] | None = None) -> LaunchPlan:
    """The launch: `vllm serve MODEL` + recommended flags + hardware + user extras, in that order.

    The served name is the model as the user gave it, so requests and reports use
    one stable name whatever path the weights are loaded from.
    """
    served = spec.served_name or spec.model
    par, note = parallelism(spec, environ)
    flags = list(profile.vllm_flags())
    if spec.allowed_media_path is not None:
        flags[flags.index("--allowed-local-media-path") + 1] = str(spec.allowed_media_path)
    argv = [spec.executable, "serve", spec.model, "--served-model-name", served,
            "--host", "127.0.0.1", "--port", str(port), *par, *dropped([*flags, *spec.extra], spec.drop)]
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if spec.max_num_batched_tokens is not None:
        argv += ["--max-num-batched-tokens", str(spec.max_num_batched_tokens)]
    if spec.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{spec.gpu_memory_utilization:g}"]
    if spec.api_key:
        argv += ["--api-key", spec.api_key]
    argv += list(spec.user_args)
    return LaunchPlan(argv=argv, served_name=served, parallel_note=note, env=dict(spec.env))
