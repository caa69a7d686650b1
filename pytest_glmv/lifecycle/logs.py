"""What a server's log says about why it died: the root cause as one line, for the startup error."""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """The text without terminal colour codes (vLLM colours its process prefixes)."""
    return _ANSI.sub("", text)

# A line that states an exception: `ValueError: ...`, `torch.OutOfMemoryError: ...`, after any log prefix.
_EXCEPTION = re.compile(r"(?:^|[\s:\])>])((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Failure|Interrupt))"
                        r": (\S.*)$")
# Exceptions that only point at another one (vLLM's API server after its engine died).
_GENERIC = re.compile(r"root cause above|stack trace above|see (the )?(error|log)s? above", re.IGNORECASE)


# pydantic's header line names only the class; the reason is on the lines below it (vLLM's config
# classes are pydantic dataclasses: "World size (2) is larger than the number of available GPUs (1)").
_PYDANTIC = re.compile(r"^\d+ validation errors? for \w+$")
_PROCESS_PREFIX = re.compile(r"^\((?:\w|[ -])+ pid=\d+\)\s?")


def root_cause(log_text: str) -> str | None:
    """The last exception line of a log that is not a pointer to another one, as `Type: message`."""
    lines = plain(log_text).splitlines()
    for at in range(len(lines) - 1, -1, -1):
        m = _EXCEPTION.search(lines[at].rstrip())
        if m and not _GENERIC.search(m.group(2)):
            text = f"{m.group(1)}: {m.group(2).strip()}"
            if _PYDANTIC.match(m.group(2).strip()):
                text += ": " + _pydantic_reason(lines[at + 1:at + 8])
            return text if len(text) <= 300 else text[:297] + "..."
    return None


def _pydantic_reason(following: list[str]) -> str:
    """The first error under a pydantic ValidationError header, as `field: message` (a model validator's
    error has no field line), up to pydantic's `[type=..., input_value=...]` tail."""
    field, words = "", list[str]()
    for raw in following:
        line = _PROCESS_PREFIX.sub("", raw)
        if not line.strip() or line.strip().startswith("For further information"):
            break
        if not words and not line.startswith(" "):
            field = line.strip()  # unindented: the field's name; its message is indented below it
            continue
        words.append(line.strip().split(" [type=")[0])
        if "[type=" in line:
            break
    return (f"{field}: " if field else "") + " ".join(words)
