"""A tiny random-weight GLM-4V model for real vLLM on a CPU, with no weights to download.

    tm = prepare()                      # writes (once) a model dir under the cache
    plan = tm.plan(vllm_executable(), port, tp=1)
    VllmServer(plan.argv, model=tm.served_name, port=port, env={**os.environ, **plan.env})

The directory holds configs, a generated tokenizer and GLM-4.5V's chat template; vLLM
invents the weights (`--load-format dummy`). Outputs are random text, but every layer of
the serving stack (processor, mRoPE, MoE, parsers, structured outputs) is the real one.
See docs/tiny-vllm.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..lifecycle import profiles
from ..lifecycle.launch import LaunchPlan, LaunchSpec, plan
from . import files

__all__ = ["TinyModel", "prepare", "vllm_executable", "default_cache_dir", "MAX_MODEL_LEN"]

MAX_MODEL_LEN = 4096
REPO_ROOT = Path(__file__).resolve().parents[2]

# arch -> (served name, the profile whose flags and expectations apply)
_NAMES: dict[str, tuple[str, str]] = {
    "moe": ("tiny-glm45v", "glm-4.5v"),
    "dense": ("tiny-glm46v-flash", "glm-4.6v-flash"),
}


@dataclass(frozen=True)
class TinyModel:
    path: Path  # the model directory, passed to `vllm serve`
    served_name: str
    profile: str  # name in pytest_glmv.lifecycle.profiles
    max_model_len: int
    extra_args: tuple[str, ...]  # `vllm serve` arguments the tiny model needs on top of the profile's
    env: Mapping[str, str] = field(default_factory=dict)  # added to the server's environment
    token_ids: Mapping[str, int] = field(default_factory=dict)  # GLM special/markup token -> id

    def launch_spec(self, executable: str, settings: Any = None, **over: Any) -> LaunchSpec:
        """How to serve it: the plugin's settings (if any) with this model, its arguments and environment;
        `over` replaces fields (tp=1, api_key=...). The window is a field, so a user's replaces the default."""
        args = list(self.extra_args)
        at = args.index("--max-model-len")
        del args[at:at + 2]
        base = dict(model=str(self.path), served_name=self.served_name, executable=executable,
                    max_model_len=self.max_model_len, extra=tuple(args), env=dict(self.env))
        if settings is None:
            return LaunchSpec(**{**base, **over})
        return LaunchSpec.from_settings(settings, **{**base, **over})

    def plan(self, executable: str, port: int, **over: Any) -> LaunchPlan:
        """The `vllm serve` command (argv and environment) with the profile's recommended flags."""
        return plan(self.launch_spec(executable, **over), profiles.get(self.profile), port)


def default_cache_dir() -> Path:
    return Path(os.environ.get("GLMV_CACHE_DIR") or Path.home() / ".cache" / "pytest-glmv").expanduser()


def _write_model_dir(target: Path, contents: Mapping[str, bytes]) -> None:
    """Write into a sibling temp dir, then rename: concurrent builders (xdist workers, two
    sessions) never see a half-written directory, and the loser of the race just discards."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for name, data in contents.items():
            (tmp / name).write_bytes(data)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # stale or edited copy of the same build
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _intact(target: Path, contents: Mapping[str, bytes]) -> bool:
    try:
        return all((target / name).read_bytes() == data for name, data in contents.items())
    except OSError:
        return False


def prepare(cache_dir: Path | None = None, arch: str = "moe") -> TinyModel:
    """Build (or reuse) the tiny model directory and say how to serve it.

    arch "moe" is GLM-4.5V/4.6V's Glm4vMoeForConditionalGeneration; "dense" is
    GLM-4.1V/4.6V-Flash's Glm4vForConditionalGeneration. Building takes well under a
    second and gives the same bytes every time; the directory name carries a digest
    of its contents, so a changed recipe never reuses an old directory.
    """
    if arch not in _NAMES:
        raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(_NAMES)}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    contents, ids = files.files(arch)
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + contents[name] + b"\0")
    served, profile = _NAMES[arch]
    target = cache / "models" / f"{served}-{digest.hexdigest()[:12]}"
    if not _intact(target, contents):
        _write_model_dir(target, contents)
    env = {
        # vLLM-CPU sizes its KV cache from this (GiB); the default (4) is wasted on 4096 tokens.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # torch.compile artifacts: reusing them cuts startup by ~25 s on later runs.
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "VLLM_CPU_OMP_THREADS_BIND": "auto",
        # Nothing to fetch: everything is on disk, and tests must not touch the network.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    extra = (
        "--load-format", "dummy",
        "--max-model-len", str(MAX_MODEL_LEN),
        # Lets a request's structured output constrain the reasoning part too, which is how
        # tests force exact token ids (e.g. <think>..</think><tool_call>..) out of random weights.
        "--structured-outputs-config", json.dumps({"enable_in_reasoning": True}),
    )
    return TinyModel(path=target, served_name=served, profile=profile, max_model_len=MAX_MODEL_LEN,
                     extra_args=extra, env=env, token_ids=dict(ids))


def vllm_executable() -> str | None:
    """The vllm command to run: $GLMV_VLLM_EXECUTABLE, else the repo's .venv-vllm (made by
    scripts/install_vllm_cpu.sh), else `vllm` on PATH, else None."""
    explicit = os.environ.get("GLMV_VLLM_EXECUTABLE")
    if explicit:
        return explicit
    local = REPO_ROOT / ".venv-vllm" / "bin" / "vllm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("vllm")
