"""Chat behaviour through the openai SDK against a launched reference server, plus vLLM's validation."""
from __future__ import annotations

import json
from typing import Any, Iterator

import openai
import pytest

from pytest_glmv.reference.launcher import ReferenceServer

from .conftest import WEATHER_TOOL, chat, chunks

TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "Current local time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"},
                                                    "format": {"type": "string", "enum": ["12h", "24h"]}},
                   "required": ["timezone", "format"]}}}


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ReferenceServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, content: Any, **kw: Any) -> Any:
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model="glmv-reference", messages=[{"role": "user", "content": content}],
                                          **kw)


def test_thinking_on_gives_reasoning_and_answer(client: openai.OpenAI) -> None:
    r = ask(client, "What is 2 + 3?")
    msg = r.choices[0].message
    assert msg.content == "2 + 3 = 5." and msg.reasoning  # type: ignore[attr-defined]
    assert r.usage.completion_tokens_details.reasoning_tokens > 0
    assert r.choices[0].finish_reason == "stop"


def test_thinking_off_answers_directly(client: openai.OpenAI) -> None:
    r = ask(client, "What is 2 + 3?", extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    msg = r.choices[0].message
    assert msg.content == "2 + 3 = 5." and getattr(msg, "reasoning", None) is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_streaming_reassembles_to_the_same_answer(client: openai.OpenAI) -> None:
    full = ask(client, "What is 2 + 3?")
    stream = ask(client, "What is 2 + 3?", stream=True, stream_options={"include_usage": True})
    content, reasoning, usage = "", "", None
    for ch in stream:
        if ch.usage:
            usage = ch.usage
        for c in ch.choices:
            content += c.delta.content or ""
            reasoning += getattr(c.delta, "reasoning", None) or ""
    assert (content, reasoning) == (full.choices[0].message.content, full.choices[0].message.reasoning)  # type: ignore
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_tool_auto_calls_a_matching_tool_with_typed_args(client: openai.OpenAI) -> None:
    r = ask(client, "What's the weather in Paris for 3 days?", tools=[WEATHER_TOOL, TIME_TOOL])
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    (call,) = ch.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


def test_parallel_calls_when_asked_two_things(client: openai.OpenAI) -> None:
    r = ask(client, "Compare the weather in Paris and Tokyo", tools=[WEATHER_TOOL])
    calls = r.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    r = ask(client, "Weather in Paris, and the current time in Europe/Paris in 24h format?",
            tools=[WEATHER_TOOL, TIME_TOOL])
    names = sorted(c.function.name for c in r.choices[0].message.tool_calls)
    assert names == ["get_time", "get_weather"]
    time_args = next(json.loads(c.function.arguments) for c in r.choices[0].message.tool_calls
                     if c.function.name == "get_time")
    assert time_args["format"] == "24h" and set(time_args) == {"timezone", "format"}


def test_tool_choice_modes(client: openai.OpenAI) -> None:
    none = ask(client, "Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="none")
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason == "stop"
    required = ask(client, "Say hello", tools=[WEATHER_TOOL], tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls" and required.choices[0].message.content == ""
    named = ask(client, "Say hello", tools=[WEATHER_TOOL, TIME_TOOL],
                tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].finish_reason == "stop"  # vLLM ends a forced named call with stop
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"


def test_tool_results_are_used(client: openai.OpenAI) -> None:
    first = ask(client, "Weather in Paris?", tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    r = client.chat.completions.create(model="glmv-reference", temperature=0, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"}])
    assert "sunny, 24 C" in r.choices[0].message.content and "get_weather" in r.choices[0].message.content


def test_streamed_tool_call_id_and_name_first(client: openai.OpenAI) -> None:
    stream = ask(client, "Weather in Paris?", tools=[WEATHER_TOOL], stream=True)
    deltas = [tc for ch in stream for c in ch.choices for tc in (c.delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and not deltas[0].function.arguments
    assert json.loads("".join(d.function.arguments or "" for d in deltas[1:])) == {"city": "Paris"}


def test_max_tokens_n_seed_temperature(client: openai.OpenAI) -> None:
    r = ask(client, "Tell me something", max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    greedy = [ask(client, "Tell me something", n=3).choices[i].message.content for i in range(3)]
    assert len(set(greedy)) == 1
    a = ask(client, "Tell me something", n=4, temperature=1.0, seed=7)
    b = ask(client, "Tell me something", n=4, temperature=1.0, seed=7)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1


def test_ignore_eos_generates_to_max_tokens(client: openai.OpenAI) -> None:
    """vLLM's ignore_eos: no stop token ends the answer, it runs to max_tokens; stop strings still cut."""
    short = ask(client, "What is 2 + 3?", max_tokens=128)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 128
    r = ask(client, "What is 2 + 3?", max_tokens=128, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 128
    assert (r.choices[0].message.content or "").startswith(short.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="glmv-reference", messages=[{"role": "user", "content": "What is 2 + 3?"}], temperature=0,
        max_completion_tokens=128, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True})
    events = list(stream)
    assert events[-1].usage.completion_tokens == 128
    assert sum(1 for e in events if e.choices) >= 100  # about one delta a token
    cut = ask(client, "What is 2 + 3?", max_tokens=128, stop=["so on"], extra_body={"ignore_eos": True})
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < 128


def test_stop_strings(client: openai.OpenAI) -> None:
    r = ask(client, "What is 2 + 3?", stop=["="], extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert r.choices[0].message.content == "2 + 3 " and r.choices[0].finish_reason == "stop"
    assert r.choices[0].stop_reason == "="  # type: ignore[attr-defined]


def test_logprobs(client: openai.OpenAI) -> None:
    r = ask(client, "Hi", logprobs=True, top_logprobs=3, max_tokens=4)
    lps = r.choices[0].logprobs.content
    assert len(lps) == 4 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lps)
    for bad, text in (({"top_logprobs": -2, "logprobs": True}, "`top_logprobs` must be a positive value or -1."),
                      ({"top_logprobs": 2}, "when using `top_logprobs`, `logprobs` must be set to true."),
                      ({"top_logprobs": 21, "logprobs": True}, "Requested sample logprobs of 21")):
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, "Hi", **bad)
        assert text in e.value.body["message"]  # type: ignore[index]


@pytest.mark.asyncio
async def test_bad_requests_are_400_in_vllm_shape(make_client) -> None:
    c = await make_client()
    resp = await c.post("/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400 and list(body["error"]) == ["message", "type", "param", "code"]
    assert body["error"]["type"] == "BadRequestError" and body["error"]["code"] == 400
    status, body = await chat(c, max_tokens=3)
    assert status == 400 and "messages" in body["error"]["message"]
    status, body = await chat(c, messages=[{"role": "user", "content": "x"}], stream_options={"include_usage": True})
    assert status == 400 and body["error"]["param"] == "stream_options"
    status, body = await chat(c, messages=[{"role": "user", "content": "x"}], temperature=-1)
    assert status == 400 and body["error"]["param"] == "temperature"


@pytest.mark.asyncio
async def test_max_tokens_is_clamped_when_prompt_fits(make_client) -> None:
    """vLLM 0.32: prompt 4000 + max_tokens 200 with a 4096 window is accepted (README of tiny-glm4v)."""
    c = await make_client(max_model_len=4096)
    status, body = await chat(c, messages=[{"role": "user", "content": "the " * 3950}], max_tokens=200)
    assert status == 200 and body["usage"]["prompt_tokens"] > 3900


@pytest.mark.asyncio
async def test_reasoning_content_field_option(make_client) -> None:
    c = await make_client(reasoning_field="reasoning_content")
    status, body = await chat(c, messages=[{"role": "user", "content": "hi"}])
    msg = body["choices"][0]["message"]
    assert "reasoning_content" in msg and "reasoning" not in msg and msg["reasoning_content"]
    status, text = await chat(c, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert any("reasoning_content" in ch["choices"][0]["delta"] for ch in chunks(text) if ch["choices"])
