"""Synthetic tasks that mirror every `behavior` check, each with varied prompts and GLM-style answers.

An Example is a chat as a client sends it (OpenAI messages with data-URL images, tools, thinking on or
off), the assistant turn GLM-4.5V would give (content, reasoning, tool calls: rendered later by the
model's own chat template), and a judge that reads a parsed answer the way the suite's check does (the
same readings, pytest_glmv/kit/judges.py: one implementation for both). The suites' own prompts are among
each task's phrasings (tests/tiny holds them to it); answers vary the way a real GLM-4.5V's do: case, a full
stop, a sentence around the word, a boxed answer.
Pure Python + Pillow: no torch, so the generators are testable anywhere.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from ...kit import judges as j
from ...kit import media
from ...kit import vision as v
from ...kit.tools import CONVERT, NOTE_TEXT, SAVE_NOTE, SET_COLOUR, STOCK, WEATHER, tool
from . import scenes

Message = dict[str, Any]
Judge = Callable[[Message], bool]
CLEAR = ("red", "green", "blue", "yellow")  # the suite's unambiguous colours (what the checks ask about)
ALL = tuple(media.COLOURS)  # trained on all seven, so "named <= {colour}" is earned, not guessed
# suites/test_reasoning.py's weather tool: city only (the tools suite's has days too)
WEATHER_CITY = tool("get_weather", "Current weather for a city", {"city": {"type": "string"}}, ["city"])
TIME = tool("get_time", "Current time in a timezone", {"timezone": {"type": "string"}}, ["timezone"])
CITIES = ("Paris", "Tokyo", "Lyon", "Berlin", "London", "Madrid", "Rome", "Oslo", "Cairo", "Lima", "Seoul",
          "Sydney", "Boston", "Denver", "Nairobi", "Dublin", "Vienna", "Prague", "Quito", "Hanoi")
TICKERS = ("NVDA", "AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "META", "IBM", "INTC", "AMD", "ORCL", "SAP")
WORDS = ("CAT", "LAMP", "RIVER", "GLM", "HELLO", "DOG", "TREE", "BOOK", "MOON", "STAR", "FISH", "RED",
         "BLUE", "HOUSE", "APPLE", "WATER", "STONE", "CLOUD", "PEN", "SUN", "OPEN", "STOP", "EXIT", "MAP")


@dataclass
class Example:
    task: str
    messages: list[Message]
    target: Message  # the assistant turn: content, and reasoning / tool_calls where GLM gives them
    judge: Judge  # reads a parsed answer {"content", "reasoning", "tool_calls"} as the suite's check does
    tools: list[dict[str, Any]] | None = None
    tool_choice: str = "auto"
    thinking: bool = False
    max_tokens: int = 48
    meta: dict[str, Any] = field(default_factory=dict)


def user(images: list[bytes], text: str, mime: str = "image/png") -> Message:
    parts: list[Any] = [media.image_part(media.data_url(b, mime)) for b in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}] if parts else text}


def content(m: Message) -> str:
    return j.unboxed(str(m.get("content") or ""))


def calls(m: Message) -> list[tuple[str, Any]]:
    out = []
    for c in m.get("tool_calls") or []:
        fn = c.get("function") or {}
        try:
            out.append((fn.get("name"), json.loads(fn.get("arguments") or "null")))
        except ValueError:
            out.append((fn.get("name"), None))
    return out


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": args}}


def word_answer(rng: random.Random, word: str, sentence: str) -> str:
    """One word as GLM-4.5V writes it: bare, capitalised, with a stop, boxed, or in a sentence."""
    return rng.choice([word, word.capitalize(), word.capitalize() + ".", f"<|begin_of_box|>{word}<|end_of_box|>",
                       f"<|begin_of_box|>{word.capitalize()}<|end_of_box|>", sentence])


# -- pictures -------------------------------------------------------------------------------------------
def colour(rng: random.Random, thinking: bool = False) -> Example:
    w, h = rng.choice([(448, 336), (640, 400), (224, 224), (336, 448), (320, 240)])
    c = rng.choice(ALL)
    scene = scenes.placed(rng, c, w, h)
    fmt = rng.choice(["PNG", "PNG", "JPEG", "WEBP", "GIF"])
    data, mime = v.in_format(scene, fmt)
    q = rng.choice(["What colour is the square in the image? Answer with one word.", "What colour is the square?",
                    "What colour is the square in the image? One word.", "What color is the square?",
                    "Which colour does the square in this picture have?", "What is the colour of the shape?",
                    "Name the colour of the square."])
    reasoning = (f"The image shows one {c} square on a white background. The question asks for its colour, "
                 f"so the answer is {c}.") if thinking else None
    target = {"content": word_answer(rng, c, f"The square is {c}."), "reasoning": reasoning}

    def judge(m: Message) -> bool:
        boxed = j.coordinate_boxes(str(m.get("reasoning") or "")) + j.coordinate_boxes(str(m.get("content") or ""))
        return j.names_colour(content(m), c) and not boxed
    return Example("colour_think" if thinking else "colour", [user([data], q, mime)], target, judge,
                   thinking=thinking, max_tokens=96 if thinking else 24, meta={"colour": c, "format": fmt})


def gif(rng: random.Random) -> Example:
    """The suite's GIF: the first frame a square, the second all blue; vLLM reads the first frame only."""
    c = rng.choice(ALL)
    data, mime = v.in_format(media.square(c, 224, rng.choice([0.5, 0.6, 0.8])), "GIF")
    q = rng.choice(["What colour is the square in the image? One word.", "What colour is the square?",
                    "Which colour is the shape in this picture?"])
    return Example("gif", [user([data], q, mime)], {"content": word_answer(rng, c, f"The square is {c}.")},
                   lambda m: j.names_colour(content(m), c), max_tokens=24, meta={"colour": c})


