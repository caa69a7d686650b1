"""Reasoning output: GLM-4V's hybrid thinking through vLLM's glm45 reasoning parser.

Server-level checks hold for any weights: with random weights the model never closes `</think>`, so a
thinking-on answer is all reasoning with content null and finish_reason "length"; they judge where text
lands, never what it says. Behaviour checks (`behavior`) need a real model.

The reasoning field name the server uses is reported: in the "glmv target" section of the terminal summary,
as the junit property `glmv_reasoning_field`, and as `glmv_target.reasoning_field` ("reasoning",
"reasoning_content", "both" or None) for plugins that build a report.
"""
from __future__ import annotations

import json
import warnings
from typing import Any, Callable

import httpx
import pytest

from pytest_glmv.kit import evidence
from pytest_glmv.kit import judges as j
from pytest_glmv.kit.evidence import Exchange
from pytest_glmv.kit.media import image_part, png_url, square
from pytest_glmv.kit.reasoning import (
    BOX_TOKENS,
    CALL_MARKUP,
    FIELDS,
    THINK_TAGS,
    content_of,
    found_markup,
    judge_field,
    reasoning_of,
    stream_view,
    texts,
)

pytestmark = pytest.mark.reasoning

QUESTION = "What is 17 + 25? Work it out step by step."
OFF = {"chat_template_kwargs": {"enable_thinking": False}}
WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TOOL_QUESTION = "What is the weather in Paris today? Use the get_weather tool."


class LegacyReasoningField(UserWarning):
    """The server sends reasoning only under the legacy name `reasoning_content`."""


# -- shared answers: each request is sent once per module and judged by several checks ----------------
@pytest.fixture(scope="module")
def http(glmv_http_shared: httpx.Client) -> httpx.Client:
    return glmv_http_shared


