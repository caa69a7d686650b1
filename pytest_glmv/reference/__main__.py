"""python -m pytest_glmv.reference --port N [...]: run the reference server (a double, not a model)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from . import faults
from .settings import DEFAULT_ROOT, DEFAULT_SERVED_NAME, POSE_ENV, BadPose, ReferenceSettings, parse_pose


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        # One line, no usage dump: the launcher shows the last log lines to the user.
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pytest_glmv.reference",
                                description="Deterministic double of vLLM 0.32 serving GLM-4.5V (not a model).")
    p.add_argument("--port", type=_port)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--fault", action="append", default=[], metavar="NAME", help="inject a fault (repeatable)")
    p.add_argument("--model", default=DEFAULT_SERVED_NAME, help="served model name")
    p.add_argument("--root", default=DEFAULT_ROOT, help="HF id reported as the model's root")
    p.add_argument("--max-model-len", type=_positive_int, default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--allowed-local-media-path", type=Path, default=None)
    p.add_argument("--allowed-media-domains", default="", metavar="HOST,...")
    p.add_argument("--limit-images", type=int, default=999)
    p.add_argument("--reasoning-field", choices=("reasoning", "reasoning_content"), default="reasoning")
    p.add_argument("--vllm-version", default=None, metavar="VERSION",
                   help="the release /version reports (default 0.32.0; 0.11.0 with --reasoning-field "
                        "reasoning_content)")
    p.add_argument("--pose", default=None, metavar="vllm-VERSION",
                   help="pose as that vLLM release: vLLM's own /version, owned_by and /metrics, that version's "
                        "evidence (default: $GLMV_REFERENCE_POSE; without it the double says it is the double)")
    p.add_argument("--ttft-ms", type=_non_negative, default=0.0)
    p.add_argument("--tpot-ms", type=_non_negative, default=0.0)
    p.add_argument("--jitter", type=_non_negative, default=0.0, help="fraction of each delay, seeded")
    p.add_argument("--slowdown-per-request", type=_non_negative, default=0.0,
                   help="ms added to each delay per other running request")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE")
    p.add_argument("--list-faults", action="store_true")
    return p


def settings_from(argv: list[str]) -> ReferenceSettings:
    p = parser()
    a = p.parse_args(argv)
    if a.list_faults:
        print(faults.describe())
        raise SystemExit(0)
    if a.port is None:
        p.error("--port is required")
    try:
        active = faults.Faults(a.fault)
    except faults.UnknownFault as e:
        p.error(str(e))
    path = a.allowed_local_media_path
    if path is not None and not path.is_dir():
        p.error(f"--allowed-local-media-path {path}: not an existing directory")
    if a.limit_images < 0:
        p.error("--limit-images must be >= 0")
    domains = tuple(d.strip() for d in a.allowed_media_domains.split(",") if d.strip())
    pose = a.pose if a.pose is not None else os.environ.get(POSE_ENV) or None
    try:
        parse_pose(pose)
    except BadPose as e:
        p.error(str(e))
    return ReferenceSettings(pose=pose, host=a.host, port=a.port, served_model_name=a.model, root=a.root,
                    max_model_len=a.max_model_len, api_key=a.api_key, allowed_local_media_path=path,
                    allowed_media_domains=domains, limit_images=a.limit_images, reasoning_field=a.reasoning_field,
                    vllm_version=a.vllm_version, ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, jitter=a.jitter,
                    slowdown_per_request=a.slowdown_per_request, trace=a.trace, faults=active)


def main(argv: list[str] | None = None) -> int:
    cfg = settings_from(sys.argv[1:] if argv is None else argv)
    from aiohttp import web

    from .app import build
    from .trace import stamp_arrivals

    if cfg.trace is not None:
        stamp_arrivals()  # the trace's `arrived`: when a request's first bytes were read

    active = ", ".join(cfg.faults) or "none"
    posing = f"; posing as vLLM {cfg.vllm_version}" if cfg.posing else ""
    print(f"glmv reference server (a deterministic double of vLLM serving {cfg.root}, not a model{posing}) on "
          f"http://{cfg.host}:{cfg.port}; served name {cfg.served_model_name}; faults: {active}", flush=True)
    try:
        # aiohttp refuses request lines and headers over 8190 bytes; header-unbounded lifts that (CVE-2025-48956)
        huge: dict = {"max_line_size": 1 << 26, "max_field_size": 1 << 26} if cfg.faults.on("header-unbounded") else {}
        # SIGTERM drains in-flight requests for up to 4 s (below the launcher's 5 s stop grace): 1 s was less than
        # a loaded 2-core host can need to finish a 32-token stream, and then the double itself cut it
        web.run_app(build(cfg), host=cfg.host, port=cfg.port, print=None, access_log=None,
                    handle_signals=True, shutdown_timeout=4.0, **huge)
    except OSError as e:
        print(f"glmv reference: cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
