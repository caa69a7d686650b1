"""Multimodal chat: do images and video reach the model through every route a client uses?

Server-level checks hold for any weights: they judge status codes, counts and
the prompt-token arithmetic of GLM-4V's processor, never the model's words.
The `behavior` checks (further down) need real weights: synthetic pictures with
known answers.
"""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_glmv.kit import media
from pytest_glmv.kit import vision as v
from pytest_glmv.kit.evidence import chat, finish_reasons, joined, stream
from pytest_glmv.kit.multimodal import MM, mm_fixture, prompt_tokens, reasoning_of, user, video_part  # noqa: F401 (mm_fixture: the `mm` fixture)

pytestmark = pytest.mark.multimodal

VLLM_DEFAULT_IMAGE_LIMIT = 999  # vLLM's per-prompt default when --limit-mm-per-prompt does not say
GLM_VIDEO_LIMIT = 1  # GLM-4V's processor takes one video per prompt (vLLM glm4_1v supported limits)
SQUARE = media.square("red", 224)  # 224x224: 64 tokens under any plausible processor bounds
WIDE = media.Scene(308, 140, (media.Shape("blue", (100, 30, 200, 110)),))  # 11x5 = 55 tokens, ditto


def rule(scene: media.Scene, profile: Any) -> int:
    assert v.bounds_free(scene.width, scene.height, profile.patch_size, profile.merge_size)
    return v.image_tokens(scene.width, scene.height, 1, 10 ** 12, profile.patch_size, profile.merge_size)


def still_answers(mm: MM, why: str, timeout: float = 60.0) -> None:
    """After a refused request the server must keep answering an ordinary image request."""
    timeout = min(timeout, mm.http.timeout.read or timeout)  # --glmv-request-timeout caps it
    try:
        ex = chat(mm.http, mm.body([user([media.png_url()], "Describe the image.")]), timeout=timeout)
    except httpx.HTTPError as e:
        pytest.fail(f"after {why}, a plain image request got no answer within {timeout:.0f} s: {e!r}")
    assert ex.status == 200, f"after {why}, the server no longer answers a plain image request\n{ex.evidence()}"


# -- routes -------------------------------------------------------------------------------------
def test_image_by_data_url_reaches_the_processor(mm: MM) -> None:
    messages = [user([media.png_url(SQUARE)], "Describe the image.")]
    added, ex = mm.media_tokens(messages)
    assert ex.choice.get("finish_reason"), f"no finish_reason in the answer\n{ex.evidence()}"
    assert added > 0, (f"a 224x224 image added {added} prompt tokens over the text-only baseline "
                       f"{mm.baseline(messages)}: the image never reached the processor\n{ex.evidence()}")


def test_image_by_http_url(mm: MM, glmv_media: Any) -> None:
    if glmv_media is None:
        pytest.skip("the server is remote and no --glmv-media-host names an address it can fetch media from")
    path = f"/multimodal/{uuid.uuid4().hex}.png"
    url = glmv_media.add(path, media.png(SQUARE.render()))
    ex = mm.ask([url])
    hits = glmv_media.hits_on(path)
    assert ex.status == 200, f"an image by http URL was not accepted\n{ex.evidence()}"
    assert hits, f"answered 200 but never fetched {url}\n{ex.evidence()}"
    by_data = mm.ask([media.png_url(SQUARE)])
    assert prompt_tokens(ex) == prompt_tokens(by_data), (
        f"the same image counts {prompt_tokens(ex)} prompt tokens by http URL but {prompt_tokens(by_data)} by "
        f"data URL\n{ex.evidence()}\n{by_data.evidence()}")


def test_image_by_file_url(mm: MM, glmv_media_dir: Any, glmv_settings: Any) -> None:
    if glmv_media_dir is not None:
        target = Path(glmv_media_dir) / f"{uuid.uuid4().hex}.png"
        target.write_bytes(media.png(SQUARE.render()))
        messages = [user([target.as_uri()], "Describe the image.")]
        ex = mm.send(messages)
        target.unlink()
        assert ex.status == 200, f"an image by file:// inside the allowed media path was refused\n{ex.evidence()}"
        by_data = mm.ask([media.png_url(SQUARE)])
        added = prompt_tokens(ex) - mm.baseline(messages)
        assert added > 0 and prompt_tokens(ex) == prompt_tokens(by_data), (
            f"the same image adds {added} prompt tokens by file:// ({prompt_tokens(ex)} in all) and counts "
            f"{prompt_tokens(by_data)} by data URL: it must reach the processor either way\n{ex.evidence()}")
    elif glmv_settings.remote_media_path:
        messages = [user([f"file://{glmv_settings.remote_media_path}"], "Describe the image.")]
        added, ex = mm.media_tokens(messages)
        assert added > 0, f"the file:// image added no prompt tokens\n{ex.evidence()}"
    else:
        pytest.skip("attached server: pass --glmv-remote-media-path with an image on its disk inside its "
                    "--allowed-local-media-path")


