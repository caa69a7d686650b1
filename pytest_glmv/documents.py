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


def folder(package: str) -> Path:
    """Where the repo folder the package ships as pytest_glmv.PACKAGE lies ("suites", "fixtures").

    Installed, it is that package; in a source tree put on sys.path without an install (pytest run from a copy
    of the repo, as on the GPU machine) it is the repo's folder beside pytest_glmv/. Either way one path, so no
    reader depends on how the package got there.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(f"pytest_glmv.{package}")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / package


def shipped(name: str) -> Path:
    """A data file the package ships in fixtures/ (e.g. "proofs.toml", "known/vllm.toml")."""
    here = folder("fixtures")
    path = here / name
    if not path.is_file():
        raise FileNotFoundError(f"pytest-glmv ships no data file {name!r} (looked in {here})")
    return path
