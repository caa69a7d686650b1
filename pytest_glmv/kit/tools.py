"""Tool calling as a client sees it: tool definitions, call validation, generated tool schemas.

What holds for ANY weights (vLLM 0.32 serving a random-weight GLM-4.5V included): vLLM's glm45 tool
parser does not constrain required/named calls with a JSON-schema grammar, so a model may leave out
arguments (the tiny random model answers `"{}"` for a schema that requires `city`). Whether required
arguments are filled is therefore behaviour; what the server must guarantee is that every argument it
DID return parses, is typed as the schema says (the parser types values from the schema) and fits it.
So server-level validation uses the schema with `required` dropped (`relaxed`), and behaviour checks
ask for the required keys on top.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterable

MARKUP = ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
AUTO_FLAGS = "--enable-auto-tool-choice --tool-call-parser glm45"
AUTO_HINT = ("tool_choice auto is refused: the server was started without auto tool choice. "
             f"Start vLLM with `{AUTO_FLAGS}` (GLM-4V emits glm45 tool-call markup).")


def tool(name: str, description: str, properties: dict[str, Any] | None = None,
         required: Iterable[str] = ()) -> dict[str, Any]:
    params: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        params["required"] = list(required)
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


WEATHER = tool("get_weather", "Current weather for a city",
               {"city": {"type": "string", "description": "city name"},
                "days": {"type": "integer", "description": "forecast days"}}, ["city"])
STOCK = tool("get_stock_price", "Latest stock price for a ticker symbol",
             {"ticker": {"type": "string"}}, ["ticker"])
CONVERT = tool("convert_currency", "Convert an amount of money between currencies",
               {"amount": {"type": "number"}, "source": {"type": "string"}, "target": {"type": "string"}},
               ["amount", "source", "target"])
# One property of every JSON type a real tool uses; all required, so a model that fills them shows typing.
BOOKING = tool("book_table", "Book a restaurant table", {
    "guests": {"type": "integer", "minimum": 1, "maximum": 20},
    "budget": {"type": "number"},
    "outdoor": {"type": "boolean"},
    "dishes": {"type": "array", "items": {"type": "integer"}},
    "contact": {"type": "object", "properties": {"floor": {"type": "integer"}, "vip": {"type": "boolean"}},
                "required": ["floor", "vip"]},
    "seating": {"type": "string", "enum": ["window", "bar", "terrace"]},
}, ["guests", "budget", "outdoor", "dishes", "contact", "seating"])
BOOKING_QUESTION = "Book a table for 4 guests, budget 120, outdoor yes, at the terrace."
# Unicode and inner whitespace in string values: an enum pins the exact text for any weights.
LABELS = ["Zürich  Nord", "東京\tcafé ☕", "naïve · résumé"]
LABEL = tool("set_label", "Set the label of the current note",
             {"label": {"type": "string", "enum": LABELS}}, ["label"])
NOTE_TEXT = "Grüße,  東京\tcafé ☕ — naïve"
SAVE_NOTE = tool("save_note", "Save a note verbatim", {"text": {"type": "string"}}, ["text"])
NO_ARGS = [tool("get_time", "Current server time"),
           {"type": "function", "function": {"name": "ping", "description": "Check the service is up"}}]
COLOURS = ["red", "green", "blue", "yellow", "black", "purple", "orange"]
SET_COLOUR = tool("set_colour", "Set the theme colour", {"colour": {"type": "string", "enum": COLOURS}},
                  ["colour"])


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def relaxed(schema: Any) -> Any:
    """The schema with every `required` list dropped (see the module docstring)."""
    out = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("required", None) if isinstance(node.get("required"), list) else None
            for v in node.values():
                strip(v)
        elif isinstance(node, list):
            for v in node:
                strip(v)
    strip(out)
    return out


def schema_of(tools: Iterable[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for t in tools:
        fn = t.get("function") or {}
        if fn.get("name") == name:
            return fn.get("parameters") or {"type": "object", "properties": {}}
    return None


def decoded(raw: Any) -> tuple[Any, str | None]:
    """A call's `arguments` decoded: (value, None), or (None, what is wrong with them)."""
    if not isinstance(raw, str):
        return None, f"arguments is {type(raw).__name__}, not a JSON string"
    try:
        return json.loads(raw), None
    except ValueError as e:
        return None, f"arguments are not JSON ({e}): {raw!r}"