def _allowed_root(glmv_settings: Any, glmv_media_dir: Any) -> Path:
    if glmv_settings.target == "reference":
        return Path(glmv_media_dir)  # the plugin starts the double with exactly this directory allowed
    narrowed = getattr(glmv_settings, "allowed_media_path", None)
    if glmv_settings.target == "vllm" and narrowed is not None:
        return Path(narrowed)
    pytest.skip("the server may read files anywhere (launched with --allowed-local-media-path /) or its allowed "
                "path is unknown (attached); --glmv-allowed-media-path narrows a launch so this can be checked")


def test_file_url_outside_the_allowed_path_is_refused(mm: MM, glmv_settings: Any, glmv_media_dir: Any) -> None:
    root = _allowed_root(glmv_settings, glmv_media_dir).resolve()
    outside = Path(tempfile.mkdtemp(prefix="glmv-outside-")).resolve()
    if root == outside or root in outside.parents:
        pytest.skip(f"no directory outside the allowed media path {root} to put the probe in")
    secret = outside / "outside.png"
    secret.write_bytes(media.png(SQUARE.render()))
    # direct, and by climbing out of the allowed directory with ..
    urls = [secret.as_uri(), f"file://{root}/../{secret.relative_to(outside.parent)}"]
    try:
        answers = [mm.ask([url]) for url in urls]
    finally:
        secret.unlink()
        outside.rmdir()
    for ex in answers:
        assert 400 <= ex.status < 500 and ex.error_message, (
            f"a file:// image outside the allowed media path {root} must be refused with a 4xx and a "
            f"message\n{ex.evidence()}")
    still_answers(mm, "a refused file:// image")


# -- formats and shapes -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["PNG", "JPEG", "WEBP", "GIF", "RGBA", "L", "P"])
def test_image_format_is_accepted(mm: MM, variant: str) -> None:
    data, mime = v.in_format(SQUARE, variant)
    ex = mm.ask([media.data_url(data, mime)])
    assert ex.status == 200, f"a {variant} image ({mime}, {len(data)} bytes) was not accepted\n{ex.evidence()}"
    if "png" not in mm.cache:
        mm.cache["png"] = prompt_tokens(mm.ask([media.png_url(SQUARE)]))
    assert prompt_tokens(ex) == mm.cache["png"], (
        f"a 224x224 {variant} image counts {prompt_tokens(ex)} prompt tokens, the same picture as RGB PNG "
        f"{mm.cache['png']}: the format changed what reached the processor\n{ex.evidence()}")


@pytest.mark.parametrize("size", [(1, 1), (1, 10000), (10000, 1)], ids=["1x1", "1x10000", "10000x1"])
def test_extreme_shape_never_5xx(mm: MM, size: tuple[int, int]) -> None:
    ex = mm.ask([media.png_url(v.plain(size))])
    assert ex.status < 500, f"a {size[0]}x{size[1]} image must not take the server to a 5xx\n{ex.evidence()}"
    if ex.status == 200:
        assert ex.message.get("role") == "assistant" and ex.choice.get("finish_reason"), \
            f"a 200 without a well-formed choice\n{ex.evidence()}"
        assert prompt_tokens(ex) > 0, f"a 200 for a {size[0]}x{size[1]} image counts no prompt tokens\n{ex.evidence()}"
    else:
        assert ex.error_message, f"a {ex.status} must say what is wrong with the image\n{ex.evidence()}"
    still_answers(mm, f"a {size[0]}x{size[1]} image")


