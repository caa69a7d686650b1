"""The per-task rule of pytest_glmv/tiny/trust.py: trained tiny weights run the `behavior` checks of the tasks
that reached their threshold, leave out the others with one line naming the task, and are refused when no
gated task passed; the shipped weights' training.json is that rule applied to the measured accuracies."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_glmv import tiny
from pytest_glmv.tiny import files, trust
from pytest_glmv.tiny.train import dialogs, ship

ROOT = Path(__file__).resolve().parents[2]
COLOUR = "test_multimodal_behavior.py::test_names_the_colour_of_a_shape"
COUNT = "test_multimodal_behavior.py::test_counts_the_shapes"
GROUND = "test_multimodal_behavior.py::test_grounding_box_overlaps_the_truth"
SHORTER = "test_reasoning.py::test_thinking_off_answer_is_shorter"


def record(accuracy: dict[str, float], n: int = 48, **extra: Any) -> dict[str, Any]:
    return {"arch": "moe", "config_sha256": hashlib.sha256(files.files("moe")[0]["config.json"]).hexdigest(),
            "tasks": trust.verdicts(accuracy, n), **extra}


def test_verdicts_judge_each_task_by_its_threshold() -> None:
    got = trust.verdicts({"colour": 0.9, "count": 0.89, "word": 0.8, "needle": 1.0}, 48)
    assert {t: r["passed"] for t, r in got.items()} == {"colour": True, "count": False, "word": True, "needle": True}
    assert got["count"] == {"accuracy": 0.89, "n": 48, "threshold": 0.9, "passed": False, "gated": True}
    assert got["needle"]["gated"] is False


@pytest.mark.parametrize(("accuracy", "refused"), [
    ({"colour": 1.0, "count": 0.5}, None),
    ({"colour": 0.2, "count": 0.5}, "no gated task reached its threshold: colour 20%, count 50%"),
    ({"colour": 0.2, "needle": 1.0}, "no gated task reached its threshold"),  # an ungated pass ships nothing
])
def test_weights_where_no_gated_task_passes_are_refused(accuracy: dict[str, float], refused: str | None) -> None:
    got = trust.refusal(record(accuracy))
    assert got == refused if refused is None else refused in str(got)
    assert "no per-task record" in str(trust.refusal({"arch": "moe", "passed": True}))


def test_a_check_runs_only_when_every_task_it_mirrors_passed() -> None:
    t = trust.Trust(record({"colour": 1.0, "count": 0.54, "reason": 1.0, "reason_off": 0.3}), "w/training.json")
    assert t.why_not(COLOUR) is None
    assert t.why_not(COUNT) == ("task count reached 54% < threshold 90% (n=48, greedy under transformers, "
                                "w/training.json)")
    assert "task reason_off reached 30% < threshold 60%" in str(t.why_not(SHORTER))  # reason passed, not enough
    assert "task gif was not measured" in str(t.why_not("test_multimodal_behavior.py::test_gif_is_read_by_its_first_"
                                                         "frame"))
    assert "no training task mirrors it" in str(t.why_not("test_tools.py::test_a_new_behaviour"))
    drop, lines = t.split([(COLOUR, "a"), (COUNT, "b1"), (COUNT, "b2"), (SHORTER, "c")])
    assert drop == ["b1", "b2", "c"]
    assert lines == ["test_multimodal_behavior::test_counts_the_shapes deselected: the tiny model's task count "
                     "reached 54% < threshold 90% (n=48, greedy under transformers, w/training.json)",
                     "test_reasoning::test_thinking_off_answer_is_shorter deselected: the tiny model's task "
                     "reason_off reached 30% < threshold 60% (n=48, greedy under transformers, w/training.json)"]


def test_server_level_checks_the_models_writing_decides_are_left_out_with_their_reason() -> None:
    t = trust.Trust(record({"colour": 1.0}), "w/training.json")
    box = "test_reasoning.py::test_box_tokens_stay_out_of_reasoning"
    drop, lines = t.split([(box, "b1"), (box, "b2"), (COLOUR, "a")])
    assert drop == ["b1", "b2"]
    assert lines == ["test_reasoning::test_box_tokens_stay_out_of_reasoning deselected: the tiny model's writing "
                     "decides it: the trained model writes a box inside its reasoning as well as in its answer when "
                     "thinking is on; GLMV_TINY_WEIGHTS=dummy runs it on random weights"]
    for key in trust.WRITING_DECIDES:  # each names a server-level check of the suites (not a behaviour check)
        file, function = key.split("::")
        source = (ROOT / "suites" / file).read_text()
        assert f"def {function}(" in source and key not in trust.CHECK_TASKS


def test_todays_threshold_decides_not_the_recorded_flag() -> None:
    edited = record({"count": 0.54})
    edited["tasks"]["count"].update(passed=True, threshold=0.5)  # a hand-edited or stale verdict
    assert "count reached 54% < threshold 90%" in str(trust.Trust(edited, "x").why_not(COUNT))
    assert trust.refusal(edited) is not None


def test_every_behavior_check_maps_to_tasks_that_exist() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "suites", "-m", "behavior", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-p", "no:randomly"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**_env(), "GLMV_TINY_WEIGHTS": "dummy"})
    checks = {trust.check_key(line.split("::")[0], line.split("::")[1].split("[")[0])
              for line in out.stdout.splitlines() if line.startswith("suites/") and "::" in line}
    assert checks, out.stdout[-2000:] + out.stderr[-2000:]
    assert checks == set(trust.CHECK_TASKS), (checks ^ set(trust.CHECK_TASKS))
    assert {t for ts in trust.CHECK_TASKS.values() for t in ts} <= set(dialogs.TASKS)
    assert set(trust.THRESHOLDS) == set(dialogs.TASKS) and set(trust.UNGATED) <= set(dialogs.TASKS)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GLMV_"))}


# -- the shipped weights -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["moe", "dense"])
def test_shipped_weights_are_the_rule_applied_to_their_measurements(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLMV_TINY_WEIGHTS", raising=False)
    where = tiny.trained_weights(arch)  # raises on another config or a refused record
    assert where == tiny.WEIGHTS_ROOT / arch
    rec = json.loads((where / "training.json").read_text())
    measured = {t: r["accuracy"] for t, r in rec["tasks"].items()}
    assert rec["tasks"] == trust.verdicts(measured, {t: r["n"] for t, r in rec["tasks"].items()}, rec["ungated"])
    assert all(r["n"] >= 48 for r in rec["tasks"].values()) and set(rec["tasks"]) == set(dialogs.TASKS)
    assert rec["all_passed"] is False and rec["failures"]  # as measured: not every task passed
    assert rec["shipped"]["model_sha256"] == hashlib.sha256((where / "model.safetensors").read_bytes()).hexdigest()
    ship.bf16_only(where / "model.safetensors")
    # steps in all: a resumed run (--init) counts its ancestors' steps in steps_total, and names each ancestor
    assert rec["seed"] == 0 and rec["device"] == "cuda" and rec.get("steps_total", rec["steps"]) > 3000
    init, total = rec.get("init"), rec.get("steps_total", rec["steps"])
    while init:
        assert len(init["model_sha256"]) == 64 and init["steps_total"] < total
        total, init = init["steps_total"], init.get("record", {}).get("init")


def test_shipped_moe_runs_the_checks_of_its_passing_tasks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GLMV_TINY_WEIGHTS", raising=False)
    t = tiny.behaviour_trust("moe")
    assert t is not None
    runs = {k for k in trust.CHECK_TASKS if t.why_not(k) is None}
    assert runs == set(trust.CHECK_TASKS)  # every behaviour check: the weights of 16:47 (needle 100 %, <=130 sentences)
    dense = tiny.behaviour_trust("dense")
    assert dense is not None and GROUND not in {k for k in trust.CHECK_TASKS if dense.why_not(k) is None}
    assert "test_tools.py::test_picks_the_right_tool" in runs
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", "dummy")  # random weights on request, shipped ones or not
    assert tiny.behaviour_trust("moe") is None and not tiny.is_trained("moe")
    assert "--load-format" in tiny.prepare(tmp_path, weights="auto").extra_args


# -- shipping a training output ------------------------------------------------------------------------
def fake_output(tmp_path: Path, accuracy: dict[str, float], dtype: str = "BF16", **rec: Any) -> Path:
    """A pre-per-task training output: bf16 safetensors header, files.py's files, accuracy + eval_n."""
    d = tmp_path / "out.rejected"
    d.mkdir()
    header = json.dumps({"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 2]}}).encode()
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    for name, data in files.files("moe")[0].items():
        (d / name).write_bytes(data)
    base = record({})
    del base["tasks"]
    (d / "training.json").write_text(json.dumps({**base, "accuracy": accuracy, "eval_n": 48, "ungated": ["needle"],
                                                 "thresholds": {t: trust.THRESHOLDS[t] for t in accuracy},
                                                 "passed": False, "seed": 0, **rec}))
    return d


def test_ship_relabels_measured_accuracies(tmp_path: Path) -> None:
    src = fake_output(tmp_path, {"colour": 1.0, "count": 0.5416666666666666})
    log = tmp_path / "log"
    log.write_text("colour         100.0%  (n=48, threshold 90%)\ncount           54.2%  (n=48, threshold 90%)\n")
    dest = ship.ship(src, "moe", log, "python -m pytest_glmv.tiny.train --seed 0", dest_root=tmp_path / "w")
    rec = json.loads((dest / "training.json").read_text())
    assert rec["tasks"]["colour"]["passed"] and not rec["tasks"]["count"]["passed"]
    assert "passed" not in rec and "accuracy" not in rec and rec["all_passed"] is False and rec["seed"] == 0
    assert rec["shipped"]["command"] == "python -m pytest_glmv.tiny.train --seed 0"


def test_ship_takes_a_reevaluation_under_todays_judges(tmp_path: Path) -> None:
    src = fake_output(tmp_path, {"colour": 1.0, "count": 0.95})
    again = tmp_path / "again.json"
    again.write_text(json.dumps({"count": {"accuracy": 0.8, "n": 96, "first_miss": "3 or 4"}}))
    with pytest.raises(ship.ShipError, match="needs --reevaluation-note"):
        ship.ship(src, "moe", None, None, dest_root=tmp_path / "w", evaluations=[again])
    dest = ship.ship(src, "moe", None, None, dest_root=tmp_path / "w", evaluations=[again], note="evaluate, judges X")
    rec = json.loads((dest / "training.json").read_text())
    assert rec["tasks"]["count"] == {"accuracy": 0.8, "n": 96, "threshold": 0.9, "passed": False, "gated": True}
    assert rec["tasks"]["colour"]["passed"]
    assert rec["reevaluated"] == [{"file": "again.json", "note": "evaluate, judges X",
                                   "training_measured": {"count": 0.95}}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nosuch": {"accuracy": 1.0, "n": 48}}))
    with pytest.raises(ship.ShipError, match="were not measured in training"):
        ship.ship(src, "moe", None, None, dest_root=tmp_path / "w", evaluations=[bad], note="x")
    # a task of today's that the training did not have (word split from number) is measured now, and says so
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"number": {"accuracy": 0.1, "n": 48}}))
    rec = json.loads((ship.ship(src, "moe", None, None, dest_root=tmp_path / "w2", evaluations=[split], note="x")
                      / "training.json").read_text())
    assert rec["tasks"]["number"]["passed"] is False and rec["reevaluated"][-1]["training_measured"] == {"number": None}


