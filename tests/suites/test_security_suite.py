"""suites/test_security.py proven on the reference server: passes when right, each fault caught by name,
and a waived finding reported as xfail (never dropped)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_glmv.kit.hardening import launch_flag
from pytest_glmv.matrix import SuiteRun, run_suite

SUITE = str(Path(__file__).resolve().parents[2] / "suites" / "test_security.py")
KEY = ["--glmv-api-key", "glmv-test-key"]  # the key checks need a key; the reference is started with it
CAUGHT: dict[str, set[str]] = {
    "api-key-ignored": {"test_v1_refuses_requests_without_the_key[none]",
                        "test_v1_refuses_requests_without_the_key[wrong]"},
    "open-invocations": {"test_endpoints_outside_v1_ask_for_the_key[open-endpoint-invocations]"},
    "traceback-in-errors": {"test_error_answers_give_nothing_away[undecodable-image]",
                            "test_error_answers_give_nothing_away[bad-json]"},
    "address-leak": {"test_error_answers_give_nothing_away[undecodable-image]"},
    "ssrf-open": {"test_media_is_fetched_only_from_allowed_hosts"},
    "ssrf-redirect": {"test_media_allowlist_cannot_be_bypassed[redirect]"},
    "file-anywhere": {"test_local_files_outside_the_media_path_are_refused"},
    "media-url-confusion": {f"test_media_allowlist_cannot_be_bypassed[{v}]"
                            for v in ("backslash", "at-sign", "fragment")},
    "open-admin-endpoints": {f"test_endpoints_outside_v1_ask_for_the_key[open-endpoint-{e}]"
                             for e in ("pause", "dev", "profiler")},
}
# Faults whose checks never meet share a run (the machine is small); each check has one culprit per run.
RUNS: list[tuple[str, ...]] = [("api-key-ignored", "ssrf-redirect", "file-anywhere"),
                               ("open-invocations", "traceback-in-errors", "media-url-confusion"),
                               ("address-leak", "ssrf-open", "open-admin-endpoints")]
assert sorted(f for run in RUNS for f in run) == sorted(CAUGHT)


def _run(key: tuple[str, ...] | str | None) -> SuiteRun:
    extra = ["-m", "not slo", *KEY]
    if key == "waived":  # the SSRF finding waived by ini-style option: an xfail, not a pass, not a failure
        return run_suite([SUITE], fault="ssrf-open", extra=[*extra, "--glmv-waive", "media-domains-open",
                                                               "-k", "allowed_hosts"])
    if key == "no-key":
        return run_suite([SUITE], extra=["-m", "not slo"])
    faults = key if isinstance(key, tuple) else ()
    for f in faults[1:]:
        extra += ["--glmv-fault", f]
    return run_suite([SUITE], fault=faults[0] if faults else None, extra=extra)


@pytest.fixture(scope="module")
def runs() -> dict[object, SuiteRun]:
    keys: list[object] = [None, "no-key", "waived", *RUNS]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(keys, pool.map(_run, keys), strict=True))  # type: ignore[arg-type]


def test_correct_server_passes_every_check(runs: dict[object, SuiteRun]) -> None:
    run = runs[None]
    assert not run.failed, f"checks fail on the correct reference server: {sorted(run.failed)}\n{run.output[-3000:]}"
    # only the launch-flag check skips: the reference server is not a vLLM launch
    assert run.named("skipped") == {"test_launch_does_not_open_the_whole_disk"}, run.outcomes
    assert "GlmvSecurityNotice" in run.output and "open-endpoint-tokenize" in run.output, run.output[-2000:]


def test_without_a_key_the_key_checks_skip_and_the_rest_pass(runs: dict[object, SuiteRun]) -> None:
    run = runs["no-key"]
    assert not run.failed, run.output[-3000:]
    assert {n for n in run.named("skipped") if "key" in n} >= CAUGHT["api-key-ignored"], run.outcomes


@pytest.mark.parametrize("fault", sorted(CAUGHT))
def test_fault_is_caught(fault: str, runs: dict[object, SuiteRun]) -> None:
    run = next(runs[r] for r in RUNS if fault in r)
    why = run.unproven(fault, CAUGHT[fault])
    assert not why, why


# fault -> checks it must NOT break: a fault that fails everything would otherwise pass for caught
SPARED: dict[str, set[str]] = {
    # a bypass, not an open fetcher: the direct probe and the redirect are still refused
    "media-url-confusion": {"test_media_is_fetched_only_from_allowed_hosts",
                            "test_media_allowlist_cannot_be_bypassed[redirect]"},
    "open-admin-endpoints": {"test_endpoints_outside_v1_ask_for_the_key[open-endpoint-invocations]",
                             "test_v1_refuses_requests_without_the_key[none]"},
}


@pytest.mark.parametrize("fault", sorted(SPARED))
def test_a_fault_spares_the_checks_it_does_not_target(fault: str, runs: dict[object, SuiteRun]) -> None:
    run = next(runs[r] for r in RUNS if fault in r)
    broken = SPARED[fault] - run.passed
    assert not broken, f"fault {fault} also broke {sorted(broken)}: {run.outcomes}"


def test_a_waived_finding_is_an_xfail_with_its_reason(runs: dict[object, SuiteRun]) -> None:
    run = runs["waived"]
    assert run.outcomes.get("test_media_is_fetched_only_from_allowed_hosts") == "xfailed", run.outcomes
    assert not run.failed, run.output[-2000:]


def test_findings_name_their_id_and_remedy(runs: dict[object, SuiteRun]) -> None:
    msg = next(runs[r] for r in RUNS if "ssrf-open" in r).messages["test_media_is_fetched_only_from_allowed_hosts"]
    assert "finding media-domains-open" in msg and "--allowed-media-domains" in msg and "--glmv-waive" in msg, msg


@pytest.mark.parametrize("argv,value", [
    (["vllm", "serve", "m", "--allowed-local-media-path", "/"], "/"),
    (["vllm", "serve", "m", "--allowed-local-media-path=/data/media"], "/data/media"),
    (["vllm", "serve", "m"], None),
])
def test_launch_flag_reads_the_media_path(argv: list[str], value: str | None) -> None:
    assert launch_flag(argv, "--allowed-local-media-path") == value
