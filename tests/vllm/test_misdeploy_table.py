"""fixtures/misdeploy.toml held to the suites without vLLM: every row loads, names checks that exist and the files it
serves, and a row that could prove nothing (or two rows of one launch naming one check) is refused in one line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from . import misdeploy

GOOD = '''[[row]]
name = "x"
launch = "l"
args = ["--glmv-vllm-drop-arg=--reasoning-parser"]
fail = ["test_reasoning.py::test_reasoning_in_its_own_field"]
[row.messages]
"test_reasoning.py::test_reasoning_in_its_own_field" = ["carries text"]
'''


def test_the_table_loads_and_its_files_exist() -> None:
    rows = misdeploy.load()
    assert misdeploy.RECOMMENDED in misdeploy.launches(rows) and len(misdeploy.launches(rows)) >= 3
    assert all(r.fail for r in rows if r.induced) and any(not r.induced for r in rows)
    served = [Path(a.split("=", 1)[1]) for r in rows for a in misdeploy.plugin_args([r]) if "{" not in a
              and re.match(r"--glmv-vllm-arg=/", a)]
    assert served and all(p.is_file() for p in served), served


@pytest.mark.parametrize("text, error", [
    (GOOD.replace("its_own_field\"]", "own_field\"]", 1), "no such check in suites/"),
    (GOOD.replace('"carries text"', ""), "messages must name exactly its fail and may_fail checks"),
    (GOOD.replace("[row.messages]", 'colour = "red"\n[row.messages]'), "unknown keys ['colour']"),
    (GOOD.replace("[row.messages]", 'cause = "wrong"\n[row.messages]'), "cause 'wrong' is none of"),
    (GOOD.replace('launch = "l"', 'launch = "recommended"'), "is exactly the one without args"),
    (GOOD + GOOD.replace('name = "x"', 'name = "y"'), "both name test_reasoning.py::test_reasoning_in_its_own_field"),
    (GOOD.replace("fail = [", "induced = false\nfail = ["), "induced = false takes tried, why and pass"),
], ids=["no-such-check", "no-texts", "unknown-key", "unknown-cause", "recommended-with-args", "one-check-twice",
        "not-induced-without-why"])
def test_a_row_that_proves_nothing_is_refused(tmp_path: Path, text: str, error: str) -> None:
    table = tmp_path / "misdeploy.toml"
    table.write_text(text)
    with pytest.raises(misdeploy.TableError) as info:
        misdeploy.load(table)
    assert error in str(info.value) and "\n" not in str(info.value)


def test_the_good_row_loads_with_any_of_texts(tmp_path: Path) -> None:
    table = tmp_path / "misdeploy.toml"
    table.write_text(GOOD.replace('["carries text"]', '["carries", ["text", "words"]]'))
    (row,) = misdeploy.load(table)
    assert row.args == ("--glmv-vllm-drop-arg=--reasoning-parser",) and row.induced
    want = row.messages["test_reasoning.py::test_reasoning_in_its_own_field"]
    assert want == ("carries", ("text", "words"))
    assert misdeploy.shows("carries words", want[1]) and not misdeploy.shows("carries nothing", want[1])
