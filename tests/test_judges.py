"""The readings of pytest_glmv/kit/judges.py, fed what a real GLM-4.5V writes: each `behavior` check's judge must
accept the right answer in every shape GLM gives it (case, punctuation, markdown, a sentence around it, box markup
it adds unasked, number words, grouped digits) and refuse wrong and hedged answers. And the training tasks judge
with the same functions, so a task's trained answers (its GLM-style phrasings) pass the check's reading."""
from __future__ import annotations

import random

import pytest

from pytest_glmv.kit import judges as j
from pytest_glmv.tiny.train import tasks

B, E = j.BOX_OPEN, j.BOX_CLOSE


@pytest.mark.parametrize("said", ["Red", "red", "Red.", "**Red**", f"{B}Red{E}", "The square is red.",
                                  "The square in the image is red.", "It's a dark red square on a white background.",
                                  "RED"])
def test_colour_accepts_glm_phrasings(said: str) -> None:
    assert j.names_colour(said, "red")


@pytest.mark.parametrize("said", ["Blue", "Red or orange.", "The square is red and blue.", "Reddish.",
                                  "I cannot tell.", "", f"{B}Blue{E}"])
def test_colour_refuses_wrong_or_hedged(said: str) -> None:
    assert not j.names_colour(said, "red")


@pytest.mark.parametrize(("said", "n"), [
    ("3", 3), ("Three.", 3), ("There are 3 squares.", 3), ("There are three squares in the image.", 3),
    (f"{B}4{E}", 4), ("There is one square.", 1), ("1", 1), ("**5**", 5),
    ("There are 2 red squares and 1 blue square, 3 squares in total.", 3),
    ("I count a total of 4 squares.", 4), ("There are 3 squares: one red, one green and one blue.", 3),
    ("There are 2 squares with white space between them.", 2),
    ("3 - one red, one blue and one green.", 3),
])
def test_count_accepts_glm_phrasings(said: str, n: int) -> None:
    assert j.count_stated(said) == n


@pytest.mark.parametrize("said", ["3 or 4", "About 3 squares.", "2-3", "three or four", "Between 2 and 4 squares.",
                                  "There are several squares.", "At least 3."])
def test_count_refuses_hedges_and_no_number(said: str) -> None:
    assert j.count_stated(said) is None


def test_count_takes_no_pronoun_for_one() -> None:
    assert j.count_stated("The first one is red; there are 4 squares.") == 4


@pytest.mark.parametrize(("said", "which"), [
    ("Second", 2), ("second.", 2), ("The second image.", 2), ("Image 2", 2), ("2", 2), ("the 2nd one", 2),
    (f"{B}First{E}", 1), ("The first image shows the red square.", 1), ("The first, right?", 1),
    ("The latter.", 2), ("Picture one.", 1),
])
def test_which_image_accepts_glm_phrasings(said: str, which: int) -> None:
    assert j.ordinal(said) == which


@pytest.mark.parametrize("said", ["The first image is blue and the second is red.", "Both.", "Neither.", "1 or 2"])
def test_which_image_refuses_both_or_none(said: str) -> None:
    assert j.ordinal(said) is None


@pytest.mark.parametrize("said", ["CAT", "cat", "Cat.", '"CAT"', 'The word is "CAT".', f"{B}CAT{E}",
                                  "The image says CAT.", "The text reads: Cat"])
def test_word_accepts_glm_phrasings(said: str) -> None:
    assert j.reads_word(said, "CAT")


@pytest.mark.parametrize("said", ["CATS", "CAR", "concatenate", "C A T", ""])
def test_word_refuses_other_words(said: str) -> None:
    assert not j.reads_word(said, "CAT")


def test_word_of_digits_is_not_found_in_a_longer_number() -> None:
    assert j.reads_word("The image says 42.", "42") and not j.reads_word("1423", "42")


TRUTH = (100.0, 200.0, 300.0, 400.0)


@pytest.mark.parametrize("said", [f"{B}[[100,200,300,400]]{E}", f"{B}[100, 200, 300, 400]{E}",
                                  f"The red square is at {B}[[105,198,302,395]]{E}.",
                                  f"{B}[(100,200),(300,400)]{E}", f"{B}(98,201,299,404){E}",
                                  f"{B}[[100,200,300,400]]{E} Here it is: {B}[[100,200,300,400]]{E}"])
def test_box_accepts_glm_grounding(said: str) -> None:
    assert j.box_overlaps(said, TRUTH, 0.5)[0]


@pytest.mark.parametrize("said", ["[[100,200,300,400]]",  # no box markup: stripped special tokens
                                  f"{B}[[600,600,900,900]]{E}",
                                  f"{B}[[100,200,300,400]]{E} and {B}[[600,600,900,900]]{E}",  # a second answer
                                  f"{B}[[0,0,1000,1000]]{E}", f"{B}Red{E}"])
