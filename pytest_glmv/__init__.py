"""pytest-glmv: conformance and SLO checks for servers that serve GLM-4V models.

The public names a user or script needs; pytest itself loads only pytest_glmv.plugin.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-glmv")  # one place: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "GlmvSession", "Target", "Settings", "Server", "Profile", "LaunchSpec", "session_of"]


def __getattr__(name: str) -> object:
    # Lazy, so `import pytest_glmv` stays cheap and pytest's plugin loading order is untouched.
    if name in ("GlmvSession", "session_of"):
        from . import session

        return getattr(session, name)
    where = {"Target": "lifecycle.target", "Settings": "lifecycle.config", "Server": "lifecycle.server",
             "Profile": "lifecycle.profiles", "LaunchSpec": "lifecycle.launch"}
    if name in where:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
