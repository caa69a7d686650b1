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


def test_a_path_value_beside_another_ini_file_is_one_line_asking_for_equals(pytester: pytest.Pytester,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest read that folder's ini (its addopts applied): not undone by guesswork, one line says what works."""
    elsewhere = pytester.mkdir("elsewhere")
    (elsewhere / "pytest.ini").write_text("[pytest]\naddopts = -x\n")
    base = elsewhere / "report.json"
    base.write_text(json.dumps({"format": FORMAT, "checks": [], "slo": []}))
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_probe.py").write_text(PROBE)
    monkeypatch.chdir(project)
    result = pytester.runpytest_subprocess("--glmv-baseline", str(base), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [ln for ln in result.stderr.lines if ln.strip()]
    assert len(errors) == 1 and "write --glmv-baseline=VALUE" in errors[0] and str(elsewhere) in errors[0], errors
    assert pytester.runpytest_subprocess(f"--glmv-baseline={base}", "-p", "no:cacheprovider").ret == 0