@pytest.fixture(scope="module")
def ask(glmv_server: Any) -> Callable[..., dict[str, Any]]:
    def body(content: Any, max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
        # greedy with a fixed seed, so a streamed and a non-streamed request produce the same tokens
        return evidence.chat_body(glmv_server.model, content, max_tokens=max_tokens, greedy=True, **extra)
    return body


@pytest.fixture(scope="module")
def thinking_on(http: httpx.Client, ask: Callable[..., dict[str, Any]], glmv_target: Any,
                glmv_settings: Any, glmv_server: Any) -> Exchange:
    ex = evidence.chat(http, ask(QUESTION))
    verdict = judge_field(texts(ex.message), glmv_settings.reasoning_field, glmv_server.version)
    # Reported once per session, whichever check asked first: the terminal summary's target section
    # prints glmv_target.notes.
    if glmv_target.reasoning_field is None and not glmv_target.notes.count(verdict.summary):
        glmv_target.reasoning_field = verdict.name
        glmv_target.notes.append(verdict.summary)
    return ex


@pytest.fixture(scope="module")
def thinking_on_stream(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> Exchange:
    return evidence.stream(http, ask(QUESTION, stream_options={"include_usage": True}))


@pytest.fixture(scope="module")
def thinking_off(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> Exchange:
    return evidence.chat(http, ask(QUESTION, **OFF))


def _ok(ex: Exchange) -> None:
    assert ex.status == 200, f"the request failed\n{ex.evidence()}"


def _hybrid(profile: Any) -> None:
    if profile is not None and profile.thinking == "always":
        pytest.skip(f"profile {profile.name} always thinks: enable_thinking=false does not apply")


# -- server-level ---------------------------------------------------------------------------------
def test_reasoning_in_its_own_field(thinking_on: Exchange) -> None:
    _ok(thinking_on)
    msg = thinking_on.message
    reasoning, content = reasoning_of(msg), content_of(msg)
    assert reasoning, f"thinking is on (the default) but neither `reasoning` nor `reasoning_content` " \
                      f"carries text\n{thinking_on.evidence()}"
    tags = found_markup(content, THINK_TAGS)
    assert not tags, f"think tags {tags} inside content: the reasoning parser did not split\n{thinking_on.evidence()}"
    assert not (len(reasoning.strip()) >= 20 and reasoning.strip() in content), \
        f"the reasoning text is repeated inside content\n{thinking_on.evidence()}"
    # content may be null: random weights never close </think> and stop at max_tokens ("length")


def test_reasoning_field_name(thinking_on: Exchange, glmv_settings: Any, glmv_server: Any,
                              record_property: Callable[[str, object], None]) -> None:
    """The field must be the one clients read: what --glmv-reasoning-field says, else what the release the
    server reports sends (a vLLM from 0.16.0 on sends `reasoning`; legacy-only there is a fault). Only a
    server that reports no release gets a warning for a legacy-only answer."""
    _ok(thinking_on)
    verdict = judge_field(texts(thinking_on.message), glmv_settings.reasoning_field, glmv_server.version)
    record_property("glmv_reasoning_field", verdict.name or "none")
    print(verdict.summary)
    assert verdict.ok, f"{verdict.summary}\n{thinking_on.evidence()}"
    if verdict.legacy_only and verdict.expected == "auto" and verdict.release_unknown:
        warnings.warn(LegacyReasoningField(verdict.summary + "; the server reports no release (/version), so "
                                           "whether its vLLM should send `reasoning` is unknown; pass "
                                           "--glmv-reasoning-field reasoning_content to state that your clients "
                                           "expect it"), stacklevel=1)


def test_thinking_off_gives_direct_answer(thinking_off: Exchange, glmv_profile: Any) -> None:
    _hybrid(glmv_profile)
    _ok(thinking_off)
    msg = thinking_off.message
    assert not texts(msg), f"enable_thinking=false, yet the answer carries reasoning " \
                           f"{sorted(texts(msg))}: the toggle was ignored\n{thinking_off.evidence()}"
    assert content_of(msg).strip(), f"enable_thinking=false gave no direct answer in content\n{thinking_off.evidence()}"
    details = (thinking_off.json or {}).get("usage", {}).get("completion_tokens_details") or {}
    assert not details.get("reasoning_tokens"), \
        f"enable_thinking=false, yet usage counts reasoning tokens\n{thinking_off.evidence()}"


def test_no_think_tags_in_output(thinking_on: Exchange, thinking_off: Exchange, thinking_on_stream: Exchange) -> None:
    for ex in (thinking_on, thinking_off, thinking_on_stream):
        _ok(ex)
    view = stream_view(thinking_on_stream.events)
    seen = {"thinking on, content": content_of(thinking_on.message),
            "thinking on, reasoning": reasoning_of(thinking_on.message),
            "thinking off, content": content_of(thinking_off.message),
            "thinking off, reasoning": reasoning_of(thinking_off.message),
            "streamed content": view.content, "streamed reasoning": view.reasoning_text}
    for where, text in seen.items():
        tags = found_markup(text, THINK_TAGS)
        ex = thinking_on_stream if where.startswith("streamed") else thinking_off if "off" in where else thinking_on
        assert not tags, f"{where} holds {tags}\n{ex.evidence()}"


def test_box_tokens_stay_out_of_reasoning(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> None:
    content = [image_part(png_url(square("red"))),
               {"type": "text", "text": "Where is the red square? Give its bounding box."}]
    ex = evidence.chat(http, ask(content, max_tokens=256))
    _ok(ex)
    for name, text in texts(ex.message).items():
        leaked = found_markup(text, BOX_TOKENS)
        assert not leaked, f"box tokens {leaked} leak into `{name}`\n{ex.evidence()}"


def test_streamed_reasoning_matches_non_streamed(thinking_on: Exchange, thinking_on_stream: Exchange) -> None:
    _ok(thinking_on)
    _ok(thinking_on_stream)
    view = stream_view(thinking_on_stream.events)
    ev = thinking_on_stream.evidence()
    assert not view.reasoning_after("content"), f"a reasoning delta came after content had started\n{ev}"
    msg = thinking_on.message
    assert view.reasoning == texts(msg), (
        f"streamed reasoning differs from the non-streamed answer (greedy, same seed):\n"
        f"  streamed     {json.dumps(view.reasoning)[:300]}\n  non-streamed {json.dumps(texts(msg))[:300]}\n{ev}")
    assert view.content == content_of(msg), (
        f"streamed content differs from the non-streamed answer (greedy, same seed):\n"
        f"  streamed     {view.content[:300]!r}\n  non-streamed {content_of(msg)[:300]!r}\n{ev}")


def _check_call_answer(reasoning: str, content: str, calls: list[dict[str, Any]], ex: Exchange) -> None:
    markup = found_markup(reasoning, CALL_MARKUP)
    assert not markup, f"tool-call markup {markup} swallowed into the reasoning\n{ex.evidence()}"
    markup = found_markup(content, CALL_MARKUP)
    assert not markup, f"tool-call markup {markup} left in content instead of tool_calls\n{ex.evidence()}"
    for call in calls:  # random weights may never leave the reasoning; a call that comes must be whole
        assert call["name"] == "get_weather", f"a call to an unknown tool {call['name']!r}\n{ex.evidence()}"
        args = json.loads(call["arguments"] or "null")
        assert isinstance(args, dict), f"tool arguments are not a JSON object\n{ex.evidence()}"


def test_tool_call_after_reasoning_is_a_tool_call(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> None:
    ex = evidence.chat(http, ask(TOOL_QUESTION, max_tokens=128, tools=WEATHER, tool_choice="auto"))
    _ok(ex)
    msg = ex.message
    calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
             for c in msg.get("tool_calls") or []]
    _check_call_answer(reasoning_of(msg), content_of(msg), calls, ex)


def test_streamed_tool_call_after_reasoning_is_a_tool_call(http: httpx.Client,
                                                           ask: Callable[..., dict[str, Any]]) -> None:
    ex = evidence.stream(http, ask(TOOL_QUESTION, max_tokens=128, tools=WEATHER, tool_choice="auto"))
    _ok(ex)
    view = stream_view(ex.events)
    _check_call_answer(view.reasoning_text, view.content, evidence.streamed_tool_calls(ex.events), ex)
    assert not view.reasoning_after("tool"), f"a reasoning delta came after the tool call had started\n{ex.evidence()}"


def _tool_chain(reasoning: dict[str, str]) -> list[dict[str, Any]]:
    """A tool-call turn and its result: GLM's template keeps reasoning only after the last user turn."""
    call = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    return [{"role": "user", "content": TOOL_QUESTION},
            {"role": "assistant", "content": "", "tool_calls": [call], **reasoning},
            {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21 C"}]


@pytest.fixture(scope="module")
def history_baseline(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> Exchange:
    return evidence.chat(http, {**ask("", max_tokens=16, tools=WEATHER), "messages": _tool_chain({})})


@pytest.mark.parametrize("name", FIELDS)
def test_history_reasoning_is_accepted(http: httpx.Client, ask: Callable[..., dict[str, Any]],
                                       history_baseline: Exchange, name: str) -> None:
    _ok(history_baseline)
    thought = "The user wants the weather in Paris; get_weather gives it, so I call it with city Paris."
    ex = evidence.chat(http, {**ask("", max_tokens=16, tools=WEATHER), "messages": _tool_chain({name: thought})})
    assert ex.status == 200, f"an earlier turn's reasoning sent back under `{name}` was refused\n{ex.evidence()}"
    # Accepted is not enough: vLLM once dropped `reasoning_content` silently (vllm#38488). The turn sits after
    # the last user turn, so the template must render its reasoning: the prompt grows.
    with_r, without = ex.json["usage"]["prompt_tokens"], history_baseline.json["usage"]["prompt_tokens"]
    assert with_r > without, (f"reasoning sent back under `{name}` never reached the prompt ({with_r} prompt tokens "
                              f"with it, {without} without)\n{ex.evidence()}")


# -- behaviour (real weights) -----------------------------------------------------------------------
STEP_QUESTION = "What is 17 * 23?"


@pytest.fixture(scope="module")
def stepwise_on(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> Exchange:
    return evidence.chat(http, ask(STEP_QUESTION, max_tokens=2048))


@pytest.mark.behavior
def test_stepwise_question_is_reasoned(stepwise_on: Exchange) -> None:
    """Accepts any non-empty reasoning; when the answer finished, the result it ends on must be 391, the way
    GLM-4.5V writes it: "391", "17 × 23 = 391.", "391 (17 × 23)", steps that end on 391, boxed. Refuses a wrong or
    hedged result. An answer cut by max_tokens is judged on its reasoning only (the 2048-token budget is the
    check's, not the model's)."""
    _ok(stepwise_on)
    msg = stepwise_on.message
    assert reasoning_of(msg).strip(), f"a question that needs a step got no reasoning\n{stepwise_on.evidence()}"
    if stepwise_on.choice.get("finish_reason") == "stop":
        said = j.final_number(content_of(msg), operands=(17, 23))
        assert said == 391, f"the answer misses 17 * 23 = 391: it ends on {said}\n{stepwise_on.evidence()}"


@pytest.mark.behavior
def test_thinking_off_answer_is_shorter(http: httpx.Client, ask: Callable[..., dict[str, Any]],
                                        stepwise_on: Exchange, glmv_profile: Any) -> None:
    """Counts completion tokens, reads no words: any wording passes; thinking off must cost fewer tokens than on."""
    _hybrid(glmv_profile)
    off = evidence.chat(http, ask(STEP_QUESTION, max_tokens=2048, **OFF))
    _ok(stepwise_on)
    _ok(off)
    on_tokens = stepwise_on.json["usage"]["completion_tokens"]
    off_tokens = off.json["usage"]["completion_tokens"]
    assert off_tokens < on_tokens, (f"thinking off took {off_tokens} completion tokens, thinking on {on_tokens}: "
                                    f"the toggle changed nothing\n{stepwise_on.evidence()}\n{off.evidence()}")


@pytest.mark.behavior
def test_thinking_model_always_reasons(http: httpx.Client, ask: Callable[..., dict[str, Any]],
                                       glmv_profile: Any) -> None:
    """Accepts any non-empty reasoning, with or without enable_thinking: false (GLM-4.1V-Thinking ignores it)."""
    if glmv_profile is None or glmv_profile.thinking != "always":
        pytest.skip("only GLM-4.1V-Thinking (profile thinking 'always') always reasons")
    for extra in ({}, OFF):
        ex = evidence.chat(http, ask(STEP_QUESTION, max_tokens=2048, **extra))
        _ok(ex)
        assert reasoning_of(ex.message).strip(), f"GLM-4.1V-Thinking answered without reasoning\n{ex.evidence()}"


@pytest.mark.behavior
def test_reasoning_then_tool_call(http: httpx.Client, ask: Callable[..., dict[str, Any]]) -> None:
    """Accepts one get_weather call after any non-empty reasoning, with text beside it or not; the arguments are
    the tool checks' business. Refuses no call, two calls, or a call with no reasoning (thinking is on)."""
    ex = evidence.chat(http, ask(TOOL_QUESTION, max_tokens=1024, tools=WEATHER, tool_choice="auto"))
    _ok(ex)
    msg = ex.message
    names = [c["function"]["name"] for c in msg.get("tool_calls") or []]
    assert names == ["get_weather"], f"expected one get_weather call after reasoning, got {names}\n{ex.evidence()}"
    assert reasoning_of(msg).strip(), f"the tool call came without reasoning although thinking is on\n{ex.evidence()}"