def test_4k_image(mm: MM, glmv_profile: Any) -> None:
    scene = media.Scene(3840, 2160, (media.Shape("green", (1600, 800, 2200, 1400)),))
    messages = [user([media.png_url(scene)], "Describe the image.")]
    added, ex = mm.media_tokens(messages)
    counted = mm.tokenize(messages)
    p = glmv_profile
    if counted is not None:  # the deployment's own bounds, whatever its preprocessor_config says
        expected, how = counted - mm.baseline(messages), "/tokenize of the same messages"
    else:
        expected = v.image_tokens(3840, 2160, p.min_pixels, p.max_pixels, p.patch_size, p.merge_size) + 2
        how = f"the {p.name} processor rule (min/max pixels {p.min_pixels}/{p.max_pixels})"
    small, _ = mm.media_tokens([user([media.png_url(SQUARE)], "Describe the image.")])
    assert added == expected and added > small, (
        f"a 3840x2160 image added {added} prompt tokens; expected {expected} from {how}, and more than a "
        f"224x224 image's {small}\n{ex.evidence()}")


def test_large_image_keeps_the_models_resolution(mm: MM, glmv_profile: Any) -> None:
    """A 4K image is resized to the model's own pixel bound (its preprocessor_config, the profile's max_pixels), no
    smaller: a deployment that shrinks images (`--mm-processor-kwargs '{"size": {"longest_edge": ...}}'`) shows the
    model less than it was trained to see, and its /tokenize shrinks them too, so only the model's bound tells.
    Counted over a 224x224 image (no bound resizes it), so a template's own per-image tokens cancel out."""
    p = glmv_profile
    large, ex = mm.media_tokens([user([media.png_url(media.Scene(3840, 2160, ()))], "Describe the image.")])
    small, _ = mm.media_tokens([user([media.png_url(SQUARE)], "Describe the image.")])
    want = (v.image_tokens(3840, 2160, p.min_pixels, p.max_pixels, p.patch_size, p.merge_size)
            - v.image_tokens(224, 224, p.min_pixels, p.max_pixels, p.patch_size, p.merge_size))
    how = "shrinks images below" if large - small < want else "resizes images to another bound than"
    assert large - small == want, (
        f"a 3840x2160 image added {large} prompt tokens, {large - small} more than a 224x224 image; the {p.name} "
        f"processor's own bound (max_pixels {p.max_pixels}, an image counted as 2 frames) makes {want} more: the "
        f"deployment {how} the model's (--mm-processor-kwargs size / max_pixels?)\n{ex.evidence()}")


# -- counts -------------------------------------------------------------------------------------
def test_image_tokens_follow_the_processor_rule(mm: MM, glmv_profile: Any) -> None:
    for scene in (SQUARE, WIDE):
        messages = [user([media.png_url(scene)], "Describe the image.")]
        added, ex = mm.media_tokens(messages)
        expected = rule(scene, glmv_profile) + v.IMAGE_MARKERS
        assert added == expected, (
            f"a {scene.width}x{scene.height} image added {added} prompt tokens over the text-only baseline "
            f"{mm.baseline(messages)}; GLM-4V's processor ({glmv_profile.patch_size}-px patches, "
            f"{glmv_profile.merge_size}x{glmv_profile.merge_size} merge) makes {expected - 2} image tokens + "
            f"2 markers\n{ex.evidence()}")
        counted = mm.tokenize(messages)
        assert counted is None or counted == prompt_tokens(ex), (
            f"/tokenize counts {counted} for the messages the chat endpoint counted {prompt_tokens(ex)}\n"
            f"{ex.evidence()}")


def test_prompt_tokens_grow_with_image_count_and_size(mm: MM) -> None:
    counted = [mm.media_tokens([user([media.png_url(SQUARE)] * n, "Describe the images.")]) for n in (1, 2, 3)]
    by_count = [added for added, _ in counted]
    assert by_count[0] > 0 and by_count[1] == 2 * by_count[0] and by_count[2] == 3 * by_count[0], (
        f"1, 2 and 3 copies of a 224x224 image added {by_count} prompt tokens: each copy must add the same "
        f"non-zero amount\n{counted[-1][1].evidence()}")
    sizes = [56, 224, 448]
    sized = [mm.media_tokens([user([media.png_url(media.square("red", s))], "Describe the image.")]) for s in sizes]
    by_size = [added for added, _ in sized]
    assert by_size[0] < by_size[1] < by_size[2], (
        f"square images of {sizes} px added {by_size} prompt tokens: larger images must count more\n"
        f"{sized[-1][1].evidence()}")


