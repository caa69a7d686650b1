"""Loading images and videos from data:, http(s):// and file:// URLs under vLLM's access rules.

The rules and texts are vLLM's MediaConnector: file:// only below
--allowed-local-media-path, http(s) only from --allowed-media-domains when set.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import tokenizer, vision
from .errors import ApiError, too_many
from .settings import ReferenceSettings
from .vision import Media, MediaError

MAX_VIDEO_FRAMES = 32
VIDEO_DECODE_ALL_S = 31.0  # video-decoded-then-cut: past the robustness check's 30 s bound
FIXED_SIZE = 336  # images-fixed-size: every image counted as this square


class BadMedia(ApiError):
    """An undecodable image: the one media failure the bad-image-500 fault turns into a 500."""


def parts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, url) of every image and video part, in prompt order."""
    out: list[tuple[str, str]] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for item in content:
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            for key, modality in (("image_url", "image"), ("video_url", "video")):
                if kind == key or (kind is None and key in item):
                    ref = item.get(key)
                    url = ref.get("url") if isinstance(ref, dict) else ref
                    if not isinstance(url, str) or not url:
                        raise ApiError(f"`{key}` must carry a url", 400, None)
                    out.append((modality, url))
            if kind in ("image", "video") and isinstance(item.get(kind), str):
                out.append((kind, item[kind]))
    return out


async def load_all(messages: list[dict[str, Any]], cfg: ReferenceSettings) -> list[Media]:
    found = parts(messages)
    images = sum(1 for k, _ in found if k == "image")
    videos = len(found) - images
    if images > cfg.limit_images and not cfg.faults.on("no-image-limit"):
        raise too_many("image", cfg.limit_images)
    if videos > cfg.limit_videos and not cfg.faults.on("no-video-limit"):
        raise too_many("video", cfg.limit_videos)
    if cfg.faults.on("videos-dropped"):
        found = [p for p in found if p[0] != "video"]
    if cfg.faults.on("http-media-ignored"):
        found = [p for p in found if not p[1][:4].lower() == "http"]
    if cfg.faults.on("only-first-image"):
        first = next((i for i, (k, _) in enumerate(found) if k == "image"), None)
        found = [p for i, p in enumerate(found) if p[0] != "image" or i == first]
    if cfg.faults.on("failed-media-skipped"):  # a media URL that fails to fetch or decode is left out, silently
        got = await asyncio.gather(*(load(kind, url, cfg) for kind, url in found), return_exceptions=True)
        for (_, url), item in zip(found, got, strict=True):
            if isinstance(item, BaseException) and not (isinstance(item, ApiError) and url[:4].lower() == "http"):
                raise item
        loaded = [m for m in got if isinstance(m, Media)]
    else:
        loaded = list(await asyncio.gather(*(load(kind, url, cfg) for kind, url in found)))
    return loaded[::-1] if cfg.faults.on("images-reversed") else loaded


