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


def test_shipped_data_is_found_installed_and_from_a_bare_source_tree(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    from pytest_glmv import documents

    installed = documents.shipped("known/vllm.toml")
    # A copy of the repo on sys.path, never installed (the GPU machine's project folder): no package
    # pytest_glmv.fixtures, the repo's fixtures/ beside pytest_glmv/ instead.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytest_glmv.fixtures" else real(name, *a))
    bare = documents.shipped("known/vllm.toml")
    assert bare == ROOT / "fixtures" / "known" / "vllm.toml" and bare.read_bytes() == installed.read_bytes()
    for name in ("slo_default.toml", "proofs.toml"):
        assert documents.shipped(name).is_file()
    try:
        documents.shipped("nope.toml")
    except FileNotFoundError as e:
        assert "ships no data file 'nope.toml'" in str(e)
    else:
        raise AssertionError("a missing data file must say so")


def test_the_plugin_does_not_pull_pytest_asyncio_into_a_users_environment() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in conf["dependencies"] if d.startswith("pytest-asyncio")]
    assert any(d.startswith("pytest-asyncio") for d in conf["optional-dependencies"]["dev"])
