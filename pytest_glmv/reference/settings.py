"""The reference server's settings: what `python -m pytest_glmv.reference` was told."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..lifecycle import profiles
from .faults import SMALL_WINDOW, Faults

VLLM_VERSION = "0.32.0"
LEGACY_VLLM_VERSION = "0.11.0"  # the release a server sending only `reasoning_content` plays by default
DEFAULT_SERVED_NAME = "glmv-reference"
DEFAULT_ROOT = "zai-org/GLM-4.5V-FP8"
DOUBLE = "glmv-reference"  # what the double calls itself in /version, owned_by and /metrics, unless it poses
POSE_ENV = "GLMV_REFERENCE_POSE"  # `vllm-0.25.1`: pose as that vLLM release (what a launched double inherits)
_POSE = re.compile(r"vllm-(\d+(?:\.\d+)*\S*)")


class BadPose(ValueError):
    pass


def parse_pose(text: str | None) -> str | None:
    """`vllm-0.25.1` -> "0.25.1"; None or "" -> None; anything else: BadPose (one line)."""
    if not text:
        return None
    m = _POSE.fullmatch(text.strip())
    if m is None:
        raise BadPose(f"pose {text!r}: expected vllm-VERSION, e.g. vllm-0.25.1")
    return m.group(1)


@dataclass
class ReferenceSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str = DEFAULT_SERVED_NAME
    root: str = DEFAULT_ROOT
    max_model_len: int | None = None  # None: the profile's window
    api_key: str | None = None
    allowed_local_media_path: Path | None = None
    allowed_media_domains: tuple[str, ...] = ()
    limit_images: int = 999  # vLLM's default per-prompt limit; GLM-4V supports any number
    limit_videos: int = 1  # GLM-4V's processor takes one video per prompt
    reasoning_field: str = "reasoning"
    # What /version reports. None: 0.32.0, or 0.11.0 with reasoning_field "reasoning_content" (a double of
    # a release that used that name; vLLM sends only `reasoning` from 0.16.0 on), except under the
    # reasoning-field-legacy fault, which is a 0.32.0 sending the legacy name.
    vllm_version: str | None = None
    ttft_ms: float = 0.0
    tpot_ms: float = 0.0
    jitter: float = 0.0
    slowdown_per_request: float = 0.0
    trace: Path | None = None
    media_fetch_timeout: float = 5.0
    faults: Faults = field(default_factory=Faults)
    # None: the double says it is the double (engine glmv-reference: no vLLM knowledge-base entry matches it);
    # "vllm-0.25.1": it poses as that release, with vLLM's /version, owned_by and /metrics (default: $POSE_ENV)
    pose: str | None = field(default_factory=lambda: os.environ.get(POSE_ENV) or None)

    def __post_init__(self) -> None:
        posed = parse_pose(self.pose)
        if posed is not None:
            self.vllm_version = posed
        if self.faults.on("reasoning-field-legacy"):  # a current release that sends the legacy name
            self.reasoning_field = "reasoning_content"
            self.vllm_version = self.vllm_version or VLLM_VERSION
        elif self.vllm_version is None:
            self.vllm_version = LEGACY_VLLM_VERSION if self.reasoning_field == "reasoning_content" else VLLM_VERSION
        self.profile = profiles.detect(self.root, self.served_model_name) or profiles.get("glm-4.5v-fp8")
        if self.max_model_len is None:
            self.max_model_len = self.profile.max_model_len

    @property
    def window(self) -> int:
        """What /v1/models and /tokenize report."""
        assert self.max_model_len is not None
        return self.max_model_len

    @property
    def engine_window(self) -> int:
        """What the engine enforces; differs from `window` only under the small-window fault."""
        if self.faults.on("small-window"):
            return min(SMALL_WINDOW, self.window)
        return self.window

    @property
    def thinks_always(self) -> bool:
        return self.profile.thinking == "always"

    @property
    def system_fingerprint(self) -> str:
        # vLLM derives it from the version and the engine config; stable per launch configuration.
        digest = hashlib.sha256(f"{self.root}|{self.window}|{self.served_model_name}".encode()).hexdigest()[:8]
        return f"vllm-{self.vllm_version}-ep-{digest}"

    @property
    def posing(self) -> bool:
        return bool(self.pose)
