"""Option resolution (CLI > env > ini > default), UsageError texts, and the printed vllm command."""
from __future__ import annotations

import shlex

import pytest

from pytest_glmv.kit.hardening import launch_flag
from pytest_glmv.lifecycle import config as cfg

RECOMMENDED = ("--tensor-parallel-size 4 --tool-call-parser glm45 --reasoning-parser glm45 --enable-auto-tool-choice "
               "--enable-expert-parallel --allowed-local-media-path / --mm-encoder-tp-mode data "
               "--mm-processor-cache-type shm").split()


def resolve(cli: dict | None = None, ini: dict | None = None, env: dict | None = None) -> cfg.Settings:
    cli, ini = cli or {}, ini or {}
    return cfg.resolve(cli.get, ini.get, env or {})


def test_precedence_cli_env_ini_default() -> None:
    assert resolve().startup_timeout == 2400.0
    assert resolve(ini={"startup_timeout": "30"}).startup_timeout == 30.0
    s = resolve(ini={"startup_timeout": "30"}, env={"GLMV_STARTUP_TIMEOUT": "40"})
    assert (s.startup_timeout, s.sources["startup_timeout"]) == (40.0, "env")
    s = resolve(cli={"startup_timeout": "50"}, ini={"startup_timeout": "30"}, env={"GLMV_STARTUP_TIMEOUT": "40"})
    assert (s.startup_timeout, s.sources["startup_timeout"]) == (50.0, "cli")
    assert resolve(env={"GLMV_VLLM_ARG": "--max-num-seqs 8 --enforce-eager"}).vllm_arg == (
        "--max-num-seqs", "8", "--enforce-eager")
    assert resolve(ini={"vllm_arg": ["--a", "b"]}, cli={"vllm_arg": ["--c"]}).vllm_arg == ("--c",)


def test_targets() -> None:
    assert resolve().target == "reference" and not resolve().explicit_target
    assert resolve(cli={"model": "zai-org/GLM-4.5V"}).target == "vllm"
    assert resolve(env={"GLMV_BASE_URL": "http://h:8000/v1"}).target == "external"
    assert resolve(cli={"server": "reference"}).explicit_target


