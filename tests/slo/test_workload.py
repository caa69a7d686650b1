"""Workloads: the synthetic VisionArena-shaped set is deterministic; the real set fails in one clear line."""
from __future__ import annotations

import base64
import io
import sys
import types

import pytest
from PIL import Image

from pytest_glmv.slo import workload
from pytest_glmv.slo.workload import WorkloadError


def test_synthetic_is_seeded_varied_and_shaped_like_vision_arena() -> None:
    a = workload.synthetic(40, seed=5)
    assert a == workload.synthetic(40, seed=5)
    assert a != workload.synthetic(40, seed=6)
    assert len({r.image_url for r in a}) == 40  # unique images: no server-side cache hits
    sizes = set()
    for r in a:
        assert r.max_tokens == 128 and r.image_url and r.image_url.startswith(("data:image/jpeg", "data:image/png"))
        img = Image.open(io.BytesIO(base64.b64decode(r.image_url.split(",", 1)[1])))
        sizes.add(img.size)
        assert 5 <= len(r.text) and 60 <= workload._approx_tokens(r.text) <= 140, r.text
    assert len(sizes) >= 5
    assert len({r.text[:12] for r in a}) >= 4  # several languages and questions


def test_unknown_dataset() -> None:
    with pytest.raises(WorkloadError, match="unknown --glmv-dataset 'sharegpt'; valid: synthetic, lmarena-ai"):
        workload.load("sharegpt", 1)


def test_vision_arena_without_the_datasets_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(WorkloadError) as e:
        workload.load(workload.VISION_ARENA, 3)
    assert str(e.value) == ("glmv: --glmv-dataset lmarena-ai/VisionArena-Chat needs the datasets extra: pip install "
                            "'pytest-glmv[datasets]' (or use --glmv-dataset synthetic)")


def test_vision_arena_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("datasets")

    def load_dataset(*a: object, **k: object) -> None:
        raise ConnectionError("Couldn't reach 'lmarena-ai/VisionArena-Chat' on the Hub (LocalEntryNotFoundError)\nmore")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(WorkloadError) as e:
        workload.load(workload.VISION_ARENA, 3)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("glmv: cannot load lmarena-ai/VisionArena-Chat from the Hugging Face hub (ConnectionError: "
                          "Couldn't reach"), msg
