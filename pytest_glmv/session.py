"""One object holds a pytest session's glmv state: settings, target, SLO runs, report, baseline.

plugin.py creates it in pytest_configure and every hook there is one call into it (the pattern of
pytest-benchmark's BenchmarkSession). Suites and users reach it through `session_of(config)`; nothing
here is a hook, so the same object can be driven by hand in a test.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from . import documents, failure, known
from .lifecycle import config as cfg
from .lifecycle import liveness
from .lifecycle.server import ServerError
from .lifecycle.target import Target, is_launched
from .report import collect
from .report.recorder import Recorder
from .slo import selection
from .slo.spec import Spec

AREAS = collect.AREAS
MARKERS = {
    "multimodal": "images and video reach the model through every route a client uses",
    "tools": "function calling through the glm45 tool parser",
    "reasoning": "hybrid thinking through the glm45 reasoning parser",
    "context": "the context window, exactly",
    "slo": "latency and throughput SLOs, measured like vllm bench serve (run only when selected)",
    "robustness": "bad requests never take the server down",
    "security": "keys, media fetching and file access",
    "behavior": "needs real weights (a random-weight model answers nonsense)",
}
# fixtures that need the target started
NEEDS_TARGET = {"glmv_target", "glmv_server", "glmv_profile", "glmv_client", "glmv_async_client", "glmv_http",
                "glmv_media", "glmv_media_dir", "glmv_http_shared"}
EXIT_SERVER = 3  # pytest.exit code when the target cannot be started or reached mid-run
SESSION_KEY = pytest.StashKey["GlmvSession"]()


def settings_of(config: pytest.Config) -> cfg.Settings:
    """The run's settings (CLI > env > ini > default); bad values raise pytest.UsageError."""
    return cfg.resolve(lambda n: config.getoption("glmv_" + n), lambda n: config.getini("glmv_" + n))


def session_of(config: pytest.Config) -> "GlmvSession":
    return config.stash[SESSION_KEY]


def suites_dir() -> Path:
    return documents.folder("suites")


def check_command_line(config: pytest.Config) -> int | None:
    """Before anything starts: bad values, an unknown model, --glmv-print-command, -n with a launch."""
    settings = settings_of(config)
    if settings.target == "vllm":
        try:
            plan, _ = Target(settings).vllm_plan()  # an unknown model without a profile ends here
        except ServerError as e:
            raise pytest.UsageError(str(e)) from None
        if settings.print_command:
            print(shlex.join(plan.argv))
            return 0
        if _xdist_active(config):
            raise pytest.UsageError(
                "glmv: -n/--dist with --glmv-model would start one vLLM per worker on the same GPUs; launch it "
                "once and use --glmv-base-url with -n, or drop -n")
    return None


