"""Wire fidelity: the reference server's answers against real vLLM 0.32 samples (tests/wire/)."""
from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_glmv.kit import sse

from .conftest import WEATHER_TOOL, WIRE, chat, chunks, data_url, wire

pytestmark = pytest.mark.asyncio

# The tiny model's ids of its special tokens (GLM's markup, <|image|>), as the captured requests use them.
TINY_TOKENS = {i: t for t, i in json.loads((WIRE / "tiny_tokens.json").read_text()).items()}
TINY_IMAGE = next(i for i, t in TINY_TOKENS.items() if t == "<|image|>")


def forced_text(request_body: dict[str, Any]) -> str:
    """The raw text a structural tag forced out of the tiny model."""
    tag = json.loads(request_body["structured_outputs"]["structural_tag"])
    return "".join(TINY_TOKENS[e["token"]] if e["type"] == "token" else e["value"]
                   for e in tag["format"]["elements"])


def shape(obj: Any) -> Any:
    """Keys in order, recursively; values only by type."""
    if isinstance(obj, dict):
        return [(k, shape(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [shape(obj[0])] if obj else []
    return type(obj).__name__


def replay_body(sample: dict[str, Any]) -> dict[str, Any]:
    body = dict(sample["request"]["body"])
    body["model"] = "glmv-reference"
    if "structured_outputs" in body:
        body["glmv_raw_output"] = forced_text(body)
        del body["structured_outputs"]
    return body


async def test_forced_text_reconstruction() -> None:
    body = wire("chat_forced_reasoning.json")["request"]["body"]
    assert forced_text(body) == "<think>Paris is in France.</think>It is sunny in Paris."


async def test_models_and_version_shapes(make_client) -> None:
    # posing as the release the samples come from, the double answers in vLLM's exact shapes
    c = await make_client(pose="vllm-0.32.0")
    for name, path in (("models.json", "/v1/models"), ("version.json", "/version")):
        sample = wire(name)
        resp = await c.get(path)
        assert resp.status == sample["status"]
        assert resp.content_type == sample["content_type"]
        assert shape(await resp.json()) == shape(sample["response"])
    assert (await (await c.get("/version")).json()) == {"version": "0.32.0"}
    # not posing, it says it is the double: one field more in /version, its own owned_by
    c = await make_client(pose=None)
    assert (await (await c.get("/version")).json()) == {"version": "0.32.0", "double": "glmv-reference"}
    assert (await (await c.get("/v1/models")).json())["data"][0]["owned_by"] == "glmv-reference"


@pytest.mark.parametrize("name", ["tokenize_prompt.json", "tokenize_messages.json", "tokenize_messages_image.json"])
async def test_tokenize_shapes(make_client, name: str) -> None:
    sample = wire(name)
    c = await make_client()
    body = dict(sample["request"]["body"], model="glmv-reference")
    resp = await c.post("/tokenize", json=body)
    got = await resp.json()
    assert resp.status == 200 and shape(got) == shape(sample["response"])
    assert got["count"] == len(got["tokens"]) and got["max_model_len"] == 65536


async def test_tokenize_image_counts_like_glm4v(make_client) -> None:
    """64x48 under the tiny model's pixel bounds is 12 image tokens in real vLLM; same arithmetic here."""
    sample = wire("tokenize_messages_image.json")
    c = await make_client(max_model_len=4096)
    got = await (await c.post("/tokenize", json=dict(sample["request"]["body"], model="glmv-reference"))).json()
    from pytest_glmv.reference import tokenizer, vision
    assert vision.image_tokens(64, 48, 112 * 112, 448 * 448) == sample["response"]["tokens"].count(TINY_IMAGE) == 12
    assert vision.image_tokens(448, 448, 112 * 112, 448 * 448) == 121  # chat_image_large.json: 134 - 13
    n = got["tokens"].count(tokenizer.SPECIAL["<|image|>"])
    assert n == vision.image_tokens(64, 48, 112 * 112, 28 * 28 * 16384)


@pytest.mark.parametrize("name", ["chat_plain.json", "chat_thinking_off.json", "chat_image.json",
                                  "chat_forced_reasoning.json", "chat_forced_tool.json",
                                  "chat_forced_two_tools.json", "chat_tool_required.json", "chat_tool_named.json"])
async def test_chat_response_shape(make_client, name: str) -> None:
    sample = wire(name)
    c = await make_client()
    status, got = await chat(c, **replay_body(sample))
    want = sample["response"]
    assert status == sample["status"] == 200
    assert shape(got) == shape(want) or _shape_modulo_nulls(got, want)
    assert got["system_fingerprint"].startswith("vllm-0.32.0-")
    ch, wch = got["choices"][0], want["choices"][0]
    assert ch["finish_reason"] == wch["finish_reason"] or wch["finish_reason"] == "length"
    assert (ch["message"]["reasoning"] is None) == (want["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0)
    assert ("tool_calls" in ch["message"]) == ("tool_calls" in wch["message"])
    if name.startswith("chat_forced"):
        for key in ("content", "reasoning"):
            assert ch["message"][key] == wch["message"][key]
        assert [t["function"] for t in ch["message"].get("tool_calls", [])] == \
               [t["function"] for t in wch["message"].get("tool_calls", [])]
        assert ch["stop_reason"] == (None if "tool_calls" not in wch["message"] else 151338)
    if name in ("chat_tool_required.json", "chat_tool_named.json"):
        assert ch["message"]["content"] == "" and ch["message"]["tool_calls"][0]["id"].startswith("chatcmpl-tool-")


def _shape_modulo_nulls(got: Any, want: Any) -> bool:
    """Random weights leave content null where the double answers: compare with value types relaxed."""
    def keys(o: Any) -> Any:
        if isinstance(o, dict):
            return [(k, keys(v)) for k, v in o.items()]
        if isinstance(o, list):
            return [keys(o[0])] if o and isinstance(o[0], dict) else "list"
        return "scalar"
    return keys(got) == keys(want)


def _deltas(lines: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"reasoning": "", "content": "", "calls": {}, "structural": []}
    for ch in lines:
        for c in ch.get("choices", []):
            d = c["delta"]
            out["reasoning"] += d.get("reasoning") or ""
            out["content"] += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                call = out["calls"].setdefault(tc["index"], {"name": None, "args": []})
                if "name" in tc.get("function", {}):
                    call["name"] = tc["function"]["name"]
                    assert list(tc) == ["id", "type", "index", "function"] and "arguments" not in tc["function"]
                if "arguments" in tc.get("function", {}):
                    assert list(tc) == ["index", "function"]
                    call["args"].append(tc["function"]["arguments"])
    for call in out["calls"].values():
        call["structural"] = [a for a in call["args"] if any(p in a for p in ("{", "}", '", "', '": '))]
        call["joined"] = "".join(call["args"])
    return out


def _stop_free(chunk_shape: Any) -> Any:
    return [(k, [[(ck, "stop" if ck == "stop_reason" else cv) for ck, cv in c] for c in v] if k == "choices" else v)
            for k, v in chunk_shape]


@pytest.mark.parametrize("name", ["chat_forced_reasoning_stream.json", "chat_forced_tool_stream.json",
                                  "chat_forced_two_tools_stream.json"])
async def test_stream_matches_vllm(make_client, name: str) -> None:
    sample = wire(name)
    c = await make_client()
    status, text = await chat(c, **replay_body(sample))
    assert status == 200
    want = sse.read(sample["sse_lines"]).events
    got = chunks(text)
    assert text.rstrip().endswith(sse.DONE) and sample["sse_lines"][-1] == sse.DONE
    # Chunk kinds in the same order, each with vLLM's keys in vLLM's order.
    assert shape(got[0]) == shape(want[0]) and got[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert shape(got[-1]) == shape(want[-1]) and got[-1]["choices"] == []
    # stop_reason: None (EOS) or a stop token's id; which one ends a forced output is the random weights' pick
    assert _stop_free(shape(got[-2])) == _stop_free(shape(want[-2])) and got[-2]["choices"][0]["finish_reason"] == \
        want[-2]["choices"][0]["finish_reason"]
    for kind in ("reasoning", "content", "tool_calls"):
        mine = [shape(ch) for ch in got[1:-2] if kind in ch["choices"][0]["delta"]]
        theirs = [shape(ch) for ch in want[1:-2] if kind in ch["choices"][0]["delta"]]
        assert bool(mine) == bool(theirs)
        if kind != "tool_calls" and theirs:
            assert set(map(str, mine)) == set(map(str, theirs))
    g, w = _deltas(got), _deltas(want)
    assert (g["reasoning"], g["content"]) == (w["reasoning"], w["content"])
    assert {i: (c["name"], c["joined"], c["structural"]) for i, c in g["calls"].items()} == \
           {i: (c["name"], c["joined"], c["structural"]) for i, c in w["calls"].items()}
    usage = got[-1]["usage"]
    assert list(usage) == list(want[-1]["usage"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("name", ["error_unknown_model.json", "error_max_tokens_over_window.json",
                                  "error_prompt_over_window.json", "error_bad_image.json"])
async def test_errors_match_vllm(make_client, name: str) -> None:
    sample = wire(name)
    c = await make_client(max_model_len=4096)
    body = dict(sample["request"]["body"])
    if body["model"] != "nope":
        body["model"] = "glmv-reference"
    status, got = await chat(c, **body)
    want = sample["response"]
    assert status == sample["status"]
    assert shape(got) == shape(want)
    message = want["error"]["message"].replace("tiny-glm45v", "glmv-reference")
    assert got["error"] == dict(want["error"], message=message)


async def test_auto_tool_choice_accepted_with_flag(make_client) -> None:
    sample = wire("error_auto_without_flag_hint.json")
    c = await make_client()
    status, got = await chat(c, **replay_body(sample))
    assert status == sample["status"] == 200
    assert got["usage"]["prompt_tokens"] > 100  # the tools block is part of the prompt


async def test_data_url_fixture_image_decodes(make_client) -> None:
    c = await make_client()
    url = wire("chat_image.json")["request"]["body"]["messages"][0]["content"][0]["image_url"]["url"]
    status, got = await chat(c, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Colour?"}]}], temperature=0)
    assert status == 200 and "colour is" in got["choices"][0]["message"]["content"]
    assert data_url(b"x").startswith("data:image/png;base64,")


async def test_weather_tool_is_the_wire_tool() -> None:
    assert wire("chat_forced_tool.json")["request"]["body"]["tools"][0] == WEATHER_TOOL
