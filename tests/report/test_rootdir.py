"""`--glmv-baseline PATH` with a space reads as `=`: pytest's rootdir and ini file stay the project's (pytest #8846)."""
from __future__ import annotations

import json

import pytest

from pytest_glmv.report import FORMAT

PROBE = """
def test_where(pytestconfig):
    print("ROOT", pytestconfig.rootpath, "INI", pytestconfig.inipath, "Q", pytestconfig.option.verbose)
"""


@pytest.mark.parametrize("form", ["space", "equals"])
def test_a_path_value_does_not_move_the_rootdir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                               form: str) -> None:
    base = pytester.mkdir("elsewhere") / "report.json"
    base.write_text(json.dumps({"format": FORMAT, "checks": [], "slo": []}))
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -v -p no:cacheprovider\n")
    (project / "test_probe.py").write_text(PROBE)
    opt = ["--glmv-baseline", str(base)] if form == "space" else [f"--glmv-baseline={base}"]
    monkeypatch.chdir(project)
    result = pytester.runpytest_subprocess("-s", *opt)
    out = result.stdout.str()
    assert result.ret == 0, out + result.stderr.str()
    # the project's ini was read (its addopts -v too), and no .pytest_cache landed beside the report
    assert f"ROOT {project} INI {project / 'pytest.ini'} Q 1" in out, out
    assert not (base.parent / ".pytest_cache").exists()