def _xdist_active(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return True
    n = config.getoption("numprocesses", None)
    return (bool(n) and n != 0) or config.getoption("dist", "no") not in ("no", None)


class GlmvSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = settings_of(config)
        self.target = Target(self.settings, progress=self.say)
        self.is_worker = hasattr(config, "workerinput")
        self.report = Recorder(self.settings, self.is_worker)
        try:  # a damaged knowledge base is a usage error before anything starts, never a silent pass
            self.known = known.load()
        except known.KnowledgeBaseError as e:
            raise pytest.UsageError(f"glmv: {e}") from None
        self._spec: Spec | None = None
        self.slo_runs = selection.Runs(self.settings, lambda: self.slo_spec)
        self.slo_deselected = 0
        self.collected = 0
        self.failures = 0
        self.start_error: str | None = None  # why the target could not be started (then no check runs)
        # whether the server still answers inference: canary at the start, after a lost request, beside a long check
        self.live = liveness.Liveness(lambda: self.target.server, self.settings.canary_timeout, self.say)
        self._log_mark: int | None = None
        self._said: set[str] = set()  # target lines already printed, not repeated in the summary
        if self.settings.slo is not None:
            _ = self.slo_spec  # a bad spec ends the run here, with one line
        # An explicit target with no paths given means "judge it": run the shipped suites.
        if self.settings.explicit_target and config.args_source != pytest.Config.ArgsSource.ARGS:
            config.args = [str(suites_dir())]

    # -- the SLO side ------------------------------------------------------------------------------
    @property
    def slo_spec(self) -> Spec:
        if self._spec is None:
            self._spec = selection.load_spec(self.settings)
        return self._spec

    @property
    def slo_selected(self) -> bool:
        c = self.config
        return selection.asked_for(c.getoption("markexpr", "") or "", self.settings, c.args)

    # -- lifecycle -----------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def attach_early(self) -> None:
        """An explicit --glmv-base-url is checked at session start: unreachable is a usage error."""
        if self.target.kind == "external" and self.settings.explicit_target:
            try:
                self._start()
            except ServerError as e:
                raise pytest.UsageError(str(e).splitlines()[0]) from None

    def ensure_started(self) -> Target:
        """The started target (a fixture asks mid-run); a start that fails there ends the run with exit 3."""
        try:
            return self._start()
        except ServerError as e:
            pytest.exit(str(e), returncode=EXIT_SERVER)

    def _start(self) -> Target:
        """Start or attach once; the first time, say what was started and send the canary."""
        fresh = not self.target.started
        self.target.start()
        if fresh:
            for line in self.target.describe_lines():
                self.say(f"glmv: {line}")
                self._said.add(line)
            self.live.check()
        return self.target

    def stop(self) -> None:
        self.live.watch.stop()
        try:  # logs stay for a failed run (and always in --glmv-log-dir); temporary media never do
            self.target.stop(keep_logs=self.failures > 0)
        except ServerError as e:
            print(str(e), file=sys.stderr)

    # -- collection ----------------------------------------------------------------------------------
    def modify_items(self, items: list[pytest.Item]) -> None:
        root = suites_dir().resolve()
        for item in items:
            if root not in Path(str(item.path)).resolve().parents:
                continue
            areas = sorted({m.name for m in item.iter_markers() if m.name in AREAS})
            if len(areas) != 1:
                raise pytest.UsageError(f"{item.nodeid}: a suite check carries exactly one area marker "
                                        f"({', '.join(AREAS)}); it has {areas or 'none'}")
        if not self.slo_selected:
            keep, drop = selection.split(items)
            if drop:
                self.config.hook.pytest_deselected(items=drop)
                items[:] = keep
                self.slo_deselected = len(drop)
        why = self.target.random_weights()
        if why and not self.config.getoption("markexpr", ""):  # a user's -m decides for itself
            drop = [item for item in items if item.get_closest_marker("behavior") is not None]
            if drop:
                self.config.hook.pytest_deselected(items=drop)
                items[:] = [item for item in items if item.get_closest_marker("behavior") is None]
                self.say(f"glmv: {len(drop)} behavior check{'s' if len(drop) != 1 else ''} deselected: {why}; "
                         "run them anyway with -m behavior, or with trained weights (python -m pytest_glmv.tiny.train)")

    def trusted_behaviour_only(self, items: list[pytest.Item]) -> None:
        """Trained tiny weights: only the behaviour checks of tasks that reached their threshold run (tiny/trust.py).
        Called after -m has selected (plugin.py), so a check the user left out is not mentioned."""
        trust = self.target.behaviour_trust()
        if trust is None:
            return
        from .tiny.trust import WRITING_DECIDES
        keyed = [(trust.key(item.path, getattr(item, "originalname", item.name)), item) for item in items]
        behaviour = [(key, item) for key, item in keyed
                     if item.get_closest_marker("behavior") is not None or key in WRITING_DECIDES]
        drop, lines = trust.split(behaviour)
        if drop:
            self.config.hook.pytest_deselected(items=drop)
            gone = {id(item) for item in drop}
            items[:] = [item for item in items if id(item) not in gone]
            for line in lines:
                self.say(f"glmv: {line}")

    def collection_finished(self, session: pytest.Session) -> None:
        self.collected = len(session.items)
        if self.config.option.collectonly:
            return
        if any(NEEDS_TARGET & set(getattr(item, "fixturenames", ())) for item in session.items):
            try:
                self._start()
            except ServerError as e:
                # Said once, in pytest's own words for a run that could not begin, without pytest.exit's
                # "_pytest.outcomes.Exit" banner: no check runs, and the exit status is 3 (finish()).
                self.start_error = str(e)
                for line in self.start_error.splitlines():
                    self.say(line)
                session.items[:] = []

    # -- reports -------------------------------------------------------------------------------------
    def target_info(self) -> dict[str, Any] | None:
        if not self.target.started:
            return None
        return collect.jsonable(self.target.info())  # type: ignore[no-any-return]

    def test_starting(self, item: pytest.Item) -> None:
        self._log_mark = self._log_size()
        _reset_journal()
        needs = bool(NEEDS_TARGET & set(getattr(item, "fixturenames", ())))
        if self.live.hung and needs:
            self.live.say()
            pytest.fail(f"glmv: {self.live.hung}", pytrace=False)
        if needs and item.get_closest_marker("slo") is None:  # an SLO run is long by design, with its own timeouts
            self.live.watch.start()

    def _log_size(self) -> int | None:
        srv = self.target.server
        path = getattr(srv, "log_path", None)
        try:
            return path.stat().st_size if path is not None else None
        except OSError:
            return None

    def make_report(self, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[None] | None = None
                    ) -> None:
        if report.when == "teardown":
            self.live.watch.stop()
        if report.failed and report.when in ("setup", "call"):
            self._failed(item, report, call.excinfo if call is not None else None)
        self.live.say()
        if report.failed:
            self.failures += 1
        self.report.stamp(item, report, self.target_info(), self.slo_runs.done)

    def _failed(self, item: pytest.Item, report: pytest.TestReport, excinfo: Any) -> None:
        """Evidence, the hang test, the knowledge base, and the short report of a failed setup or call."""
        srv = self.target.server
        message = failure.crash_message(report, excinfo)
        # the server's log goes with a failure only as the lines it wrote while this check ran
        ev = failure.collect(srv.log_path if srv is not None and is_launched(srv) else None, self._log_mark, message)
        hung_before = self.live.hung
        lost = self.live.after_failure(excinfo.value if excinfo else None, [(ev["exchange"] or {}).get("error_type")])
        if hung_before and hung_before in message and ev["exchange"]:  # the stall watch stopped it mid-request
            lost = failure.INTERRUPTED
        area = next((m.name for m in item.iter_markers() if m.name in AREAS), None)
        if area is None:  # not a suite check: pytest's report, with the log lines of the check
            failure.shape(report, None, message, ev, lost, short=False)
            return
        report.glmv_evidence = ev  # type: ignore[attr-defined]
        self._judge_failure(item, report)
        if report.failed:
            opt = self.config.option  # pytest's default style (no -v, --tb=auto) gets the short form
            short = getattr(opt, "tbstyle", "auto") == "auto" and (getattr(opt, "verbose", 0) or 0) <= 0
            failure.shape(report, known.finding_id(area, item.name), message, ev, lost, short)

    def _judge_failure(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """A failing suite check is a finding: matched against the knowledge base by its evidence, waived
        when the user said so, turned into an xfail when the policy says known ones do not fail the run."""
        area = next((m.name for m in item.iter_markers() if m.name in AREAS), None)
        if area is None:
            return
        fid = known.finding_id(area, item.name)
        version = self.target.server.version if self.target.server is not None else None
        # only what the server did (report.glmv_evidence), on a server recognised as the entry's engine
        match = self.known.match(fid, getattr(report, "glmv_evidence", None), self.target.engine, version)
        props: list[tuple[str, object]] = [("glmv_finding", fid)]
        if match is not None:
            report.glmv_known = match.record()  # type: ignore[attr-defined]
            props += [("glmv_known_finding", match.entry.id), ("glmv_known_reference", match.entry.reference)]
            report.sections.append(("glmv known upstream finding", match.text))
        # the report's list is a copy of the item's; JUnit XML writes the item's at teardown
        report.user_properties += props
        item.user_properties += props
        waived = set(self.settings.waive)
        # a regression always fails, whatever the policy; so does a failure two entries match (ambiguous)
        if match is not None and not match.regression and not match.rivals:
            if self.settings.known_findings == "xfail" or match.entry.id in waived:
                report.outcome = "skipped"
                report.wasxfail = match.text  # type: ignore[attr-defined]
                return
        if fid in waived and not (match is not None and match.regression):
            report.outcome = "skipped"
            report.wasxfail = f"waived finding {fid}"  # type: ignore[attr-defined]

    def finish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.start_error is not None:
            session.exitstatus = EXIT_SERVER
        info = collect.jsonable(self.target.info())
        self.report.finish(session, exitstatus, info, self.slo_runs.done)

    def terminal_summary(self, tr: Any) -> None:
        """One ordered summary: what was learned of the target, the SLO runs, the matrix, baseline and report
        files, then one verdict line, right above pytest's own short summary."""
        if self.target.started:
            new = [line for line in self.target.describe_lines() if line not in self._said]
            if new:  # the start lines said the rest; only what the run learned since (e.g. the reasoning field)
                tr.section("glmv target")
                for line in new:
                    tr.write_line(line)
        srv = self.target.server
        if self.failures and srv is not None and is_launched(srv) and self.settings.log_dir is None:
            tr.write_line(f"glmv: the server's log stays for this failed run: {srv.log_path} (a passing run "
                          "leaves nothing; --glmv-log-dir keeps logs always)")
        lines: list[str] = []
        n = self.slo_deselected
        if n and not (self.config.getoption("markexpr", "") or ""):  # a user's own -m said it already
            lines.append(f"glmv: {n} SLO check{'s' if n != 1 else ''} deselected (they load the server for "
                         f"minutes); {selection.HOW}")
        lines += self.slo_runs.lines()
        if lines:
            tr.section("glmv SLO")
            for line in lines:
                tr.write_line(line)
        self.report.summary(tr.section, tr.write_line)
        if not self.collected and not self.settings.explicit_target and not self.is_worker:
            tr.write_line("glmv: no checks collected here. The shipped suites run when you name a target: "
                          "pytest --glmv-server reference (the built-in double), --glmv-base-url URL, or "
                          "--glmv-model ID")
        verdict = self.report.verdict()
        if self.start_error is not None:
            verdict = f"glmv verdict: NOT RUN: {self.start_error.splitlines()[0].removeprefix('glmv: ')}"
        if verdict:
            tr.write_line(verdict, red=verdict.startswith("glmv verdict: FAIL"),
                          green=verdict.startswith("glmv verdict: PASS"), bold=True)


def _reset_journal() -> None:
    """A fresh per-check journal of exchanges (kit/evidence.py's, where it has one)."""
    from .kit import evidence

    reset = getattr(evidence, "journal_reset", None)
    if callable(reset):
        reset()

