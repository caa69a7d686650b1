"""Multimodal behaviour: does the model answer what a synthetic picture shows?

These need real weights (marked `behavior`): a random-weight model answers
nonsense. Pictures are generated with known answers (colour, count, word, box);
hypothesis varies colours, positions and sizes with few examples, since every
example is paid for in GPU time. Thinking is turned off where the model allows
it, except in the one check that looks at the reasoning.

Answers are read as a real GLM-4.5V writes them (pytest_glmv/kit/judges.py, the readings training uses too): any
case, a full stop, markdown, a sentence around the answer, and GLM's box markup around a final answer, which it adds
unasked; each check's docstring says what else it accepts and what it refuses.
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pytest_glmv.kit import judges as j
from pytest_glmv.kit import media
from pytest_glmv.kit import vision as v
from pytest_glmv.kit.evidence import Exchange
from pytest_glmv.kit.multimodal import MM, mm_fixture, reasoning_of, user  # noqa: F401 (mm_fixture: the `mm` fixture)

pytestmark = [pytest.mark.multimodal, pytest.mark.behavior]

# No shrink phase: each shrinking step is another paid request, and the first failing example already carries
# its evidence (what was sent, the status, the answer's start).
FEW = settings(max_examples=4, deadline=None, derandomize=True, database=None,
               phases=[Phase.explicit, Phase.reuse, Phase.generate],
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Colours a model names unambiguously (black and purple/orange drift into "dark"/"violet"/"amber").
CLEAR = ("red", "green", "blue", "yellow")


def answer(ex: Exchange) -> str:
    """The final answer text with GLM's box markup removed (GLM may box a plain answer)."""
    content = ex.message.get("content")
    assert ex.status == 200 and isinstance(content, str) and content.strip(), \
        f"expected a 200 with a final answer in content\n{ex.evidence()}"
    return j.unboxed(content)


