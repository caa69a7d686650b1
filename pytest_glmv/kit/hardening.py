"""Shared pieces of the robustness and security suites: the canary, findings, hostile media.

A probe that could hurt the server is followed by the CANARY: an ordinary text +
small-image chat that must still succeed. `/health` alone proves nothing (vLLM
#39863: a dead engine behind a healthy /health).

Security problems are FINDINGS with stable ids. A finding fails the check unless
the user waived it (`--glmv-waive ID`, ini `glmv_waive`); a waived one is
reported as xfail with its reason, never dropped. A NOTICE (something worth
knowing that is not a hole in itself) passes and is shown as a warning.
"""
from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import httpx
import pytest

from .evidence import Exchange, chat, chat_body
from .media import data_url, encode, handmade_png, image_part, jpeg_frames_url, png, png_url, square

CANARY_TIMEOUT = 120.0  # a cold first image on CPU vLLM takes about 1 s; a hung server is what this catches


def body(model: str, content: Any, max_tokens: int = 4, **extra: Any) -> dict[str, Any]:
    """A probe's chat body: one user turn, greedy, 4 tokens unless told."""
    return chat_body(model, content, max_tokens=max_tokens, greedy=True, **extra)


def image_message(url: str, text: str = "Describe the image.") -> list[dict[str, Any]]:
    return [image_part(url), {"type": "text", "text": text}]


def canary(http: httpx.Client, model: str, after: str) -> Exchange:
    """Text + a small image must still be served after `after`; fails the check otherwise."""
    timeout = min(CANARY_TIMEOUT, http.timeout.read or CANARY_TIMEOUT)  # --glmv-request-timeout caps it
    req = body(model, image_message(png_url(square("blue", 56)), "What colour is the square?"))
    try:
        ex = chat(http, req, timeout=timeout)
    except httpx.TimeoutException as e:
        pytest.fail(f"after {after}, the canary (text + a small image) got no answer within {timeout:.0f} s: "
                    f"{e!r}. The server no longer serves.")
    except httpx.HTTPError as e:  # a dropped connection is not a dead server (vLLM 0.23-0.25 drop it and serve on)
        pytest.fail(f"after {after}, the canary (text + a small image) lost its connection: {e!r}; the server "
                    "closed or reset it instead of answering")
    assert ex.status == 200 and ex.choice.get("finish_reason"), (
        f"after {after}, the canary (text + a small image) failed: the server no longer serves, whatever "
        f"/health says\n{ex.evidence()}")
    return ex


# -- findings ---------------------------------------------------------------------------------------
class GlmvSecurityNotice(UserWarning):
    """Something a security review should know that is not a hole by itself."""


@dataclass(frozen=True)
class Finding:
    id: str
    what: str
    remedy: str
    evidence: str = ""

    def text(self) -> str:
        return (f"finding {self.id}: {self.what}\n  remedy: {self.remedy}\n  (waive with --glmv-waive {self.id} "
                f"or ini glmv_waive)" + (f"\n{self.evidence}" if self.evidence else ""))


def report(finding: Finding, waived: Iterable[str]) -> None:
    """Fail with the finding, or xfail when the user waived its id."""
    if finding.id in set(waived):
        pytest.xfail(f"waived finding {finding.id}: {finding.what}")
    pytest.fail(finding.text(), pytrace=False)


def notice(finding: Finding) -> None:
    warnings.warn(GlmvSecurityNotice(finding.text()), stacklevel=2)


# -- hostile and odd media --------------------------------------------------------------------------
def odd_images() -> dict[str, tuple[bytes, str]]:
    """Valid but unusual images a server must take or refuse, never crash on."""
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), (40 * i, 90, 200 - 40 * i)) for i in range(4)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "1x1": (png(Image.new("RGB", (1, 1), (200, 0, 0))), "image/png"),
        "1x10000": (png(Image.new("RGB", (1, 10000), (0, 200, 0))), "image/png"),
        "rgba": (png(square("red", 64).render("RGBA")), "image/png"),
        "cmyk": (encode(square("red", 64).render("CMYK"), "JPEG"), "image/jpeg"),
        "16-bit": (png(Image.new("I;16", (64, 64), 40000)), "image/png"),
        "animated": (gif, "image/gif"),
    }


