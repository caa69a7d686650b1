"""A deterministic, reversible stand-in for GLM's tokenizer, and GLM's chat template.

Not GLM's BPE: the suites need counts that behave like a real tokenizer (about
3 characters per token on English, special tokens as single ids, images as
many placeholder tokens), ids that round-trip through /detokenize, and
nothing to download.  Special tokens sit at GLM-4.5V's real ids so stop_reason
and /tokenize answers look like the real model's.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable, Sequence

SPECIAL: dict[str, int] = {
    "<|endoftext|>": 151329, "[MASK]": 151330, "[gMASK]": 151331, "[sMASK]": 151332,
    "<sop>": 151333, "<eop>": 151334, "<|system|>": 151335, "<|user|>": 151336,
    "<|assistant|>": 151337, "<|observation|>": 151338, "<|begin_of_image|>": 151339,
    "<|end_of_image|>": 151340, "<|begin_of_video|>": 151341, "<|end_of_video|>": 151342,
    "<think>": 151350, "</think>": 151351, "<tool_call>": 151352, "</tool_call>": 151353,
    "<tool_response>": 151354, "</tool_response>": 151355, "<arg_key>": 151356,
    "</arg_key>": 151357, "<arg_value>": 151358, "</arg_value>": 151359, "/nothink": 151360,
    "<|begin_of_box|>": 151361, "<|end_of_box|>": 151362, "<|image|>": 151363, "<|video|>": 151364,
}
ID_TO_SPECIAL = {v: k for k, v in SPECIAL.items()}
# Stripped by skip_special_tokens, as in GLM's tokenizer: roles and media markers.
# The think/tool/box markers are not special there, so they reach the parsers.
SKIPPED = {t for t in SPECIAL if t.startswith(("<|", "[")) or t in ("<sop>", "<eop>")} - {
    "<|begin_of_box|>", "<|end_of_box|>"}
EOS = SPECIAL["<|endoftext|>"]
OBSERVATION = SPECIAL["<|observation|>"]
USER = SPECIAL["<|user|>"]
VOCAB_SIZE = 151552

_LOW = "abcdefghijklmnopqrstuvwxyz"
# Id layout below the special block: 256 bytes, then digit groups, then letter n-grams.
_DIGITS0 = 256
_NGRAM0 = _DIGITS0 + 2 * 1110  # " ?" x (1-, 2- and 3-digit strings: 10 + 100 + 1000)
_NGRAM_SIZES = (26, 26 * 26, 26 * 26 * 26)
_NGRAM_BLOCK = sum(_NGRAM_SIZES)  # per (leading space?, capitalised?) variant

# Whole-word tokens for frequent English words, so English averages 3-4 characters per token.
_WORDS = tuple(sorted(set("""
the be to of and a in that have it for not on with he as you do at this but his by from they we say her
she or an will my one all would there their what so up out if about who get which go me when make can like
time no just him know take people into year your good some could them see other than then now look only
come its over think also back after use two how our work first well way even new want because any these give
day most us is are was were been has had does did said image images picture photo shows colour color red green
blue yellow white black gray grey orange purple pink brown shape shapes square circle triangle rectangle
background answer question weather city where many much number count tool result based according there here
please tell describe what which box bounding located object objects dominant main left right top bottom
""".split())))
_WORD_INDEX = {w: i for i, w in enumerate(_WORDS)}
_WORD0 = 80000

# The longest text one token stands for: vLLM 0.32 refuses a prompt longer than window x this before tokenizing.
MAX_CHARS_PER_TOKEN = max(max(map(len, SPECIAL)), 1 + max(map(len, _WORDS)), 4)
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in sorted(SPECIAL, key=len, reverse=True)))
_PIECE_RE = re.compile(r" ?[A-Za-z]+| ?[0-9]{1,3}|.", re.S)


def _digits_id(text: str) -> int:
    space, digits = text.startswith(" "), text.lstrip(" ")
    offset = {1: 0, 2: 10, 3: 110}[len(digits)] + int(digits)
    return _DIGITS0 + (1110 if space else 0) + offset


def _ngram_id(text: str) -> int:
    space = text.startswith(" ")
    letters = text[1:] if space else text
    cap = letters[0].isupper()
    low = letters.lower()
    index = 0
    for ch in low:
        index = index * 26 + _LOW.index(ch)
    index += sum(_NGRAM_SIZES[: len(low) - 1])
    variant = (2 if space else 0) + (1 if cap else 0)
    return _NGRAM0 + variant * _NGRAM_BLOCK + index


def _word_id(piece: str) -> int | None:
    space = piece.startswith(" ")
    letters = piece[1:] if space else piece
    low = letters.lower()
    if low not in _WORD_INDEX or not (letters == low or letters == low.capitalize()):
        return None
    variant = (2 if space else 0) + (1 if letters != low else 0)
    return _WORD0 + variant * len(_WORDS) + _WORD_INDEX[low]


def _word_chunks(word: str) -> Iterable[str]:
    """Up to three letters per token; case changes inside a word start a new token."""
    space = word.startswith(" ")
    letters = word[1:] if space else word
    i = 0
    while i < len(letters):
        j = i + 1
        while j < len(letters) and j - i < 3 and letters[j].islower():
            j += 1
        yield (" " if space and i == 0 else "") + letters[i:j]
        i = j


def _encode_plain(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _PIECE_RE.findall(text):
        core = piece.lstrip(" ")
        if core and core[0].isascii() and core[0].isalpha():
            whole = _word_id(piece)
            if whole is not None:
                ids.append(whole)
                continue
            ids.extend(_ngram_id(c) for c in _word_chunks(piece))
        elif core and core[0].isdigit():
            ids.append(_digits_id(piece))
        else:
            ids.extend(piece.encode("utf-8"))
    return ids


def encode(text: str) -> list[int]:
    ids: list[int] = []
    pos = 0
    for m in _SPECIAL_RE.finditer(text):
        ids.extend(_encode_plain(text[pos:m.start()]))
        ids.append(SPECIAL[m.group()])
        pos = m.end()
    ids.extend(_encode_plain(text[pos:]))
    return ids


def token_bytes(tid: int) -> bytes:
    """The bytes one token stands for; raises ValueError for ids outside the vocabulary."""
    if tid in ID_TO_SPECIAL:
        return ID_TO_SPECIAL[tid].encode()
    if 0 <= tid < _DIGITS0:
        return bytes([tid])
    if _DIGITS0 <= tid < _NGRAM0:
        rel = tid - _DIGITS0
        space, rel = rel >= 1110, rel % 1110
        width, base = (1, 0) if rel < 10 else (2, 10) if rel < 110 else (3, 110)
        return ((" " if space else "") + str(rel - base).zfill(width)).encode()
    rel = tid - _NGRAM0
    if 0 <= rel < 4 * _NGRAM_BLOCK:
        variant, index = divmod(rel, _NGRAM_BLOCK)
        n = 1
        while index >= _NGRAM_SIZES[n - 1]:
            index -= _NGRAM_SIZES[n - 1]
            n += 1
        chars = []
        for _ in range(n):
            index, r = divmod(index, 26)
            chars.append(_LOW[r])
        word = "".join(reversed(chars))
        if variant & 1:
            word = word[0].upper() + word[1:]
        return ((" " if variant & 2 else "") + word).encode()
    rel = tid - _WORD0
    if 0 <= rel < 4 * len(_WORDS):
        variant, index = divmod(rel, len(_WORDS))
        word = _WORDS[index].capitalize() if variant & 1 else _WORDS[index]
        return ((" " if variant & 2 else "") + word).encode()
    if 0 <= tid < VOCAB_SIZE:
        return b""  # unused ids decode to nothing, like padding rows of a real vocabulary
    raise ValueError(f"token id {tid} is out of vocabulary")


def decode(ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    out = bytearray()
    for tid in ids:
        if skip_special_tokens and ID_TO_SPECIAL.get(tid) in SKIPPED:
            continue
        out += token_bytes(tid)
    return out.decode("utf-8", "replace")


def token_str(tid: int) -> str:
    return token_bytes(tid).decode("utf-8", "replace")


def stream_pieces(ids: Sequence[int]) -> list[tuple[list[int], str]]:
    """Group ids into deltas that decode to whole characters, as vLLM's incremental detokenizer does."""
    out: list[tuple[list[int], str]] = []
    pending: list[int] = []
    buf = b""
    for tid in ids:
        pending.append(tid)
        buf += b"" if ID_TO_SPECIAL.get(tid) in SKIPPED else token_bytes(tid)
        try:
            text = buf.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append((pending, text))
        pending, buf = [], b""
    if pending:
        out.append((pending, buf.decode("utf-8", "replace")))
    return out


