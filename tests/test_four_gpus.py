"""The guide's topology without its machine (issue 27): what the plugin would launch on a host with four GPUs.

No four-GPU machine is lent here, so these hold the launch arithmetic: a fake `nvidia-smi -L` listing four H100s
(CUDA_VISIBLE_DEVICES unset, as on a fresh host), the command `--glmv-print-command` prints for the recommended
GLM-4.5V-FP8 launch (TP 4 from nvidia-smi, expert parallel), for `--glmv-dp 4` (data parallel instead) and for the
tiny model the GPU runs use; and that the tiny model's shapes divide the way TP 4 / EP 4 needs, so a four-GPU run
fails for vLLM's reasons, not for a model that cannot be split.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from pytest_glmv.kit.hardening import launch_flag
from pytest_glmv.lifecycle import launch

FOUR_H100 = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)\n"
                    for i in range(4))


@pytest.fixture
def four_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH whose nvidia-smi lists four GPUs (and answers nothing else), CUDA_VISIBLE_DEVICES unset."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = \"-L\" ] || exit 9\ncat <<'EOF'\n" + FOUR_H100 + "EOF\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return bin_dir


def printed(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess("--glmv-print-command", *args)
    assert result.ret == 0, result.stderr.str()
    lines = [x for x in result.outlines if x.strip()]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_nvidia_smi_with_four_gpus_counts_four(four_gpus: Path) -> None:
    assert launch.visible_gpus() == (4, "nvidia-smi -L")
    # CUDA_VISIBLE_DEVICES, when set, wins over what nvidia-smi lists (vLLM sees only those)
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"})[0] == 2


def test_recommended_launch_is_tp4_with_expert_parallel(pytester: pytest.Pytester, four_gpus: Path) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V-FP8")
    assert launch_flag(argv, "--tensor-parallel-size") == "4"
    assert "--data-parallel-size" not in argv
    for flag in ("--enable-expert-parallel", "--enable-auto-tool-choice"):
        assert flag in argv
    for name, value in (("--tool-call-parser", "glm45"), ("--reasoning-parser", "glm45"),
                        ("--mm-encoder-tp-mode", "data"), ("--mm-processor-cache-type", "shm")):
        assert launch_flag(argv, name) == value


def test_dp4_is_data_parallel_with_expert_parallel(pytester: pytest.Pytester, four_gpus: Path) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V-FP8", "--glmv-dp", "4")
    assert launch_flag(argv, "--data-parallel-size") == "4"
    assert "--tensor-parallel-size" not in argv  # DP 4 x TP 1 on four GPUs, not TP 4 x DP 4 on sixteen
    assert "--enable-expert-parallel" in argv


def test_tiny_model_on_four_gpus(pytester: pytest.Pytester, four_gpus: Path) -> None:
    argv = printed(pytester, "--glmv-model", "tiny")
    assert launch_flag(argv, "--tensor-parallel-size") == "4"
    assert "--enable-expert-parallel" in argv
    model_dir = Path(argv[2])
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    # TP 4 splits the attention heads 4 ways; vLLM replicates KV heads when TP exceeds them, which needs
    # TP to be a multiple of their count. EP 4 (TP 4 x DP 1, or DP 4) gives each rank whole experts.
    assert text["num_attention_heads"] % 4 == 0, text["num_attention_heads"]
    kv = text["num_key_value_heads"]
    assert 4 % kv == 0 or kv % 4 == 0, kv
    assert text["n_routed_experts"] % 4 == 0, text["n_routed_experts"]