def arguments(call: dict[str, Any]) -> Any:
    """A call's decoded arguments; None when they are not a JSON string."""
    return decoded((call.get("function") or {}).get("arguments"))[0]


def call_problems(calls: list[dict[str, Any]], tools: list[dict[str, Any]], strict: bool = False) -> list[str]:
    """What is wrong with returned tool calls: shape, id, name, JSON arguments, schema (relaxed unless strict)."""
    problems: list[str] = []
    ids = [c.get("id") for c in calls]
    if len(set(ids)) != len(ids):
        problems.append(f"tool call ids repeat: {ids}")
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        name, raw = fn.get("name"), fn.get("arguments")
        if call.get("type") != "function":
            problems.append(f"call {i}: type is {call.get('type')!r}, not 'function'")
        if not isinstance(call.get("id"), str) or not call["id"]:
            problems.append(f"call {i}: no id")
        schema = schema_of(tools, str(name))
        if schema is None:
            problems.append(f"call {i}: {name!r} is not one of the tools offered")
            continue
        args, wrong = decoded(raw)
        if wrong is None and not isinstance(args, dict):
            wrong = f"arguments are not a JSON object: {raw!r}"
        if wrong is not None:
            problems.append(f"call {i} ({name}): {wrong}")
            continue
        import jsonschema  # here: pytest_glmv.tiny.train reads the tool definitions where jsonschema is absent

        for err in jsonschema.Draft202012Validator(schema if strict else relaxed(schema)).iter_errors(args):
            where = "/".join(map(str, err.absolute_path)) or "(top)"
            problems.append(f"call {i} ({name}): {where}: {err.message}")
    return problems


def markup_in(*texts: Any) -> list[str]:
    return [m for m in MARKUP if any(isinstance(t, str) and m in t for t in texts)]


def is_auto_refusal(status: int, message: str) -> bool:
    return status == 400 and ("auto" in message and "tool" in message.lower())


# -- generated tools, within what real tools use -----------------------------------------------------
def tool_requests() -> Any:
    """A hypothesis strategy of (tools, tool_choice, question): 1-3 tools of 0-5 typed properties.

    Kept to schemas whose typing the glm45 parser defines: one `type` per property (a union such as
    ["string", "null"] is read as JSON, so "123" would come back a number), string or integer enums,
    arrays of one item type, one level of nested object.
    """
    from hypothesis import strategies as st

    ident = st.from_regex(r"[a-z][a-z0-9_]{1,14}", fullmatch=True)
    text = st.sampled_from(["Paris", "東京", "São Paulo", "a  b\tc", "naïve résumé", "42", "true", "null", "x"])
    scalar = st.sampled_from([
        {"type": "string"}, {"type": "string", "description": "free text"}, {"type": "integer"},
        {"type": "integer", "minimum": 0, "maximum": 100}, {"type": "number"}, {"type": "boolean"},
    ])
    enum = st.one_of(
        st.lists(text, min_size=1, max_size=4, unique=True).map(lambda v: {"type": "string", "enum": v}),
        st.lists(st.integers(-5, 50), min_size=1, max_size=4, unique=True).map(
            lambda v: {"type": "integer", "enum": v}))
    array = scalar.map(lambda s: {"type": "array", "items": s})
    nested = st.dictionaries(ident, st.one_of(scalar, enum), min_size=1, max_size=3).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda req: {"type": "object", "properties": props, "required": req}))
    prop = st.one_of(scalar, enum, array, nested)

    def one_tool(name: str) -> Any:
        return st.dictionaries(ident, prop, max_size=5).flatmap(
            lambda props: st.tuples(st.lists(st.sampled_from(sorted(props)), unique=True) if props
                                    else st.just([]), st.sampled_from(["", "Look something up", "Do the task"]))
            .map(lambda rd: tool(name, rd[1], props, rd[0])))

    tools = st.lists(ident, min_size=1, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*[one_tool(n) for n in names]).map(list))

    def with_choice(ts: list[dict[str, Any]]) -> Any:
        names = [t["function"]["name"] for t in ts]
        choice = st.one_of(st.sampled_from(["auto", "required", "none"]), st.sampled_from(names).map(named))
        question = st.tuples(st.sampled_from(names), text, st.integers(0, 99)).map(
            lambda q: f"Use {q[0]} for {q[1]!s} with {q[2]}, please.")
        return st.tuples(st.just(ts), choice, question)

    return tools.flatmap(with_choice)