def shape(rng: random.Random) -> Example:
    kind, c = rng.choice(scenes.KINDS), rng.choice(ALL)
    data = scenes.shape_png(rng, kind, c)
    q = rng.choice(["What shape is in the image? Answer with one word.", "What shape is shown?",
                    "Which shape do you see in the picture?"])
    article = "an" if c[0] in "aeiou" else "a"
    return Example("shape", [user([data], q)], {"content": word_answer(rng, kind, f"It is {article} {c} {kind}.")},
                   lambda m: kind in content(m).lower() and not {k for k in scenes.KINDS if k != kind}
                   & set(content(m).lower().replace(".", " ").split()), max_tokens=24)


def count(rng: random.Random, wide: bool = False) -> Example:
    """The check's pictures (1-5 squares in the four clear colours), or (wide) up to six in any of the seven,
    measured apart: trained on both, but only the check's own kind of picture says whether the check can pass
    (the weights of 14:10: 91.7 % over the mix, 100 % on the check's pictures, n=48 each, eval seed 1)."""
    n = rng.randint(1, 6 if wide else 5)
    scene = media.scatter(n, seed=rng.randrange(10 ** 6), colours=rng.choice([CLEAR, None]) if wide else CLEAR)
    q = rng.choice(["How many squares are in the image? Answer with a number.", "How many squares are there?",
                    "Count the squares in the picture.", "How many squares do you see? Reply with a number only."])
    words = ["zero", "one", "two", "three", "four", "five", "six"]
    unit = "square" if n == 1 else "squares"
    answer = rng.choice([str(n), str(n), f"<|begin_of_box|>{n}<|end_of_box|>", f"There are {n} {unit}.",
                         f"There {'is' if n == 1 else 'are'} {words[n]} {unit} in the image."])
    return Example("count_wide" if wide else "count", [user([media.png(scene.render())], q)], {"content": answer},
                   lambda m: j.count_stated(content(m)) == n, max_tokens=24, meta={"n": n})


