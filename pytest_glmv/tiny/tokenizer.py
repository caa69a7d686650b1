"""A byte-level BPE tokenizer.json with GLM's special tokens, generated with the stdlib only.

The suite's environment has neither `tokenizers` nor `transformers`, and the tiny model
must be buildable there, so this module writes the HF `tokenizers` JSON format by hand:
a GPT-2 style byte alphabet, merges learned deterministically from a small corpus kept in
this file, and GLM's markup as added tokens after the learned vocabulary.

Which GLM tokens are "special" matters to vLLM: special tokens are dropped from output
text (skip_special_tokens), so `<think>`, `<tool_call>` and friends must NOT be special,
or the glm45 reasoning and tool parsers would never see them (as in the real GLM tokenizer).
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

# Stripped from output: turn markers, the prompt prefix and media placeholders.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
    "<|image|>", "<|video|>",
)
# Kept in output text: the parsers (and clients, for boxes) look for these.
MARKUP_TOKENS: tuple[str, ...] = (
    "<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
    "<arg_value>", "</arg_value>", "<tool_response>", "</tool_response>",
    "<|begin_of_box|>", "<|end_of_box|>", "/nothink",
)

# How many merges to learn at most; the corpus below yields about 600, so the vocabulary
# is ~900 tokens and the build takes a fraction of a second.
MAX_MERGES = 768

# Training text. Its only job is to give plausible, stable merges for the prompts tests
# send (weather, images, colours, tools, numbers); changing it changes every token id
# after the byte alphabet, so treat it as frozen.
CORPUS = """\
The weather in Paris is sunny today, and the weather in Berlin is cloudy with some rain.
What is the weather like in London? It is cold and windy, with a temperature of 12 degrees.
What is in this image? The image shows a red square on a white background.
Describe the picture. There is a blue circle, a green triangle and a yellow star.
What colour is the box? The box is red. The sky is blue. The grass is green.
Count the objects in the image: there are three apples and two oranges on the table.
Where is the cat? The cat is sitting on the chair next to the window.
Please answer the question in one word. Answer with a number only.
You may call one or more functions to assist with the user query.
You are provided with function signatures within tools XML tags.
For each function call, output the function name and arguments within the following XML format.
The function get_weather takes a city and returns the current weather for that city.
The function get_time takes a timezone and returns the current time as a string.
Call the tool with the arguments city and unit, where unit is celsius or fahrenheit.
The result of the tool call is: the temperature is 21 degrees and the sky is clear.
Hello! How can I help you today? Thank you for your question, here is the answer.
Let me think about this step by step. First, look at the image. Then, find the answer.
The video shows a person walking in the park, then a dog running after a ball.
In the first frame there is a car, and in the last frame the car has left the street.
Give the bounding box of the red square as coordinates between 0 and 1000.
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with one step.
One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, twenty, hundred.
0 1 2 3 4 5 6 7 8 9 10 11 12 20 42 100 123 256 512 1000 1024 2048 4096 2025 3.14 0.5
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June
{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
{"role": "user", "content": "hello"} {"role": "assistant", "content": "hi"} true false null
This is a test. This is only a test. The answer is yes. The answer is no. I do not know.
"""

# A stdlib stand-in for GPT-2's split pattern (which needs \\p{L}); it only has to
# cut the corpus into word-like pieces for training, not match `tokenizers` exactly.
_WORDS = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table, indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return [table[b] for b in range(256)]


def learn_merges(text: str, max_merges: int = MAX_MERGES) -> list[tuple[str, str]]:
    """Byte-pair merges, most frequent pair first; ties go to the smaller pair so that
    the result never depends on dict or set ordering. Pairs seen once are merged too (the
    corpus is small): learning stops when every corpus word is one token, or at the cap."""
    alphabet = byte_alphabet()
    counts = Counter(_WORDS.findall(text))
    words: list[list[str]] = [[alphabet[b] for b in w.encode("utf-8")] for w in sorted(counts)]
    freq: list[int] = [counts[w] for w in sorted(counts)]
    pairs: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:], strict=False):
            pairs[p] += freq[i]
            where[p].add(i)
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges and pairs:
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for i in sorted(where.pop(best, ())):
            old = words[i]
            for p in zip(old, old[1:], strict=False):  # forget this word's pairs, then count them again
                pairs[p] -= freq[i]
                if pairs[p] <= 0:
                    del pairs[p]
            new: list[str] = []
            k = 0
            while k < len(old):
                if k + 1 < len(old) and (old[k], old[k + 1]) == best:
                    new.append(joined)
                    k += 2
                else:
                    new.append(old[k])
                    k += 1
            words[i] = new
            for p in zip(new, new[1:], strict=False):
                pairs[p] += freq[i]
                where[p].add(i)
        pairs.pop(best, None)
    return merges


def build() -> tuple[dict[str, Any], dict[str, int]]:
    """(tokenizer.json content, GLM token -> id)."""
    vocab: dict[str, int] = {ch: i for i, ch in enumerate(byte_alphabet())}
    merges = learn_merges(CORPUS)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    ids: dict[str, int] = {}
    added: list[dict[str, Any]] = []
    for tok in SPECIAL_TOKENS + MARKUP_TOKENS:
        ids[tok] = len(vocab) + len(added)
        added.append({"id": ids[tok], "content": tok, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": tok in SPECIAL_TOKENS})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    doc: dict[str, Any] = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }
    return doc, ids


def tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    """tokenizer_config.json: a fast tokenizer with GLM's eos/pad. The chat template lives in
    chat_template.jinja only, so there is one copy for transformers and vLLM to load."""
    decoder = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": t in SPECIAL_TOKENS} for t, i in ids.items()}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        "extra_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "clean_up_tokenization_spaces": False,
        "do_lower_case": False,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 65536,
        "padding_side": "left",
        "remove_space": False,
    }


def dumps(doc: Any) -> bytes:
    """Stable bytes: sorted keys would reorder the vocab, so keep insertion order, fixed indent."""
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