def test_images_across_turns(mm: MM, glmv_profile: Any) -> None:
    messages = [user([media.png_url(SQUARE)], "What is in this image?"),
                {"role": "assistant", "content": "A red square on white."},
                user([media.png_url(WIDE)], "And in this one?")]
    added, ex = mm.media_tokens(messages)
    expected = rule(SQUARE, glmv_profile) + rule(WIDE, glmv_profile) + 2 * v.IMAGE_MARKERS
    assert added == expected, (f"two images in two user turns added {added} prompt tokens; the processor rule "
                               f"says {expected}: an earlier turn's image was dropped or miscounted\n"
                               f"{ex.evidence()}")


def test_more_images_than_the_limit_is_a_400(mm: MM, glmv_target: Any, glmv_settings: Any) -> None:
    limit = v.image_limit(list(getattr(glmv_target.plan, "argv", None) or []), VLLM_DEFAULT_IMAGE_LIMIT)
    tiny = media.png_url(v.plain((1, 1)))
    ex = mm.ask([tiny] * (limit + 1))
    if ex.status == 200 and glmv_settings.target == "external":
        pytest.skip(f"the server took {limit + 1} images: its --limit-mm-per-prompt is above vLLM's default")
    assert ex.status == 400 and ex.error_message, (
        f"{limit + 1} images in one prompt (limit {limit}) must be a 400 with a message\n{ex.evidence(300)}")
    still_answers(mm, "too many images")


# -- video --------------------------------------------------------------------------------------
def _video() -> str:
    frames = [media.square(c, 224).render() for c in ("red", "green", "blue", "yellow")]
    return media.jpeg_frames_url(frames)


def test_video_frames_reach_the_processor(mm: MM, glmv_profile: Any) -> None:
    if not glmv_profile.video:
        pytest.skip(f"the {glmv_profile.name} profile takes no video")
    added, ex = mm.media_tokens([user([video_part(_video())], "Describe the video.")])
    assert added > 0, f"a 4-frame video added {added} prompt tokens: it never reached the processor\n{ex.evidence()}"


def test_more_videos_than_the_limit_is_a_400(mm: MM, glmv_profile: Any) -> None:
    if not glmv_profile.video:
        pytest.skip(f"the {glmv_profile.name} profile takes no video")
    ex = mm.ask([video_part(_video())] * (GLM_VIDEO_LIMIT + 1), "Describe the videos.")
    assert ex.status == 400 and ex.error_message, (
        f"{GLM_VIDEO_LIMIT + 1} videos in one prompt (GLM-4V takes {GLM_VIDEO_LIMIT}) must be a 400 with a "
        f"message\n{ex.evidence(300)}")
    still_answers(mm, "too many videos")


# -- streaming ----------------------------------------------------------------------------------
def test_streamed_text_equals_non_streamed(mm: MM) -> None:
    body = mm.body([user([media.png_url(SQUARE)], "What colour is the square?")], max_tokens=24)
    # Warm the prefix and encoder caches first, so both compared answers come from the same cache state
    # (a cache hit computes the prompt differently, and random weights can sit near argmax ties).
    chat(mm.http, {**body, "max_tokens": 1})
    whole, streamed = chat(mm.http, body), stream(mm.http, body)
    assert whole.status == 200 and streamed.status == 200, f"{whole.evidence()}\n{streamed.evidence()}"
    reasons = finish_reasons(streamed.events)
    assert len(reasons) == 1, f"a stream must carry exactly one finish_reason, got {reasons}\n{streamed.evidence()}"
    assert reasons[0] == whole.choice.get("finish_reason"), f"{whole.evidence()}\n{streamed.evidence()}"
    msg = whole.message
    got = (joined(streamed.events, "content"), joined(streamed.events, "reasoning")
           + joined(streamed.events, "reasoning_content"))
    want = (msg.get("content") or "", reasoning_of(msg))
    assert got == want, (f"greedy decoding with seed 0 gave different text streamed and not:\n  streamed "
                         f"(content, reasoning) = {got!r}\n  whole = {want!r}\n{whole.evidence()}")
    assert streamed.raw_lines[-1:] == ["data: [DONE]"], f"the stream did not end with [DONE]\n{streamed.evidence()}"


# Last on purpose: a server that wedges after an undecodable image (a known failure) would stall later checks.
def test_undecodable_image_is_a_400_and_the_server_survives(mm: MM) -> None:
    ex = mm.ask(["data:image/png;base64,bm90YXBuZw=="])
    assert ex.status == 400 and ex.error_message, (
        f"an undecodable image must be a 400 with a message (vLLM: 'Failed to load image: ...')\n{ex.evidence()}")
    still_answers(mm, "an undecodable image", timeout=30.0)