def word(rng: random.Random, number: bool = False) -> Example:
    """A rendered word (the check's task: it shows words only), or (number) a rendered number up to 9999, measured
    apart: reading one of ~20 words and reading four digits are different skills, and one accuracy over both
    said nothing about the words the check asks for."""
    text = str(rng.randint(0, 9999)) if number else rng.choice(WORDS)
    q = rng.choice(["What word is written in the image? Answer with the word only.", "What does the image say?",
                    "Read the text in the image.", "What is written in the picture?"]
                   + (["What number is written in the image?"] if number else []))
    answer = rng.choice([text, f"<|begin_of_box|>{text}<|end_of_box|>", f"The image says {text}.",
                         f"The text reads \"{text}\"."])
    return Example("number" if number else "word", [user([v.word_png(text)], q)], {"content": answer},
                   lambda m: j.reads_word(content(m), text), max_tokens=24, meta={"text": text})


def which(rng: random.Random, turns: bool = False, wide: bool = False) -> Example:
    """The check's pair (two of the four clear colours, its centred half-size square), or (wide, and across turns)
    any two of the seven colours at three sizes: trained on both, measured apart as count is."""
    broad = wide or turns
    wanted, other = rng.sample(ALL if broad else CLEAR, 2)
    second = rng.random() < 0.5
    pair = [media.png(media.square(c, 224, rng.choice([0.4, 0.5, 0.7]) if broad else 0.5).render())
            for c in ((other, wanted) if second else (wanted, other))]
    q = rng.choice([f"Which of the two images shows a {wanted} square, the first or the second? Answer in one word.",
                    f"Which image has the {wanted} square: the first or the second?",
                    f"In which picture is the square {wanted}, first or second?"])
    nth = "second" if second else "first"
    answer = rng.choice([nth, nth.capitalize(), nth.capitalize() + ".", f"The {nth} image.",
                         f"<|begin_of_box|>{nth.capitalize()}<|end_of_box|>"])
    if turns:  # one image per user turn, GLM's short acknowledgement between them
        first = user([pair[0]], rng.choice(["Here is the first image.", "Look at this image.", "Remember this."]))
        ack = {"role": "assistant", "content": rng.choice(["OK.", "Got it.", "I see the image."])}
        messages = [first, ack, user([pair[1]], q)]
    else:
        messages = [user(pair, q)]
    expected = 2 if second else 1
    name = "which_turns" if turns else "which_wide" if wide else "which"
    return Example(name, messages, {"content": answer},
                   lambda m: j.ordinal(content(m)) == expected, max_tokens=24, meta={"pair": (wanted, other)})


def ground(rng: random.Random) -> Example:
    c = rng.choice(CLEAR)
    scene = scenes.placed(rng, c, *rng.choice([(640, 400), (448, 336), (448, 448)]))
    box = list(scene.box_1000(0))
    q = rng.choice([f"Locate the {c} square in the image. Give its bounding box.",
                    f"Where is the {c} square? Give the bounding box.",
                    f"Find the {c} square and output its bounding box coordinates."])
    boxed = f"<|begin_of_box|>[[{box[0]},{box[1]},{box[2]},{box[3]}]]<|end_of_box|>"
    answer = rng.choice([boxed, boxed, f"The {c} square is at {boxed}."])

    def judge(m: Message) -> bool:
        # 0.5: --glmv-iou-threshold's default (lifecycle.config.Settings), not imported: it needs pytest, which
        # the training machine need not have
        return j.box_overlaps(str(m.get("content") or ""), box, 0.5)[0]
    return Example("ground", [user([media.png(scene.render())], q)], {"content": answer}, judge, max_tokens=64,
                   meta={"box": box})


# the task registry lives in tools_tasks (tool, reasoning and needle tasks join these there)
PICTURE_TASKS: dict[str, Callable[[random.Random], Example]] = {
    "colour": colour, "colour_think": lambda r: colour(r, thinking=True), "gif": gif, "shape": shape,
    "count": count, "count_wide": lambda r: count(r, wide=True), "word": word,
    "number": lambda r: word(r, number=True), "which": which, "which_wide": lambda r: which(r, wide=True),
    "which_turns": lambda r: which(r, turns=True), "ground": ground,
}
__all__ = ["Example", "PICTURE_TASKS", "CITIES", "TICKERS", "WEATHER", "WEATHER_CITY", "STOCK", "CONVERT",
           "SAVE_NOTE", "SET_COLOUR", "TIME", "NOTE_TEXT", "call", "calls", "content", "user", "word_answer"]
