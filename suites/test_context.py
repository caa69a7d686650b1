"""The context window, exactly: reported, enforced at the boundary, images included.

GLM-4.5V holds 65536 tokens and GLM-4.6V 131072. A server that truncates a long
prompt, or reports a window it does not have, loses users' data without a word,
so every prompt here is built to an exact token count with the server's own
/tokenize (chat messages, generation prompt added as the chat endpoint does) and
sent once. Acceptance probes ask for one output token: a full window costs one
prefill, never a generation. Server-level checks hold for any weights.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import pytest

from pytest_glmv.kit import judges as j
from pytest_glmv.kit import media
from pytest_glmv.kit.context import (
    COUNTS,
    FILLER_SENTENCES,
    Messages,
    Prompt,
    Tokenizer,
    counts,
    exact,
    filler_user,
    is_context_error,
    near,
    small_chat,
    stated_window,
    usage,
    usage_chunks,
)
from pytest_glmv.kit.evidence import Exchange, chat, chat_body, finish_reasons, request, stream

pytestmark = pytest.mark.context

QUESTION = "Reply with one word."


@pytest.fixture
def window(glmv_profile: Any) -> int:
    """The window the server must have: the profile's, or the launch's --glmv-max-model-len."""
    return int(glmv_profile.max_model_len)


@pytest.fixture
def tok(glmv_http: Any, glmv_server: Any) -> Tokenizer:
    return Tokenizer(glmv_http, glmv_server.model)


def _send(http: Any, model: str, messages: Messages, max_tokens: int = 1) -> Exchange:
    return chat(http, chat_body(model, messages=messages, max_tokens=max_tokens, greedy=True))


def _still_answers(http: Any, model: str, after: Exchange) -> None:
    ok = small_chat(http, model)
    assert ok.status == 200, (f"the server stopped answering after rejecting an over-long request\n"
                              f"rejected: {after.evidence(300)}\nthen: {ok.evidence()}")


def _expect_rejected(ex: Exchange, prompt: Prompt, window: int, what: str) -> None:
    if ex.status == 200:
        got = usage(ex).get("prompt_tokens")
        pytest.fail(f"{what} ({prompt.tokens} prompt tokens by /tokenize, window {window}) was accepted; the "
                    f"server reports prompt_tokens={got}"
                    f"{' - it silently dropped part of the prompt' if got != prompt.tokens else ''}\n"
                    f"{ex.evidence()}")
    assert ex.status < 500, f"{what} crashed the server instead of a 400\n{ex.evidence()}"
    assert ex.status == 400, f"{what} should be a 400 (bad request)\n{ex.evidence()}"
    _same_window(ex, window)


def _same_window(ex: Exchange, window: int) -> None:
    enforced = stated_window(ex)
    assert enforced in (None, window), (f"the server reports a {window}-token window but its error enforces "
                                        f"{enforced}\n{ex.evidence()}")


# ---------------------------------------------------------------------------------------------- reported


def test_models_reports_the_window(glmv_http: Any, glmv_server: Any, window: int, tok: Tokenizer) -> None:
    ex = request(glmv_http, "GET", "/v1/models")
    assert ex.status == 200, f"/v1/models failed\n{ex.evidence()}"
    cards = [m for m in (ex.json or {}).get("data", []) if isinstance(m, dict) and m.get("id") == glmv_server.model]
    assert cards, f"/v1/models does not list {glmv_server.model!r}\n{ex.evidence()}"
    reported = cards[0].get("max_model_len")
    assert reported == window, (f"/v1/models reports max_model_len={reported}; the profile's window (or the "
                                f"launch's --max-model-len) is {window}. If the smaller window is intended, say so "
                                f"with --glmv-max-model-len {reported}\n{ex.evidence()}")
    tokenize_window = tok.window()
    assert tokenize_window in (None, window), f"/tokenize reports max_model_len={tokenize_window}, not {window}"


# ---------------------------------------------------------------------------------------------- boundary


def test_prompt_filling_the_window_is_accepted(glmv_http: Any, glmv_server: Any, window: int,
                                               tok: Tokenizer) -> None:
    """window - 1 prompt tokens + max_tokens 1 is exactly the window: it must be served, uncut."""
    prompt = exact(tok, filler_user(QUESTION), window - 1)
    ex = _send(glmv_http, glmv_server.model, prompt.messages, max_tokens=1)
    assert ex.status == 200, (f"a prompt of {prompt.tokens} tokens (by the server's /tokenize) with max_tokens 1 "
                              f"fills the {window}-token window exactly, yet was refused: the window the engine "
                              f"enforces is smaller than the one reported\n{ex.evidence()}")
    use = usage(ex)
    assert use.get("prompt_tokens") == prompt.tokens, (
        f"usage.prompt_tokens={use.get('prompt_tokens')} but /tokenize counts {prompt.tokens} for the same "
        f"messages: the prompt was cut or counted differently\n{ex.evidence()}")
    assert (use.get("completion_tokens") or 0) <= 1, f"max_tokens 1 produced more tokens\n{ex.evidence()}"


def test_prompt_one_token_over_is_rejected(glmv_http: Any, glmv_server: Any, window: int, tok: Tokenizer) -> None:
    """window prompt tokens + max_tokens 1 is one token over: a 400 (vLLM 0.32: no room for max_tokens)."""
    prompt = exact(tok, filler_user(QUESTION), window)
    ex = _send(glmv_http, glmv_server.model, prompt.messages, max_tokens=1)
    _expect_rejected(ex, prompt, window, "a prompt that fills the whole window, leaving no room for max_tokens 1,")
    _still_answers(glmv_http, glmv_server.model, ex)


def test_prompt_longer_than_the_window_is_rejected(glmv_http: Any, glmv_server: Any, window: int,
                                                   tok: Tokenizer) -> None:
    """window + 1 prompt tokens: 400 with a context-length message, not a 500 and not a truncation."""
    prompt = exact(tok, filler_user(QUESTION), window + 1)
    ex = _send(glmv_http, glmv_server.model, prompt.messages, max_tokens=1)
    _expect_rejected(ex, prompt, window, "a prompt one token longer than the window")
    assert is_context_error(ex, window), (f"the 400 does not say the prompt is over the {window}-token context "
                                          f"length, so a client cannot tell what to shorten\n{ex.evidence()}")
    _still_answers(glmv_http, glmv_server.model, ex)


@pytest.mark.parametrize("ask", ["past_remaining", "past_window"])
def test_max_tokens_beyond_what_is_left(glmv_http: Any, glmv_server: Any, window: int, tok: Tokenizer,
                                        ask: str, record_property: Callable[[str, Any], None]) -> None:
    """Asking for more output than fits: an error or a clamp are both honest; anything else is not.

    vLLM 0.32 clamps max_tokens to what is left when the prompt fits (past_remaining) and rejects
    max_tokens > max_model_len outright (past_window). The prompt leaves 2 tokens, so a clamping
    server generates at most 2: cheap on any hardware.
    """
    left = 2
    prompt = exact(tok, filler_user(QUESTION), window - left)
    max_tokens = left + 6 if ask == "past_remaining" else window + 1
    ex = _send(glmv_http, glmv_server.model, prompt.messages, max_tokens=max_tokens)
    if ex.status == 400:
        msg = ex.error_message
        record_property("max_tokens_over_" + ask, "error")
        print(f"max_tokens={max_tokens} with {left} tokens left: 400 {msg!r}")
        assert "max_tokens" in msg or "max_completion_tokens" in msg or str(window) in msg, (
            f"the 400 blames something other than max_tokens or the {window}-token window; a prompt of "
            f"{prompt.tokens} tokens fits that window\n{ex.evidence()}")
        _same_window(ex, window)
        _still_answers(glmv_http, glmv_server.model, ex)
        return
    assert ex.status == 200, (f"max_tokens={max_tokens} with {left} tokens of the window left must be a 400 or "
                              f"be clamped to {left}\n{ex.evidence()}")
    use = usage(ex)
    record_property("max_tokens_over_" + ask, "clamp")
    print(f"max_tokens={max_tokens} with {left} tokens left: clamped, usage {use}")
    assert use.get("prompt_tokens") == prompt.tokens, (
        f"to make room for max_tokens the server cut the prompt: usage.prompt_tokens={use.get('prompt_tokens')}, "
        f"/tokenize counts {prompt.tokens}\n{ex.evidence()}")
    assert (use.get("completion_tokens") or 0) <= left, (
        f"the answer ran past the window: {prompt.tokens} prompt + {use.get('completion_tokens')} completion "
        f"tokens > {window}\n{ex.evidence()}")


# ---------------------------------------------------------------------------------------------- usage

USAGE_MAX_TOKENS = 8


def test_streamed_usage_matches_non_streamed(glmv_http: Any, glmv_server: Any) -> None:
    """With stream_options.include_usage the stream ends with one usage chunk (`choices: []`, before [DONE])
    whose counts are the non-streamed answer's for the same greedy request; without it no chunk carries usage.
    Clients bill by it, and vllm bench serve computes TPOT over its completion_tokens.

    Holds for any weights: prompt_tokens must be equal; completion_tokens are compared when both answers
    stop at max_tokens ("length"), which vLLM's ignore_eos makes certain for a random-weight model (a
    server that refuses ignore_eos is asked without it)."""
    body = chat_body(glmv_server.model, QUESTION, max_tokens=USAGE_MAX_TOKENS, greedy=True, ignore_eos=True)
    whole = chat(glmv_http, body)
    if whole.status == 400:  # not vLLM's extra sampling flag: the same request without it
        body.pop("ignore_eos")
        whole = chat(glmv_http, body)
    assert whole.status == 200, f"the non-streamed request failed\n{whole.evidence()}"
    want = usage(whole)
    assert want.get("prompt_tokens") and want.get("completion_tokens") is not None, (
        f"the non-streamed answer carries no usage counts: {want}\n{whole.evidence()}")
    with_usage = stream(glmv_http, {**body, "stream_options": {"include_usage": True}})
    assert with_usage.status == 200, f"the streamed request failed\n{with_usage.evidence()}"
    found = usage_chunks(with_usage.events)
    assert found, (f"stream_options.include_usage was true but the stream has no usage chunk: clients get no "
                   f"token counts, and vllm bench serve falls back to re-tokenizing the text for TPOT\n"
                   f"{with_usage.evidence(2000)}")
    at, last = found[-1]
    assert len(found) == 1 and at == len(with_usage.events) - 1 and last.get("choices") == [], (
        f"the usage must come once, in the last chunk before [DONE], with `choices: []` (vLLM's shape); "
        f"usage came in chunks {[i for i, _ in found]} of {len(with_usage.events)}\n{with_usage.evidence(2000)}")
    got = last["usage"]
    streamed_finish, whole_finish = finish_reasons(with_usage.events), whole.choice.get("finish_reason")
    same_length = streamed_finish == [whole_finish] == ["length"]
    keys = COUNTS if same_length else ("prompt_tokens",)
    print(f"usage non-streamed {counts(want)}, streamed {counts(got)}; finish {whole_finish} / {streamed_finish}"
          f"{'' if same_length else ': completion_tokens not compared (not both cut at max_tokens)'}")
    assert counts(got, keys) == counts(want, keys), (
        f"the streamed usage {counts(got)} differs from the non-streamed {counts(want)} for the same greedy "
        f"request (finish_reason {streamed_finish} / {whole_finish!r})\n"
        f"non-streamed {whole.evidence()}\nstreamed {with_usage.evidence(2000)}")
    assert got.get("total_tokens") == (got.get("prompt_tokens") or 0) + (got.get("completion_tokens") or 0), (
        f"the streamed usage does not add up: {counts(got)}\n{with_usage.evidence(2000)}")
    without = stream(glmv_http, body)
    assert without.status == 200, f"the streamed request failed\n{without.evidence()}"
    assert not usage_chunks(without.events), (
        f"a chunk carries usage although stream_options.include_usage was not asked for\n{without.evidence(2000)}")


# ---------------------------------------------------------------------------------------------- images


def _with_image(url: str) -> Callable[[str], Messages]:
    # Filler first, as in the text-only prompt, so both share their prefix (a prefix cache serves it once).
    return lambda filler: [{"role": "user", "content": [{"type": "text", "text": f"Context:{filler}\n\n"},
                                                        media.image_part(url),
                                                        {"type": "text", "text": QUESTION}]}]


def _text_only(filler: str) -> Messages:
    return [{"role": "user", "content": [{"type": "text", "text": f"Context:{filler}\n\n"},
                                         {"type": "text", "text": QUESTION}]}]


def test_images_count_against_the_window(glmv_http: Any, glmv_server: Any, window: int, tok: Tokenizer) -> None:
    """A prompt that fits as text goes over once an image is added, and is rejected like any other."""
    url = media.png_url(media.square("blue", size=224))  # 224 = 8 x 28: 64 image tokens on GLM-4V
    with_image = _with_image(url)
    image_cost = tok.count(with_image("")) - tok.count(_text_only(""))
    assert image_cost >= 8, (f"the server's /tokenize counts a 224x224 image as {image_cost} tokens; GLM-4V "
                             f"spends one token per 28x28 pixels (64 here): images are not counted")
    text = exact(tok, _text_only, window - 1 - image_cost // 2)
    fits = _send(glmv_http, glmv_server.model, text.messages, max_tokens=1)
    assert fits.status == 200, f"the text-only prompt ({text.tokens} tokens) should fit\n{fits.evidence()}"
    over = Prompt(with_image(text.filler), tok.count(with_image(text.filler)), text.filler)
    assert over.tokens > window, (f"with the image the prompt counts {over.tokens} tokens by /tokenize, expected "
                                  f"{text.tokens} + {image_cost} > {window}")
    ex = _send(glmv_http, glmv_server.model, over.messages, max_tokens=1)
    _expect_rejected(ex, over, window, f"a {text.tokens}-token text prompt plus a {image_cost}-token image")
    assert is_context_error(ex, window), f"the 400 does not name the context length\n{ex.evidence()}"
    _still_answers(glmv_http, glmv_server.model, ex)


# ---------------------------------------------------------------------------------------------- behaviour


def _needle_prompt(depth: float, needle: str, question: str) -> Callable[[str], Messages]:
    def build(filler: str) -> Messages:
        at = int(len(filler) * depth)
        at = filler.find(". ", at) + 2 if filler.find(". ", at) != -1 else len(filler)
        text = filler[:at] + needle + " " + filler[at:]
        return [{"role": "user", "content": f"Read this document.\n\n{text}\n\n{question}"}]
    return build


@pytest.mark.behavior
@pytest.mark.parametrize("depth", [0.1, 0.5, 0.9], ids=["10pct", "50pct", "90pct"])
def test_needle_is_retrieved_near_the_window(glmv_http: Any, glmv_server: Any, glmv_profile: Any, window: int,
                                             depth: float) -> None:
    """One fact hidden at 10%, 50% and 90% of a prompt that nearly fills the window is found.

    Accepts the number in any wording ("123456", "The magic number is 123456.", boxed) and with thousands grouping
    ("123,456", which models often add to a six-digit number). Refuses it inside a longer number."""
    code = random.Random(f"needle:{depth}").randrange(100000, 999999)
    needle = f"The magic number is {code}."
    question = "What is the magic number mentioned in the document? Answer with the number only."
    hybrid = glmv_profile.thinking == "hybrid"
    extra = {"chat_template_kwargs": {"enable_thinking": False}} if hybrid else {}
    max_tokens = 64 if hybrid else 1024  # an always-thinking model reasons first
    tok = Tokenizer(glmv_http, glmv_server.model, extra)
    prompt = near(tok, _needle_prompt(depth, needle, question), window - max_tokens - 64, FILLER_SENTENCES)
    assert prompt.tokens > 0.8 * window, f"the filler reached only {prompt.tokens} of {window} tokens"
    ex = chat(glmv_http, chat_body(glmv_server.model, messages=prompt.messages, max_tokens=max_tokens, greedy=True,
                                   **extra))
    assert ex.status == 200, f"a {prompt.tokens}-token prompt in a {window}-token window failed\n{ex.evidence()}"
    answer = ex.message.get("content") or ""
    assert j.mentions_number(answer, code), (
        f"the magic number {code}, placed at {depth:.0%} of a {prompt.tokens}-token prompt, was not retrieved; "
        f"answer {answer!r}\n{ex.evidence()}")
