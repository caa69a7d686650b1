"""Workload parity with vllm bench serve: ignore_eos, temperature, --extra-body and the random dataset as
options and spec keys, request bytes as vLLM builds them, bad values in one line."""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_glmv.slo import client, runner, spec, workload
from pytest_glmv.slo.workload import WorkloadError


def vllm_payload(model: str, text: str, image: str | None, max_tokens: int, ignore_eos: bool,
                 temperature: float | None, extra_body: dict[str, Any] | None) -> bytes:
    """vLLM 0.32's construction, step by step: serve.py merges {**sampling_params, **extra_body};
    async_request_openai_chat_completions builds the payload, then _update_payload_common sets ignore_eos
    (when true) and updates with that extra_body; aiohttp's json= encodes with json.dumps' defaults."""
    sampling = {k: v for k, v in {"temperature": temperature}.items() if v is not None}
    merged = {**sampling, **(extra_body or {})}
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image:
        content.append({"type": "image_url", "image_url": {"url": image}})
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}],
                               "max_completion_tokens": max_tokens, "stream": True,
                               "stream_options": {"include_usage": True}}
    if ignore_eos:
        payload["ignore_eos"] = ignore_eos
    if merged:
        payload.update(merged)
    return json.dumps(payload).encode()


@pytest.mark.parametrize("ignore_eos, temperature, extra", [
    (False, None, None),
    (True, 0.0, None),
    (False, 0.7, {"top_k": 1}),
    (True, 0.0, {"temperature": 0.5, "chat_template_kwargs": {"enable_thinking": False}}),
    (True, None, {"ignore_eos": False, "max_completion_tokens": 9, "stream": True}),
])
def test_request_bytes_equal_vllm_bench_serves(ignore_eos: bool, temperature: float | None,
                                               extra: dict[str, Any] | None) -> None:
    p = runner.Params(ignore_eos=ignore_eos, temperature=temperature, extra_body=extra)
    for image in ("data:image/png;base64,AAAA", None):
        got = client.body("m", "Qu'est-ce ? 图片", image, 128, p.body_extra())
        assert got == vllm_payload("m", "Qu'est-ce ? 图片", image, 128, ignore_eos, temperature, extra)


def test_the_comparison_benchmarks_bodies_are_unchanged() -> None:
    # benchmarks/slo_clients.vllm_body: --ignore-eos --temperature 0 as vllm bench serve sends them
    assert runner.Params(ignore_eos=True, temperature=0.0).body_extra() == {"ignore_eos": True, "temperature": 0.0}


def settings(**kw: Any) -> SimpleNamespace:
    base = dict(num_prompts=200, request_rate=float("inf"), burstiness=1.0, max_concurrency=None, dataset="synthetic",
                seed=0, ignore_eos=False, temperature=None, extra_body=None, random_input_len=1024,
                random_output_len=128, request_timeout=600.0, slo_max_send_lag_ms=10.0)
    sources = {k: "cli" for k in kw}
    base.update(kw)
    return SimpleNamespace(**base, sources=sources)


def scenario(**run: Any) -> spec.Scenario:
    return spec.parse({**run, "completed": 1}, "spec.toml").scenarios[0]


def test_spec_keys_and_options_set_the_body_and_the_random_dataset() -> None:
    sc = scenario(dataset="random", random_input_len=64, random_output_len=8, temperature=0,
                  extra_body={"top_k": 1})
    p = runner.params_for(settings(), sc)
    assert (p.dataset, p.random_input_len, p.random_output_len) == ("random", 64, 8)
    assert p.ignore_eos, "the random dataset turns ignore_eos on, as vllm bench serve does"
    assert p.body_extra() == {"ignore_eos": True, "temperature": 0.0, "top_k": 1}
    assert "random (64 in, 8 out)" in p.describe() and "ignore_eos" in p.describe()
    # options the user gave win over the spec; JSON text is vllm bench serve's --extra-body form
    p = runner.params_for(settings(temperature=0.3, extra_body='{"min_p": 0.1}', random_output_len=4), sc)
    assert p.body_extra() == {"ignore_eos": True, "temperature": 0.3, "min_p": 0.1} and p.random_output_len == 4
    assert runner.params_for(settings(), scenario()).body_extra() == {}