def test_box_refuses_misses_and_sprays(said: str) -> None:
    assert not j.box_overlaps(said, TRUTH, 0.5)[0]


def test_a_boxed_prose_answer_is_no_coordinate_box() -> None:
    assert j.coordinate_boxes(f"{B}Blue{E}") == [] and j.coordinate_boxes(f"{B}[1,2,3,4]{E}") == ["[1,2,3,4]"]


@pytest.mark.parametrize(("said", "n"), [
    ("4", 4), ("Four.", 4), ("2 + 2 = 4.", 4), ("The answer is 4.", 4), (f"2 + 2 = {B}4{E}", 4),
    ("17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.", 391), (f"So 17 × 23 = {B}391{E}. Let me know!", 391),
    ("17 × 23 = 391", 391), ("The result is 391.", 391), ("The answer is 391 (17 × 23).", 391),
])
def test_final_number_accepts_glm_results(said: str, n: int) -> None:
    assert j.final_number(said, operands=(2, 17, 23)) == n


def test_final_number_when_the_result_is_an_operand() -> None:
    assert j.final_number("5 + 0 = 5.", operands=(5, 0)) == 5 and j.final_number("5", operands=(5, 0)) == 5


@pytest.mark.parametrize("said", ["2 + 2 = 5", "4 or 5", "14", "40", "I don't know.", "2 + 2", "2"])
def test_final_number_refuses_wrong_results(said: str) -> None:
    assert j.final_number(said, operands=(2,)) != 4


@pytest.mark.parametrize("said", ["It is 17 °C with light rain in Paris and Lyon.", "17°C, light rain.",
                                  "Both cities: 17 degrees and light rain.", "seventeen degrees", f"{B}17 °C{E}",
                                  "Paris: 17.0 °C"])
def test_tool_result_number_accepts_glm_phrasings(said: str) -> None:
    assert j.mentions_number(said, 17)


@pytest.mark.parametrize("said", ["117 °C", "In 2017 it rained.", "It is 71 °C.", "Light rain in both cities."])
def test_tool_result_number_refuses_other_numbers(said: str) -> None:
    assert not j.mentions_number(said, 17)


@pytest.mark.parametrize("said", ["123456", "The magic number is 123456.", "123,456", f"{B}123456{E}",
                                  "The magic number mentioned in the document is **123456**."])
def test_needle_accepts_glm_phrasings(said: str) -> None:
    assert j.mentions_number(said, 123456)


@pytest.mark.parametrize("said", ["1234567", "12345", "The magic number is 123465."])
def test_needle_refuses_near_misses(said: str) -> None:
    assert not j.mentions_number(said, 123456)


@pytest.mark.parametrize("made", [
    [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})],
    [("get_weather", {"city": "tokyo"}), ("get_weather", {"city": "Paris, France", "days": 1})],
])
def test_two_calls_accept_glm_calls(made: list[tuple[str, object]]) -> None:
    assert j.one_call_per_city(made, ["Paris", "Tokyo"])


@pytest.mark.parametrize("made", [
    [("get_weather", {"city": "Paris and Tokyo"}), ("get_weather", {})],  # one call for both: a miss
    [("get_weather", {}), ("get_weather", {}), ("get_weather", {})],  # vLLM 0.32's strict tool grammar
    [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"}), ("get_weather", {"city": "Paris"})],
    [("get_weather", {"city": "Paris"}), ("get_stock_price", {"ticker": "Tokyo"})],
    [("get_weather", {"city": "Paris"})],
])
def test_two_calls_refuse_wrong_calls(made: list[tuple[str, object]]) -> None:
    assert not j.one_call_per_city(made, ["Paris", "Tokyo"])


@pytest.mark.parametrize("task", ["colour", "gif", "count", "word", "which", "ground"])
def test_training_judges_read_as_the_checks_do(task: str) -> None:
    """The picture tasks judge with the checks' readings: every trained answer (bare, capitalised, with a stop,
    boxed, in a sentence) passes, and the same answer for another picture fails."""
    rng = random.Random(5)
    examples = [tasks.PICTURE_TASKS[task](rng) for _ in range(40)]
    for ex in examples:
        assert ex.judge({"content": ex.target["content"], "reasoning": None, "tool_calls": []}), (task, ex.target)
    wrong = [ex for ex in examples if ex.target["content"] != examples[0].target["content"]
             and not examples[0].judge({"content": ex.target["content"], "reasoning": None, "tool_calls": []})]
    assert wrong, f"{task}: the judge accepts every other example's answer"
