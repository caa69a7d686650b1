"""From raw output text to what an engine hands the API layer: tokens, stops, finish reason.

vLLM's rules kept here: `max_tokens` counts every generated token and a run cut
by it finishes with "length"; the stop token (EOS, or `<|observation|>` after a
tool call) counts as a completion token but is not shown; a stop string cuts the
text and becomes `stop_reason`; stop tokens other than EOS become `stop_reason` too.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import tokenizer as tok

_STOP_TOKENS = ("<|observation|>", "<|user|>", "<|endoftext|>")
_BOXES = ("<|begin_of_box|>", "<|end_of_box|>")
_PAST_EOS = " and so on"


@dataclass
class Generation:
    pieces: list[tuple[list[int], str]]  # (token ids, text) per streamed delta
    finish_reason: str
    stop_reason: int | str | None
    completion_tokens: int
    reasoning_tokens: int
    logprobs: list[dict[str, Any]] | None = None
    piece_logprobs: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.pieces)


def build(raw: str, max_tokens: int, stops: Sequence[str] = (), reasoning: bool = True,
          strip_boxes: bool = False, top_logprobs: int | None = None, ignore_eos: bool = False) -> Generation:
    """top_logprobs None: no logprobs; 0 or more: that many alternatives per token.
    ignore_eos (vLLM's sampling flag): no stop token ends the run (vLLM then drops the generation
    config's extra EOS ids from the stop ids too), so the answer goes on to max_tokens ("length");
    stop strings still cut it. The text past the answer is a fixed filler, one token a delta."""
    stop_id = tok.OBSERVATION if "<tool_call>" in raw else tok.EOS
    for name in _STOP_TOKENS:
        if raw.endswith(name):
            raw, stop_id = raw[: -len(name)], tok.SPECIAL[name]
            break
    ids = tok.encode(raw)
    if ignore_eos and len(ids) < max_tokens:
        filler = tok.encode(_PAST_EOS)
        ids = ids + filler * ((max_tokens - len(ids)) // len(filler) + 2)
    pieces: list[tuple[list[int], str]] = []
    used, text = 0, ""
    finish = "stop"
    stop_reason: int | str | None = None if stop_id == tok.EOS else stop_id
    for piece_ids, piece_text in tok.stream_pieces(ids):
        if used + len(piece_ids) > max_tokens:
            # The engine produced max_tokens tokens; a character split across the cut never shows.
            used, finish, stop_reason = max_tokens, "length", None
            break
        used += len(piece_ids)
        hit = _first_stop(text + piece_text, stops, len(text))
        if hit is not None:
            at, which = hit
            pieces.append((piece_ids, (text + piece_text)[len(text):at]))
            finish, stop_reason = "stop", which
            break
        pieces.append((piece_ids, piece_text))
        text += piece_text
    else:
        if used + 1 > max_tokens:
            finish, stop_reason = "length", None
        else:
            used += 1  # the stop token itself
    if strip_boxes:
        pieces = [(i, _strip(t)) for i, t in pieces]
    gen = Generation(pieces, finish, stop_reason, used, _reasoning_tokens(pieces, reasoning))
    if top_logprobs is not None:
        gen.piece_logprobs = [[_logprob(t, n, top_logprobs) for n, t in enumerate(i)] for i, _ in pieces]
        gen.logprobs = [lp for group in gen.piece_logprobs for lp in group]
    return gen


def _strip(text: str) -> str:
    for b in _BOXES:
        text = text.replace(b, "")
    return text


def _first_stop(text: str, stops: Sequence[str], checked: int) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for s in stops:
        if not s:
            continue
        at = text.find(s, max(0, checked - len(s) + 1))
        if at != -1 and (best is None or at < best[0]):
            best = (at, s)
    return best


def _reasoning_tokens(pieces: list[tuple[list[int], str]], reasoning: bool) -> int:
    if not reasoning:
        return 0
    count, inside = 0, True
    for ids, _ in pieces:
        for tid in ids:
            if tid == tok.SPECIAL["</think>"]:
                inside = False
            elif tid != tok.SPECIAL["<think>"] and inside:
                count += 1
    return count


def _logprob(tid: int, position: int, top: int) -> dict[str, Any]:
    """Deterministic numbers in vLLM's shape; the chosen token is always the most likely."""
    def entry(t: int, rank: int) -> dict[str, Any]:
        h = int(hashlib.sha256(f"{t}:{position}".encode()).hexdigest()[:6], 16)
        value = -(rank * 1.5 + (h % 1000) / 4000.0)
        s = tok.token_str(t)
        return {"token": s, "logprob": value, "bytes": list(s.encode())}

    chosen = entry(tid, 0)
    alts = [entry(a, r + 1) for r, a in enumerate(_alternatives(tid, top))]
    chosen["top_logprobs"] = ([dict(chosen)] + alts)[:top] if top > 0 else []
    return chosen


def _alternatives(tid: int, count: int) -> list[int]:
    out: list[int] = []
    step = 1
    while len(out) < count:
        cand = (tid + step * 7919) % 80000 + 256
        if cand != tid and tok.token_bytes(cand):
            out.append(cand)
        step += 1
    return out
