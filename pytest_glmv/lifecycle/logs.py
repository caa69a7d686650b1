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


# vLLM's log line: `(EngineCore_DP0 pid=7) INFO 12-06 07:00:00 [loader.py:12] message` (process prefix and date
# optional, as older releases and the fakes write them).
_LEVELLED = re.compile(r"^(?:\((?P<proc>[^)]*?)\s*pid=\d+\)\s*)?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\b:?\s*"
                       r"(?:\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s*)?(?:\[[^\]]*\]\s*)?(?P<msg>.*)$")
_BAR = re.compile(r"\d+%\s*(?:Completed|\|)|\d+/\d+ \[")  # tqdm bars: checkpoint shards, CUDA graph capture
_ACCESS = re.compile(r'"(?:GET|POST|PUT|DELETE|HEAD) /')  # uvicorn's access log: our own polling


def progress_line(log_text: str) -> str:
    """The latest line of a starting server's log that reports progress, whole: an INFO line (its message, with the
    process it came from) or a progress bar. Warnings, tracebacks, access-log lines and continuation lines of
    other messages are not progress (a cut `reason: ...` line read like an error); "" when there is none."""
    for raw in reversed(plain(log_text).splitlines()):
        line = raw.strip()
        if not line or _ACCESS.search(line):
            continue
        m = _LEVELLED.match(line)
        if m is not None:
            if m.group("level") != "INFO" or not m.group("msg"):
                continue
            proc = m.group("proc")
            return f"{proc}: {m.group('msg')}" if proc else m.group("msg")
        if _BAR.search(line):
            return line
    return ""
