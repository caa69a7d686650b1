"""Workloads: an offline replica of VisionArena-Chat's shape, the real set from the HF hub, or random text.

VisionArena-Chat as `vllm bench serve` uses it (vLLM 0.32, VisionArenaDataset): the prompt is
the first turn's text, the image is the first image, re-encoded as JPEG into a base64 data
URL; the output length defaults to 128; the streamed HF split is shuffled with the seed.
The synthetic replica keeps that shape: one image of varied size per request (photos as JPEG,
screenshots as PNG), a short question of about 90 tokens in one of several languages, 128
max tokens, all drawn from the seed, so the same seed gives the same bytes.

`random` mirrors vllm bench serve's random dataset (vLLM 0.32, RandomDataset with its defaults: range
ratio 0, no prefix): text only, every prompt exactly --random-input-len tokens and every answer
--random-output-len tokens (vllm bench serve turns ignore_eos on for it; the runner does too). vLLM
decodes seeded token ids with the model's tokenizer and then re-aligns the prompts with the server's
/tokenize and /detokenize; having no tokenizer here, we draw seeded words (different from the first
word on, so no prefix-cache hits) and cut them to length with the same two endpoints (`align`).
"""
from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from typing import Callable

from PIL import Image, ImageDraw

from ..kit.media import data_url, encode

SYNTHETIC = "synthetic"
VISION_ARENA = "lmarena-ai/VisionArena-Chat"
RANDOM = "random"
DATASETS = (SYNTHETIC, VISION_ARENA, RANDOM)
OUTPUT_LEN = 128
RANDOM_INPUT_LEN = 1024  # vllm bench serve's --random-input-len default
# texts, target token count -> the texts cut to that many tokens by the server's tokenizer
Align = Callable[[list[str], int], list[str]]


class WorkloadError(RuntimeError):
    """str() is one complete line for the user."""


@dataclass(frozen=True)
class Request:
    text: str
    image_url: str | None
    max_tokens: int = OUTPUT_LEN


# Questions people ask about images, in the languages VisionArena's traffic shows most.
_QUESTIONS = {
    "en": ["What is shown in this image? Describe the main objects and what they are doing.",
           "Read all the text in this screenshot and explain what the page is for.",
           "Solve the problem in the picture step by step and give the final answer."],
    "zh": ["这张图片里有什么？请详细描述主要的物体和场景。", "请读出截图中的所有文字，并解释这个页面的用途。"],
    "es": ["¿Qué se muestra en esta imagen? Describe los objetos principales y lo que hacen."],
    "fr": ["Que montre cette image ? Décris les objets principaux et ce qu'ils font."],
    "de": ["Was ist auf diesem Bild zu sehen? Beschreibe die wichtigsten Objekte genau."],
    "ja": ["この画像には何が写っていますか？主な物体と状況を詳しく説明してください。"],
    "ru": ["Что изображено на этой картинке? Опиши основные объекты и что они делают."],
    "pt": ["O que aparece nesta imagem? Descreva os objetos principais e o que eles fazem."],
}
_FILLER = {
    "en": "Please be precise, mention colours, positions and any numbers you can see, and keep it short.",
    "zh": "请尽量准确，说明颜色、位置以及能看到的数字，回答简洁一些。",
    "es": "Sé preciso, menciona colores, posiciones y cualquier número que veas, y sé breve.",
    "fr": "Sois précis, mentionne les couleurs, les positions et les nombres visibles, et reste bref.",
    "de": "Sei genau, nenne Farben, Positionen und alle sichtbaren Zahlen, und fasse dich kurz.",
    "ja": "色や位置、見える数字をできるだけ正確に挙げて、簡潔に答えてください。",
    "ru": "Будь точен, укажи цвета, расположение и все видимые числа, и отвечай кратко.",
    "pt": "Seja preciso, mencione cores, posições e quaisquer números visíveis, e seja breve.",
}
_LANG_WEIGHTS = {"en": 55, "zh": 15, "es": 6, "fr": 5, "de": 5, "ja": 5, "ru": 5, "pt": 4}


def _approx_tokens(text: str) -> float:
    # About 4 characters a token for Latin/Cyrillic scripts and 1.5 for CJK, which is close
    # enough to steer the length toward ~90 tokens without loading a tokenizer.
    cjk = sum(1 for c in text if ord(c) > 0x2E80)
    return cjk / 1.5 + (len(text) - cjk) / 4.0


def _text(rng: random.Random) -> str:
    lang = rng.choices(list(_LANG_WEIGHTS), weights=list(_LANG_WEIGHTS.values()))[0]
    parts = [rng.choice(_QUESTIONS[lang])]
    target = min(120.0, max(70.0, rng.gauss(90, 15)))  # VisionArena's first turns: about 90 tokens
    while _approx_tokens(" ".join(parts)) < target - 5:
        parts.append(_FILLER[lang])
    return " ".join(parts)