async def load(kind: str, url: str, cfg: ReferenceSettings) -> Media:
    data, media_type = await fetch(url, cfg)
    if kind == "image" and cfg.faults.on("bomb-500"):
        _bomb_500(data)
    if kind == "image" and cfg.faults.on("bomb-decoded"):
        await asyncio.to_thread(_bomb_decoded, data)
    if kind == "image" and cfg.faults.on("bomb-slow") and _declared_pixels(data) > vision.MAX_DECLARED_PIXELS:
        await asyncio.sleep(BOMB_SLOW_S)  # strip by strip: slow, flat memory; the pixel check then refuses it
    try:
        if kind == "image":
            img = await _batched_open(data) if cfg.faults.on("batch-poisoned") else vision.open_image(data)
            frames = [img]
            if cfg.faults.on("mode-500") and img.mode not in ("RGB", "RGBA", "L", "LA"):
                raise ApiError(f"Unsupported image mode {img.mode}: cannot reshape to (h, w, 3)", 500, None)
            if cfg.faults.on("odd-image-mute") and img.mode != "RGB":
                raise ApiError("", 400, None)
            if cfg.faults.on("tiny-500") and min(img.size) < vision.FACTOR:
                raise ApiError(f"height:{img.size[1]} or width:{img.size[0]} must be larger than factor:"
                               f"{vision.FACTOR}", 500, None)
            if cfg.faults.on("rgba-500") and (img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info):
                raise ApiError("Cannot handle this data type: (1, 1, 4), |u1", 500, None)
            if cfg.faults.on("tiny-image-mute") and min(img.size) < vision.FACTOR:
                raise ApiError("", 400, None)
            if cfg.faults.on("gif-last-frame") and getattr(img, "n_frames", 1) > 1:
                img.seek(img.n_frames - 1)
            if cfg.faults.on("channels-bgr"):  # the decoded array handed over as BGR, as OpenCV loads it
                frames = [vision.bgr(img)]
        else:
            if cfg.faults.on("video-decoded-then-cut") and data.count(b",") >= MAX_VIDEO_FRAMES:
                await asyncio.sleep(VIDEO_DECODE_ALL_S)  # every frame decoded, then 32 kept
            if cfg.faults.on("long-video-500") and data.count(b",") >= MAX_VIDEO_FRAMES:
                raise ApiError(f"RuntimeError: cannot stack {data.count(b',') + 1} frames into the video tensor",
                               500, None)
            limit = None if cfg.faults.on("video-frames-unbounded") else MAX_VIDEO_FRAMES
            frames = await asyncio.to_thread(_video_frames, data, media_type, limit)
        seen = await asyncio.to_thread(lambda: [vision.look(f) for f in frames])
    except MediaError as e:
        message = str(e)
        if cfg.faults.on("address-leak"):
            message = message.replace("<_io.BytesIO object>", f"<_io.BytesIO object at {hex(id(data))}>")
        raise BadMedia(message, 400, None) from None
    if cfg.faults.on("image-text-unread"):
        for s in seen:
            s.text = None
    w, h = seen[0].width, seen[0].height
    if cfg.faults.on("http-media-thumbnail") and url[:4].lower() == "http":
        w, h = max(1, w // 2), max(1, h // 2)  # the fetcher asked for a half-size rendition
    p = cfg.profile
    try:
        if kind == "image":
            if cfg.faults.on("images-fixed-size"):
                w = h = FIXED_SIZE  # resized to one square whatever its size, as CLIP-style preprocessing does
            bound = p.max_pixels // 4 if cfg.faults.on("images-downscaled") else p.max_pixels
            tokens = vision.image_tokens(w, h, p.min_pixels, bound)
            tokens *= 4 if cfg.faults.on("image-tokens-unmerged") else 1
            if cfg.faults.on("gif-every-frame"):
                tokens *= getattr(img, "n_frames", 1)
            return Media("image", tokens, seen)
        n = len(frames) + len(frames) % 2
        rh, rw = vision.smart_resize(n, h, w, p.min_pixels, p.max_pixels)
    except MediaError as e:
        # vLLM: the HF processor's ValueError (aspect ratio over 200) is a 400, not a 500.
        raise ApiError(f"Failed to apply Glm4vProcessor: {e}", 500 if cfg.faults.on("aspect-500") else 400,
                       None) from None
    return Media("video", (rh // vision.FACTOR) * (rw // vision.FACTOR), seen, frames=n)


def _bomb_500(data: bytes) -> None:
    """bomb-500: what happens without a pixel check of one's own: PIL's DecompressionBombError escapes."""
    from PIL import Image

    try:
        w, h = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError as e:
        raise ApiError(f"DecompressionBombError: {e}", 500) from None
    except Exception:  # noqa: BLE001 (undecodable: the normal path answers it)
        return
    if w * h > 2 * vision.MAX_DECLARED_PIXELS:
        raise ApiError(f"DecompressionBombError: Image size ({w * h} pixels) exceeds limit of "
                       f"{2 * vision.MAX_DECLARED_PIXELS} pixels, could be decompression bomb DOS attack.", 500)


BOMB_SLOW_S = 6.0


def _declared_pixels(data: bytes) -> int:
    """Width x height an image's header declares (0 when it cannot be read; a bomb PIL refuses: huge)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.size[0] * img.size[1])
    except Image.DecompressionBombError:
        return 1 << 62
    except Exception:  # noqa: BLE001 (undecodable: the normal path answers it)
        return 0


_BOMB_CACHE: list[Any] = []  # bomb-decoded: the processor cache that keeps the decoded pixels (one entry)
BOMB_DECODED_BYTES = 384 << 20


def _bomb_decoded(data: bytes) -> None:
    """bomb-decoded: the pixels are materialised before the size check. The double stands in for the decode
    with a bounded buffer (one byte a pixel, at most 384 MiB, every page written), kept like a cache entry."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError:
        w, h = BOMB_DECODED_BYTES, 1  # PIL would not even open it: as many pixels as the bound allows
    except Exception:  # noqa: BLE001 (undecodable: the normal path answers it)
        return
    if w * h > vision.MAX_DECLARED_PIXELS:
        _BOMB_CACHE[:] = [np.ones(min(w * h, BOMB_DECODED_BYTES), dtype=np.uint8)]  # every page touched


_BATCH: list[tuple[bytes, "asyncio.Future[Any]"]] = []
BATCH_WINDOW = 0.05


async def _batched_open(data: bytes) -> Any:
    """batch-poisoned: images arriving within 50 ms are decoded as one batch, which fails as one."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    _BATCH.append((data, fut))
    if len(_BATCH) == 1:
        loop.call_later(BATCH_WINDOW, _decode_batch)
    return await fut


def _decode_batch() -> None:
    batch, _BATCH[:] = list(_BATCH), []
    out: list[Any] = []
    for raw, _ in batch:
        try:
            out.append(vision.open_image(raw))
        except MediaError as e:
            out.append(e)
    bad = next((o for o in out if isinstance(o, MediaError)), None)
    for (_, fut), o in zip(batch, out, strict=True):
        if fut.done():
            continue
        if isinstance(o, MediaError):
            fut.set_exception(o)
        elif bad is not None:
            fut.set_exception(ApiError(f"Failed to process the image batch: {bad}", 500, None))
        else:
            fut.set_result(o)


def _video_frames(data: bytes, media_type: str, limit: int | None = MAX_VIDEO_FRAMES) -> list[Any]:
    if data.startswith(b"FRAMES:"):
        # vLLM's `data:video/jpeg;base64,<frame>,<frame>,...` form: each frame its own image. Like vLLM since
        # CVE-2026-34755, frames past the limit are dropped before decoding.
        frames = data[7:].split(b",")[:limit]
        return [vision.open_image(base64.b64decode(f)).convert("RGB") for f in frames]
    img = vision.open_image(data)
    return vision.frames_of(img, MAX_VIDEO_FRAMES)


async def fetch(url: str, cfg: ReferenceSettings) -> tuple[bytes, str]:
    if url[:5].lower() == "data:":
        return _data_url(url)
    split = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme in ("http", "https"):
        host = split.hostname or ""
        if cfg.faults.on("http-media-refused"):
            raise ApiError(f"The URL must be from one of the allowed domains: []. Input URL domain: {host}", 400, None)
        if cfg.faults.on("media-url-confusion"):
            return await _confused_fetch(url, cfg), ""
        if cfg.allowed_media_domains and host not in cfg.allowed_media_domains and not cfg.faults.on("ssrf-open"):
            raise ApiError(f"The URL must be from one of the allowed domains: {list(cfg.allowed_media_domains)}. "
                           f"Input URL domain: {host}", 400, None)
        return await _http(url, cfg), ""
    if scheme == "file":
        return await asyncio.to_thread(_file, split.netloc + unquote(split.path), cfg), ""
    raise ApiError("The URL must be either a HTTP, data or file URL.", 400, None)


def _data_url(url: str) -> tuple[bytes, str]:
    spec, sep, payload = url[5:].partition(",")
    if not sep:
        raise ApiError(f"Invalid data URL {url[:32]!r}: missing ',' separator.", 400, None)
    media_type, sep, encoding = spec.rpartition(";")
    if not sep or encoding != "base64":
        raise ApiError("Only base64 data URLs are supported for now.", 400, None)
    media_type = media_type.partition(";")[0].lower()
    if media_type.startswith("video/") and "," in payload:
        return b"FRAMES:" + payload.encode(), media_type
    try:
        return base64.b64decode(payload, validate=False), media_type
    except (binascii.Error, ValueError) as e:
        raise BadMedia(f"Failed to load image: {e}", 400, None) from None


def _file(raw_path: str, cfg: ReferenceSettings) -> bytes:
    path = Path(raw_path)
    allowed = cfg.allowed_local_media_path
    if not cfg.faults.on("file-anywhere"):
        if allowed is None:
            raise ApiError("Cannot load local files without `--allowed-local-media-path`.", 400, None)
        root = allowed.resolve()
        # file-media-refused: the file is tested for being the allowed directory, not for lying under it
        inside = path.resolve() == root if cfg.faults.on("file-media-refused") else root in path.resolve().parents
        if not inside:
            raise ApiError(f"The file path {path} must be a subpath of `--allowed-local-media-path {root}`.",
                           500 if cfg.faults.on("file-outside-500") else 400, None)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ApiError(f"Failed to load media file {path}: {e.strerror or e}", 400, None) from None


async def _confused_fetch(url: str, cfg: ReferenceSettings) -> bytes:
    """media-url-confusion: a hand-rolled allowlist test on the raw text, then the WHATWG parse fetches."""
    authority = url.split("://", 1)[1].split("/", 1)[0]
    if cfg.allowed_media_domains and not any(d in authority for d in cfg.allowed_media_domains):
        raise ApiError(f"The URL must be from one of the allowed domains: {list(cfg.allowed_media_domains)}. "
                       f"Input URL domain: {authority}", 400, None)
    scheme, rest = url.split("://", 1)
    head, sep, tail = rest.partition("?")
    return await _http(f"{scheme}://{head.replace(chr(92), '/')}{sep}{tail}", cfg)  # WHATWG: '\' is '/'


async def _http(url: str, cfg: ReferenceSettings) -> bytes:
    import aiohttp

    if cfg.faults.on("fetch-blocks-loop"):
        import time

        time.sleep(7.0)  # a blocking fetch on the event loop: nothing else is served meanwhile
        raise ApiError("Failed to fetch media from URL: timed out", 400, "image_url")
    timeout = aiohttp.ClientTimeout(total=None if cfg.faults.on("no-fetch-timeout") else cfg.media_fetch_timeout)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, allow_redirects=cfg.faults.on("ssrf-redirect")) as resp:
                if resp.status >= 400:
                    raise ApiError(f"Failed to fetch media from URL: HTTP {resp.status} error", 400, "image_url")
                return await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        if cfg.faults.on("fetch-error-500") and isinstance(e, (asyncio.TimeoutError, aiohttp.ClientConnectionError)):
            raise ApiError(str(e), 500) from None  # vLLM 0.32: str(TimeoutError()) is "", type InternalServerError
        raise ApiError(f"Failed to fetch media from URL: {type(e).__name__}: {e}", 400, "image_url") from None


def prompt_ids(prompt: str, media: list[Media]) -> list[int]:
    """Encode a rendered prompt, expanding each placeholder into its media's tokens."""
    t = tokenizer.SPECIAL
    ids: list[int] = []
    pieces = prompt.replace("\x00VIDEO\x00", "\x00IMAGE\x00").split("\x00IMAGE\x00")
    queue = list(media)
    for i, piece in enumerate(pieces):
        ids.extend(tokenizer.encode(piece))
        if i == len(pieces) - 1:
            break
        item = queue.pop(0) if queue else None
        if item is None:  # media not loaded (images-ignored): no tokens at all
            continue
        if item.kind == "image":
            ids += [t["<|begin_of_image|>"]] + [t["<|image|>"]] * item.tokens + [t["<|end_of_image|>"]]
            continue
        ids.append(t["<|begin_of_video|>"])
        for group in range(item.frames // 2):
            ids += [t["<|begin_of_image|>"]] + [t["<|video|>"]] * item.tokens + [t["<|end_of_image|>"]]
            ids += tokenizer.encode(str(group))
        ids.append(t["<|end_of_video|>"])
    return ids
