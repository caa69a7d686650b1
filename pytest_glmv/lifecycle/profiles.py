"""Model profiles: what a correct deployment of each GLM-4V model looks like.

A profile is what the suites compare a server against (its window, whether it
thinks, whether it takes video) and what the launcher needs to start vLLM the
way the vLLM GLM-4V guide recommends.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

# The flags of the recommended launch that do not depend on the hardware.
RECOMMENDED_FLAGS: tuple[str, ...] = (
    "--tool-call-parser", "glm45",
    "--reasoning-parser", "glm45",
    "--enable-auto-tool-choice",
    "--allowed-local-media-path", "/",
    "--mm-encoder-tp-mode", "data",
    "--mm-processor-cache-type", "shm",
)


@dataclass(frozen=True)
class Profile:
    name: str
    hf_id: str
    architecture: str
    max_model_len: int
    # "hybrid": thinks by default, `enable_thinking: false` turns it off;
    # "always": GLM-4.1V-Thinking reasons whatever the request says.
    thinking: str
    video: bool = True
    tools: bool = True
    moe: bool = True
    # GLM-4V's image processor: 14-pixel patches merged 2x2, pixel bounds of the resize.
    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = 112 * 112
    max_pixels: int = 9633792  # 28*28*12288: size.longest_edge of GLM-4V's preprocessor_config.json
    extra_flags: tuple[str, ...] = field(default=())

    def vllm_flags(self) -> tuple[str, ...]:
        flags = RECOMMENDED_FLAGS + self.extra_flags
        if self.moe:
            flags += ("--enable-expert-parallel",)
        return flags

    def with_window(self, max_model_len: int) -> "Profile":
        return replace(self, max_model_len=max_model_len)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("glm-4.5v", "zai-org/GLM-4.5V", "Glm4vMoeForConditionalGeneration", 65536, "hybrid"),
        Profile("glm-4.5v-fp8", "zai-org/GLM-4.5V-FP8", "Glm4vMoeForConditionalGeneration", 65536, "hybrid"),
        Profile("glm-4.6v", "zai-org/GLM-4.6V", "Glm4vMoeForConditionalGeneration", 131072, "hybrid"),
        Profile("glm-4.6v-fp8", "zai-org/GLM-4.6V-FP8", "Glm4vMoeForConditionalGeneration", 131072, "hybrid"),
        Profile("glm-4.6v-flash", "zai-org/GLM-4.6V-Flash", "Glm4vForConditionalGeneration", 131072, "hybrid",
                moe=False),
        Profile("glm-4.1v-thinking", "zai-org/GLM-4.1V-9B-Thinking", "Glm4vForConditionalGeneration", 65536,
                "always", moe=False),
    )
}

# Most specific first: "glm-4.6v-flash" must not be taken for "glm-4.6v".
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"glm-?4\.1v.*thinking", "glm-4.1v-thinking"),
    (r"glm-?4\.6v-?flash", "glm-4.6v-flash"),
    (r"glm-?4\.6v.*fp8", "glm-4.6v-fp8"),
    (r"glm-?4\.6v", "glm-4.6v"),
    (r"glm-?4\.5v.*fp8", "glm-4.5v-fp8"),
    (r"glm-?4\.5v", "glm-4.5v"),
)


class UnknownProfile(ValueError):
    pass


def names() -> str:
    return ", ".join(PROFILES)


def get(name: str) -> Profile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        raise UnknownProfile(f"unknown profile {name!r}; valid profiles: {names()}") from None


def detect(*candidates: str | None) -> Profile | None:
    """The profile whose model a name or path points at (served name, HF id, local dir)."""
    for text in candidates:
        if not text:
            continue
        low = text.lower()
        for pattern, name in _PATTERNS:
            if re.search(pattern, low):
                return PROFILES[name]
    return None


def resolve(explicit: str | None, *candidates: str | None) -> Profile:
    """An explicit profile wins; else detect; else a clear error that lists the profiles."""
    if explicit:
        return get(explicit)
    found = detect(*candidates)
    if found is None:
        shown = next((c for c in candidates if c), "<none>")
        raise UnknownProfile(
            f"cannot tell which GLM-4V model {shown!r} is; pass --glmv-profile with one of: {names()}"
        )
    return found
