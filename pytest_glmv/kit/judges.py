"""How a GLM-4.5V answer is read: one reading per behaviour check, shared by suites/ and the tiny model's
training evaluation (pytest_glmv/tiny/train/tasks.py), so that what training counts as right is what the check
passes, and the other way round.

Each reading accepts what a real GLM-4.5V writes for a right answer and nothing a wrong or hedged answer writes:
case, punctuation and markdown around a word; the answer alone or in a sentence; GLM's box markup around a final
answer (`<|begin_of_box|>Red<|end_of_box|>`, which GLM-4.5V adds unasked); number words as well as digits, and
digit grouping in long numbers (`123,456`). What it refuses: a second answer beside the right one (two colours,
both images, "3 or 4"), a word inside a longer word (CAT in "CATS"), a box anywhere but on the object.
tests/test_judges.py feeds each one realistic GLM-4.5V phrasings, right and wrong.

Pure stdlib (+ kit.media's colour table): training imports it where neither pytest nor httpx is installed.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from .media import COLOURS

# -- GLM's box markup ---------------------------------------------------------------------------------------
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"
_BOXED = re.compile(re.escape(BOX_OPEN) + r"(.*?)" + re.escape(BOX_CLOSE), re.S)
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
# [x1,y1,x2,y2], [[x1,y1,x2,y2]], (x1,y1,x2,y2), and the point-pair style [(x1,y1),(x2,y2)]
_FOUR = re.compile(r"[\[(]+" + _NUM + "," + _NUM + r"[\])]*\s*,\s*[\[(]*" + _NUM + "," + _NUM + r"[\])]+")


def boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every [x1,y1,x2,y2] inside GLM's box markup; bracket styles vary ([..], [[..]], (..), [(x,y),(x,y)])."""
    out = []
    for inner in _BOXED.findall(text or ""):
        for m in _FOUR.finditer(inner):
            x1, y1, x2, y2 = (float(g) for g in m.groups())
            out.append((x1, y1, x2, y2))
    return out


def coordinate_boxes(text: str) -> list[str]:
    """Box markup whose content is coordinates (a grounding answer), as opposed to a boxed prose answer."""
    return [inner for inner in _BOXED.findall(text or "") if _FOUR.search(inner)]


def unboxed(text: str) -> str:
    return (text or "").replace(BOX_OPEN, "").replace(BOX_CLOSE, "")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_overlaps(text: str, truth: Sequence[float], threshold: float) -> tuple[bool, float]:
    """(right, worst IoU): the answer boxes the one object, every box it gives at `threshold` or more.

    Every box, not the best: the scenes hold one object, so a second box elsewhere is a second answer, and a
    model spraying boxes would otherwise pass by luck. The same box twice (GLM repeats it in a sentence) is fine.
    """
    found = boxes(text)
    worst = min((iou(b, truth) for b in found), default=0.0)
    return bool(found) and worst >= threshold, worst


# -- words and numbers ------------------------------------------------------------------------------------
def colours_named(text: str) -> set[str]:
    """The palette's colours an answer names, as whole words ("dark red" names red; "reddish" names none)."""
    words = set(re.findall(r"[a-z]+", unboxed(text).lower()))
    return {c for c in COLOURS if c in words}


def names_colour(text: str, colour: str) -> bool:
    """The answer names `colour` and no other colour of the palette ("Red", "The square is red.", boxed, bold)."""
    return colours_named(text) == {colour}


def reads_word(text: str, word: str) -> bool:
    """`word` stands in the answer as a word of its own, any case, quoted or not ("CAT", 'The word is "Cat".');
    inside a longer word it does not count ("CATS", "concatenate")."""
    return re.search(r"(?<![^\W_])" + re.escape(word) + r"(?![^\W_])", unboxed(text), re.I) is not None


_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
# "one" after these is a pronoun ("the first one", "an easy one"), not a count
_PRONOUN_AFTER = {"the", "this", "that", "each", "every", "any", "no", "an", "a", "which", "another", "only", "right",
                  "wrong", "easy", "first", "second", "last", "other", "same"}
# a digit run with optional thousands grouping ("123,456", "123 456" with a no-break or thin space) and decimals
# (a minus only after a space, "(" or the start: "2-3" is two numbers, not 2 and -3)
_NUMBER = re.compile(r"(?<![\d.])((?:(?<![^\s(])-)?(?:\d{1,3}(?:[,\u00a0\u202f']\d{3})+|\d+)(?:\.\d+)?)(?!\d)|([a-z]+)")


