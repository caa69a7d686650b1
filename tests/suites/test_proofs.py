"""Every suite proven on the reference server, as the table fixtures/proofs.toml states it: the suites pass
on the correct server (and its variants), each fault mode is caught by exactly the checks the table names, for
the reason the table names (what each failure must show), and every other check that ran passes. And every
assertion in suites/ fires under some fault, or [unproven_assertions] says why none can make it.

One suite run per [[proof]] case (fault proofs with the same `share` run as one), all started at once on a
small pool: each run is mostly a subprocess waiting on pytest start-up, its reference server, sleeps and
timeouts. Cases that attach to a server of
their own (a legacy-field server, a "remote" server on a non-loopback address) get it from `servers()`.
"""
from __future__ import annotations

import contextlib
import socket
import tempfile
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit

import pytest

from pytest_glmv.assertions import fired, suite_sites
from pytest_glmv.kit import media
from pytest_glmv.kit.hardening import launch_flag
from pytest_glmv.matrix import SUITES_DIR, Proof, load_proofs, shared_run, shares
from pytest_glmv.reference.faults import FAULTS
from pytest_glmv.reference.launcher import ReferenceServer
from pytest_glmv.suiterun import SuiteRun, run_suite

TABLE = load_proofs()
PROOFS = {p.id: p for p in TABLE.proofs}
SHARES = shares(TABLE.proofs)  # "suite/share" -> the fault proofs that run as one suite run
RUN_OF = {p.id: f"{p.suite}/{p.share}" if p.share else p.id for p in TABLE.proofs}  # case -> its run
WORKERS = 4
NEED_ALL = ("test_every_check_the_table_names_exists", "test_every_assertion_fires_under_some_fault")
SITES = suite_sites(SUITES_DIR)


def _public_ip() -> str | None:
    """An address of this machine that is not loopback (a "remote" server to the plugin), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def servers(stack: contextlib.ExitStack, needed: set[str | None]) -> dict[str, dict[str, str]]:
    """The servers cases attach to, by the table's `server` name -> the placeholders of their `target`/`args`."""
    out: dict[str, dict[str, str]] = {}
    if "legacy-reasoning" in needed:
        legacy = stack.enter_context(ReferenceServer(reasoning_field="reasoning_content"))
        out["legacy-reasoning"] = {"base_url": legacy.base_url}
    ip = _public_ip() if "remote-media" in needed else None
    if ip is not None:
        allowed = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glmv-remote-media-")))
        image = allowed / "square.png"
        image.write_bytes(media.encode(media.square("red", 224).render()))
        remote = stack.enter_context(ReferenceServer(host="0.0.0.0", allowed_local_media_path=allowed,
                                                     allowed_media_domains=[ip]))
        out["remote-media"] = {"base_url": f"http://{ip}:{urlsplit(remote.root_url).port}/v1",
                               "media_host": ip, "remote_media_path": str(image)}
    return out


def _run(members: list[Proof], places: Mapping[str, str]) -> SuiteRun:
    """One suite run: a case's, or that of several fault proofs sharing it."""
    proof = members[0]
    faults, args = shared_run(members) if len(members) > 1 else ([proof.fault] if proof.fault else [], proof.args)
    args = [a.format(**places) for a in args]
    target = [a.format(**places) for a in proof.target] or None
    run = run_suite(list(proof.paths), faults[0] if faults else None, args, target=target,
                    timeout=max(p.timeout for p in members), files=proof.files)
    run.fault = " + ".join(faults) or proof.id
    return run


def _wanted(session: pytest.Session) -> set[str]:
    """The cases this session selected (all of them when the check of the table's names runs)."""
    here = [item for item in session.items if item.path == Path(__file__)]
    if any(item.name in NEED_ALL for item in here):
        return set(PROOFS)
    return {item.callspec.params["case"] for item in here if isinstance(item, pytest.Function)
            and hasattr(item, "callspec") and "case" in item.callspec.params}


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[SuiteRun]]]:
    """Every selected case's run, started at once: whole-suite runs (the correct servers) first, they take
    longest."""
    wanted = _wanted(request.session)
    with contextlib.ExitStack() as stack:
        places = servers(stack, {PROOFS[case].server for case in wanted})
        pool = stack.enter_context(ThreadPoolExecutor(WORKERS))
        order = sorted((p for p in TABLE.proofs if p.id in wanted), key=lambda p: (p.fault is not None, "-k" in p.args))
        jobs: dict[str, Future[SuiteRun]] = {}
        for p in order:
            if RUN_OF[p.id] not in jobs and (p.server is None or p.server in places):
                members = SHARES.get(RUN_OF[p.id], [p])
                jobs[RUN_OF[p.id]] = pool.submit(_run, members, places.get(p.server or "", {}))
        yield jobs
        for job in jobs.values():
            job.cancel()


