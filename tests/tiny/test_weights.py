"""Which weights the tiny model serves: trained ones when shipped (or named by $GLMV_TINY_WEIGHTS) and made
for this config, random ones on request or when none ship; anything else is one clear error."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pytest_glmv import tiny
from pytest_glmv.tiny import files, trust


def trained_dir(root: Path, arch: str = "moe", **record: object) -> Path:
    d = root / "trained"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"not really tensors")
    sha = hashlib.sha256(files.files(arch)[0]["config.json"]).hexdigest()
    tasks = trust.verdicts({"colour": 1.0, "count": 0.5}, 48)  # trusted for colour only (tiny/trust.py)
    (d / "training.json").write_text(json.dumps({"arch": arch, "config_sha256": sha, "tasks": tasks, **record}))
    return d


@pytest.fixture(autouse=True)
def no_shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test decides what ships: an empty weights root unless it sets $GLMV_TINY_WEIGHTS."""
    monkeypatch.setattr(tiny, "WEIGHTS_ROOT", tmp_path / "none")
    monkeypatch.delenv("GLMV_TINY_WEIGHTS", raising=False)


def test_no_weights_means_random_weights(tmp_path: Path) -> None:
    tm = tiny.prepare(tmp_path / "cache")
    assert not tm.trained and not tiny.is_trained()
    assert tm.extra_args[:2] == ("--load-format", "dummy")
    assert not list(tm.path.glob("*.safetensors"))
    with pytest.raises(tiny.WeightsError, match="no trained weights for arch 'moe'"):
        tiny.prepare(tmp_path / "cache", weights="trained")


def test_trained_weights_are_served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", str(trained_dir(tmp_path)))
    assert tiny.is_trained("moe")
    tm = tiny.prepare(tmp_path / "cache")
    assert tm.trained and "--load-format" not in tm.extra_args
    assert (tm.path / "model.safetensors").read_bytes() == b"not really tensors"
    assert (tm.path / "config.json").read_bytes() == files.files("moe")[0]["config.json"]
    dummy = tiny.prepare(tmp_path / "cache", weights="dummy")
    assert not dummy.trained and dummy.path != tm.path and "--load-format" in dummy.extra_args


def test_shipped_weights_are_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "weights"
    root.mkdir()
    trained_dir(tmp_path).rename(root / "moe")
    monkeypatch.setattr(tiny, "WEIGHTS_ROOT", root)
    assert tiny.trained_weights("moe") == root / "moe"
    assert not tiny.is_trained("dense")


@pytest.mark.parametrize(("record", "says"), [
    ({"config_sha256": "0" * 64}, "with another config.json"),
    ({"arch": "dense"}, "trained for arch 'dense'"),
    ({"tasks": trust.verdicts({"colour": 0.4, "count": 0.4}, 48)}, "no gated task reached its threshold: colour 40%"),
    ({"tasks": None, "passed": True}, "no per-task record"),
])
def test_unusable_weights_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              record: dict[str, object], says: str) -> None:
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", str(trained_dir(tmp_path, **record)))
    assert not tiny.is_trained("moe")
    with pytest.raises(tiny.WeightsError, match=says) as e:
        tiny.prepare(tmp_path / "cache")
    assert "\n" not in str(e.value)


def test_named_dir_without_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLMV_TINY_WEIGHTS", str(tmp_path))
    with pytest.raises(tiny.WeightsError, match="no \\*.safetensors there"):
        tiny.trained_weights()
