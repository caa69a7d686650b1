"""A tiny GLM-4V model for real vLLM on a CPU, with no weights to download.

    tm = prepare()                      # writes (once) a model dir under the cache
    plan = tm.plan(vllm_executable(), port, tp=1)
    VllmServer(plan.argv, model=tm.served_name, port=port, env={**os.environ, **plan.env})

The directory holds configs, a generated tokenizer and GLM-4.5V's chat template, and the
weights trained by pytest_glmv.tiny.train when they ship (weights/<arch>/, or a trained
model dir named by $GLMV_TINY_WEIGHTS); without them vLLM invents random weights
(`--load-format dummy`), and `prepare(weights="dummy")` asks for that explicitly. Random
outputs still run every layer of the serving stack (processor, mRoPE, MoE, parsers,
structured outputs); trained ones also answer the `behavior` checks of the tasks they were
trained to pass (`is_trained()`, `behaviour_trust()`: the per-task rule of trust.py).
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
from . import files, trust

__all__ = ["TinyModel", "prepare", "vllm_executable", "default_cache_dir", "MAX_MODEL_LEN", "is_trained",
           "trained_weights", "behaviour_trust"]

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
    trained: bool = False  # served with trained weights (behaviour checks can pass), else random ones
    min_pixels: int = files.MIN_PIXELS  # its image processor's resize bounds (preprocessor_config.json's size)
    max_pixels: int = files.MAX_PIXELS

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


WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"


class WeightsError(ValueError):
    """Trained weights that do not belong to this config (a stale or foreign training output)."""


def trained_weights(arch: str = "moe") -> Path | None:
    """The trained weights to serve for `arch`: $GLMV_TINY_WEIGHTS (a training output dir) or the shipped
    weights/<arch>/; None when neither holds safetensors or $GLMV_TINY_WEIGHTS is "dummy". WeightsError when
    they were trained for another config or no gated task reached its threshold (trust.refusal)."""
    explicit = os.environ.get("GLMV_TINY_WEIGHTS")
    if explicit == "dummy":  # random weights even where trained ones ship
        return None
    where = Path(explicit).expanduser() if explicit else WEIGHTS_ROOT / arch
    if not any(where.glob("*.safetensors")):
        if explicit:
            raise WeightsError(f"$GLMV_TINY_WEIGHTS={explicit}: no *.safetensors there")
        return None
    try:
        record = json.loads((where / "training.json").read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{where}: no readable training.json beside the weights ({e})") from None
    want = hashlib.sha256(files.files(arch)[0]["config.json"]).hexdigest()
    if record.get("arch") != arch or record.get("config_sha256") != want:
        raise WeightsError(f"{where}: trained for arch {record.get('arch')!r} with another config.json "
                           f"(sha256 {str(record.get('config_sha256'))[:12]}, this one {want[:12]}): train again "
                           f"with python -m pytest_glmv.tiny.train --arch {arch}")
    refused = trust.refusal(record)
    if refused:
        raise WeightsError(f"{where}: {refused}")
    return where


def behaviour_trust(arch: str = "moe") -> trust.Trust | None:
    """Which `behavior` checks the served trained weights are trusted for (pytest_glmv.tiny.trust's rule);
    None when `--glmv-model tiny` serves random weights for `arch`."""
    try:
        where = trained_weights(arch)
    except WeightsError:
        return None
    if where is None:
        return None
    shown = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where
    return trust.Trust(json.loads((where / "training.json").read_text()), f"{shown}/training.json")


def is_trained(arch: str = "moe") -> bool:
    """Whether `--glmv-model tiny` (prepare() with weights="auto") serves trained weights for `arch`: the
    question a session asks before running `behavior` checks on the tiny model. Unusable weights count
    as not trained here; prepare() names what is wrong with them."""
    try:
        return trained_weights(arch) is not None
    except WeightsError:
        return False


def _weight_files(where: Path) -> dict[str, bytes]:
    names = [p.name for p in where.glob("*.safetensors")] + ["training.json"]
    if (where / "model.safetensors.index.json").is_file():
        names.append("model.safetensors.index.json")
    return {name: (where / name).read_bytes() for name in sorted(names)}


def prepare(cache_dir: Path | None = None, arch: str = "moe", weights: str = "auto") -> TinyModel:
    """Build (or reuse) the tiny model directory and say how to serve it.

    arch "moe" is GLM-4.5V/4.6V's Glm4vMoeForConditionalGeneration; "dense" is
    GLM-4.1V/4.6V-Flash's Glm4vForConditionalGeneration. Building takes well under a
    second and gives the same bytes every time; the directory name carries a digest
    of its contents, so a changed recipe never reuses an old directory.

    weights: "auto" serves the trained weights when there are some (trained_weights), else random
    ones; "dummy" always random (`--load-format dummy`); "trained" requires trained ones.
    """
    if arch not in _NAMES:
        raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(_NAMES)}")
    if weights not in ("auto", "dummy", "trained"):
        raise ValueError(f"unknown weights choice {weights!r}; valid: auto, dummy, trained")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    contents, ids = files.files(arch)
    found = None if weights == "dummy" else trained_weights(arch)
    if found is None and weights == "trained":
        raise WeightsError(f"no trained weights for arch {arch!r} in {WEIGHTS_ROOT / arch} (or $GLMV_TINY_WEIGHTS): "
                           f"python -m pytest_glmv.tiny.train --arch {arch} writes them")
    if found is not None:
        contents = {**contents, **_weight_files(found)}
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + contents[name] + b"\0")
    served, profile = _NAMES[arch]
    target = cache / "models" / f"{served}-{'trained' if found else 'dummy'}-{digest.hexdigest()[:12]}"
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
        *(() if found else ("--load-format", "dummy")),
        "--max-model-len", str(MAX_MODEL_LEN),
        # Random weights only: lets a request's structured output constrain the reasoning part too, which is how
        # tests force exact token ids (e.g. <think>..</think><tool_call>..) out of them. Trained weights are
        # served with the recommended flags alone: with it, vLLM 0.32's tool-call tag binds from the first token
        # and masks <think> (measured: the trained MoE's reasoning came back as get_weather's city argument).
        *(() if found else ("--structured-outputs-config", json.dumps({"enable_in_reasoning": True}))),
    )
    return TinyModel(path=target, served_name=served, profile=profile, max_model_len=MAX_MODEL_LEN,
                     extra_args=extra, env=env, token_ids=dict(ids), trained=found is not None)


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