@pytest.mark.parametrize("case", sorted(PROOFS))
def test_proof(runs: dict[str, Future[SuiteRun]], case: str) -> None:
    proof = PROOFS[case]
    if RUN_OF[case] not in runs:
        pytest.skip(f"server {proof.server} unavailable: this machine has no non-loopback address to play a "
                    "remote server on")
    others = [c for p in SHARES.get(RUN_OF[case], []) if p.id != case for c in p.fail]
    why = proof.judge(runs[RUN_OF[case]].result(), excused=others)
    assert not why, why


def test_every_fault_of_the_reference_server_is_proven() -> None:
    proven = {p.fault for p in TABLE.proofs if p.fault and p.name is None}
    assert not set(TABLE.unproven) - set(FAULTS), f"unknown faults listed as unproven: {sorted(TABLE.unproven)}"
    assert not set(FAULTS) - proven - set(TABLE.unproven), f"faults no suite proves: {sorted(set(FAULTS) - proven)}"
    named = {p.fault for p in TABLE.proofs if p.fault}
    assert named <= set(FAULTS), f"the table names faults the reference server does not have: {named - set(FAULTS)}"
    for suite, files in TABLE.suites.items():
        assert any(p.suite == suite and p.name == "correct" for p in TABLE.proofs), f"{suite}: no correct case"
        for f in files:
            assert (Path(PROOFS[f"{suite}/correct"].paths[0]).parent / f).is_file(), f"{suite}: no suites/{f}"


def test_every_check_the_table_names_exists(runs: dict[str, Future[SuiteRun]]) -> None:
    """A typo in the table fails here by name (the case itself fails too, less plainly)."""
    known: dict[str, set[str]] = defaultdict(set)
    for key, job in runs.items():
        if job.exception() is None:
            known[key.split("/")[0]] |= set(job.result().outcomes)
    unknown = {p.id: sorted(p.checks - known[p.suite]) for p in TABLE.proofs if p.checks - known[p.suite]}
    assert not unknown, f"checks named in fixtures/proofs.toml that no run of their suite has: {unknown}"


def test_every_assertion_fires_under_some_fault(runs: dict[str, Future[SuiteRun]]) -> None:
    """Each assert, pytest.fail and reported finding in suites/ fired in a check a case expects to fail, as its
    failure's innermost line (or its finding id) shows; else [unproven_assertions] in fixtures/proofs.toml says why
    no fault can reach it. An entry there that did fire is stale."""
    shown: set[str] = set()
    for p in TABLE.proofs:
        job = runs.get(RUN_OF[p.id])
        if job is None or job.exception() is not None:
            continue
        run = job.result()
        for check in p.fail & run.failed | p.errored & run.errors:
            shown |= fired(SITES, check, run.messages.get(check, ""))
    never = sorted({s.key for s in SITES} - shown - set(TABLE.unproven_assertions))
    stale = sorted(set(TABLE.unproven_assertions) & shown)
    assert not never, "assertions no fault made fire (add a fault, or say why in [unproven_assertions]):\n  " + \
        "\n  ".join(never)
    assert not stale, f"[unproven_assertions] entries that fired in the proof runs: {stale}"


def test_unproven_assertions_name_assertions_that_exist() -> None:
    """Each key of [unproven_assertions] is an assertion site of suites/ now (one that was edited or removed is
    named here, not silently kept); the loader already refused an entry without a reason."""
    keys = {s.key for s in SITES}
    gone = sorted(set(TABLE.unproven_assertions) - keys)
    assert not gone, f"[unproven_assertions] names no assertion of suites/: {gone}"


@pytest.mark.parametrize("argv,value", [
    (["vllm", "serve", "m", "--allowed-local-media-path", "/"], "/"),
    (["vllm", "serve", "m", "--allowed-local-media-path=/data/media"], "/data/media"),
    (["vllm", "serve", "m"], None),
])
def test_launch_flag_reads_the_media_path(argv: list[str], value: str | None) -> None:
    assert launch_flag(argv, "--allowed-local-media-path") == value