@functools.lru_cache(maxsize=4096)
def _image(seed: int, index: int) -> str:
    """A deterministic, unique image (so no server-side multimodal cache hit) as a data URL."""
    rng = random.Random(f"{seed}/{index}/image")
    screenshot = rng.random() < 0.25
    w = rng.choice((320, 480, 512, 640, 768, 800, 1024))
    h = int(w * rng.choice((0.5625, 0.75, 1.0, 1.333)))
    bg = tuple(rng.randrange(256) for _ in range(3))
    img = Image.new("RGB", (w, h), bg)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(6, 18)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, min(w, x0 + rng.randrange(20, w // 2 + 21)), min(h, y0 + rng.randrange(10, h // 2 + 11)))
        colour = tuple(rng.randrange(256) for _ in range(3))
        if screenshot:
            draw.rectangle(box, fill=colour)  # type: ignore[arg-type]
            draw.text((box[0] + 2, box[1] + 2), f"item {rng.randrange(1000)}", fill=(0, 0, 0))
        else:
            draw.ellipse(box, fill=colour)  # type: ignore[arg-type]
    draw.text((4, 4), f"#{index}", fill=(255, 255, 255))
    if screenshot:
        return data_url(encode(img, "PNG", optimize=False), "image/png")
    return data_url(encode(img, "JPEG", quality=75), "image/jpeg")  # PIL's default quality, as vLLM's re-encode uses


def synthetic(n: int, seed: int = 0, max_tokens: int = OUTPUT_LEN) -> list[Request]:
    rng = random.Random(f"{seed}/text")
    return [Request(_text(rng), _image(seed, i), max_tokens) for i in range(n)]


def vision_arena(n: int, seed: int = 0, max_tokens: int = OUTPUT_LEN) -> list[Request]:
    try:
        from datasets import load_dataset  # type: ignore[import-not-found]
    except ImportError:
        raise WorkloadError(f"glmv: --glmv-dataset {VISION_ARENA} needs the datasets extra: "
                            f"pip install 'pytest-glmv[datasets]' (or use --glmv-dataset synthetic)") from None
    try:
        data = load_dataset(VISION_ARENA, split="train", streaming=True).shuffle(seed=seed)
        out: list[Request] = []
        for item in data:
            if len(out) >= n:
                break
            image = item["images"][0]
            if isinstance(image, dict) and "bytes" in image:
                image = Image.open(io.BytesIO(image["bytes"]))
            url = data_url(encode(image.convert("RGB"), "JPEG"), "image/jpeg")
            out.append(Request(item["conversation"][0][0]["content"], url, max_tokens))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise WorkloadError(f"glmv: cannot load {VISION_ARENA} from the Hugging Face hub "
                            f"({type(e).__name__}: {first}); check the network and HF_TOKEN, "
                            f"or use --glmv-dataset synthetic") from None
    if not out:
        raise WorkloadError(f"glmv: {VISION_ARENA} yielded no requests")
    # Like vLLM's oversampling: repeat to reach n when the set is smaller.
    return [out[i % len(out)] for i in range(n)]


_WORDS = ("time year people way day man thing woman life child world school state family student group country "
          "problem hand part place case week company system program question work government number night point "
          "home water room mother area money story fact month lot right study book eye job word business issue "
          "side kind head house service friend father power hour game line end member law car city community name "
          "president team minute idea kid body information back parent face others level office door health person "
          "art war history party result change morning reason research girl guy moment air teacher force education "
          "blue green red seven twelve forty quick slow bright dark river stone cloud market signal engine paper "
          "garden window bridge village letter music number table orange silver winter summer").split()


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(count))


def random_text(n: int, seed: int = 0, input_len: int = RANDOM_INPUT_LEN, output_len: int = OUTPUT_LEN,
                align: Align | None = None) -> list[Request]:
    """n text-only requests of input_len prompt tokens (cut by `align`, else about 4 characters a token)
    and output_len max tokens, drawn from the seed."""
    rng = random.Random(f"{seed}/random")
    # about input_len tokens of words on a real tokenizer; the reference's takes ~3.3 characters a token
    texts = [_words(rng, input_len + 8) for _ in range(n)]
    if align is not None:
        texts = align(texts, input_len)
    else:
        texts = [t[: 4 * input_len] for t in texts]
    return [Request(t, None, output_len) for t in texts]


def load(name: str, n: int, seed: int = 0, max_tokens: int = OUTPUT_LEN, *, input_len: int = RANDOM_INPUT_LEN,
         output_len: int = OUTPUT_LEN, align: Align | None = None) -> list[Request]:
    """The named workload; max_tokens for the image sets, input_len/output_len/align for random."""
    if name == SYNTHETIC:
        return synthetic(n, seed, max_tokens)
    if name == RANDOM:
        return random_text(n, seed, input_len, output_len, align)
    if name == VISION_ARENA:
        return vision_arena(n, seed, max_tokens)
    raise WorkloadError(f"glmv: unknown --glmv-dataset {name!r}; valid: {', '.join(DATASETS)}")