@pytest.mark.parametrize("run, says", [
    ({"ignore_eos": "yes"}, "ignore_eos = 'yes' must be true or false"),
    ({"temperature": -0.5}, "temperature = -0.5 must be a finite number >= 0"),
    ({"extra_body": "{nope"}, "extra_body is not valid JSON"),
    ({"extra_body": [1, 2]}, "extra_body must be a table (or a JSON object)"),
    ({"random_input_len": 0}, "random_input_len = 0 must be a whole number >= 1"),
    ({"random_output_lenn": 5}, "did you mean 'random_output_len'?"),
])
def test_bad_spec_values_are_one_line(run: dict[str, Any], says: str) -> None:
    with pytest.raises(spec.SpecError) as e:
        scenario(**run)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("value, says", [
    ("{x", "--glmv-extra-body: not valid JSON"),
    ("[1]", "--glmv-extra-body: must be a JSON object, got list [1]"),
])
def test_bad_extra_body_option_is_one_usage_line(value: str, says: str) -> None:
    from pytest_glmv.slo import selection

    with pytest.raises(WorkloadError, match=r"--glmv-extra-body"):
        runner.params_for(settings(extra_body=value), scenario())
    with pytest.raises(pytest.UsageError) as e:
        selection.check_options(settings(extra_body=value))
    assert says in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(pytest.UsageError,
                       match="unknown --glmv-dataset 'nope'; valid: synthetic, lmarena-ai/VisionArena-Chat, random"):
        selection.check_options(settings(dataset="nope"))


def test_random_text_is_seeded_distinct_and_cut_by_the_aligner() -> None:
    a = workload.load("random", 20, seed=3, input_len=50, output_len=7)
    assert a == workload.load("random", 20, seed=3, input_len=50, output_len=7)
    assert a != workload.load("random", 20, seed=4, input_len=50, output_len=7)
    assert all(r.image_url is None and r.max_tokens == 7 for r in a)
    assert len({r.text.split()[0] + r.text.split()[1] for r in a}) > 10  # no shared prefix to cache
    assert all(len(r.text) <= 200 for r in a)  # without a tokenizer: about 4 characters a token
    cut = workload.load("random", 3, seed=3, input_len=50, align=lambda texts, n: [t[:n] for t in texts])
    assert [len(r.text) for r in cut] == [50, 50, 50]


def test_the_aligner_cuts_to_exact_tokens_with_the_servers_tokenizer() -> None:
    from pytest_glmv.reference.launcher import ReferenceServer

    with ReferenceServer() as srv:
        align = runner.aligner(srv.root_url, srv.model, None)
        texts = [r.text for r in workload.random_text(5, 1, 300)]
        import httpx

        for text in align(texts, 300):
            count = httpx.post(srv.root_url + "/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
            assert count["count"] == 300
    # no /tokenize there: the texts stay, cut at about 4 characters a token
    assert runner.aligner("http://127.0.0.1:9", None, None)(["ab" * 100], 10) == ["ab" * 20]


def test_pytest_m_slo_runs_the_random_workload_end_to_end(pytester: pytest.Pytester) -> None:
    from tests.slo.test_e2e import SUITE

    text = 'num_prompts = 3\nrequest_rate = "inf"\n[slo]\ncompleted = 3\n'
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(
        str(SUITE), "--glmv-server", "reference", "--glmv-slo", str(pytester.makefile(".toml", small=text)),
        "--glmv-dataset", "random", "--glmv-random-input-len", "40", "--glmv-random-output-len", "6",
        "--glmv-temperature", "0", "--glmv-extra-body", '{"top_k": 1}', "--glmv-slo-json", str(out),
        "--glmv-slo-records")
    result.assert_outcomes(passed=3)
    data = json.loads(out.read_text())
    # 40 prompt tokens plus the chat template's; ignore_eos on, so every answer is exactly 6 tokens
    assert len(set(data["input_lens"])) == 1 and data["input_lens"][0] > 40 and data["output_lens"] == [6, 6, 6]
    assert data["run_not_valid"] is None