@pytest.mark.parametrize("kw, message", [
    ({"cli": {"tp": "0"}}, "--glmv-tp: 0 is out of range; it must be at least 1"),
    ({"cli": {"tp": "two"}}, "--glmv-tp: 'two' is not a whole number"),
    ({"env": {"GLMV_DP": "-1"}}, "GLMV_DP: -1 is out of range; it must be at least 1"),
    ({"ini": {"profile": "glm-5"}}, "ini glmv_profile: unknown value 'glm-5'; valid choices: glm-4.5v, "
                                    "glm-4.5v-fp8, glm-4.6v, glm-4.6v-fp8, glm-4.6v-flash, glm-4.1v-thinking"),
    ({"cli": {"server": "docker"}}, "valid choices: reference, vllm, external"),
    ({"cli": {"gpu_memory_utilization": "0"}}, "it must be above 0 and at most 1"),
    ({"cli": {"gpu_memory_utilization": "1.5"}}, "it must be above 0 and at most 1"),
    ({"env": {"GLMV_PRINT_COMMAND": "maybe"}}, "GLMV_PRINT_COMMAND: 'maybe' is not a boolean"),
    ({"cli": {"startup_timeout": "nan"}}, "--glmv-startup-timeout: 'nan' must be finite"),
    ({"cli": {"model": "m", "base_url": "http://h/v1"}}, "--glmv-model and --glmv-base-url exclude each other"),
    ({"cli": {"server": "external"}}, "--glmv-server external needs --glmv-base-url"),
    ({"cli": {"server": "vllm"}}, "--glmv-server vllm needs --glmv-model"),
    ({"cli": {"server": "reference", "model": "m"}}, "--glmv-server reference takes neither"),
    ({"cli": {"base_url": "host:8000"}}, "must start with http:// or https://"),
    ({"cli": {"fault": ["x"], "base_url": "http://h/v1"}}, "--glmv-fault injects faults into the reference"),
    ({"cli": {"print_command": "true"}}, "--glmv-print-command needs --glmv-model"),
    ({"cli": {"fault": ["nope"]}}, "--glmv-fault: unknown fault 'nope'; list them with"),
    ({"cli": {"baseline": "/nonexistent/report.json"}}, "--glmv-baseline /nonexistent/report.json: not a readable"),
    ({"cli": {"vllm_drop_arg": ["--reasoning-parser"]}}, "--glmv-vllm-drop-arg changes a launch; it needs"),
    ({"cli": {"model": "m", "vllm_drop_arg": ["reasoning-parser"]}}, "'reasoning-parser': give the flag itself"),
])
def test_usage_errors(kw: dict, message: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        resolve(**kw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_usage_error_reaches_the_user_as_one_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nglmv_tp = 0\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini glmv_tp: 0 is out of range; it must be at least 1"])
    assert "Traceback" not in result.stderr.str()


def test_unknown_model_without_profile(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--glmv-model", "acme/vision-7b")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: cannot tell which GLM-4V model 'acme/vision-7b' is; pass "
                                 "--glmv-profile with one of: glm-4.5v, *glm-4.1v-thinking"])


def printed(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess("--glmv-print-command", *args)
    assert result.ret == 0, result.stderr.str()
    lines = [x for x in result.outlines if x.strip()]
    assert len(lines) == 1, lines  # the command and nothing else: it can be pasted
    return shlex.split(lines[0])


def test_print_command_glm45v_fp8_tp4(pytester: pytest.Pytester) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V-FP8", "--glmv-tp", "4")
    assert argv[:3] == ["vllm", "serve", "zai-org/GLM-4.5V-FP8"]
    line = " ".join(argv)
    assert " ".join(RECOMMENDED[:2]) in line
    for flag in RECOMMENDED:
        assert flag in argv
    for pair in (("--tool-call-parser", "glm45"), ("--reasoning-parser", "glm45"),
                 ("--allowed-local-media-path", "/"), ("--mm-encoder-tp-mode", "data"),
                 ("--mm-processor-cache-type", "shm"), ("--served-model-name", "zai-org/GLM-4.5V-FP8")):
        assert launch_flag(argv, pair[0]) == pair[1]


def test_print_command_glm46v_dp2_with_extras(pytester: pytest.Pytester) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.6V", "--glmv-dp", "2", "--glmv-max-model-len",
                   "65536", "--glmv-gpu-memory-utilization", "0.95", "--glmv-max-num-batched-tokens", "8192",
                   "--glmv-vllm-arg=--max-num-seqs", "--glmv-vllm-arg=64")
    assert launch_flag(argv, "--data-parallel-size") == "2"
    assert "--tensor-parallel-size" not in argv
    assert launch_flag(argv, "--max-model-len") == "65536"
    assert launch_flag(argv, "--gpu-memory-utilization") == "0.95"
    assert launch_flag(argv, "--max-num-batched-tokens") == "8192"
    assert argv[-2:] == ["--max-num-seqs", "64"]  # extras verbatim, last, so they win
    assert "--enable-expert-parallel" in argv  # GLM-4.6V is MoE


def test_print_command_dense_flash_has_no_expert_parallel(pytester: pytest.Pytester) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.6V-Flash", "--glmv-tp", "1")
    assert "--enable-expert-parallel" not in argv
    assert "--tool-call-parser" in argv


def test_default_tp_counts_visible_gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V")
    assert launch_flag(argv, "--tensor-parallel-size") == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V")
    assert launch_flag(argv, "--tensor-parallel-size") == "1"


def test_xdist_refused_with_launched_model(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V-FP8", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: -n/--dist with --glmv-model would start one vLLM per worker*"])


def test_print_command_narrowed_media_path(pytester: pytest.Pytester, tmp_path) -> None:
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V", "--glmv-tp", "1", "--glmv-allowed-media-path",
                   str(tmp_path))
    assert launch_flag(argv, "--allowed-local-media-path") == str(tmp_path)
    assert argv.count("--allowed-local-media-path") == 1


def test_print_command_drops_a_recommended_flag_with_its_value(pytester: pytest.Pytester) -> None:
    """A misdeployment on purpose (tests/vllm/test_misdeploy_on_vllm.py): the flag and its value leave the argv,
    a flag without a value leaves alone, and the rest of the recommended launch stays."""
    argv = printed(pytester, "--glmv-model", "zai-org/GLM-4.5V", "--glmv-tp", "1",
                   "--glmv-vllm-drop-arg=--reasoning-parser", "--glmv-vllm-drop-arg=--enable-auto-tool-choice")
    assert "--reasoning-parser" not in argv and "--enable-auto-tool-choice" not in argv
    assert launch_flag(argv, "--tool-call-parser") == "glm45"
    assert argv.count("glm45") == 1 and "--allowed-local-media-path" in argv


def test_dropping_a_flag_the_launch_lacks_is_one_line(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--glmv-model", "zai-org/GLM-4.5V", "--glmv-print-command",
                                           "--glmv-vllm-drop-arg=--reasoning-parsr")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: glmv: --glmv-vllm-drop-arg --reasoning-parsr: the launch has no such flag; "
                                 "it has --tool-call-parser --reasoning-parser *"])
    assert "Traceback" not in result.stderr.str()
