"""Server-sent events as text: the one reader of a chat stream's lines for the suites, the kit and the tests.

A stream is read line by line (httpx's iter_lines, or a whole body's splitlines): a `data: ` line carries
one JSON chunk, `data: [DONE]` ends the stream; blank lines only separate events. The SLO load
generator does not use this: it parses bytes where they are received, in its timing path
(slo/client.py, `_Events`), where decoding every line to text would cost it time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

PREFIX = "data: "
DONE = PREFIX + "[DONE]"
_EOL = re.compile(r"\r\n|\r|\n")  # SSE's line ends only: str.splitlines() would also cut at U+2028 in a chunk


def payload(line: str) -> str | None:
    """The data of a `data: ` line; None for any other line."""
    return line[len(PREFIX):] if line.startswith(PREFIX) else None


@dataclass
class Reader:
    """Fed a stream's lines in order: keeps every non-blank line, the parsed chunks (not [DONE]; a payload
    that is not JSON is kept as {"_unparsable": line}) and whether [DONE] came."""

    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def feed(self, line: str) -> bool:
        """Take one line; True when it was a `data: ` line ([DONE] included)."""
        if not line:
            return False
        self.lines.append(line)
        data = payload(line)
        if data is None:
            return False
        if line == DONE:
            self.done = True
        else:
            try:
                self.events.append(json.loads(data))
            except ValueError:
                self.events.append({"_unparsable": line})
        return True

    @property
    def data_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith(PREFIX)]


def read(lines: str | Iterable[str]) -> Reader:
    """A whole stream at once: a body's text, or its lines."""
    reader = Reader()
    for line in _EOL.split(lines) if isinstance(lines, str) else lines:
        reader.feed(line)
    return reader