@st.composite
def placed_square(draw: Any, width: int = 448, height: int = 336) -> media.Scene:
    colour = draw(st.sampled_from(CLEAR))
    side = draw(st.integers(min_value=min(width, height) // 6, max_value=min(width, height) // 2))
    x = draw(st.integers(min_value=0, max_value=width - side))
    y = draw(st.integers(min_value=0, max_value=height - side))
    return media.Scene(width, height, (media.Shape(colour, (x, y, x + side, y + side)),))


@FEW
@given(scene=placed_square())
def test_names_the_colour_of_a_shape(mm: MM, scene: media.Scene) -> None:
    """Accepts "Red", "red.", "The square is red.", "dark red", boxed or bold: the colour as a word of the answer.
    Refuses a second palette colour ("red or orange": a hedge) and near-words ("reddish"): the prompt asks for one
    word, and GLM-4.5V names the four clear colours plainly. The white background may be named (not in the palette)."""
    colour = scene.shapes[0].colour
    ex = mm.behave([user([media.png_url(scene)], "What colour is the square in the image? Answer with one word.")])
    said = answer(ex)
    named = j.colours_named(said)
    assert j.names_colour(said, colour), (
        f"a {colour} square at {scene.shapes[0].box} on white: the answer names {sorted(named) or 'no colour'}"
        f"\n{ex.evidence()}")


@FEW
@given(n=st.integers(min_value=1, max_value=5), seed=st.integers(min_value=0, max_value=999))
def test_counts_the_shapes(mm: MM, n: int, seed: int) -> None:
    """Accepts digits or words ("3", "Three.", "There are three squares."), a boxed number, and a total after a
    breakdown ("2 red and 1 blue, 3 squares in total"). Refuses a hedge ("3 or 4", "about 3", "2-3"): a count
    offered with a way out is no count."""
    scene = media.scatter(n, seed=seed, colours=CLEAR)
    ex = mm.behave([user([media.png_url(scene)], "How many squares are in the image? Answer with a number.")])
    said = j.count_stated(answer(ex))
    assert said == n, f"{n} separated squares: the answer's count is {said if said is not None else 'missing'}\n" \
                      f"{ex.evidence()}"


@FEW
@given(target_second=st.booleans(), pair=st.permutations(CLEAR).map(lambda p: p[:2]))
def test_tells_which_image_shows_a_colour(mm: MM, target_second: bool, pair: list[str]) -> None:
    """Accepts "Second", "The second image.", "Image 2", "2nd", "the latter", a bare "2". Refuses an answer that
    points at both images, and reads no left/right ("right" is as often "correct"; images in a chat have an order)."""
    wanted, other = pair
    scenes = [media.square(other, 224), media.square(wanted, 224)]
    if not target_second:
        scenes.reverse()
    question = f"Which of the two images shows a {wanted} square, the first or the second? Answer in one word."
    ex = mm.behave([user([media.png_url(s) for s in scenes], question)])
    said = j.ordinal(answer(ex))
    expected = 2 if target_second else 1
    assert said == expected, f"the {wanted} square is in image {expected}; the answer points at {said}\n" \
                             f"{ex.evidence()}"


@FEW
@given(word=st.sampled_from(["CAT", "LAMP", "RIVER", "GLM", "HELLO"]))
def test_reads_a_rendered_word(mm: MM, word: str) -> None:
    """Accepts the word in any case, quoted or in a sentence ('The word is "Cat".'). Refuses it inside a longer
    word ("CATS", "LAMPS"): a reading that adds letters is a misreading."""
    url = media.data_url(v.word_png(word), "image/png")
    ex = mm.behave([user([url], "What word is written in the image? Answer with the word only.")])
    said = answer(ex)
    assert j.reads_word(said, word), f"the image shows the word {word!r}; the answer is {said[:80]!r}\n" \
                                         f"{ex.evidence()}"


@FEW
@given(scene=placed_square(640, 400))
def test_grounding_box_overlaps_the_truth(mm: MM, scene: media.Scene, glmv_settings: Any) -> None:
    """Accepts GLM's box markup in any bracket style ([x1,y1,x2,y2], [[...]], [(x1,y1),(x2,y2)]) on its 0-1000
    scale, alone or in a sentence, the same box repeated. Refuses coordinates without the markup (a server that
    strips GLM's special tokens breaks every client that reads boxes) and any box off the one square: every box
    must overlap, so a model spraying boxes does not pass by luck."""
    colour = scene.shapes[0].colour
    ex = mm.behave([user([media.png_url(scene)], f"Locate the {colour} square in the image. Give its bounding "
                                                 f"box.")], max_tokens=128)
    content = ex.message.get("content") or ""
    found = j.boxes(content)
    assert found, (f"no box in GLM's {j.BOX_OPEN}[x1,y1,x2,y2]{j.BOX_CLOSE} markup in the grounding answer "
                   f"(markup stripped, or no box at all)\n{ex.evidence()}")
    truth = scene.box_1000(0)
    right, worst = j.box_overlaps(content, truth, glmv_settings.iou_threshold)
    assert right, (
        f"the {colour} square is at {truth} (0-1000 scale); the answer's boxes {found} overlap it at IoU "
        f"{worst:.2f} (the worst box) < {glmv_settings.iou_threshold}\n{ex.evidence()}")


def test_gif_is_read_by_its_first_frame(mm: MM) -> None:
    """Accepts "Red" as the colour check does (any case, a sentence, boxed). Refuses an answer naming blue too:
    the second frame is blue, so "red and blue" means every frame was read."""
    data, mime = v.in_format(media.square("red", 224, 0.8), "GIF")  # frame 1 red, frame 2 blue
    ex = mm.behave([user([media.data_url(data, mime)], "What colour is the square in the image? One word.")])
    said = answer(ex)
    named = j.colours_named(said)
    assert j.names_colour(said, "red"), \
        f"an animated GIF whose first frame is red: the answer names {sorted(named)}\n{ex.evidence()}"


def test_no_grounding_box_unless_asked(mm: MM) -> None:
    """Box markup with coordinates belongs to grounding answers; a colour question gets none, thinking or not.
    Accepts a boxed prose answer (`<|begin_of_box|>Blue<|end_of_box|>`: GLM-4.5V boxes its final answers) and
    any wording; refuses only coordinates in box markup, in the reasoning or the answer."""
    ex = mm.behave([user([media.png_url(media.square("blue", 224))], "What colour is the square?")], thinking=True)
    answer(ex)
    leaked = {"reasoning": j.coordinate_boxes(reasoning_of(ex.message)),
              "content": j.coordinate_boxes(ex.message.get("content") or "")}
    assert not any(leaked.values()), f"a colour question got grounding boxes: {leaked}\n{ex.evidence()}"
