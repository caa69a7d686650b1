"""The deterministic "model": raw GLM output text for a conversation. A double, not a model.

It answers only what the suites ask about synthetic images (colour, shape
count, grounding box), calls tools whose name or description matches the
prompt, and uses tool results; everything else gets a fixed sentence.  The
text it returns is what GLM would emit (think block, tool-call XML, box
tokens), so the server's parsers do the real work downstream.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from .vision import _PALETTE as _COLOUR_NAMES
from .vision import Media

BOX, END_BOX = "<|begin_of_box|>", "<|end_of_box|>"
_STOP = set("""get set the a an for of to and with from current tool function call data info information value
values by in on this that given specified return returns is are be or as at it its your you what which how""".split())
_NOT_ENTITY = set("""What Whats How Is Are Can Could Please Tell The I Do Does Which Where When Who Why Give Show Find
Get Call Use And Also Then In For Of Both A An It My Me Now Today Tomorrow Compare Look Check Weather""".split())
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10}
_VARIANTS = ("", "In short: ", "To answer briefly: ", "Here is my answer: ")


@dataclass
class Context:
    messages: Sequence[dict[str, Any]]
    media: list[Media]
    tools: Sequence[dict[str, Any]] | None
    tool_choice: Any  # "none" | "auto" | "required" | {"type": "function", "function": {"name"}}
    thinking: bool
    variant: int = 0  # 0 = greedy; sampled choices pick another phrasing
    leak_boxes: bool = False
    off_by_one: bool = False  # arithmetic-off-by-one: every sum, difference and product one too high
    recent_only: bool = False  # attention-window-short: a long chat is read from its last quarter only
    pixel_boxes: bool = False  # boxes-in-pixels: grounding boxes in the image's pixels, not GLM's 0-1000 scale


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _safe(text: str, limit: int = 120) -> str:
    """User text echoed back must not smuggle markup into the model's own output."""
    text = re.sub(r"\s+", " ", text.replace("<", " ").replace(">", " ")).strip()
    return text[:limit]


def _words(text: str) -> set[str]:
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") else w)
    return out


def respond(ctx: Context) -> str:
    """Raw output: `<think>reasoning</think>` (when thinking) then the answer or tool calls."""
    last = ctx.messages[-1] if ctx.messages else {}
    question = next((text_of(m.get("content")) for m in reversed(ctx.messages) if m.get("role") == "user"), "")
    if last.get("role") == "tool":
        reasoning, answer = _use_tool_results(ctx)
    else:
        calls = _tool_calls(ctx, question)
        if calls:
            names = ", ".join(dict.fromkeys(name for name, _ in calls))
            reasoning = f"The user asks: {_safe(question)}. The tool {names} provides this, so I will call it."
            answer = "\n" + "\n".join(_call_xml(name, args) for name, args in calls)
            return (f"<think>{reasoning}</think>" if ctx.thinking else "") + answer
        reasoning, answer = _answer(ctx, question)
    prefix = _VARIANTS[ctx.variant % len(_VARIANTS)]
    body = prefix + answer if not answer.startswith(BOX) else answer
    return (f"<think>{reasoning}</think>" if ctx.thinking else "") + body


RECENT_CHARS = 20000  # attention-window-short bites only on prompts longer than this
_ASK_FACT = re.compile(r"\bwhat is the ([a-z][a-z ]{2,40}?) (?:mentioned|stated|given|written)\b", re.I)


