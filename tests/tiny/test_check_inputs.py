"""The picture checks' own examples on the model (train/check_inputs.py): drawn by the checks' strategies, judged by
the checks' own code, recorded by ship --check-inputs and read by trust.py. No torch: the model's answers are
written here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glmv.kit import judges as j
from pytest_glmv.tiny import trust
from pytest_glmv.tiny.train import check_inputs as ci
from pytest_glmv.tiny.train import ship

from .test_trust import fake_output, record

GROUND = "test_multimodal_behavior.py::test_grounding_box_overlaps_the_truth"


def test_the_grounding_checks_examples_start_with_the_smallest_square_and_its_own_code_judges_them() -> None:
    fn = getattr(ci._suite(), GROUND.split("::")[1])
    drawn = ci.drawn(fn)
    assert len(drawn) == trust.ANSWERS[GROUND]
    first = drawn[0]["scene"]
    assert first.shapes[0].box[:2] == (0, 0) and first.shapes[0].box[2] == min(first.width, first.height) // 6
    inner = fn.hypothesis.inner_test
    truth = first.box_1000(0)
    right = {"content": f"{j.BOX_OPEN}[[{truth[0]},{truth[1]},{truth[2]},{truth[3]}]]{j.BOX_CLOSE}"}
    asked = ci._Model([right])
    assert ci.run_check(inner, drawn[0], asked) is None and len(asked.asked) == 1
    # the five-number box the model of 2026-12-06 wrote for this example, in transformers and in vLLM 0.32
    says = ci.run_check(inner, drawn[0], ci._Model([{"content": f"{j.BOX_OPEN}[[1,2,26,190,235]]{j.BOX_CLOSE}"}]))
    assert says is not None and "no box" in says


def test_trust_leaves_out_a_check_whose_own_examples_fail_on_the_model() -> None:
    rec = record({t: 1.0 for t in trust.THRESHOLDS})
    assert trust.Trust(rec, "training.json").why_not(GROUND) is None
    miss = {"example": "{'scene': smallest at 0,0}", "check_says": "no box in GLM's markup"}
    rec["check_inputs"] = {"checks": {GROUND: {"examples": 4, "passed": 3, "misses": [miss]}}}
    why = trust.Trust(rec, "training.json").why_not(GROUND)
    assert why is not None and "1 of the check's own 4 examples" in why and "no box in GLM's markup" in why
    rec["check_inputs"]["checks"][GROUND]["passed"] = 4
    assert trust.Trust(rec, "training.json").why_not(GROUND) is None


def test_ship_records_check_inputs_and_refuses_another_file(tmp_path: Path) -> None:
    src = fake_output(tmp_path, {"colour": 1.0, "ground": 1.0})
    good = tmp_path / "inputs.json"
    good.write_text(json.dumps({"hypothesis": "6.155.2", "checks": {GROUND: {"examples": 4, "passed": 3,
                                                                              "misses": []}}}))
    rec = json.loads((ship.ship(src, "moe", None, None, dest_root=tmp_path / "w", inputs=good)
                      / "training.json").read_text())
    assert rec["check_inputs"]["checks"][GROUND]["passed"] == 3 and rec["check_inputs"]["hypothesis"] == "6.155.2"
    for text in ("not json", json.dumps({"checks": {"nosuch::check": {"examples": 4, "passed": 4}}})):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ship.ShipError, match="not a python -m pytest_glmv.tiny.train.check_inputs"):
            ship.ship(src, "moe", None, None, dest_root=tmp_path / "w2", inputs=bad)


def test_a_model_dir_without_its_files_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        ci.main(["--model", str(tmp_path)])
    assert e.value.code == 2 and "no config.json there" in capsys.readouterr().err
