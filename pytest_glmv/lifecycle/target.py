"""The server a session judges: chosen from settings, started once, described, stopped.

Kept apart from plugin.py so the same object works in scripts and benchmarks:

    with Target(settings) as t:
        print(t.server.base_url, t.profile.name)
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import engine, launch, profiles
from .config import Settings
from .profiles import Profile
from .server import ExternalServer, LaunchedServer, Server, ServerError, VllmServer, free_port

# --glmv-model names of the built-in tiny random-weight models -> architecture: GLM-4.5V/4.6V's MoE, and the dense
# Glm4vForConditionalGeneration of GLM-4.6V-Flash and GLM-4.1V-Thinking (profile glm-4.6v-flash unless given)
TINY = {"tiny": "moe", "tiny-dense": "dense"}


class Target:
    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.progress = progress
        self.server: Server | None = None
        self.profile: Profile | None = None
        self.plan: launch.LaunchPlan | None = None
        self.error: ServerError | None = None
        self.notes: list[str] = []
        # Which field the server puts reasoning in ("reasoning", "reasoning_content", "both"), once the
        # reasoning suite has seen an answer; None until then.
        self.reasoning_field: str | None = None
        self._log_dir: Path | None = settings.log_dir
        # A directory inside the media path a local server may read (file:// checks).
        self.media_dir: Path | None = None
        self._temp_dirs: list[Path] = []  # made here, removed at stop
        self.ready_s: float | None = None  # seconds from start() to a server that answers (launch or attach)
        # Which engine the server is, from what it says about itself (lifecycle/engine.py), once at start
        self.identity: engine.Identity | None = None

    @property
    def kind(self) -> str:
        return self.settings.target

    @property
    def log_dir(self) -> Path:
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="glmv-logs-"))
            self._temp_dirs.append(self._log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    @property
    def is_local(self) -> bool:
        """The server runs on this machine, so it can reach our loopback media server."""
        if self.kind != "external":
            return True
        from urllib.parse import urlsplit

        host = urlsplit(self.settings.base_url or "").hostname or ""
        return host in ("localhost", "::1") or host.startswith("127.")

    @property
    def started(self) -> bool:
        return self.server is not None

    # -- launch planning (also what --glmv-print-command prints) -----------------------------
    def vllm_plan(self, port: int | None = None) -> tuple[launch.LaunchPlan, Profile]:
        s = self.settings
        assert s.model is not None
        if s.model in TINY:
            return self._tiny_plan(port)
        try:
            profile = profiles.resolve(s.profile, s.model)
        except profiles.UnknownProfile as e:
            raise ServerError(f"glmv: {e}") from None
        if s.max_model_len:
            profile = profile.with_window(s.max_model_len)
        try:
            return launch.plan(launch.LaunchSpec.from_settings(s), profile, port or free_port()), profile
        except launch.LaunchError as e:
            raise ServerError(f"glmv: {e}") from None

    def _tiny_plan(self, port: int | None) -> tuple[launch.LaunchPlan, Profile]:
        """The built-in tiny random-weight GLM-4.5V on real vLLM (CPU), for smoke tests without weights."""
        from .. import tiny

        s = self.settings
        model = tiny.prepare(arch=TINY[s.model or "tiny"])
        profile = profiles.get(s.profile or model.profile)
        profile = profile.with_window(s.max_model_len or model.max_model_len)
        # its processor's own pixel bounds, which the multimodal checks hold a large image to
        profile = replace(profile, min_pixels=model.min_pixels, max_pixels=model.max_pixels)
        exe = s.vllm_executable
        if s.sources.get("vllm_executable") == "default":
            exe = tiny.vllm_executable() or exe
        # the user's window replaces the tiny default, never both
        spec = model.launch_spec(exe, settings=s, max_model_len=s.max_model_len or model.max_model_len)
        try:
            return launch.plan(spec, profile, port or free_port()), profile
        except launch.LaunchError as e:
            raise ServerError(f"glmv: {e}") from None

    def random_weights(self) -> str | None:
        """Why the model to launch answers nonsense (the built-in tiny model without trained weights), else None:
        then the `behavior` checks cannot pass and are left out unless asked for."""
        if self.kind != "vllm" or self.settings.model not in TINY:
            return None
        from .. import tiny

        arch = TINY[self.settings.model or "tiny"]
        if tiny.is_trained(arch):
            return None
        return (f"--glmv-model {self.settings.model} serves random weights (no usable trained ones in "
                f"{tiny.WEIGHTS_ROOT / arch} or $GLMV_TINY_WEIGHTS), which answer nonsense")

    def behaviour_trust(self) -> Any:
        """With the tiny model's trained weights: which `behavior` checks they are trusted for, per training task
        (pytest_glmv.tiny.trust.Trust); None for any other target."""
        if self.kind != "vllm" or self.settings.model not in TINY:
            return None
        from .. import tiny

        return tiny.behaviour_trust(TINY[self.settings.model or "tiny"])

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Server:
        """Start or attach once; a failure is kept and raised again on every later call."""
        if self.server is not None:
            return self.server
        if self.error is not None:
            raise self.error
        began = time.monotonic()
        try:
            self.server = self._start()
        except ServerError as e:
            self.error = e
            raise
        self.ready_s = round(time.monotonic() - began, 1)
        self.identity = engine.probe(self.server.root_url, self.server.api_key)
        self.notes += self.identity.problems
        return self.server

    @property
    def engine(self) -> str:
        """"vllm", "glmv-reference" or "unknown" (also before start: nothing is known yet)."""
        return self.identity.engine if self.identity else engine.UNKNOWN

    def _start(self) -> Server:
        s = self.settings
        if self.kind == "external":
            assert s.base_url is not None
            server: Server = ExternalServer(s.base_url, api_key=s.api_key).start()
            self.profile = self._attached_profile(server)
            return server
        if self.kind == "vllm":
            port = free_port()
            plan, self.profile = self.vllm_plan(port)
            self.plan = plan
            # the recommended --allowed-local-media-path / admits any directory of ours
            if s.allowed_media_path is not None:
                s.allowed_media_path.mkdir(parents=True, exist_ok=True)
                self.media_dir = Path(tempfile.mkdtemp(prefix="glmv-media-", dir=s.allowed_media_path))
            else:
                self.media_dir = Path(tempfile.mkdtemp(prefix="glmv-media-"))
            self._temp_dirs.append(self.media_dir)
            self.notes.append(plan.parallel_note)
            vllm = VllmServer(plan.argv, model=plan.served_name, port=port, api_key=s.api_key,
                              env={**os.environ, **plan.env}, log_dir=self.log_dir,
                              startup_timeout=s.startup_timeout, progress=self.progress,
                              owned_dirs=list(self._temp_dirs))  # the watchdog removes them if pytest is killed
            return vllm.start()
        return self._start_reference()

    def _start_reference(self) -> Server:
        from ..reference.launcher import ReferenceServer

        s = self.settings
        try:
            profile = profiles.get(s.profile or "glm-4.5v-fp8")
        except profiles.UnknownProfile as e:
            raise ServerError(f"glmv: {e}") from None
        if s.max_model_len:
            profile = profile.with_window(s.max_model_len)
        self.profile = profile
        self.media_dir = Path(tempfile.mkdtemp(prefix="glmv-media-"))
        self._temp_dirs.append(self.media_dir)
        ref = ReferenceServer(
            faults=list(s.fault), root=profile.hf_id, max_model_len=profile.max_model_len, api_key=s.api_key,
            allowed_local_media_path=str(self.media_dir), allowed_media_domains=["127.0.0.1"],
            reasoning_field="reasoning_content" if s.reasoning_field == "reasoning_content" else "reasoning",
            log_dir=self.log_dir, owned_dirs=list(self._temp_dirs),  # the watchdog removes them if pytest is killed
        )
        return ref.start()

    def _attached_profile(self, server: Server) -> Profile:
        s = self.settings
        try:
            profile = profiles.resolve(s.profile, server.model_root, server.model)
        except profiles.UnknownProfile as e:
            raise ServerError(f"glmv: {e}") from None
        return profile.with_window(s.max_model_len) if s.max_model_len else profile

    def stop(self, keep_logs: bool = True) -> None:
        """Stop the server; remove the temporary media folder, and the log folder too unless asked to keep it
        (a run with failures) or the user named it (--glmv-log-dir)."""
        try:
            if self.server is not None:
                server, self.server = self.server, None
                server.stop()
        finally:
            for d in self._temp_dirs:
                if d == self._log_dir and keep_logs:
                    continue
                shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> "Target":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- description ----------------------------------------------------------------------------
    def header_lines(self) -> list[str]:
        s = self.settings
        if self.server is None:
            what = {"vllm": f"launch vLLM for {s.model}", "external": f"attach to {s.base_url}",
                    "reference": "built-in reference server (a deterministic GLM-4V double, not a model)"}
            faults = f" with faults {', '.join(s.fault)}" if s.fault else ""
            return [f"glmv: target {what[self.kind]}{faults} (started when the first check needs it)"]
        return [f"glmv: {line}" for line in self.describe_lines()]

    def describe_lines(self) -> list[str]:
        assert self.server is not None
        srv = self.server
        how = "launched" if srv.launched else "attached"
        prof = self.profile
        lines = [
            f"target {srv.base_url} ({srv.kind}, {how}); model {srv.model}; vLLM version {srv.version or 'unknown'}",
            f"profile {prof.name if prof else '?'} (window {prof.max_model_len if prof else '?'}; "
            f"server reports {srv.max_model_len})",
        ]
        if self.identity is not None:
            lines.append(f"engine {self.identity.engine}: {self.identity.evidence}")
        if srv.launched and self.ready_s is not None:
            lines.append(f"ready {self.ready_s:.1f} s after launch")
        lines += self.notes
        if srv.log_path:
            lines.append(f"server log {srv.log_path}")
        return lines

    def info(self) -> dict[str, Any]:
        srv = self.server
        return {
            "target": self.kind,
            "base_url": srv.base_url if srv else None,
            "model": srv.model if srv else self.settings.model,
            "profile": self.profile.name if self.profile else None,
            "vllm_version": srv.version if srv else None,
            "engine": self.identity.engine if self.identity else None,
            "engine_evidence": self.identity.evidence if self.identity else None,
            "launched": bool(srv and srv.launched),
            # the command that launched it (report.html's "Launch command"), the API key's value hidden
            "launch_argv": [("***" if before == "--api-key" else a) for before, a in
                            zip(["", *getattr(srv, "argv", [])], getattr(srv, "argv", []), strict=False)] or None,
            "ready_s": self.ready_s,
            "max_model_len": srv.max_model_len if srv else None,
            "faults": list(self.settings.fault),
            "reasoning_field": self.reasoning_field,
            "notes": list(self.notes),
        }


def is_launched(server: Server | None) -> bool:
    return isinstance(server, LaunchedServer)
