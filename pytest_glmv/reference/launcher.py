"""Start the reference server as a child process, inside pytest or out:

    with ReferenceServer(faults=["no-tool-parser"]) as srv:
        openai.OpenAI(base_url=srv.base_url, api_key="x").models.list()
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..lifecycle.server import LaunchedServer, free_port
from .settings import DEFAULT_ROOT, DEFAULT_SERVED_NAME


class ReferenceServer(LaunchedServer):
    kind = "reference"

    def __init__(
        self,
        *,
        faults: Iterable[str] = (),
        port: int | None = None,
        host: str = "127.0.0.1",
        model: str = DEFAULT_SERVED_NAME,
        root: str = DEFAULT_ROOT,
        max_model_len: int | None = None,
        api_key: str | None = None,
        allowed_local_media_path: str | Path | None = None,
        allowed_media_domains: Iterable[str] = (),
        limit_images: int | None = None,
        reasoning_field: str | None = None,
        vllm_version: str | None = None,
        ttft_ms: float | None = None,
        tpot_ms: float | None = None,
        jitter: float | None = None,
        slowdown_per_request: float | None = None,
        trace: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        **kwargs: Any,
    ) -> None:
        port = port or free_port(host)
        argv = [sys.executable, "-m", "pytest_glmv.reference", "--port", str(port), "--host", host,
                "--model", model, "--root", root]
        for name in faults:
            argv += ["--fault", name]
        options: dict[str, Any] = {
            "--max-model-len": max_model_len, "--api-key": api_key,
            "--allowed-local-media-path": allowed_local_media_path, "--limit-images": limit_images,
            "--reasoning-field": reasoning_field, "--vllm-version": vllm_version, "--ttft-ms": ttft_ms,
            "--tpot-ms": tpot_ms, "--jitter": jitter,
            "--slowdown-per-request": slowdown_per_request, "--trace": trace,
            "--allowed-media-domains": ",".join(allowed_media_domains) or None,
        }
        for flag, value in options.items():
            if value is not None:
                argv += [flag, str(value)]
        self.faults = tuple(faults)
        super().__init__(argv, model=model, port=port, host=host, api_key=api_key, env=env, log_dir=log_dir,
                         startup_timeout=startup_timeout, stop_timeout=stop_timeout, **kwargs)