def numbers(text: str) -> list[float]:
    """The numbers an answer states, in order: digits (grouped or not, decimals kept) and number words up to
    twenty. 17.0 == 17, so callers compare with ints."""
    out: list[float] = []
    prev = ""
    for digits, word in _NUMBER.findall(unboxed(text).lower()):
        if digits:
            value = float(re.sub(r"[,\u00a0\u202f']", "", digits))
            out.append(int(value) if value.is_integer() else value)
        elif word in _WORDS and not (word == "one" and prev in _PRONOUN_AFTER):
            out.append(_WORDS[word])
        prev = word
    return out


def mentions_number(text: str, n: float) -> bool:
    """`n` is one of the numbers the answer states (17 in "It is 17 °C", 123456 in "123,456"; not in "117")."""
    return n in numbers(text)


def final_number(text: str, operands: Iterable[float] = ()) -> float | None:
    """The result an answer ends on: the boxed number where GLM boxes one (its final answer), else the last number
    it states that is not one of the question's `operands` ("17 * 23 = 17 * 20 + 17 * 3 = 391." -> 391; "The
    answer is 391 (17 × 23)." -> 391; "2 + 2 = 4." -> 4; "4 or 5" -> 5, wrong), or its last number where every
    number is an operand ("5 + 0 = 5." -> 5; "2" for 2 + 2 -> 2, wrong)."""
    boxed = [x for inner in _BOXED.findall(text or "") for x in numbers(inner)]
    given = set(operands)
    stated = boxed or [x for x in numbers(text) if x not in given] or numbers(text)
    return stated[-1] if stated else None


_ANY = r"(?:\d+|" + "|".join(_WORDS) + r")\b"
# a count offered with a way out: "about 3", "between 2 and 4", "3 or 4", "2-3", "three or four"
_HEDGE = re.compile(r"\b(?:about|around|approximately|roughly|maybe|perhaps|at least|at most|between|more than|"
                    r"fewer than|less than|up to)\s+" + _ANY + r"|\b" + _ANY + r"\s*(?:or|to)\s*" + _ANY +
                    r"|\d[-–]\d")  # a range is written tight ("2-3"); "3 - one red, ..." is a count and its breakdown
_TOTAL = re.compile(r"(\w+)\s+(?:\w+\s+)?in total|total of\s+(\w+)|(\w+)\s+(?:\w+\s+)?altogether")


def count_stated(text: str) -> float | None:
    """The count an answer gives, None when it gives none or hedges ("3 or 4", "about 3", "2-3").

    A boxed number is the answer; else a total where the answer says one ("2 red and 1 blue, 3 in total"); else
    the first number ("There are three squares: one red, ...")."""
    body = unboxed(text).lower()
    if _HEDGE.search(body):
        return None
    boxed = [x for inner in _BOXED.findall(text or "") for x in numbers(inner)]
    if boxed:
        return boxed[0] if len(set(boxed)) == 1 else None
    total = _TOTAL.search(body)
    if total:
        said = numbers(next(g for g in total.groups() if g))
        if said:
            return said[0]
    stated = numbers(body)
    return stated[0] if stated else None


def ordinal(text: str) -> int | None:
    """Which of two images an answer points at: 1 or 2 ("First", "the second image", "Image 2", "2nd", "the
    latter"), None when unclear or both. Left/right are not read: images in a chat have an order, not sides, and
    "right" is as often "correct"."""
    low = unboxed(text).lower()
    hits = set()
    if re.search(r"\b(first|1st|former)\b|\b(image|picture) ?(#|no\.? ?)?(1|one)\b", low):
        hits.add(1)
    if re.search(r"\b(second|2nd|latter)\b|\b(image|picture) ?(#|no\.? ?)?(2|two)\b", low):
        hits.add(2)
    if not hits:
        hits = {int(b) for b in re.findall(r"\b[12]\b", low)}
    return hits.pop() if len(hits) == 1 else None


# -- tool calls ---------------------------------------------------------------------------------------------
def same_city(value: Any, city: str) -> bool:
    """A call's city argument names `city`: any case, a country after a comma ("Paris, France"); one city only."""
    return isinstance(value, str) and value.split(",")[0].strip().lower() == city.lower()


def cities_called(calls: Iterable[tuple[str, Any]], tool: str = "get_weather") -> list[str]:
    """The `city` of each call to `tool`, given (name, decoded arguments) pairs; "" where it has none."""
    return [str(args.get("city", "")) if isinstance(args, dict) else "" for name, args in calls if name == tool]


def one_call_per_city(calls: Sequence[tuple[str, Any]], cities: Sequence[str], tool: str = "get_weather") -> bool:
    """Exactly one `tool` call per city asked about, and no other call ("Paris, France" counts as Paris; one call
    for "Paris and Tokyo" counts for neither)."""
    got = cities_called(calls, tool)
    return len(got) == len(calls) == len(cities) and all(sum(same_city(g, c) for g in got) == 1 for c in cities)
