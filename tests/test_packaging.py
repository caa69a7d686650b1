"""What a wheel ships: every package of the plugin, the suites and the fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pytest_glmv").rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject's [tool.setuptools] packages: {sorted(found - listed)}"
    assert conf["package-dir"] == {"pytest_glmv.suites": "suites", "pytest_glmv.fixtures": "fixtures"}
    assert (ROOT / "suites" / "__init__.py").exists() and (ROOT / "pytest_glmv" / "py.typed").exists()