def _recall(ctx: Context, question: str) -> tuple[str, str] | None:
    """Long-context retrieval: "What is the X mentioned ...?" answered from "The X is Y." anywhere in the chat."""
    ask = _ASK_FACT.search(question)
    if not ask:
        return None
    subject = ask.group(1).strip()
    text = "\n".join(text_of(m.get("content")) for m in ctx.messages)
    if ctx.recent_only and len(text) > RECENT_CHARS:
        text = text[-len(text) // 4:]
    fact = re.search(rf"\bthe {re.escape(subject)} is ([^.\n]{{1,80}})", text, re.I)
    if not fact:
        return None
    return f"The document states the {subject}.", f"The {subject} is {fact.group(1).strip()}."


# "Answer with one word", "Reply with a number": a real model answers that tersely, and elaborates otherwise.
_TERSE = re.compile(r"\b(?:answer|reply|respond)\s+(?:with|in)\s+(?:one|a single|a)\s+(?:word|number)\b", re.I)


def _elaboration(seen: Any, what: str) -> str:
    """What a model adds to a description unless told to be terse: as long as real answers to image questions
    (vllm bench serve's VisionArena runs of GLM-4.5V average ~120 output tokens), so that throughput SLOs
    measured against the double mean something."""
    one = seen.shapes == 1
    colours = " and ".join(seen.foreground) or seen.dominant
    text = ", beside the written text" if seen.text else ""
    return (f" The {colours} shape{' stands' if one else 's stand'} out against the {seen.background} ground"
            f"{text}, and nothing else is in view. The {what} is plain and evenly lit, with sharp edges and flat "
            "colours. A viewer takes it in at a glance: the layout is simple and the shapes do not overlap.")


def _answer(ctx: Context, question: str) -> tuple[str, str]:
    q = question.lower()
    recalled = None if ctx.media else _recall(ctx, question)
    if recalled:
        return recalled
    if not ctx.media:
        if re.search(r"\b(image|picture|photo|video)s?\b", q):
            return ("The user refers to an image, but the message carries none.",
                    "I cannot see any image in your message.")
        m = re.search(r"(-?\d+)\s*([+\-*x×])\s*(-?\d+)", question)
        if m:
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            value = (a + b if op == "+" else a - b if op == "-" else a * b) + ctx.off_by_one
            return f"The user asks for {a} {op} {b}; that is {value}.", f"{a} {op} {b} = {value}."
        return (f"The user asks: {_safe(question)}. There is nothing to look up, so I answer directly.",
                f"This is the glmv reference server's fixed answer to: {_safe(question, 80)}.")
    which = _which_image(ctx, q)
    if which:
        return which
    answers, notes = [], []
    terse = _TERSE.search(question) is not None
    for i, item in enumerate(ctx.media):
        seen = item.seen[0]
        tag = f"Image {i + 1}: " if len(ctx.media) > 1 else ""
        notes.append(f"{item.kind} {i + 1} is {seen.width}x{seen.height}, mostly {seen.dominant}, "
                     f"{seen.shapes} shape(s) on {seen.background}")
        if seen.text and re.search(r"\b(word|text|written|read|says?)\b", q):
            answers.append(f'{tag}The text reads "{_safe(seen.text, 40)}".')
            continue
        if re.search(r"\b(where|locate|bounding|box|ground|grounding|coordinates?|position)\b", q):
            bbox = seen.bbox or (0, 0, 1000, 1000)
            if ctx.pixel_boxes:
                scale = (seen.width, seen.height) * 2
                bbox = tuple(round(c * s / 1000) for c, s in zip(bbox, scale, strict=True))
            box = f"[{','.join(map(str, bbox))}]"
            answers.append(f"{tag}{BOX}{box}{END_BOX}")
            continue
        if re.search(r"\b(how many|count|number of)\b", q):
            ans = f"There {'is' if seen.shapes == 1 else 'are'} {seen.shapes} shape{'' if seen.shapes == 1 else 's'}."
        elif re.search(r"\b(colou?r)s?\b", q):
            ans = f"The dominant colour is {seen.dominant}."
            if len(seen.foreground) == 1 and seen.foreground[0] != seen.dominant:
                ans += f" The shape is {seen.foreground[0]}."
        else:
            colours = " and ".join(seen.foreground) or seen.dominant
            what = "video" if item.kind == "video" else "image"
            ans = (f"The {what} shows {seen.shapes} {colours} shape{'' if seen.shapes == 1 else 's'} "
                   f"on a {seen.background} background.")
        if not terse:
            ans += _elaboration(seen, "video" if item.kind == "video" else "picture")
        answers.append(tag + (f"{BOX}{ans}{END_BOX}" if ctx.leak_boxes else ans))
    reasoning = "Looking at the input: " + "; ".join(notes) + "."
    if ctx.leak_boxes:
        boxes = [f"[{','.join(map(str, m.seen[0].bbox))}]" for m in ctx.media if m.seen[0].bbox]
        reasoning += f" Candidate box: {BOX}{boxes[0] if boxes else '[0,0,1000,1000]'}{END_BOX}"
    return reasoning, " ".join(answers)


def _which_image(ctx: Context, q: str) -> tuple[str, str] | None:
    """"Which image shows a <colour> ...?" over several images: the first one whose shapes have that colour."""
    if len(ctx.media) < 2 or not re.search(r"\bwhich\b", q):
        return None
    asked = [w for w in re.findall(r"[a-z]+", q) if w in {name for name, _ in _COLOUR_NAMES}]
    for i, item in enumerate(ctx.media):
        seen = item.seen[0]
        if asked and asked[0] in (seen.foreground or [seen.dominant]):
            nth = ("first", "second", "third", "fourth")[i] if i < 4 else f"number {i + 1}"
            return (f"Looking for {asked[0]}: image {i + 1} has {', '.join(seen.foreground)} shapes.",
                    f"The {nth} image.")
    return None


def _use_tool_results(ctx: Context) -> tuple[str, str]:
    names: dict[str, str] = {}
    for m in ctx.messages:
        for tc in m.get("tool_calls") or []:
            if isinstance(tc, dict):
                names[str(tc.get("id"))] = str((tc.get("function") or {}).get("name", "the tool"))
    results = []
    for m in reversed(ctx.messages):
        if m.get("role") != "tool":
            break
        who = names.get(str(m.get('tool_call_id')), 'the tool')
        results.append(f"{who} returned {_safe(text_of(m.get('content')), 200)}")
    results.reverse()
    return ("The tool results are in; I will answer from them.",
            "According to the tool results: " + "; ".join(results) + ".")


# ---------------------------------------------------------------- tools


def _fn(tool: Any) -> dict[str, Any]:
    return tool.get("function", {}) if isinstance(tool, dict) else {}


def _tool_words(fn: dict[str, Any]) -> tuple[set[str], set[str]]:
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(fn.get("name", ""))).replace("_", " ").replace("-", " ")
    name_words = {w for w in _words(name) if w not in _STOP}
    desc_words = {w for w in _words(str(fn.get("description", ""))) if w not in _STOP and len(w) >= 4}
    return name_words, desc_words


