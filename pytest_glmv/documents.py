"""Files a user points the plugin at (an SLO spec, a baseline report.json): read and parsed one way.

Each failure becomes the caller's own one-line error, for pytest.UsageError: the file cannot be read
(missing, a directory, not UTF-8), or its text is not the format (json and TOML decode errors are
ValueErrors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

Failure = Callable[[Exception], Exception]


def load(path: Path | str, parse: Callable[[str], Any], unreadable: Failure, unparsable: Failure) -> Any:
    """parse(the file's UTF-8 text); raises unreadable(e) or unparsable(e) for what went wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise unreadable(e) from None
    try:
        return parse(text)
    except ValueError as e:
        raise unparsable(e) from None