@pytest.mark.parametrize(("change", "says"), [
    ({"accuracy": {"colour": 0.3}}, "no gated task reached its threshold"),
    ({"thresholds": {"colour": 0.5}}, "thresholds changed since this training"),
    ({"config_sha256": "0" * 64}, "today's moe config is"),
    ({"dtype": "F32"}, "not only BF16"),
    ({"log": "colour          90.0%  (n=48, threshold 90%)\n"}, "disagrees with the log"),
])
def test_ship_refuses(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    accuracy = change.pop("accuracy", {"colour": 1.0})
    dtype = change.pop("dtype", "BF16")
    log_text = change.pop("log", None)
    src = fake_output(tmp_path, accuracy, dtype, **change)
    log = None
    if log_text:
        log = tmp_path / "log"
        log.write_text(log_text)
    with pytest.raises(ship.ShipError, match=says):
        ship.ship(src, "moe", log, None, dest_root=tmp_path / "w")
    assert not (tmp_path / "w").exists()


# -- a session with trained tiny weights -----------------------------------------------------------------
def test_session_leaves_out_the_checks_of_failed_tasks(pytester: pytest.Pytester, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "trained"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")  # never loaded: --collect-only
    accuracy = {t: 1.0 for t in dialogs.TASKS} | {"count": 0.54, "tool_none": 0.125}
    (d / "training.json").write_text(json.dumps(record(accuracy)))
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", str(d))
    monkeypatch.setenv("GLMV_CACHE_DIR", str(tmp_path / "cache"))
    for extra in ([], ["-m", "behavior"]):  # a -m behavior run is held to the same rule
        result = pytester.runpytest_subprocess(str(ROOT / "suites"), "--glmv-model", "tiny", "--collect-only", "-q",
                                               "-p", "no:cacheprovider", *extra)
        out = result.stdout.str()
        result.stdout.fnmatch_lines([
            "glmv: test_multimodal_behavior::test_counts_the_shapes deselected: the tiny model's task count reached "
            f"54% < threshold 90% (n=48, greedy under transformers, {d}/training.json)",
            "glmv: test_tools::test_no_call_when_no_tool_fits deselected: the tiny model's task tool_none reached "
            "12% < threshold 90%*"])
        assert "::test_counts_the_shapes" not in out.replace("test_multimodal_behavior::test_counts_the_shapes", "")
        assert "suites/test_multimodal_behavior.py::test_names_the_colour_of_a_shape" in out
        assert "suites/test_tools.py::test_picks_the_right_tool" in out
        assert "suites/test_tools.py::test_no_call_when_no_tool_fits" not in out


# -- resuming a training (train.py --init, --weight) -----------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["--weight", "colour"], "--weight 'colour': want TASK=W"),
    (["--weight", "nosuch=2"], "--weight 'nosuch=2': want TASK=W"),
    (["--weight", "count=-1"], "--weight 'count=-1': want TASK=W"),
    (["--weight", "count=nan"], "--weight 'count=nan': want TASK=W"),
    (["--tasks", "colour", "--weight", "colour=0"], "every task trained would be drawn with weight 0"),
    (["--init", "/nonexistent/dir"], "--init /nonexistent/dir: needs model.safetensors and training.json"),
    (["--arch", "dense", "--init", str(tiny.WEIGHTS_ROOT / "moe")], "trained for arch 'moe'"),
])
def test_training_options_are_refused_in_one_line(args: list[str], says: str, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    from pytest_glmv.tiny.train import train

    with pytest.raises(SystemExit) as e:
        train.main(["--out", str(tmp_path / "out"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1], err


def test_init_record_names_what_a_run_resumed_from() -> None:
    from pytest_glmv.tiny.train import train

    rec = train.init_record(tiny.WEIGHTS_ROOT / "moe", "moe")
    shipped = json.loads((tiny.WEIGHTS_ROOT / "moe" / "training.json").read_text())
    assert rec["model_sha256"] == shipped["shipped"]["model_sha256"]
    assert rec["steps_total"] == shipped.get("steps_total", shipped["steps"])


# -- checks that judge several answers (trust.ANSWERS) ---------------------------------------------------
def answers_in_suites() -> dict[str, int]:
    """Each behavior check's number of independent answers as the suites' code says: FEW's max_examples for
    @given checks, the number of values of a parametrized one; 1 otherwise (left out)."""
    import ast

    out = {}
    for path in sorted((ROOT / "suites").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        few = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FEW" for t in node.targets):
                few = next(k.value.value for k in node.value.keywords if k.arg == "max_examples")
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or trust.check_key(path, node.name) not in trust.CHECK_TASKS:
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Name) and dec.id == "FEW":
                    out[trust.check_key(path, node.name)] = few
                elif isinstance(dec, ast.Call) and getattr(dec.func, "attr", None) == "parametrize":
                    out[trust.check_key(path, node.name)] = len(dec.args[1].elts)
    return out


def test_answers_per_check_are_the_suites_own() -> None:
    assert trust.ANSWERS == answers_in_suites()


@pytest.mark.parametrize(("which", "runs"), [(1.0, True), (0.979, True), (0.938, False), (0.85, False)])
def test_a_check_of_several_answers_needs_all_of_them_likely_right(which: float, runs: bool) -> None:
    key = "test_multimodal_behavior.py::test_tells_which_image_shows_a_colour"
    t = trust.Trust(record({t: 1.0 for t in dialogs.TASKS} | {"which": which}), "training.json")
    why = t.why_not(key)
    assert (why is None) is runs, why
    if which == 0.938:  # trusted as a task (>= 90 %), yet 0.938 ** 4 = 77 % of runs would see all four right
        assert "which" in t.trusted()
        assert why == ("task which reached 93.8% < 97.4%, the accuracy at which all 4 answers this check judges are "
                       "right with probability 90% (its threshold) (n=48, greedy under transformers, training.json)")
    # a one-answer check of a task at the same accuracy runs
    assert trust.Trust(record({"tool_pick": which}), "x").why_not("test_tools.py::test_picks_the_right_tool") \
        is None or which < 0.9