def _tool_calls(ctx: Context, question: str) -> list[tuple[str, dict[str, Any]]]:
    tools = [t for t in ctx.tools or [] if _fn(t).get("name")]
    choice = ctx.tool_choice
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if _fn(t).get("name") == wanted][:1]
    else:
        asked = _words(question)
        scored = []
        for t in tools:
            name_words, desc_words = _tool_words(_fn(t))
            score = 2 * len(name_words & asked) + len(desc_words & asked)
            if score >= 2:
                scored.append((score, t))
        chosen = [t for _, t in sorted(scored, key=lambda s: -s[0])]
        if not chosen and choice == "required":
            chosen = tools[:1]
    entities = _entities(question)
    # What the images show can fill arguments too ("call the tool with the main colour of this picture").
    seen = " ".join(f"{m.seen[0].dominant} {' '.join(m.seen[0].foreground)}" for m in ctx.media if m.seen)
    question = f"{question} {seen}" if seen else question
    calls: list[tuple[str, dict[str, Any]]] = []
    for t in chosen:
        fn = _fn(t)
        if len(chosen) == 1 and len(entities) > 1 and _first_string(fn) is not None:
            calls += [(fn["name"], _arguments(fn, question, e)) for e in entities]
        else:
            calls.append((fn["name"], _arguments(fn, question, entities[0] if entities else None)))
    return calls


def _entities(text: str) -> list[str]:
    quoted = re.findall(r"[\"“']([^\"”']{2,60})[\"”']", text)
    names = [m for m in re.findall(r"\b[A-Z][a-zA-Z]+(?:\s+[A-Z][a-zA-Z]+)*", text) if m not in _NOT_ENTITY]
    cjk = re.findall(r"[\u3040-\u30ff\u4e00-\u9fff]+", text)
    return list(dict.fromkeys(quoted + names + cjk))


def _props(fn: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    params = fn.get("parameters") or {}
    return (params.get("properties") or {}), list(params.get("required") or [])


def _type(schema: dict[str, Any]) -> str:
    t = schema.get("type", "string")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    return str(t)


def _first_string(fn: dict[str, Any]) -> str | None:
    props, _ = _props(fn)
    return next((k for k, s in props.items() if _type(s) == "string" and "enum" not in s), None)


def _arguments(fn: dict[str, Any], question: str, entity: str | None) -> dict[str, Any]:
    props, required = _props(fn)
    numbers = [int(n) for n in re.findall(r"\b\d+\b", question)]
    numbers += [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", question.lower()) if w in _NUMBER_WORDS]
    low = question.lower()
    first_string = _first_string(fn)
    args: dict[str, Any] = {}
    for key, schema in props.items():
        schema = schema if isinstance(schema, dict) else {}
        need = key in required
        kind = _type(schema)
        if "enum" in schema and schema["enum"]:
            hit = next((v for v in schema["enum"] if str(v).lower() in low), None)
            if hit is not None or need:
                args[key] = hit if hit is not None else schema["enum"][0]
        elif kind == "string":
            if key == first_string and entity:
                args[key] = entity
            elif need:
                args[key] = entity or _safe(question, 60) or key
        elif kind in ("integer", "number"):
            if numbers:
                args[key] = _clamp(numbers.pop(0), schema, kind)
            elif need:
                args[key] = _fill(schema, entity)
        elif kind == "boolean" and need:
            args[key] = bool(re.search(r"\b(yes|true|enable|on)\b", low))
        elif kind in ("array", "object") and need:
            args[key] = _fill(schema, entity or _safe(question, 40))
    return args


def _clamp(n: int | float, schema: dict[str, Any], kind: str) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    n = max(n, lo) if isinstance(lo, (int, float)) else n
    n = min(n, hi) if isinstance(hi, (int, float)) else n
    return int(n) if kind == "integer" else float(n)


def _fill(schema: Any, text: str | None) -> Any:
    """A value that fits a (sub)schema, as a grammar-forced call would give: typed array items, required keys."""
    schema = schema if isinstance(schema, dict) else {}
    if schema.get("enum"):
        return schema["enum"][0]
    kind = _type(schema)
    if kind in ("integer", "number"):
        return _clamp(1, schema, kind)
    if kind == "boolean":
        return False
    if kind == "array":
        return [_fill(schema.get("items"), text)] if schema.get("items") or text else []
    if kind == "object":
        props, required = _props({"parameters": schema})
        return {k: _fill(props.get(k), text) for k in required}
    return text or "x"


def _call_xml(name: str, args: dict[str, Any]) -> str:
    body = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>"
                   f"{v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}</arg_value>\n"
                   for k, v in args.items())
    return f"<tool_call>{name}\n{body}</tool_call>"
