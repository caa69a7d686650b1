"""The tiny model directory, checked without vLLM (stdlib only, runs everywhere)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pytest_glmv import tiny
from pytest_glmv.tiny import files as tiny_files
from pytest_glmv.tiny import tokenizer


def test_build_is_deterministic_and_quick(tmp_path: Path) -> None:
    began = time.perf_counter()
    a = tiny.prepare(tmp_path / "a")
    b = tiny.prepare(tmp_path / "b")
    assert time.perf_counter() - began < 3
    assert a.path.name == b.path.name
    for f in sorted(a.path.iterdir()):
        assert f.read_bytes() == (b.path / f.name).read_bytes(), f.name
    assert tiny.prepare(tmp_path / "a").path == a.path  # reused, not rebuilt elsewhere


def test_prepare_repairs_an_edited_dir(tmp_path: Path) -> None:
    tm = tiny.prepare(tmp_path)
    (tm.path / "config.json").write_text("{}")
    assert json.loads((tiny.prepare(tmp_path).path / "config.json").read_text())["model_type"] == "glm4v_moe"


@pytest.mark.parametrize("arch", ["moe", "dense"])
def test_config_shapes(arch: str) -> None:
    files, ids = tiny_files.files(arch)
    cfg = json.loads(files["config.json"])
    text = cfg["text_config"]
    rotary_pairs = int(text["head_dim"] * text["partial_rotary_factor"]) // 2
    assert sum(text["rope_parameters"]["mrope_section"]) == rotary_pairs
    assert text["vocab_size"] >= max(ids.values()) + 1
    assert cfg["image_token_id"] == ids["<|image|>"]
    assert cfg["architectures"] == [tiny_files.ARCHS[arch][0]]


def test_markup_tokens_are_not_special() -> None:
    doc, ids = tokenizer.build()
    special = {t["content"]: t["special"] for t in doc["added_tokens"]}
    for tok in ("<think>", "</think>", "<tool_call>", "<arg_key>", "<arg_value>", "/nothink"):
        assert special[tok] is False, tok
    for tok in ("<|user|>", "<|assistant|>", "<|image|>", "[gMASK]", "<|endoftext|>"):
        assert special[tok] is True, tok
    assert [t["id"] for t in doc["added_tokens"]] == sorted(ids.values())


def test_tiny_model_contract(tmp_path: Path) -> None:
    tm = tiny.prepare(tmp_path, weights="dummy")
    assert (tm.served_name, tm.max_model_len, tm.profile) == ("tiny-glm45v", 4096, "glm-4.5v")
    args = list(tm.extra_args)
    assert args[args.index("--load-format") + 1] == "dummy"
    # the shipped trained weights (pytest_glmv/tiny/weights/moe) are served by default, vLLM reads them
    assert tiny.prepare(tmp_path).trained and "--load-format" not in tiny.prepare(tmp_path).extra_args
    assert args[args.index("--max-model-len") + 1] == "4096"
    assert json.loads(args[args.index("--structured-outputs-config") + 1]) == {"enable_in_reasoning": True}
    # trained weights: the recommended flags only (the tag must not bind in reasoning: it would mask <think>)
    assert "--structured-outputs-config" not in tiny.prepare(tmp_path).extra_args
    assert tm.env["VLLM_CACHE_ROOT"].startswith(str(tmp_path))
    assert tm.env["HF_HUB_OFFLINE"] == "1" and tm.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert json.loads((tm.path / "token_ids.json").read_text()) == dict(tm.token_ids)


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GLMV_CACHE_DIR", str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path


def test_vllm_executable_prefers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLMV_VLLM_EXECUTABLE", "/opt/x/bin/vllm")
    assert tiny.vllm_executable() == "/opt/x/bin/vllm"
