"""What the real-vLLM test modules share: the executable (or why there is none) and the launch."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pytest_glmv.lifecycle.server import VllmServer, free_port
from pytest_glmv.tiny import TinyModel, vllm_executable


def require_vllm() -> str:
    """The vLLM executable; without one the calling module skips, except under CI=true where it fails."""
    exe = vllm_executable()
    if exe is None:
        reason = ("no vLLM executable: run scripts/install_vllm_cpu.sh, or set GLMV_VLLM_EXECUTABLE "
                  "(looked for $GLMV_VLLM_EXECUTABLE, <repo>/.venv-vllm/bin/vllm, vllm on PATH)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    return exe


@contextlib.contextmanager
def tiny_vllm(exe: str, tiny: TinyModel, log_dir: Path, extra_env: Mapping[str, str] | None = None,
              startup: dict[str, float] | None = None) -> Iterator[VllmServer]:
    """Real `vllm serve` on the tiny model with the profile's recommended flags, stopped on exit."""
    port = free_port()
    plan = tiny.plan(exe, port, tp=1)
    srv = VllmServer(plan.argv, model=tiny.served_name, port=port, env={**os.environ, **plan.env, **(extra_env or {})},
                     startup_timeout=900, log_dir=log_dir)
    began = time.monotonic()
    srv.start()
    took = time.monotonic() - began
    if startup is not None:
        startup["seconds"] = took
    print(f"\ntiny vLLM ready in {took:.1f} s (log {srv.log_path})")
    try:
        yield srv
    finally:
        srv.stop()