# ---------------------------------------------------------------- chat template


def _visible(content: Any, media: list[str]) -> str:
    """Text of a message; each image/video part becomes a placeholder to expand later."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for item in content:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            kind = item.get("type")
            if kind == "text":
                parts.append(str(item.get("text", "")))
            elif kind in ("image_url", "image", "image_pil") or "image_url" in item:
                media.append("image")
                parts.append("\x00IMAGE\x00")
            elif kind in ("video_url", "video") or "video_url" in item:
                media.append("video")
                parts.append("\x00VIDEO\x00")
    return "".join(parts)


def render(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None,
           add_generation_prompt: bool = True, enable_thinking: bool = True,
           continue_final_message: bool = False) -> tuple[str, list[str]]:
    """GLM-4.5V's chat layout; returns the prompt with media placeholders and the media kinds in order."""
    media: list[str] = []
    out = ["[gMASK]<sop>"]
    if tools:
        out.append("<|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                   "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n")
        for tool in tools:
            out.append(json.dumps(tool, ensure_ascii=False) + "\n")
        out.append("</tools>\n\nFor each function call, output the function name and arguments within the "
                   "following XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n"
                   "<arg_value>{arg-value-1}</arg_value>\n...\n</tool_call>")
    prev_role = None
    # GLM's template keeps an assistant turn's reasoning only after the last user turn
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, m in enumerate(messages):
        role = m.get("role")
        text = _visible(m.get("content"), media)
        if role == "system":
            out.append("<|system|>\n" + text)
        elif role == "user":
            out.append("<|user|>\n" + text)
        elif role == "assistant":
            reasoning = (m.get("reasoning_content") or m.get("reasoning") or "") if i > last_user else ""
            last = continue_final_message and i == len(messages) - 1
            out.append("<|assistant|>\n" + ("" if last else f"<think>{str(reasoning).strip()}</think>"))
            if text:
                out.append(("" if last else "\n") + text.strip())
            for tc in m.get("tool_calls") or []:
                fn = tc.get("function", tc) if isinstance(tc, dict) else {}
                out.append("\n<tool_call>" + str(fn.get("name", "")))
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except ValueError:
                        args = {}
                for k, v in (args.items() if isinstance(args, dict) else []):
                    val = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                    out.append(f"\n<arg_key>{k}</arg_key>\n<arg_value>{val}</arg_value>")
                out.append("\n</tool_call>")
        elif role == "tool":
            if prev_role != "tool":
                out.append("<|observation|>")
            out.append("\n<tool_response>\n" + text + "\n</tool_response>")
        prev_role = role
    if add_generation_prompt and not continue_final_message:
        out.append("<|assistant|>\n")
        if not enable_thinking:
            out.append("<think></think>\n")
    return "".join(out), media