def undecodable_images() -> dict[str, tuple[bytes, str]]:
    whole = png(square("red", 224).render())
    return {"garbage": (b"this is not an image" * 8, "image/png"),
            "truncated": (whole[: len(whole) // 2], "image/png")}


@lru_cache(maxsize=2)
def bomb_png(side: int = 40000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels in about 200 KB: decoded it wants gigabytes."""
    row = side // 8 + (1 if side % 8 else 0) + 1  # filter byte + packed bits
    rows_per_block = max(1, (4 << 20) // row)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = block.compress(b"\0" * row * rows_per_block) + block.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(side, rows_per_block)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    end = tail.compress(b"\0" * row * rest) + tail.flush(zlib.Z_FINISH)
    total = row * side
    adler = ((total % 65521) << 16) | 1  # adler32 of `total` zero bytes
    idat = b"\x78\x01" + chunk * full + end + struct.pack(">I", adler)
    return handmade_png(side, side, 1, 0, idat)


def jpeg_frames_video_url(frames: int) -> str:
    """vLLM's `data:video/jpeg;base64,<frame>,<frame>,...` form with `frames` tiny frames."""
    from PIL import Image

    return jpeg_frames_url([Image.new("RGB", (28, 28), (120, 30, 30))] * frames)


def tiny_png_url(i: int = 0) -> str:
    from PIL import Image

    return data_url(png(Image.new("RGB", (28, 28), ((37 * i) % 256, 80, 160))), "image/png")


# -- process facts of a launched server ------------------------------------------------------------
def tree_rss(pid: int | None) -> int | None:
    """Resident memory of a process and its descendants, in bytes (None when it cannot be read)."""
    if pid is None:
        return None
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def launch_flag(argv: Iterable[str], flag: str) -> str | None:
    """The one reader of a flag's value in a command line (`--flag V` or `--flag=V`); the last one wins,
    as with vLLM's argparse; None when absent."""
    argv = list(argv)
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


VLLM_DEFAULT_MAX_LOGPROBS = 20  # vllm/config/model.py: ModelConfig.max_logprobs = 20 (-1: the vocabulary)


def launch_argv(target: Any) -> list[str] | None:
    """The command line the session launched the server with (a vLLM plan, or the reference double's own); None
    for an attached server, whose launch is not known."""
    if getattr(target, "plan", None) is not None:
        return list(target.plan.argv)
    argv = getattr(getattr(target, "server", None), "argv", None)
    return list(argv) if argv else None


def max_logprobs(target: Any) -> tuple[int | None, str]:
    """(the highest top_logprobs the server takes, where that comes from); None where it is not known: an
    attached server, or --max-logprobs -1 (the whole vocabulary, whose size the check does not know)."""
    argv = launch_argv(target)
    if argv is None:
        return None, "the server was not launched by this session"
    raw = launch_flag(argv, "--max-logprobs")
    if raw is None:
        default = VLLM_DEFAULT_MAX_LOGPROBS
        return default, f"the launch, which sets no --max-logprobs (vLLM's default is {default})"
    try:
        value = int(raw)
    except ValueError:
        return None, f"the launch's --max-logprobs {raw!r}, which is no number"
    return (None, "the launch's --max-logprobs -1 (the whole vocabulary)") if value < 0 else (
        value, f"the launch's --max-logprobs {value}")


def inside(path: Path, root: str | None) -> bool:
    if root is None:
        return False
    try:
        return Path(root).resolve() in (path.resolve(), *path.resolve().parents)
    except OSError:
        return False
